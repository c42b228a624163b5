//! Nodes whose maintenance window is near: new services avoid them, other
//! work may still use them, and a waiting service says why.

use super::*;

#[test]
fn services_avoid_a_node_whose_window_is_near_batch_work_does_not() {
    let mut s = Snapshot::new();
    let mut n = node("n1", 8, 64);
    n.closing = true;
    s.upsert_node(n);
    let mut service = TaskB::new("svc").role("r1").cpus(1).t();
    service.long_running = true;
    let batch = TaskB::new("batch").role("r1").cpus(1).t();
    let c = run_cycle(&mut s, vec![service.clone(), batch], Policy::BinPack);
    assert_eq!(
        c.bound.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        vec!["default/batch"]
    );
    let (t, why) = &c.pending[0];
    assert_eq!(t.key, "default/svc");
    let e = explain(&s, t, why, at(0));
    assert!(
        e.summary
            .contains("1 node(s) have a maintenance window near"),
        "{}",
        e.summary
    );
    // Another node: the service goes there.
    s.upsert_node(node("n2", 8, 64));
    let c = run_cycle(&mut s, vec![service], Policy::BinPack);
    assert_eq!(c.bound.len(), 1);
    assert_eq!(s.node(c.bound[0].1).name, "n2");
}
