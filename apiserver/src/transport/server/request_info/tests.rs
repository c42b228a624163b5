use super::*;

fn info(method: Method, path: &str, query: Option<&str>) -> RequestInfo {
    RequestInfo::new(&Catalog::standard(), &method, path, query, false)
}

/// `(kind, namespace, name, subresource)` of a resource request.
type Named<'a> = (
    &'static str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'static str>,
);

fn named(i: &RequestInfo) -> Option<Named<'_>> {
    match &i.target {
        Target::Resource(t) => Some((
            t.desc.kind,
            t.namespace.as_deref(),
            t.name.as_deref(),
            t.sub.map(Subresource::name),
        )),
        _ => None,
    }
}

#[test]
fn a_path_names_its_resource_once() {
    let cases = [
        (
            "/apis/corral.dev/v1alpha1/namespaces/a/tasks/t/status/",
            Some(("Task", Some("a"), Some("t"), Some("status"))),
        ),
        (
            "/apis/corral.dev/v1alpha1/namespaces/a/tasks/t/binding",
            Some(("Task", Some("a"), Some("t"), Some("binding"))),
        ),
        (
            "/apis/corral.dev/v1alpha1/namespaces/a/tasks/t/log",
            Some(("Task", Some("a"), Some("t"), Some("log"))),
        ),
        (
            "/apis/corral.dev/v1alpha1/namespaces/a/jobs/j/scale",
            Some(("Job", Some("a"), Some("j"), Some("scale"))),
        ),
        (
            "/apis/corral.dev/v1alpha1/nodes/n1",
            Some(("Node", None, Some("n1"), None)),
        ),
        (
            "/api/v1/namespaces/a",
            Some(("Namespace", None, Some("a"), None)),
        ),
        (
            "/api/v1/namespaces/a/finalize",
            Some(("Namespace", None, Some("a"), None)),
        ),
        (
            "/api/v1/namespaces/a/configmaps",
            Some(("ConfigMap", Some("a"), None, None)),
        ),
        // Not resources: discovery, unknown kinds and subresources.
        ("/apis/corral.dev/v1alpha1", None),
        (
            "/apis/corral.dev/v1alpha1/namespaces/a/jobs/j/binding",
            None,
        ),
        ("/apis/corral.dev/v1alpha1/namespaces/a/widgets", None),
        ("/api/v1/namespaces/a/configmaps/c/log", None),
        ("/metrics", None),
        ("/", None),
    ];
    for (path, want) in cases {
        assert_eq!(named(&info(Method::GET, path, None)), want, "{path}");
    }
}

#[test]
fn verbs_attributes_and_long_running_requests() {
    let tasks = "/apis/corral.dev/v1alpha1/namespaces/a/tasks";
    let cases = [
        (Method::GET, tasks.to_owned(), None, "list", false),
        (
            Method::GET,
            tasks.to_owned(),
            Some("watch=1"),
            "watch",
            true,
        ),
        (Method::GET, format!("{tasks}/t"), None, "get", false),
        (
            Method::GET,
            format!("{tasks}/t/log"),
            Some("follow=true"),
            "get",
            true,
        ),
        (Method::POST, tasks.to_owned(), None, "create", false),
        (
            Method::PUT,
            format!("{tasks}/t/status"),
            None,
            "update",
            false,
        ),
        (Method::PATCH, format!("{tasks}/t"), None, "patch", false),
        (Method::DELETE, format!("{tasks}/t"), None, "delete", false),
        (
            Method::DELETE,
            tasks.to_owned(),
            None,
            "deletecollection",
            false,
        ),
        (Method::GET, "/healthz".to_owned(), None, "get", true),
        (Method::GET, "/apis".to_owned(), None, "get", false),
    ];
    for (method, path, query, verb, long) in cases {
        let i = info(method.clone(), &path, query);
        assert_eq!(
            (i.verb().as_str(), i.long_running()),
            (verb, long),
            "{method} {path}"
        );
    }
    let selected = info(
        Method::GET,
        tasks,
        Some("fieldSelector=spec.nodeName%3Dn1&watch=true"),
    );
    let attrs = selected.attributes().expect("a resource request");
    assert_eq!(attrs.field_selector.as_deref(), Some("spec.nodeName=n1"));
    assert_eq!(
        (attrs.verb.as_str(), attrs.namespace.as_deref()),
        ("watch", Some("a"))
    );
    let review = info(
        Method::POST,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        None,
    );
    assert!(matches!(review.target, Target::Virtual { .. }));
    assert_eq!(review.verb(), "create");
    let join = info(
        Method::POST,
        "/apis/corral.dev/v1alpha1/nodecertificaterequests",
        None,
    );
    assert_eq!(
        join.attributes().map(|a| a.resource),
        Some("nodecertificaterequests".to_owned())
    );
    assert!(
        info(Method::GET, "/openapi/v3", None)
            .attributes()
            .is_none()
    );
}
