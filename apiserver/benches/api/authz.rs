//! Phase 4: one authorization decision by the server's `Node,RBAC` chain
//! under a policy of 1,000 bindings (100 teams' namespaces, ten users each:
//! nine bound to an aggregated `edit`, one to a `use` Role; cluster-admin
//! for `system:masters`), timed in CPU per decision for an allowed request,
//! a refused one (every rule set of the user is read), another team's, an
//! administrator's and a node's, against the CPU of one create measured in
//! phase 1.

use std::time::Instant;

use std::sync::Arc;

use corral_apiserver::Catalog;
use corral_apiserver::transport::auth::{Attributes, AuthMethod, Authorizer, Chain, User};
use corral_apiserver::transport::node_authorizer::NodeAuthorizer;
use corral_apiserver::transport::rbac::{MASTERS, Policy, RbacAuthorizer};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::json;

const TEAMS: usize = 100;
const USERS_PER_TEAM: usize = 10;

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(v)?)
}

fn policy() -> anyhow::Result<Policy> {
    let mut cluster_roles: Vec<ClusterRole> = vec![
        from(
            json!({"metadata": {"name": "edit"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}]}}),
        )?,
        from(
            json!({"metadata": {"name": "cluster-admin"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
        )?,
    ];
    for (i, (group, resources)) in [
        ("corral.dev", vec!["jobs", "jobs/scale"]),
        ("corral.dev", vec!["tasks", "tasks/log"]),
        ("", vec!["secrets", "configmaps"]),
        ("", vec!["events"]),
    ]
    .into_iter()
    .enumerate()
    {
        cluster_roles.push(from(json!({"metadata": {"name": format!("edit-{i}"), "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
            "rules": [{"verbs": ["get", "list", "watch", "create", "update", "patch", "delete"], "apiGroups": [group], "resources": resources}]}))?);
    }
    let mut roles: Vec<Role> = Vec::new();
    let mut bindings: Vec<RoleBinding> = Vec::new();
    for t in 0..TEAMS {
        let ns = format!("team-{t}");
        roles.push(from(json!({"metadata": {"name": "use-role", "namespace": ns},
            "rules": [{"verbs": ["use"], "apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": [format!("role-{t}")]}]}))?);
        for u in 0..USERS_PER_TEAM {
            let (kind, role) = if u == 0 {
                ("Role", "use-role")
            } else {
                ("ClusterRole", "edit")
            };
            bindings.push(from(json!({"metadata": {"name": format!("b{u}"), "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
                "subjects": [{"kind": "User", "name": format!("user-{t}-{u}")}, {"kind": "Group", "name": format!("team-{t}")}]}))?);
        }
    }
    let admin: ClusterRoleBinding = from(json!({"metadata": {"name": "cluster-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": MASTERS}]}))?;
    Ok(Policy::new(&cluster_roles, &roles, &[admin], &bindings))
}

fn user(name: &str, groups: &[&str]) -> User {
    User {
        name: name.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        method: AuthMethod::ClientCertificate,
    }
}

fn create_task(ns: &str) -> Attributes {
    Attributes {
        verb: "create".into(),
        group: "corral.dev".into(),
        resource: "tasks".into(),
        subresource: None,
        namespace: Some(ns.into()),
        name: None,
        field_selector: None,
        label_selector: None,
    }
}

/// CPU µs per decision over `n` decisions, and the decision.
fn time(p: &dyn Authorizer, u: &User, a: &Attributes, n: usize) -> (f64, bool) {
    let mut allowed = false;
    let start = Instant::now();
    for _ in 0..n {
        allowed = std::hint::black_box(p.allows(std::hint::black_box(u), std::hint::black_box(a)));
    }
    (start.elapsed().as_secs_f64() * 1e6 / n as f64, allowed)
}

pub fn run(create_us: Option<f64>) -> anyhow::Result<()> {
    let build = Instant::now();
    let policy = policy()?;
    let built_ms = build.elapsed().as_secs_f64() * 1e3;
    // As the server chains them (without a watch cache: no task lookups).
    let chain = Chain(vec![
        NodeAuthorizer::new(None, &Catalog::standard()),
        Arc::new(RbacAuthorizer::with_policy(policy)),
    ]);
    let p: &dyn Authorizer = &chain;
    let n = 200_000;
    let member = user("user-42-3", &["team-42"]);
    let outsider = user("user-7-3", &["team-7"]);
    let admin = user("corral-admin", &[MASTERS]);
    let create = create_task("team-42");
    // Task status is not in edit: the refusal reads every rule set.
    let refused = Attributes {
        verb: "update".into(),
        subresource: Some("status".into()),
        ..create_task("team-42")
    };
    let (allowed_us, a) = time(p, &member, &create, n);
    let (refused_us, r) = time(p, &member, &refused, n);
    let (other_us, o) = time(p, &outsider, &create, n);
    let (admin_us, m) = time(p, &admin, &create, n);
    let node = user("system:node:n1", &["system:nodes"]);
    let lease = Attributes {
        verb: "patch".into(),
        group: "coordination.k8s.io".into(),
        resource: "leases".into(),
        namespace: Some("corral-node-lease".into()),
        name: Some("n1".into()),
        ..Attributes::default()
    };
    let (node_us, l) = time(p, &node, &lease, n);
    anyhow::ensure!(a && !r && !o && m && l, "the policy decides as written");
    println!(
        "authorization: Node,RBAC over {} bindings ({TEAMS} namespaces; built in {built_ms:.1} ms): allowed {allowed_us:.3} µs, refused {refused_us:.3} µs, other team {other_us:.3} µs, admin {admin_us:.3} µs, node {node_us:.3} µs per decision",
        TEAMS * USERS_PER_TEAM + 1
    );
    match create_us {
        Some(c) => println!(
            "  share of one create's CPU ({c:.1} µs, phase 1): {:.2} % at worst (goal ≤ 5 %)",
            100.0
                * allowed_us
                    .max(refused_us)
                    .max(other_us)
                    .max(admin_us)
                    .max(node_us)
                / c
        ),
        None => println!("  (run the create phase too for its share of a create's CPU)"),
    }
    Ok(())
}
