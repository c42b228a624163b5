use super::*;

fn on(node: &str) -> Binding {
    Binding {
        node: node.into(),
        ..Default::default()
    }
}

fn task(node: Option<&str>, phase: Option<&str>) -> Value {
    let mut t = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "web-0-0", "namespace": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"job": "web", "role": "web", "instanceId": 0}});
    if let Some(n) = node {
        t["spec"]["nodeName"] = json!(n);
    }
    if let Some(p) = phase {
        t["status"] = json!({"phase": p});
    }
    t
}

#[test]
fn a_binding_names_a_node_and_nothing_else() {
    let ok = json!({"kind": "Binding", "metadata": {"name": "t", "resourceVersion": "7"}, "target": {"kind": "Node", "name": "n1"}});
    assert_eq!(
        Binding::parse("t", &ok).expect("a binding"),
        Binding {
            node: "n1".into(),
            precondition: Some(7),
            ..Default::default()
        }
    );
    let cases = [
        (json!({"target": {}}), 422, "target.name"),
        (json!({"target": {"name": "N_1"}}), 422, "target.name"),
        (
            json!({"target": {"kind": "Pod", "name": "n1"}}),
            422,
            "target.kind",
        ),
        (
            json!({"metadata": {"name": "other"}, "target": {"name": "n1"}}),
            400,
            "",
        ),
        (json!({"kind": "Task", "target": {"name": "n1"}}), 400, ""),
        (
            json!({"metadata": {"resourceVersion": "x"}, "target": {"name": "n1"}}),
            400,
            "",
        ),
    ];
    for (body, code, field) in cases {
        let err = Binding::parse("t", &body).expect_err("refused");
        assert_eq!(err.code().as_u16(), code, "{body}");
        if !field.is_empty() {
            assert_eq!(
                err.status()["details"]["causes"][0]["field"],
                field,
                "{body}"
            );
        }
    }
}

#[test]
fn binding_sets_the_node_the_phase_its_event_and_the_condition_at_once() {
    let now: jiff::Timestamp = "2026-01-01T00:00:05Z".parse().expect("time");
    let next = bound(&task(None, None), &on("n1"), now).expect("bound");
    assert_eq!(next["spec"]["nodeName"], "n1");
    assert_eq!(next["status"]["phase"], "ASSIGNED");
    let events: Vec<&str> = next["status"]["taskEvents"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(events, ["PENDING", "ASSIGNED"]);
    // History starts at the task's creation when its PENDING step is missing.
    assert_eq!(
        next["status"]["taskEvents"][0]["timestamp"],
        "2026-01-01T00:00:00.000000Z"
    );
    assert_eq!(next["status"]["conditions"][0]["reason"], "Assigned");
    assert_eq!(next["status"]["conditions"][0]["status"], "True");
}

#[test]
fn a_bound_or_ended_task_is_not_bound_again() {
    let now = jiff::Timestamp::UNIX_EPOCH;
    let already = bound(&task(Some("n2"), Some("ASSIGNED")), &on("n1"), now).expect_err("bound");
    assert!(already.contains("already bound to node n2"), "{already}");
    for phase in ["KILLED", "RUNNING", "THROTTLED"] {
        let why = bound(&task(None, Some(phase)), &on("n1"), now).expect_err(phase);
        assert!(why.contains("cannot be bound"), "{phase}: {why}");
    }
}

#[test]
fn a_binding_gives_a_task_exactly_its_ports_and_records_them_with_the_address() {
    let now: jiff::Timestamp = "2026-01-01T00:00:05Z".parse().expect("time");
    let mut t = task(None, None);
    t["spec"]["ports"] = json!([{"name": "http"}, {"name": "admin", "port": 9090}]);
    let body = json!({"target": {"name": "n1"}, "hostIP": "10.0.0.7",
        "ports": [{"name": "http", "port": 31000}, {"name": "admin", "port": 9090}]});
    let b = Binding::parse("t", &body).expect("a binding");
    let next = bound(&t, &b, now).expect("bound");
    assert_eq!(next["status"]["hostIP"], "10.0.0.7");
    assert_eq!(
        next["status"]["ports"],
        json!([{"name": "http", "port": 31000}, {"name": "admin", "port": 9090}])
    );
    let port = |name: &str, p: u16| corral_api::ports::TaskPort {
        name: name.into(),
        port: p,
    };
    for (ports, why) in [
        (vec![], "needs"),
        (vec![port("http", 31000)], "needs"),
        (
            vec![port("admin", 9090), port("http", 31000)],
            "in that order",
        ),
        (
            vec![port("http", 31000), port("admin", 9091)],
            "fixed at 9090",
        ),
        (
            vec![port("http", 0), port("admin", 9090)],
            "the binding gives 0",
        ),
    ] {
        let b = Binding { ports, ..on("n1") };
        let err = bound(&t, &b, now).expect_err("refused");
        assert!(err.contains(why), "{err}");
    }
    // A task naming no ports takes none.
    let b = Binding {
        ports: vec![port("http", 31000)],
        ..on("n1")
    };
    assert!(bound(&task(None, None), &b, now).is_err());
    // Malformed ports and addresses are the binding's fault: 422 with the field.
    for (body, field) in [
        (
            json!({"target": {"name": "n1"}, "ports": [{"name": "http", "port": 70000}]}),
            "ports",
        ),
        (json!({"target": {"name": "n1"}, "ports": "http"}), "ports"),
        (json!({"target": {"name": "n1"}, "hostIP": ""}), "hostIP"),
        (json!({"target": {"name": "n1"}, "hostIP": 7}), "hostIP"),
    ] {
        let err = Binding::parse("t", &body).expect_err("refused");
        assert_eq!(err.code().as_u16(), 422, "{body}");
        assert_eq!(
            err.status()["details"]["causes"][0]["field"],
            field,
            "{body}"
        );
    }
}
