//! Escalation prevention, as a table: who may grant what.

use serde_json::json;

use crate::transport::auth::User;
use crate::transport::rbac::tests::{binding, user};
use crate::transport::rbac::{MASTERS, Policy, RbacAuthorizer, bootstrap, escalation};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};

#[test]
fn nobody_grants_more_than_it_holds() {
    use escalation::{Grant, check, grant_of};
    let objs = bootstrap::objects();
    let cluster_roles: Vec<ClusterRole> = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole")
        .map(|v| serde_json::from_value(v.clone()).expect("cluster role"))
        .collect();
    let bindings: Vec<ClusterRoleBinding> = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding")
        .map(|v| serde_json::from_value(v.clone()).expect("binding"))
        .collect();
    let binder: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "binder"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "resourceNames": ["cluster-admin"], "verbs": ["bind"]}]}))
    .expect("binder");
    let mut all_roles = cluster_roles.clone();
    all_roles.push(binder);
    let local: Role = serde_json::from_value(
        json!({"metadata": {"name": "jobs-reader", "namespace": "a"},
        "rules": [{"apiGroups": ["corral.dev"], "resources": ["jobs"], "verbs": ["get"]}]}),
    )
    .expect("role");
    let p = Policy::new(
        &all_roles,
        &[local],
        &bindings,
        &[
            binding(
                "a",
                "lead",
                "ClusterRole",
                "admin",
                json!([{"kind": "User", "name": "lena"}]),
            ),
            binding(
                "a",
                "b",
                "ClusterRole",
                "binder",
                json!([{"kind": "User", "name": "bea"}]),
            ),
        ],
    );
    let authz = RbacAuthorizer::with_policy(p);
    let lena = user("lena", &[]);
    let bea = user("bea", &[]);
    let admin = user("corral-admin", &[MASTERS]);
    let rb = |role_kind: &str, role: &str| {
        grant_of(
            "RoleBinding",
            &json!({"metadata": {"name": "x", "namespace": "a"}, "roleRef": {"kind": role_kind, "name": role}}),
        )
        .expect("a grant")
    };
    let role = |rules: serde_json::Value| {
        grant_of(
            "Role",
            &json!({"metadata": {"name": "r", "namespace": "a"}, "rules": rules}),
        )
        .expect("a grant")
    };
    let crb = grant_of(
        "ClusterRoleBinding",
        &json!({"metadata": {"name": "x"}, "roleRef": {"kind": "ClusterRole", "name": "edit"}}),
    )
    .expect("a grant");
    let cases: Vec<(&User, Grant, bool, &str)> = vec![
        (
            &lena,
            rb("ClusterRole", "edit"),
            true,
            "admin binds edit in its namespace",
        ),
        (&lena, rb("ClusterRole", "view"), true, "and view"),
        (
            &lena,
            rb("Role", "jobs-reader"),
            true,
            "and a role of its namespace it holds",
        ),
        (
            &lena,
            rb("ClusterRole", "cluster-admin"),
            false,
            "never cluster-admin",
        ),
        (
            &lena,
            rb("ClusterRole", "corral:agent"),
            false,
            "nor the agents' powers",
        ),
        (
            &lena,
            rb("ClusterRole", "no-such-role"),
            false,
            "nor an unknown role",
        ),
        (&lena, crb.clone(), false, "nor edit everywhere"),
        (
            &lena,
            role(
                json!([{"apiGroups": ["corral.dev"], "resources": ["jobs"], "verbs": ["create", "delete"]}]),
            ),
            true,
            "a role within its own rules",
        ),
        (
            &lena,
            role(
                json!([{"apiGroups": ["corral.dev"], "resources": ["tasks/status"], "verbs": ["patch"]}]),
            ),
            false,
            "no task phases",
        ),
        (
            &lena,
            role(
                json!([{"apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["a"], "verbs": ["use"]}]),
            ),
            false,
            "no role it may not use",
        ),
        (
            &bea,
            rb("ClusterRole", "cluster-admin"),
            true,
            "bind on cluster-admin",
        ),
        (
            &bea,
            rb("ClusterRole", "edit"),
            false,
            "bind on one role only",
        ),
        (&admin, crb, true, "system:masters"),
    ];
    for (u, g, want, why) in cases {
        assert_eq!(
            check(&authz, u, &g).is_ok(),
            want,
            "{why}: {:?}",
            check(&authz, u, &g)
        );
    }
    let err = check(&authz, &lena, &rb("ClusterRole", "cluster-admin")).expect_err("refused");
    assert_eq!(err.code(), http::StatusCode::FORBIDDEN);
    assert!(
        err.message().starts_with(
            "user \"lena\" is attempting to grant RBAC permissions not currently held:"
        ),
        "{}",
        err.message()
    );
}
