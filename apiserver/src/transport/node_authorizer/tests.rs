use super::*;
use crate::transport::rbac::tests::attrs;

fn selected(mut a: Attributes, selector: &str) -> Attributes {
    a.field_selector = Some(selector.into());
    a
}

#[test]
fn a_node_reaches_its_own_objects_and_nothing_else() {
    let lease = Some(LEASE_NAMESPACE);
    let cd = "corral.dev";
    let co = "coordination.k8s.io";
    // (request, task bound to n1?, allowed for n1?)
    let cases: Vec<(Attributes, bool, bool)> = vec![
        (
            attrs("get", cd, "nodes", None, None, Some("n1")),
            false,
            true,
        ),
        (
            attrs("patch", cd, "nodes", None, None, Some("n1")),
            false,
            true,
        ),
        (
            attrs("patch", cd, "nodes", None, None, Some("n2")),
            false,
            false,
        ),
        (
            attrs("delete", cd, "nodes", None, None, Some("n1")),
            false,
            false,
        ),
        (attrs("create", cd, "nodes", None, None, None), false, true),
        (
            attrs(
                "create",
                "authorization.k8s.io",
                "subjectaccessreviews",
                None,
                None,
                None,
            ),
            false,
            true,
        ),
        (
            attrs(
                "list",
                "authorization.k8s.io",
                "subjectaccessreviews",
                None,
                None,
                None,
            ),
            false,
            false,
        ),
        (attrs("list", cd, "nodes", None, None, None), false, false),
        (
            selected(
                attrs("watch", cd, "nodes", None, None, None),
                "metadata.name=n1",
            ),
            false,
            true,
        ),
        (
            attrs("patch", cd, "nodes", Some("status"), None, Some("n1")),
            false,
            true,
        ),
        (
            attrs("patch", cd, "nodes", Some("status"), None, Some("n2")),
            false,
            false,
        ),
        (
            attrs("patch", co, "leases", None, lease, Some("n1")),
            false,
            true,
        ),
        (
            attrs("patch", co, "leases", None, lease, Some("n2")),
            false,
            false,
        ),
        (
            attrs("patch", co, "leases", None, Some("default"), Some("n1")),
            false,
            false,
        ),
        (
            attrs("delete", co, "leases", None, lease, Some("n1")),
            false,
            false,
        ),
        // Tasks: only those bound here, only their status.
        (attrs("list", cd, "tasks", None, None, None), false, false),
        (
            selected(
                attrs("list", cd, "tasks", None, None, None),
                "spec.nodeName=n1",
            ),
            false,
            true,
        ),
        (
            selected(
                attrs("watch", cd, "tasks", None, Some("a"), None),
                "spec.nodeName==n1",
            ),
            false,
            true,
        ),
        (
            selected(
                attrs("watch", cd, "tasks", None, None, None),
                "spec.nodeName=n2",
            ),
            false,
            false,
        ),
        (
            selected(
                attrs("watch", cd, "tasks", None, None, None),
                "spec.nodeName!=n1",
            ),
            false,
            false,
        ),
        (
            attrs("get", cd, "tasks", None, Some("a"), Some("t")),
            true,
            true,
        ),
        (
            attrs("get", cd, "tasks", None, Some("a"), Some("t")),
            false,
            false,
        ),
        (
            attrs("patch", cd, "tasks", Some("status"), Some("a"), Some("t")),
            true,
            true,
        ),
        (
            attrs("patch", cd, "tasks", Some("status"), Some("a"), Some("t")),
            false,
            false,
        ),
        (
            attrs("patch", cd, "tasks", None, Some("a"), Some("t")),
            true,
            false,
        ),
        (
            attrs("create", cd, "tasks", None, Some("a"), None),
            false,
            false,
        ),
        (
            attrs("create", cd, "tasks", Some("binding"), Some("a"), Some("t")),
            true,
            false,
        ),
        (
            attrs("get", cd, "tasks", Some("log"), Some("a"), Some("t")),
            true,
            false,
        ),
        (
            attrs("create", "", "events", None, Some("default"), None),
            false,
            true,
        ),
        (
            attrs("get", "", "secrets", None, Some("a"), Some("s")),
            false,
            false,
        ),
        (
            attrs("list", cd, "jobs", None, Some("a"), None),
            false,
            false,
        ),
        (
            attrs("create", "", "namespaces", None, None, None),
            false,
            false,
        ),
    ];
    for (a, bound, want) in cases {
        assert_eq!(
            node_allows("n1", &a, || bound, |_| false),
            want,
            "{a:?} bound={bound}"
        );
    }
}

