//! Property tests for the scheduler's invariants over random clusters and
//! tasks: no over-commit, quotas, reservations, guarantees, preemption
//! and the equivalence classes.

use super::*;
use proptest::prelude::*;

fn arb_cluster() -> impl Strategy<Value = Snapshot> {
    proptest::collection::vec(
        (1i64..16, 1i64..64, 0i64..4, proptest::bool::ANY, 0u16..4),
        1..12,
    )
    .prop_map(|ns| {
        let mut s = Snapshot::new();
        for (i, (c, m, reserve, healthy, ports)) in ns.into_iter().enumerate() {
            // Small port ranges (some none), so ports run out too.
            let mut n = match ports {
                0 => node(&format!("n{i}"), c, m),
                p => with_ports(node(&format!("n{i}"), c, m), 100, 100 + p),
            };
            n.healthy = healthy || i == 0;
            if reserve > 0 {
                n.reserved.insert(
                    "r1".into(),
                    Res::cpu_mem((reserve * 1000).min(c * 1000), GI),
                );
            }
            n.revocable = Res::cpu_mem(1000, GI);
            s.upsert_node(n);
        }
        s.upsert_role("r2", limited(6, None));
        s
    })
}

fn arb_tasks() -> impl Strategy<Value = Vec<SchedTask>> {
    let ports = proptest::collection::vec(proptest::option::weighted(0.3, 99u16..104), 0..3);
    let ports = proptest::option::weighted(0.3, ports);
    proptest::collection::vec((0usize..3, 1i64..6, 0usize..3, -2i32..3, ports), 0..60).prop_map(
        |ts| {
            ts.into_iter()
                .enumerate()
                .map(|(i, (role, cpus, tier, prio, ports))| {
                    let tier = [Tier::Preferred, Tier::Preemptible, Tier::Revocable][tier];
                    TaskB::new(&format!("t{i}"))
                        .ports(&ports.unwrap_or_default())
                        .role(["r1", "r2", "r3"][role])
                        .cpus(cpus)
                        .tier(tier)
                        .priority(prio)
                        .created(i as i64)
                        .started(0)
                        .t()
                })
                .collect()
        },
    )
}

proptest! {
    #[test]
    fn skipping_tasks_like_an_unplaceable_one_changes_no_decision(s in arb_cluster(), tasks in arb_tasks(), spread in proptest::bool::ANY) {
        let policy = if spread { Policy::Spread } else { Policy::BinPack };
        let (mut a, mut b) = (s.clone(), s);
        let fast = run_cycle(&mut a, tasks.clone(), policy);
        let every = super::super::queue::run_cycle_trying_every_task(&mut b, tasks, policy);
        prop_assert_eq!(&fast.bound, &every.bound);
        // The same tasks left pending. A skipped task keeps its class's
        // reason, still true since a cycle only takes room (trying it
        // might have found another one true as well: quota spent since).
        let reasons = |c: &Cycle| c.pending.iter().map(|(t, _)| t.key.clone()).collect::<Vec<_>>();
        prop_assert_eq!(reasons(&fast), reasons(&every));
    }

    #[test]
    fn a_cycle_never_over_commits_nor_breaks_quota_or_reservations(mut s in arb_cluster(), tasks in arb_tasks(), spread in proptest::bool::ANY) {
        let policy = if spread { Policy::Spread } else { Policy::BinPack };
        run_cycle(&mut s, tasks, policy);
        prop_assert!(s.consistent());
        prop_assert!(s.role_usage_with_children("r2").0[0] <= 6000, "quota limit exceeded");
        let mut held = std::collections::BTreeSet::new();
        for b in s.bound.values() {
            prop_assert!(b.from_reserved.is_zero() || s.node(b.node).reserved.contains_key(&b.task.role), "reserved capacity used by another role");
            prop_assert!(s.node(b.node).usable());
            prop_assert_eq!(b.ports.len(), b.task.ports.len());
            for (want, got) in b.task.ports.iter().zip(&b.ports) {
                prop_assert!(want.is_none_or(|w| w == *got), "fixed port {:?} given as {}", want, got);
                prop_assert!(held.insert((b.node, *got)), "port {} held twice on node {}", got, b.node);
                prop_assert!(s.node(b.node).ports.is_used(*got));
            }
        }
    }

    #[test]
    fn what_a_role_does_not_lend_stays_free_for_it(mut s in arb_cluster(), tasks in arb_tasks(), g3 in 1i64..6, g1 in 0i64..6) {
        s.upsert_role("r3", guaranteed(g3, false, true));
        s.upsert_role("r1", guaranteed(g1, true, true));
        let total = s.total().0[0];
        run_cycle(&mut s, tasks, Policy::BinPack);
        prop_assert!(s.consistent());
        if total >= g3 * 1000 {
            let free = total - s.regular_used.0[0];
            let unused = (g3 * 1000 - s.regular_usage_with_children("r3").0[0]).max(0);
            prop_assert!(free >= unused, "free {free} < r3's unused guarantee {unused}");
        }
    }

    #[test]
    fn reclaims_take_only_from_borrowers_and_never_below_their_guarantee(mut s in arb_cluster(), tasks in arb_tasks(), g in 1i64..8, cpus in 1i64..4) {
        s.upsert_role("r3", guaranteed(g, true, true));
        s.upsert_role("r2", guaranteed(1, true, true));
        run_cycle(&mut s, tasks, Policy::BinPack);
        let p = TaskB::new("claimant").role("r3").cpus(cpus).mem_gi(0).t();
        let rules = Rules { min_runtime_seconds: 0, ..Rules::default() };
        if let Some(plan) = preempt::plan(&s, &p, at(100), &rules) {
            for v in plan.victims.iter().filter(|v| v.rule == Rule::Reclaim) {
                prop_assert!(v.role != "r3");
            }
            preempt::apply(&mut s, &plan, &p, at(100), &rules).expect("hold");
            if plan.victims.iter().any(|v| v.rule == Rule::Reclaim) {
                prop_assert!(s.regular_usage_with_children("r2").0[0] >= 1000 || plan.victims.iter().all(|v| v.role != "r2" || v.rule != Rule::Reclaim), "r2 taken below its guarantee");
            }
            prop_assert!(s.consistent());
        }
    }

    #[test]
    fn preemption_victims_rank_lower_and_the_preemptor_then_fits(mut s in arb_cluster(), tasks in arb_tasks(), cpus in 1i64..6) {
        run_cycle(&mut s, tasks, Policy::BinPack);
        let p = TaskB::new("preemptor").role("r1").tier(Tier::Preferred).priority(10).cpus(cpus).t();
        let rules = Rules { min_runtime_seconds: 0, ..Rules::default() };
        if let Some(plan) = preempt::plan(&s, &p, at(100), &rules) {
            for v in &plan.victims {
                prop_assert!(v.tier.rank() < p.tier.rank() || (v.tier == p.tier && v.role == p.role && v.priority < p.priority));
            }
            preempt::apply(&mut s, &plan, &p, at(100), &rules).expect("hold");
            preempt::release(&mut s, &p.key);
            prop_assert!(super::super::place::free_for_task(&p, s.node(plan.node)).fits(&p.request), "the preemptor does not fit after eviction");
            prop_assert!(s.consistent());
        }
    }
}
