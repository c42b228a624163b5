use super::*;
use crate::transport::auth::AuthMethod;

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: ["system:node:n1"]
    verbs: [watch]
  - level: None
    nonResourceURLs: ["/healthz", "/version*"]
  - level: Metadata
    resources:
      - group: ""
        resources: [secrets]
  - level: RequestResponse
    resources:
      - group: corral.dev
        resources: [jobs, "tasks/*"]
    namespaces: [team-a]
  - level: Request
    userGroups: [team-b]
    omitStages: [ResponseStarted]
  - level: Metadata
"#;

fn user(name: &str, groups: &[&str]) -> User {
    User {
        name: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        method: AuthMethod::Token,
    }
}

fn res(verb: &str, group: &str, resource: &str, sub: Option<&str>, ns: Option<&str>) -> Attributes {
    Attributes {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: sub.map(str::to_owned),
        namespace: ns.map(str::to_owned),
        ..Attributes::default()
    }
}

#[test]
fn the_first_matching_rule_decides() {
    let p = Policy::from_yaml(POLICY).expect("a policy");
    let node = user("system:node:n1", &["system:nodes"]);
    let alice = user("alice", &["team-a"]);
    let bob = user("bob", &["team-b"]);
    let watch = res("watch", "corral.dev", "tasks", None, None);
    let secret = res("get", "", "secrets", None, Some("team-a"));
    let job_a = res("create", "corral.dev", "jobs", None, Some("team-a"));
    let job_b = res("create", "corral.dev", "jobs", None, Some("team-b"));
    let status_a = res(
        "patch",
        "corral.dev",
        "tasks",
        Some("status"),
        Some("team-a"),
    );
    let task_a = res("get", "corral.dev", "tasks", None, Some("team-a"));
    type Case<'a> = (
        Option<&'a User>,
        &'a str,
        Option<&'a Attributes>,
        &'a str,
        Level,
    );
    let cases: Vec<Case<'_>> = vec![
        (Some(&node), "watch", Some(&watch), "/apis/x", Level::None),
        (
            Some(&alice),
            "watch",
            Some(&watch),
            "/apis/x",
            Level::Metadata,
        ),
        (Some(&alice), "get", None, "/healthz", Level::None),
        (Some(&alice), "get", None, "/version", Level::None),
        (Some(&alice), "get", None, "/metrics", Level::Metadata),
        (
            Some(&bob),
            "get",
            Some(&secret),
            "/api/v1/x",
            Level::Metadata,
        ),
        (
            Some(&alice),
            "create",
            Some(&job_a),
            "/apis/x",
            Level::RequestResponse,
        ),
        (
            Some(&alice),
            "patch",
            Some(&status_a),
            "/apis/x",
            Level::RequestResponse,
        ),
        (
            Some(&alice),
            "get",
            Some(&task_a),
            "/apis/x",
            Level::Metadata,
        ),
        (
            Some(&bob),
            "create",
            Some(&job_b),
            "/apis/x",
            Level::Request,
        ),
        (None, "get", None, "/apis", Level::Metadata),
    ];
    for (u, verb, r, path, want) in cases {
        let (got, _) = p.level(&Facts {
            user: u,
            verb,
            resource: r,
            path,
        });
        assert_eq!(got, want, "{:?} {verb} {r:?} {path}", u.map(|u| &u.name));
    }
    let (_, omit) = p.level(&Facts {
        user: Some(&bob),
        verb: "create",
        resource: Some(&job_b),
        path: "/apis/x",
    });
    assert_eq!(omit, vec![Stage::RequestReceived, Stage::ResponseStarted]);
}

#[test]
fn a_policy_is_an_audit_policy_or_a_clear_error() {
    assert!(Policy::from_yaml("apiVersion: audit.k8s.io/v1\nkind: Policy\n").is_ok());
    for bad in [
        "apiVersion: v1\nkind: ConfigMap\n",
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Loud}]\n",
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [Later]\n",
        ": : :",
    ] {
        assert!(Policy::from_yaml(bad).is_err(), "{bad}");
    }
    // No rule: nothing is audited.
    let empty = Policy::default();
    assert_eq!(
        empty
            .level(&Facts {
                user: None,
                verb: "get",
                resource: None,
                path: "/api"
            })
            .0,
        Level::None
    );
}