#[test]
fn only_node_credentials_get_an_opinion() {
    let registry = Catalog::standard();
    let authz = NodeAuthorizer::new(None, &registry);
    let node = User {
        name: "system:node:n1".into(),
        groups: vec!["system:nodes".into()],
        method: crate::transport::auth::AuthMethod::ClientCertificate,
    };
    let lease = attrs(
        "patch",
        "coordination.k8s.io",
        "leases",
        None,
        Some(LEASE_NAMESPACE),
        Some("n1"),
    );
    assert!(authz.allows(&node, &lease));
    // The name alone, or the group alone, is not a node.
    let name_only = User {
        groups: Vec::new(),
        ..node.clone()
    };
    let group_only = User {
        name: "n1".into(),
        ..node.clone()
    };
    assert!(!authz.allows(&name_only, &lease));
    assert!(!authz.allows(&group_only, &lease));
    assert_eq!(authz.rules(&node, "default"), None);
    assert_eq!(authz.rules(&group_only, "default"), Some(Rules::default()));
    // Without a cache, no single task is known to be bound here.
    let status = attrs(
        "patch",
        "corral.dev",
        "tasks",
        Some("status"),
        Some("a"),
        Some("t"),
    );
    assert!(!authz.allows(&node, &status));
}

#[test]
fn a_node_reads_only_the_secrets_its_tasks_read() {
    let get = |name: &str| attrs("get", "", "secrets", None, Some("a"), Some(name));
    let db = |r: Reads<'_>| r == Reads::Secret("db");
    assert!(node_allows("n1", &get("db"), || false, db));
    assert!(!node_allows("n1", &get("other"), || false, db));
    assert!(!node_allows("n1", &get("db"), || false, |_| false));
    let list = attrs("list", "", "secrets", None, Some("a"), None);
    assert!(
        !node_allows("n1", &list, || false, |_| true),
        "one by one, never a list"
    );
    let task = serde_json::json!({"spec": {"container": {"env": [
        {"name": "A", "value": "x"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}}});
    assert!(task_reads(&task, Reads::Secret("db")));
    assert!(!task_reads(&task, Reads::Secret("other")));
    assert!(!task_reads(&task, Reads::Endpoints("db")));
    assert!(!task_reads(
        &serde_json::json!({"spec": {}}),
        Reads::Secret("db")
    ));
}

#[test]
fn a_node_lists_the_endpoints_of_the_jobs_its_tasks_look_up_and_no_others() {
    let list = |verb: &str, selector: Option<&str>| {
        let mut a = attrs(
            verb,
            "discovery.k8s.io",
            "endpointslices",
            None,
            Some("a"),
            None,
        );
        a.label_selector = selector.map(str::to_owned);
        a
    };
    let master = |r: Reads<'_>| r == Reads::Endpoints("spark-master");
    let cases = [
        (
            list("list", Some("kubernetes.io/service-name=spark-master")),
            true,
        ),
        (
            list("list", Some("kubernetes.io/service-name==spark-master,x=y")),
            true,
        ),
        (list("list", Some("kubernetes.io/service-name=web")), false),
        (list("list", Some("kubernetes.io/service-name!=web")), false),
        (
            list("list", Some("kubernetes.io/service-name in (spark-master)")),
            false,
        ),
        (list("list", None), false),
        (
            list("watch", Some("kubernetes.io/service-name=spark-master")),
            false,
        ),
        (
            list("get", Some("kubernetes.io/service-name=spark-master")),
            false,
        ),
        (
            list("create", Some("kubernetes.io/service-name=spark-master")),
            false,
        ),
    ];
    for (a, want) in cases {
        assert_eq!(node_allows("n1", &a, || false, master), want, "{a:?}");
    }
    let task = serde_json::json!({"spec": {"container": {"env": [
        {"name": "M", "valueFrom": {"endpointRef": {"job": "spark-master", "port": "spark"}}}]}}});
    assert!(task_reads(&task, Reads::Endpoints("spark-master")));
    assert!(!task_reads(&task, Reads::Endpoints("web")));
    assert!(!task_reads(&task, Reads::Secret("spark-master")));
}
