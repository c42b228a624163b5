//! Gangs: a cycle binds a whole gang or none of it, and says why.

use proptest::prelude::*;

use super::*;

fn member(i: usize, job: &str, size: u32, cpus: i64) -> SchedTask {
    let name = job.rsplit('/').next().unwrap_or(job);
    let mut t = TaskB::new(&format!("{name}-{i}"))
        .job(name)
        .role("r1")
        .cpus(cpus)
        .created(i as i64)
        .t();
    t.gang = Some(size);
    t
}

#[test]
fn a_gang_that_does_not_fit_whole_binds_nothing_then_all_when_room_comes() {
    let mut s = Snapshot::new();
    s.upsert_node(node("n1", 2, 64));
    let gang: Vec<SchedTask> = (0..3).map(|i| member(i, "default/spark", 3, 1)).collect();
    let c = run_cycle(&mut s, gang.clone(), Policy::BinPack);
    assert!(c.bound.is_empty(), "two of three fit: none is bound");
    assert_eq!(s.bound_of_job("default/spark"), 0, "the room is given back");
    assert_eq!(c.pending.len(), 3);
    for (t, why) in &c.pending {
        match why {
            Unplaced::Gang {
                size: 3,
                bound: 0,
                placed: 2,
                first: Some(first),
            } => assert!(matches!(**first, Unplaced::NoNode(_)), "{why:?}"),
            other => panic!("{}: {other:?}", t.key),
        }
        let e = explain(&s, t, why, at(0));
        assert_eq!(e.reasons[0].kind, PendingReasonKind::GangIncomplete);
        assert!(e.summary.contains("none was bound"), "{}", e.summary);
    }
    // Other work is not held back by it.
    let alone = TaskB::new("alone").role("r1").cpus(1).t();
    let mut mixed = gang.clone();
    mixed.push(alone);
    let c = run_cycle(&mut s, mixed, Policy::BinPack);
    assert_eq!(c.bound.len(), 1, "{:?}", c.bound);
    s.unbind("default/alone");
    // A third node's worth of room: the whole gang at once.
    s.upsert_node(node("n2", 1, 64));
    let c = run_cycle(&mut s, gang, Policy::BinPack);
    assert_eq!(c.bound.len(), 3, "{:?}", c.pending);
    // A member replaced later needs only itself: the rest are bound.
    s.unbind("default/spark-1");
    let c = run_cycle(
        &mut s,
        vec![member(1, "default/spark", 3, 1)],
        Policy::BinPack,
    );
    assert_eq!(c.bound.len(), 1);
}

proptest! {
    /// No cycle ever binds part of a gang: after it, each gang's job has
    /// none of its cycle's members bound, or at least its size bound.
    #[test]
    fn no_cycle_binds_part_of_a_gang(
        nodes in proptest::collection::vec(1i64..6, 1..6),
        gangs in proptest::collection::vec((1usize..6, 1u32..6, 1i64..4), 1..5),
        loners in proptest::collection::vec(1i64..4, 0..8),
    ) {
        let mut s = Snapshot::new();
        for (i, c) in nodes.iter().enumerate() {
            s.upsert_node(node(&format!("n{i}"), *c, 64));
        }
        let mut tasks = Vec::new();
        for (g, (count, size, cpus)) in gangs.iter().enumerate() {
            let size = (*size).min(u32::try_from(*count).unwrap_or(1));
            for i in 0..*count {
                tasks.push(member(i, &format!("default/g{g}"), size, *cpus));
            }
        }
        for (i, cpus) in loners.iter().enumerate() {
            tasks.push(TaskB::new(&format!("l{i}")).role("r2").cpus(*cpus).t());
        }
        let c = run_cycle(&mut s, tasks, Policy::BinPack);
        prop_assert!(s.consistent());
        for (g, (count, size, _)) in gangs.iter().enumerate() {
            let size = (*size).min(u32::try_from(*count).unwrap_or(1));
            let job = format!("default/g{g}");
            let bound = s.bound_of_job(&job);
            prop_assert!(bound == 0 || bound >= size, "gang {} of {}: {} bound", job, size, bound);
            let in_cycle = c.bound.iter().filter(|(k, _)| k.starts_with(&format!("default/g{g}-"))).count();
            prop_assert_eq!(u32::try_from(in_cycle).unwrap_or(0), bound);
        }
    }
}
