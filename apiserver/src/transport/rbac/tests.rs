//! RBAC as tables: rule matching, bindings and subjects, aggregation, and the
//! escalation check.

use serde_json::json;

use super::*;

pub(super) fn rule(v: serde_json::Value) -> PolicyRule {
    serde_json::from_value(v).expect("rule")
}

pub(super) fn user(name: &str, groups: &[&str]) -> User {
    User {
        name: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        method: AuthMethod::Token,
    }
}

pub(crate) fn attrs(
    verb: &str,
    group: &str,
    resource: &str,
    sub: Option<&str>,
    ns: Option<&str>,
    name: Option<&str>,
) -> Attributes {
    Attributes {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: sub.map(str::to_owned),
        namespace: ns.map(str::to_owned),
        name: name.map(str::to_owned),
        field_selector: None,
        label_selector: None,
    }
}

#[test]
fn rules_match_verbs_groups_resources_subresources_and_names() {
    let cases: Vec<(serde_json::Value, Attributes, bool, &str)> = vec![
        (
            json!({"verbs": ["get"], "apiGroups": ["corral.dev"], "resources": ["jobs"]}),
            attrs("get", "corral.dev", "jobs", None, Some("a"), Some("x")),
            true,
            "exact",
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["corral.dev"], "resources": ["jobs"]}),
            attrs("list", "corral.dev", "jobs", None, Some("a"), None),
            false,
            "other verb",
        ),
        (
            json!({"verbs": ["*"], "apiGroups": ["corral.dev"], "resources": ["jobs"]}),
            attrs("delete", "corral.dev", "jobs", None, Some("a"), Some("x")),
            true,
            "any verb",
        ),
        (
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}),
            attrs("get", "corral.dev", "secrets", None, Some("a"), Some("x")),
            false,
            "core group only",
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}),
            attrs(
                "get",
                "rbac.authorization.k8s.io",
                "roles",
                None,
                None,
                Some("x"),
            ),
            true,
            "any group and resource",
        ),
        (
            json!({"verbs": ["update"], "apiGroups": ["corral.dev"], "resources": ["tasks"]}),
            attrs(
                "update",
                "corral.dev",
                "tasks",
                Some("status"),
                Some("a"),
                Some("t"),
            ),
            false,
            "a resource is not its subresource",
        ),
        (
            json!({"verbs": ["update"], "apiGroups": ["corral.dev"], "resources": ["tasks/status"]}),
            attrs(
                "update",
                "corral.dev",
                "tasks",
                Some("status"),
                Some("a"),
                Some("t"),
            ),
            true,
            "the subresource",
        ),
        (
            json!({"verbs": ["update"], "apiGroups": ["corral.dev"], "resources": ["tasks/status"]}),
            attrs("update", "corral.dev", "tasks", None, Some("a"), Some("t")),
            false,
            "a subresource is not its resource",
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["corral.dev"], "resources": ["*/scale"]}),
            attrs(
                "get",
                "corral.dev",
                "jobs",
                Some("scale"),
                Some("a"),
                Some("j"),
            ),
            true,
            "any resource's subresource",
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["corral.dev"], "resources": ["tasks/*"]}),
            attrs(
                "get",
                "corral.dev",
                "tasks",
                Some("log"),
                Some("a"),
                Some("t"),
            ),
            true,
            "any subresource of one resource",
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["corral.dev"], "resources": ["tasks/*"]}),
            attrs("get", "corral.dev", "tasks", None, Some("a"), Some("t")),
            false,
            "res/* is not the resource",
        ),
        (
            json!({"verbs": ["use"], "apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["analytics"]}),
            attrs(
                "use",
                "corral.dev",
                "roles",
                None,
                Some("a"),
                Some("analytics"),
            ),
            true,
            "a named object",
        ),
        (
            json!({"verbs": ["use"], "apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["analytics"]}),
            attrs("use", "corral.dev", "roles", None, Some("a"), Some("web")),
            false,
            "another object",
        ),
        (
            json!({"verbs": ["list"], "apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["analytics"]}),
            attrs("list", "corral.dev", "roles", None, None, None),
            false,
            "names never match a list",
        ),
    ];
    for (r, a, want, why) in cases {
        assert_eq!(rule_allows(&rule(r), &a), want, "{why}");
    }
}

pub(super) fn cluster_role(
    name: &str,
    labels: serde_json::Value,
    rules: serde_json::Value,
    aggregate: Option<serde_json::Value>,
) -> ClusterRole {
    let mut v = json!({"metadata": {"name": name, "labels": labels}, "rules": rules});
    if let Some(a) = aggregate {
        v["aggregationRule"] = json!({"clusterRoleSelectors": a});
    }
    serde_json::from_value(v).expect("cluster role")
}

pub(super) fn binding(
    ns: &str,
    name: &str,
    role_kind: &str,
    role: &str,
    subjects: serde_json::Value,
) -> RoleBinding {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects}))
    .expect("binding")
}

fn teams() -> Policy {
    let edit = cluster_role(
        "corral-edit",
        json!({"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        json!([{"verbs": ["*"], "apiGroups": ["corral.dev"], "resources": ["jobs", "jobs/scale"]},
               {"verbs": ["get", "list", "watch"], "apiGroups": ["corral.dev"], "resources": ["tasks", "tasks/log"]}]),
        None,
    );
    let secrets = cluster_role(
        "secrets-edit",
        json!({"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        json!([{"verbs": ["*"], "apiGroups": [""], "resources": ["secrets"]}]),
        None,
    );
    let aggregated = cluster_role(
        "edit",
        json!({}),
        json!([]),
        Some(json!([{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}])),
    );
    let admin = cluster_role(
        "cluster-admin",
        json!({}),
        json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]}]),
        None,
    );
    let use_analytics: Role = serde_json::from_value(json!({"metadata": {"name": "use-analytics", "namespace": "analytics"},
        "rules": [{"verbs": ["use"], "apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["analytics"]}]}))
    .expect("role");
    let masters: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": "cluster-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": MASTERS}]}))
    .expect("crb");
    let viewers: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": "health"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "health"},
        "subjects": [{"kind": "Group", "name": AUTHENTICATED}]}))
    .expect("crb");
    let health = cluster_role(
        "health",
        json!({}),
        json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/version", "/apis/*"]}]),
        None,
    );
    Policy::new(
        &[edit, secrets, aggregated, admin, health],
        &[use_analytics],
        &[masters, viewers],
        &[
            binding(
                "analytics",
                "analytics-edit",
                "ClusterRole",
                "edit",
                json!([{"kind": "Group", "name": "analytics-team"}]),
            ),
            binding(
                "analytics",
                "analytics-use",
                "Role",
                "use-analytics",
                json!([{"kind": "Group", "name": "analytics-team"}]),
            ),
            binding(
                "web",
                "web-edit",
                "ClusterRole",
                "edit",
                json!([{"kind": "User", "name": "wendy"}]),
            ),
            binding(
                "web",
                "ci",
                "ClusterRole",
                "corral-edit",
                json!([{"kind": "ServiceAccount", "name": "deployer"}]),
            ),
            binding(
                "web",
                "dangling",
                "Role",
                "no-such-role",
                json!([{"kind": "User", "name": "wendy"}]),
            ),
        ],
    )
}

#[test]
fn bindings_grant_their_role_in_their_namespace_only() {
    let p = teams();
    let alice = user("alice", &["analytics-team"]);
    let wendy = user("wendy", &[]);
    let deployer = user("system:serviceaccount:web:deployer", &[]);
    let admin = user("corral-admin", &[MASTERS]);
    let cases = [
        (
            &alice,
            attrs(
                "create",
                "corral.dev",
                "jobs",
                None,
                Some("analytics"),
                None,
            ),
            true,
            "edit through aggregation",
        ),
        (
            &alice,
            attrs("get", "", "secrets", None, Some("analytics"), Some("db")),
            true,
            "aggregated from a second role",
        ),
        (
            &alice,
            attrs("get", "", "secrets", None, Some("web"), Some("db")),
            false,
            "another team's secrets",
        ),
        (
            &alice,
            attrs("create", "corral.dev", "jobs", None, Some("web"), None),
            false,
            "another team's jobs",
        ),
        (
            &alice,
            attrs(
                "update",
                "corral.dev",
                "tasks",
                Some("status"),
                Some("analytics"),
                Some("t"),
            ),
            false,
            "task phases are not the team's",
        ),
        (
            &alice,
            attrs(
                "get",
                "corral.dev",
                "tasks",
                Some("log"),
                Some("analytics"),
                Some("t"),
            ),
            true,
            "its tasks' logs",
        ),
        (
            &alice,
            attrs(
                "use",
                "corral.dev",
                "roles",
                None,
                Some("analytics"),
                Some("analytics"),
            ),
            true,
            "its own role",
        ),
        (
            &alice,
            attrs(
                "use",
                "corral.dev",
                "roles",
                None,
                Some("analytics"),
                Some("web"),
            ),
            false,
            "not another role",
        ),
        (
            &alice,
            attrs(
                "update",
                "corral.dev",
                "quotas",
                None,
                None,
                Some("analytics"),
            ),
            false,
            "no quota",
        ),
        (
            &wendy,
            attrs(
                "update",
                "corral.dev",
                "jobs",
                Some("scale"),
                Some("web"),
                Some("frontend"),
            ),
            true,
            "a user subject",
        ),
        (
            &wendy,
            attrs("use", "corral.dev", "roles", None, Some("web"), Some("web")),
            false,
            "edit grants no role's use",
        ),
        (
            &deployer,
            attrs(
                "patch",
                "corral.dev",
                "jobs",
                None,
                Some("web"),
                Some("frontend"),
            ),
            true,
            "a service account",
        ),
        (
            &deployer,
            attrs("get", "", "secrets", None, Some("web"), Some("x")),
            false,
            "only what its role grants",
        ),
        (
            &admin,
            attrs("delete", "corral.dev", "nodes", None, None, Some("n1")),
            true,
            "system:masters",
        ),
    ];
    for (u, a, want, why) in cases {
        assert_eq!(p.allows(u, &a), want, "{why}");
    }
    assert!(
        p.allows_path(&alice, "get", "/version"),
        "every authenticated user"
    );
    assert!(
        p.allows_path(&alice, "get", "/apis/corral.dev/v1alpha1"),
        "a prefix"
    );
    assert!(!p.allows_path(&alice, "get", "/metrics"));
    let anonymous = User {
        method: AuthMethod::Anonymous,
        ..user("system:anonymous", &[])
    };
    assert!(
        !p.allows_path(&anonymous, "get", "/version"),
        "not authenticated"
    );
    assert!(p.allows_path(&admin, "post", "/anything"));
}

#[test]
fn the_rules_of_a_user_are_listed_for_can_i_list() {
    let p = teams();
    let rules = p
        .rules(&user("alice", &["analytics-team"]), "analytics")
        .expect("rules");
    assert!(rules.resources.iter().any(|r| r.resources == ["secrets"]));
    assert!(
        rules
            .resources
            .iter()
            .any(|r| r.resource_names == ["analytics"] && r.verbs == ["use"])
    );
    assert!(
        rules
            .non_resources
            .iter()
            .any(|r| r.urls.contains(&"/version".to_owned()))
    );
    let elsewhere = p
        .rules(&user("alice", &["analytics-team"]), "web")
        .expect("rules");
    assert!(elsewhere.resources.is_empty());
}

#[test]
fn escalation_needs_every_permission_granted() {
    let have = [
        rule(
            json!({"verbs": ["get", "list"], "apiGroups": ["corral.dev"], "resources": ["jobs", "tasks/*"]}),
        ),
        rule(
            json!({"verbs": ["use"], "apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["analytics"]}),
        ),
        rule(json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]})),
    ];
    let cases: Vec<(serde_json::Value, usize, &str)> = vec![
        (
            json!({"verbs": ["get"], "apiGroups": ["corral.dev"], "resources": ["jobs"]}),
            0,
            "a subset",
        ),
        (
            json!({"verbs": ["get", "list"], "apiGroups": ["corral.dev"], "resources": ["jobs"]}),
            0,
            "the same",
        ),
        (
            json!({"verbs": ["get", "delete"], "apiGroups": ["corral.dev"], "resources": ["jobs"]}),
            1,
            "one verb more",
        ),
        (
            json!({"verbs": ["*"], "apiGroups": ["corral.dev"], "resources": ["jobs"]}),
            1,
            "a wildcard needs a wildcard",
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["corral.dev"], "resources": ["tasks/log"]}),
            0,
            "covered by tasks/*",
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["corral.dev"], "resources": ["tasks"]}),
            1,
            "tasks/* is not tasks",
        ),
        (
            json!({"verbs": ["use"], "apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["analytics"]}),
            0,
            "a named role",
        ),
        (
            json!({"verbs": ["use"], "apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["analytics", "web"]}),
            1,
            "another name",
        ),
        (
            json!({"verbs": ["use"], "apiGroups": ["corral.dev"], "resources": ["roles"]}),
            1,
            "every role",
        ),
        (
            json!({"verbs": ["get"], "nonResourceURLs": ["/apis/corral.dev"]}),
            0,
            "a path under a prefix",
        ),
        (
            json!({"verbs": ["get"], "nonResourceURLs": ["/metrics"]}),
            1,
            "another path",
        ),
        (
            json!({"verbs": ["get"], "apiGroups": ["", "corral.dev"], "resources": ["jobs", "secrets"]}),
            3,
            "each atom counted",
        ),
    ];
    for (want, missing, why) in cases {
        let got = covers(&have, &[rule(want)]);
        assert_eq!(got.len(), missing, "{why}: {got:?}");
    }
    // What is missing is named precisely.
    let got = covers(
        &have,
        &[rule(
            json!({"verbs": ["delete"], "apiGroups": ["corral.dev"], "resources": ["jobs"]}),
        )],
    );
    assert_eq!(
        got,
        vec![rule(
            json!({"verbs": ["delete"], "apiGroups": ["corral.dev"], "resources": ["jobs"]})
        )]
    );
    let all = [rule(
        json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
    )];
    assert!(
        covers(
            &all,
            &[rule(
                json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
            )]
        )
        .is_empty()
    );
}

#[test]
fn aggregation_reaches_a_fixpoint_and_tolerates_cycles() {
    let leaf = cluster_role(
        "leaf",
        json!({"tier": "edit"}),
        json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]),
        None,
    );
    let edit = cluster_role(
        "edit",
        json!({"tier": "admin"}),
        json!([]),
        Some(json!([{"matchLabels": {"tier": "edit"}}])),
    );
    let admin = cluster_role(
        "admin",
        json!({"tier": "edit"}),
        json!([]),
        Some(
            json!([{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["admin"]}]}]),
        ),
    );
    let rules = cluster_role_rules(&[admin, edit, leaf]);
    // admin gathers edit, which gathers leaf and (through its label) admin itself.
    for r in ["edit", "admin"] {
        assert_eq!(rules[r].len(), 1, "{r}: {:?}", rules[r]);
    }
}
