//! Borrowing limits: a role holds at most its guarantee plus its
//! borrowing limit of the regular pool, and says so when it waits.

use proptest::prelude::*;

use super::*;

fn capped(guarantee: i64, cap: i64) -> RoleInfo {
    let mut r = guaranteed(guarantee, true, true);
    r.borrowing_limit = Res::cpu_mem(cap * 1000, 0);
    r.borrow_capped[0] = true;
    r
}

#[test]
fn a_role_borrows_up_to_its_cap_and_no_further() {
    let mut s = Snapshot::new();
    s.upsert_node(node("n1", 10, 64));
    s.upsert_role("r1", capped(2, 1));
    let tasks: Vec<SchedTask> = (0..5)
        .map(|i| {
            TaskB::new(&format!("t{i}"))
                .role("r1")
                .cpus(1)
                .mem_gi(0)
                .created(i)
                .t()
        })
        .collect();
    let c = run_cycle(&mut s, tasks, Policy::BinPack);
    assert_eq!(c.bound.len(), 3, "guarantee 2 plus 1 borrowed");
    for (t, why) in &c.pending {
        assert!(
            matches!(why, Unplaced::Borrowing { role, needed: 4000, cap: 3000, .. } if role == "r1"),
            "{why:?}"
        );
        let e = explain(&s, t, why, at(0));
        assert_eq!(e.reasons[0].kind, PendingReasonKind::BorrowingLimitExceeded);
        assert!(e.summary.contains("borrowing limit of 3"), "{}", e.summary);
    }
    // Revocable work runs on the revocable pool, outside the cap.
    let mut n = node("n2", 1, 64);
    n.revocable = Res::cpu_mem(2000, GI);
    s.upsert_node(n);
    let r = TaskB::new("rev")
        .role("r1")
        .tier(Tier::Revocable)
        .cpus(1)
        .mem_gi(0)
        .t();
    assert_eq!(run_cycle(&mut s, vec![r], Policy::BinPack).bound.len(), 1);
}

proptest! {
    #[test]
    fn no_role_holds_more_than_its_guarantee_and_borrowing_limit(
        guarantee in 0i64..6,
        cap in 0i64..6,
        nodes in proptest::collection::vec(1i64..8, 1..5),
        tasks in proptest::collection::vec((1i64..4, 0usize..2), 0..30),
    ) {
        let mut s = Snapshot::new();
        for (i, c) in nodes.iter().enumerate() {
            s.upsert_node(node(&format!("n{i}"), *c, 64));
        }
        s.upsert_role("r1", capped(guarantee, cap));
        let tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(i, (cpus, role))| TaskB::new(&format!("t{i}")).role(["r1", "r2"][role]).cpus(cpus).mem_gi(0).t())
            .collect();
        run_cycle(&mut s, tasks, Policy::BinPack);
        prop_assert!(s.consistent());
        prop_assert!(s.regular_usage_with_children("r1").0[0] <= (guarantee + cap) * 1000);
    }
}
