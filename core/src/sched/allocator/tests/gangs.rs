//! Gangs and preemption: a gang that fits whole only by preempting plans
//! every member's room at once, holds it until all of it is free, and is
//! then bound in one cycle; a gang that cannot be planned whole preempts
//! no one. Property-tested with victims stopping over later cycles: no
//! cycle ever leaves a gang part-bound.

use proptest::prelude::*;

use super::*;

fn member(i: usize, size: u32) -> SchedTask {
    let mut t = task(&format!("spark-{i}"), "spark", 2, Tier::Preferred, 0);
    t.gang = Some(size);
    t
}

fn gang_bound(d: &Decisions) -> usize {
    d.bound
        .iter()
        .filter(|(k, _)| k.starts_with("default/spark-"))
        .count()
}

#[test]
fn a_gang_preempts_for_all_of_itself_and_is_bound_together() {
    let mut s = cluster(&[4, 2]);
    running(&mut s, task("low", "batch", 4, Tier::Preemptible, 0), 0);
    let mut a = Allocator::new(Policy::BinPack, Rules::default());
    let gang: Vec<SchedTask> = (0..3).map(|i| member(i, 3)).collect();
    let d = a.cycle(&mut s, gang.clone(), at(1000));
    assert_eq!(gang_bound(&d), 0, "nothing bound while room is being freed");
    assert_eq!(
        d.evictions
            .iter()
            .map(|e| e.victim.key.as_str())
            .collect::<Vec<_>>(),
        vec!["default/low"]
    );
    let holding = d
        .pending
        .iter()
        .filter(|(_, why)| matches!(why, Unplaced::Preempting { .. }))
        .count();
    assert_eq!(holding, 3, "every member holds its room: {:?}", d.pending);
    // The victim is still going: the gang waits, whole.
    let d = a.cycle(&mut s, gang.clone(), at(1001));
    assert_eq!(gang_bound(&d), 0);
    assert!(d.evictions.is_empty(), "no need is paid for twice");
    // Gone: all three at once.
    a.gone("default/low");
    let d = a.cycle(&mut s, gang, at(1002));
    assert_eq!(gang_bound(&d), 3, "{:?}", d.pending);
}

#[test]
fn a_gang_that_cannot_be_planned_whole_preempts_no_one() {
    let mut s = cluster(&[2, 2]);
    running(&mut s, task("low", "batch", 2, Tier::Preemptible, 0), 0);
    // A preferred peer on the other node cannot be preempted.
    running(&mut s, task("peer", "web", 2, Tier::Preferred, 5), 1);
    let mut a = Allocator::new(Policy::BinPack, Rules::default());
    let gang: Vec<SchedTask> = (0..2).map(|i| member(i, 2)).collect();
    let d = a.cycle(&mut s, gang, at(1000));
    assert!(d.evictions.is_empty(), "half a gang frees nothing");
    assert_eq!(gang_bound(&d), 0);
    assert!(
        d.pending
            .iter()
            .all(|(_, why)| matches!(why, Unplaced::Gang { .. }))
    );
}

proptest! {
    #[test]
    fn no_cycle_leaves_a_gang_part_bound(
        nodes in proptest::collection::vec(1i64..6, 1..5),
        fillers in proptest::collection::vec((0usize..5, 1i64..3, proptest::bool::ANY), 0..12),
        size in 1u32..5,
        extra in 0usize..2,
        stops in proptest::collection::vec(proptest::bool::ANY, 4),
    ) {
        let mut s = cluster(&nodes);
        for (i, (n, cpus, preferred)) in fillers.iter().enumerate() {
            let tier = if *preferred { Tier::Preferred } else { Tier::Preemptible };
            let t = task(&format!("f{i}"), "fill", *cpus, tier, 0);
            let n = NodeId::try_from(*n % nodes.len()).unwrap_or(0);
            let _ = s.bind(t, n);
        }
        let mut a = Allocator::new(Policy::BinPack, Rules::default());
        let gang: Vec<SchedTask> = (0..size as usize + extra).map(|i| member(i, size)).collect();
        let mut bound: BTreeSet<String> = BTreeSet::new();
        for (c, stop) in stops.iter().enumerate() {
            let pending: Vec<SchedTask> = gang.iter().filter(|t| !bound.contains(&t.key)).cloned().collect();
            let d = a.cycle(&mut s, pending, at(1000 + c as i64));
            for (k, _) in &d.bound {
                if k.starts_with("default/spark-") {
                    bound.insert(k.clone());
                    a.confirmed(&mut s, k);
                }
            }
            let n = bound.len();
            prop_assert!(n == 0 || n >= size as usize, "{} of a gang of {} bound after cycle {}", n, size, c);
            prop_assert!(s.consistent());
            // Victims stop (or not yet).
            if *stop {
                let going: Vec<String> = a.going.keys().cloned().collect();
                for v in going {
                    s.unbind(&v);
                    a.gone(&v);
                }
            }
        }
    }
}
