//! Host ports in placement: assigned per node, never twice, a taken fixed
//! port or a spent range explained, kept across a node's re-registration.

use super::*;

#[test]
fn tasks_on_one_node_get_different_ports_and_a_taken_fixed_port_is_explained() {
    let mut s = cluster(vec![with_ports(node("n1", 16, 64), 31000, 31002)]);
    let web = |n: &str| TaskB::new(n).job("web").ports(&[None, Some(9090)]);
    let first = web("w0").t();
    let id = place(&s, &first, Policy::BinPack).expect("placed");
    s.bind(first, id).expect("bind");
    assert_eq!(
        s.binding("default/w0").map(|b| b.ports.clone()),
        Some(vec![31000, 9090])
    );
    // A second instance wants 9090 too: it is held on the only node.
    let second = web("w1").t();
    let Err(Unplaced::NoNode(f)) = place(&s, &second, Policy::BinPack) else {
        panic!("9090 is taken")
    };
    assert_eq!((f.port_taken, f.ports_exhausted), (1, 0));
    let e = explain(&s, &second, &Unplaced::NoNode(f), at(1));
    let r = &e.reasons[0];
    assert_eq!(
        (r.kind, r.resource.as_deref(), r.subject.as_deref()),
        (
            PendingReasonKind::InsufficientResources,
            Some("ports"),
            Some("9090")
        )
    );
    assert!(
        e.summary.contains("fixed port(s) it needs (9090)"),
        "{}",
        e.summary
    );
    // Assigned ports only: two more fit, then the range is spent.
    for n in ["a0", "a1"] {
        let t = TaskB::new(n).job("api").ports(&[None]).t();
        let id = place(&s, &t, Policy::BinPack).expect("placed");
        s.bind(t, id).expect("bind");
    }
    let ports: Vec<u16> = ["default/a0", "default/a1"]
        .iter()
        .flat_map(|k| s.binding(k).expect("bound").ports.clone())
        .collect();
    assert_eq!(ports, vec![31001, 31002]);
    let t = TaskB::new("a2").job("api").ports(&[None]).t();
    let Err(Unplaced::NoNode(f)) = place(&s, &t, Policy::BinPack) else {
        panic!("the range is spent")
    };
    assert_eq!((f.port_taken, f.ports_exhausted), (0, 1));
    let e = explain(&s, &t, &Unplaced::NoNode(f), at(1));
    assert!(
        e.summary.contains("fewer than 1 free port(s)"),
        "{}",
        e.summary
    );
    // A task that ends gives its ports back.
    s.unbind("default/w0");
    assert!(place(&s, &second, Policy::BinPack).is_ok());
    assert!(place(&s, &t, Policy::BinPack).is_ok());
    assert!(s.consistent());
}

#[test]
fn a_task_seen_bound_keeps_the_ports_it_was_given_and_nodes_without_ranges_assign_none() {
    let mut s = cluster(vec![
        with_ports(node("n1", 4, 16), 31000, 31010),
        node("bare", 64, 256),
    ]);
    let n1 = s.node_id("n1").expect("n1");
    s.bind(TaskB::new("seen").ports(&[Some(31005)]).t(), n1)
        .expect("bind");
    assert!(s.node(n1).ports.is_used(31005));
    // `bare` is roomier but offers no ports: only n1 takes a task naming one.
    let t = TaskB::new("t").job("other").ports(&[None]).t();
    assert_eq!(
        name(&s, place(&s, &t, Policy::Spread).expect("placed")),
        "n1"
    );
    // Re-registering a node (new ranges) keeps the ports its tasks hold.
    s.upsert_node(with_ports(node("n1", 4, 16), 31000, 31020));
    assert!(s.node(n1).ports.is_used(31005));
    assert_eq!(s.node(n1).ports.free(), 20);
    assert!(
        s.bind(TaskB::new("clash").job("x").ports(&[Some(31005)]).t(), n1)
            .is_err()
    );
    assert!(s.consistent());
}
