//! The bootstrap policy, decided: what each identity it names may do.

use serde_json::json;

use crate::transport::auth::Authorizer;
use crate::transport::rbac::tests::{attrs, binding, user};
use crate::transport::rbac::{MASTERS, Policy, bootstrap};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

#[test]
fn the_bootstrap_policy_grants_what_each_identity_needs_and_no_more() {
    let objs = bootstrap::objects();
    let of = |kind: &str| -> Vec<serde_json::Value> {
        objs.iter().filter(|o| o["kind"] == kind).cloned().collect()
    };
    let cluster_roles: Vec<ClusterRole> = of("ClusterRole")
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("cluster role"))
        .collect();
    let bindings: Vec<ClusterRoleBinding> = of("ClusterRoleBinding")
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("binding"))
        .collect();
    let team = binding(
        "a",
        "team",
        "ClusterRole",
        "edit",
        json!([{"kind": "Group", "name": "team-a"}]),
    );
    let lead = binding(
        "a",
        "lead",
        "ClusterRole",
        "admin",
        json!([{"kind": "User", "name": "lena"}]),
    );
    let viewer = binding(
        "a",
        "view",
        "ClusterRole",
        "view",
        json!([{"kind": "User", "name": "vic"}]),
    );
    let p = Policy::new(&cluster_roles, &[], &bindings, &[team, lead, viewer]);
    let alice = user("alice", &["team-a"]);
    let lena = user("lena", &[]);
    let vic = user("vic", &[]);
    let joiner = user("system:bootstrap:fleet", &[bootstrap::BOOTSTRAPPERS]);
    let node = user("system:node:n1", &["system:nodes"]);
    let scheduler = user(bootstrap::SCHEDULER, &[]);
    let manager = user(bootstrap::CONTROLLER_MANAGER, &[]);
    let admin = user("corral-admin", &[MASTERS]);
    let cases = [
        (
            &alice,
            attrs("create", "corral.dev", "jobs", None, Some("a"), None),
            true,
            "edit runs jobs",
        ),
        (
            &alice,
            attrs(
                "update",
                "corral.dev",
                "jobs",
                Some("scale"),
                Some("a"),
                Some("j"),
            ),
            true,
            "and scales them",
        ),
        (
            &alice,
            attrs("get", "", "secrets", None, Some("a"), Some("s")),
            true,
            "edit keeps secrets",
        ),
        (
            &alice,
            attrs(
                "get",
                "corral.dev",
                "tasks",
                Some("log"),
                Some("a"),
                Some("t"),
            ),
            true,
            "edit reads logs (through view)",
        ),
        (
            &alice,
            attrs("create", "corral.dev", "tasks", None, Some("a"), None),
            false,
            "tasks are the controllers'",
        ),
        (
            &alice,
            attrs(
                "patch",
                "corral.dev",
                "tasks",
                Some("status"),
                Some("a"),
                Some("t"),
            ),
            false,
            "phases are the agents'",
        ),
        (
            &alice,
            attrs("use", "corral.dev", "roles", None, Some("a"), Some("a")),
            false,
            "edit grants no role",
        ),
        (
            &alice,
            attrs(
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                None,
                Some("a"),
                None,
            ),
            false,
            "edit grants no access",
        ),
        (
            &lena,
            attrs(
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                None,
                Some("a"),
                None,
            ),
            true,
            "admin does (within what it holds)",
        ),
        (
            &lena,
            attrs("create", "corral.dev", "jobs", None, Some("a"), None),
            true,
            "admin gathers edit",
        ),
        (
            &vic,
            attrs("list", "corral.dev", "jobs", None, Some("a"), None),
            true,
            "view reads",
        ),
        (
            &vic,
            attrs("get", "", "secrets", None, Some("a"), Some("s")),
            false,
            "view reads no secret",
        ),
        (
            &vic,
            attrs("create", "corral.dev", "jobs", None, Some("a"), None),
            false,
            "view writes nothing",
        ),
        (
            &joiner,
            attrs(
                "create",
                "corral.dev",
                "nodecertificaterequests",
                None,
                None,
                Some("n1"),
            ),
            true,
            "a bootstrap token asks for node certificates",
        ),
        (
            &joiner,
            attrs("watch", "corral.dev", "tasks", None, None, None),
            false,
            "and does nothing else",
        ),
        (
            &joiner,
            attrs("get", "", "secrets", None, Some("a"), Some("s")),
            false,
            "nor reads secrets",
        ),
        (
            &node,
            attrs(
                "patch",
                "corral.dev",
                "tasks",
                Some("status"),
                Some("a"),
                Some("t"),
            ),
            false,
            "RBAC grants nodes nothing: the Node authorizer decides for them",
        ),
        (
            &node,
            attrs("create", "corral.dev", "jobs", None, Some("a"), None),
            false,
            "nodes run no jobs",
        ),
        (
            &scheduler,
            attrs(
                "create",
                "corral.dev",
                "tasks",
                Some("binding"),
                Some("a"),
                Some("t"),
            ),
            true,
            "the scheduler binds",
        ),
        (
            &scheduler,
            attrs(
                "patch",
                "corral.dev",
                "tasks",
                Some("status"),
                Some("a"),
                Some("t"),
            ),
            true,
            "and writes victims' and waiting tasks' status",
        ),
        (
            &scheduler,
            attrs("create", "corral.dev", "tasks", None, Some("a"), None),
            false,
            "but creates no task",
        ),
        (
            &scheduler,
            attrs("get", "", "secrets", None, Some("a"), Some("s")),
            false,
            "nor reads secrets",
        ),
        (
            &manager,
            attrs("create", "corral.dev", "tasks", None, Some("a"), None),
            true,
            "the controllers create tasks",
        ),
        (
            &manager,
            attrs("use", "corral.dev", "roles", None, Some("a"), Some("web")),
            true,
            "on the role their job names",
        ),
        (
            &manager,
            attrs(
                "patch",
                "corral.dev",
                "jobs",
                Some("status"),
                Some("a"),
                Some("j"),
            ),
            true,
            "and write job status",
        ),
        (
            &manager,
            attrs(
                "create",
                "corral.dev",
                "tasks",
                Some("binding"),
                Some("a"),
                Some("t"),
            ),
            false,
            "but bind nothing",
        ),
        (
            &manager,
            attrs("update", "corral.dev", "jobs", None, Some("a"), Some("j")),
            false,
            "nor change a team's job",
        ),
        (
            &manager,
            attrs(
                "create",
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                None,
                None,
                None,
            ),
            false,
            "nor grant anything",
        ),
        (
            &admin,
            attrs("delete", "corral.dev", "quotas", None, None, Some("q")),
            true,
            "cluster-admin",
        ),
    ];
    for (u, a, want, why) in cases {
        assert_eq!(p.allows(u, &a), want, "{why}");
    }
}
