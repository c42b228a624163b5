//! The allocator: the scenario as a table of cycles, the reports the
//! caller makes, and a property test over random clusters with churn
//! (replacements arriving, kills taking time, bindings refused).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use corral_api::Tier;
use corral_api::job::Constraints;
use corral_api::task::PendingReasonKind;

use super::*;
use crate::sched::place::explain;
use crate::sched::res::Res;
use crate::sched::snapshot::NodeState;

fn at(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + s).expect("time")
}

fn task(name: &str, job: &str, cpus: i64, tier: Tier, priority: i32) -> SchedTask {
    SchedTask {
        key: format!("default/{name}"),
        job: format!("default/{job}"),
        role: "ads".into(),
        request: Res::cpu_mem(cpus * 1000, 0),
        tier,
        priority,
        constraints: Constraints::default(),
        runtime: None,
        ports: Vec::new(),
        created: at(0),
        started: Some(at(0)),
        gang: None,
        long_running: false,
    }
}

fn cluster(cpus: &[i64]) -> Snapshot {
    let mut s = Snapshot::new();
    for (i, c) in cpus.iter().enumerate() {
        s.upsert_node(NodeState::new(&format!("n{i}"), Res::cpu_mem(c * 1000, 0)));
    }
    s
}

/// Binds `t` on node `n` as a task seen bound in the store.
fn running(s: &mut Snapshot, t: SchedTask, n: NodeId) {
    s.bind(t, n).expect("fits");
}

fn keys(bound: &[(String, NodeId)]) -> Vec<&str> {
    bound.iter().map(|(k, _)| k.as_str()).collect()
}

fn waiting_on(d: &Decisions, key: &str) -> Option<Vec<String>> {
    d.pending.iter().find_map(|(t, why)| match why {
        Unplaced::Preempting { victims, .. } if t.key == key => Some(victims.clone()),
        _ => None,
    })
}

/// Three 4-CPU nodes full of 1-CPU preemptible fillers; two preferred tasks
/// of 2 CPUs each. Exactly four fillers go, the replacements that arrive
/// meanwhile do not take the held room, and the preemptors are bound in the
/// first cycle after their victims stop.
#[test]
fn the_scenario_preempts_the_minimum_and_binds_the_preemptors_first() {
    let mut s = cluster(&[4, 4, 4]);
    for i in 0..12 {
        running(
            &mut s,
            task(&format!("filler-{i}"), "filler", 1, Tier::Preemptible, 0),
            i / 4,
        );
    }
    let mut a = Allocator::new(Policy::BinPack, Rules::default());
    let prod = [
        task("prod-0", "prod", 2, Tier::Preferred, 10),
        task("prod-1", "prod", 2, Tier::Preferred, 10),
    ];
    let d = a.cycle(&mut s, prod.to_vec(), at(1000));
    assert!(d.bound.is_empty());
    assert_eq!(d.evictions.len(), 4, "{:?}", d.evictions);
    let victims: BTreeSet<String> = d.evictions.iter().map(|e| e.victim.key.clone()).collect();
    assert_eq!(victims.len(), 4, "no victim twice");
    for p in &prod {
        let w = waiting_on(&d, &p.key).expect("waiting on its victims");
        assert_eq!(w.len(), 2);
        let e = explain(
            &s,
            p,
            &d.pending
                .iter()
                .find(|(t, _)| t.key == p.key)
                .expect("pending")
                .1,
            at(1000),
        );
        assert_eq!(e.reasons[0].kind, PendingReasonKind::PreemptionInProgress);
        assert!(
            e.summary.contains("waiting for 2 preempted task(s)"),
            "{}",
            e.summary
        );
    }
    assert!(victims.iter().all(|v| a.is_going(v)));

    // The victims' replacements arrive while the kills take their time: they
    // find no room (the freed room is held) and are explained; no second
    // preemption happens for the preemptors.
    let replacements: Vec<SchedTask> = (0..4)
        .map(|i| {
            let mut t = task(&format!("filler-r{i}"), "filler", 1, Tier::Preemptible, 0);
            t.started = None;
            t
        })
        .collect();
    let mut pending: Vec<SchedTask> = prod.to_vec();
    pending.extend(replacements.iter().cloned());
    let d = a.cycle(&mut s, pending.clone(), at(1001));
    assert!(d.bound.is_empty() && d.evictions.is_empty(), "{d:?}");
    for r in &replacements {
        let (_, why) = d
            .pending
            .iter()
            .find(|(t, _)| t.key == r.key)
            .expect("pending");
        assert!(matches!(why, Unplaced::NoNode(_)), "{why:?}");
    }

    // The victims stop: the preemptors are bound first, on their held nodes.
    for v in &victims {
        a.gone(v);
    }
    let d = a.cycle(&mut s, pending, at(1002));
    assert_eq!(keys(&d.bound), vec!["default/prod-0", "default/prod-1"]);
    assert!(d.evictions.is_empty());
    assert!(s.in_flight("default/prod-0") && s.in_flight("default/prod-1"));
    assert!(s.consistent());
    // Seen in the store: no longer in flight, the holds are done.
    a.confirmed(&mut s, "default/prod-0");
    a.confirmed(&mut s, "default/prod-1");
    assert!(!a.is_holding("default/prod-0") && !s.in_flight("default/prod-0"));
}

#[test]
fn a_binding_in_flight_is_never_a_victim() {
    let mut s = cluster(&[2]);
    let mut a = Allocator::new(Policy::BinPack, Rules::default());
    let mut fresh = task("fresh", "batch", 2, Tier::Preemptible, 0);
    fresh.started = None;
    let d = a.cycle(&mut s, vec![fresh], at(1000));
    assert_eq!(keys(&d.bound), vec!["default/fresh"]);
    // The binding is not yet seen: the task may still be PENDING in the store.
    let p = task("prod", "prod", 2, Tier::Preferred, 0);
    let d = a.cycle(&mut s, vec![p.clone()], at(1001));
    assert!(d.evictions.is_empty(), "{:?}", d.evictions);
    assert!(matches!(d.pending[0].1, Unplaced::NoNode(_)));
    a.confirmed(&mut s, "default/fresh");
    let d = a.cycle(&mut s, vec![p], at(1002));
    assert_eq!(d.evictions.len(), 1);
    assert_eq!(d.evictions[0].victim.key, "default/fresh");
}

#[test]
fn a_larger_victim_spares_the_smaller_ones_taken_before_it() {
    // Cheapest first takes the 1-CPU task (priority 0), then the 3-CPU one
    // (priority 1); the 3-CPU one alone makes room, so the 1-CPU one stays.
    let mut s = cluster(&[4]);
    running(&mut s, task("small", "a", 1, Tier::Preemptible, 0), 0);
    running(&mut s, task("large", "b", 3, Tier::Preemptible, 1), 0);
    let mut a = Allocator::new(Policy::BinPack, Rules::default());
    let d = a.cycle(
        &mut s,
        vec![task("prod", "prod", 3, Tier::Preferred, 0)],
        at(1000),
    );
    let victims: Vec<&str> = d.evictions.iter().map(|e| e.victim.key.as_str()).collect();
    assert_eq!(victims, vec!["default/large"]);
}

#[test]
fn a_refused_binding_holds_the_room_again_and_a_refused_eviction_releases_it() {
    let mut s = cluster(&[2, 2]);
    running(&mut s, task("v0", "a", 2, Tier::Preemptible, 0), 0);
    running(&mut s, task("v1", "a", 2, Tier::Preemptible, 0), 1);
    let mut a = Allocator::new(Policy::BinPack, Rules::default());
    let p = task("prod", "prod", 2, Tier::Preferred, 0);
    let d = a.cycle(&mut s, vec![p.clone()], at(1000));
    let victim = d.evictions[0].victim.key.clone();
    let node = d.evictions[0].node;
    a.gone(&victim);
    let d = a.cycle(&mut s, vec![p.clone()], at(1001));
    assert_eq!(d.bound, vec![(p.key.clone(), node)]);
    // The binding conflicts: the room is held again, and the next cycle binds
    // it there before anything else (a replacement included).
    a.bind_failed(&mut s, &p.key);
    assert!(a.is_holding(&p.key) && s.binding(&p.key).is_none());
    let mut other = task("other", "a", 2, Tier::Preemptible, 5);
    other.created = at(-10);
    let d = a.cycle(&mut s, vec![other, p.clone()], at(1002));
    assert_eq!(d.bound, vec![(p.key.clone(), node)]);
    assert!(s.consistent());

    // An eviction the store refuses: the hold goes, the victim may be put back.
    let mut s = cluster(&[2]);
    running(&mut s, task("v0", "a", 2, Tier::Preemptible, 0), 0);
    let mut a = Allocator::new(Policy::BinPack, Rules::default());
    let d = a.cycle(&mut s, vec![p.clone()], at(1000));
    assert_eq!(d.evictions.len(), 1);
    assert_eq!(
        a.eviction_failed(&mut s, "default/v0").as_deref(),
        Some("default/prod")
    );
    assert!(!a.is_holding(&p.key) && !a.is_going("default/v0"));
    running(&mut s, task("v0", "a", 2, Tier::Preemptible, 0), 0);
    assert!(s.consistent());
}

#[test]
fn a_lapsed_hold_lets_the_preemptor_compete_again() {
    let mut s = cluster(&[2]);
    running(&mut s, task("v0", "a", 2, Tier::Preemptible, 0), 0);
    let rules = Rules::default();
    let mut a = Allocator::new(Policy::BinPack, rules.clone());
    let p = task("prod", "prod", 2, Tier::Preferred, 0);
    a.cycle(&mut s, vec![p.clone()], at(1000));
    let d = a.cycle(&mut s, vec![p.clone()], at(1000 + rules.hold_seconds));
    assert!(waiting_on(&d, &p.key).is_some(), "not yet lapsed");
    // Past the hold the room is free again (its victim still going): the
    // preemptor is placed like anyone else, with no second preemption.
    let d = a.cycle(&mut s, vec![p.clone()], at(1001 + rules.hold_seconds));
    assert_eq!(keys(&d.bound), vec!["default/prod"]);
    assert!(d.evictions.is_empty());
}

#[test]
fn a_victim_found_going_after_a_restart_is_not_paid_for_again() {
    // Before the restart, v0 was preempted for prod; the new allocator finds
    // it PREEMPTING: it is going, its room free, and prod is placed there
    // without a second victim.
    let mut s = cluster(&[2, 2]);
    running(&mut s, task("v1", "a", 2, Tier::Preemptible, 0), 1);
    let mut a = Allocator::new(Policy::BinPack, Rules::default());
    a.note_going("default/v0");
    assert!(a.is_going("default/v0"));
    let d = a.cycle(
        &mut s,
        vec![task("prod", "prod", 2, Tier::Preferred, 0)],
        at(1000),
    );
    assert_eq!(keys(&d.bound), vec!["default/prod"]);
    assert!(d.evictions.is_empty());
    a.gone("default/v0");
    assert!(!a.is_going("default/v0"));
}

#[test]
fn a_hold_whose_preemptor_was_deleted_in_flight_goes() {
    let mut s = cluster(&[2]);
    running(&mut s, task("v0", "a", 2, Tier::Preemptible, 0), 0);
    let mut a = Allocator::new(Policy::BinPack, Rules::default());
    let p = task("prod", "prod", 2, Tier::Preferred, 0);
    a.cycle(&mut s, vec![p.clone()], at(1000));
    a.gone("default/v0");
    let d = a.cycle(&mut s, vec![p.clone()], at(1001));
    assert_eq!(keys(&d.bound), vec!["default/prod"]);
    // Deleted before its binding was seen.
    s.unbind(&p.key);
    a.cycle(&mut s, vec![], at(1002));
    assert!(!a.is_holding(&p.key));
    assert!(s.consistent());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// What the world knows of a task.
    #[derive(Debug, Clone, PartialEq)]
    enum World {
        Pending,
        /// Bound; `seen` once the store's watch has shown the binding.
        Bound {
            seen: bool,
        },
        /// Being killed; stops at that step.
        Going {
            stops_at: usize,
        },
        Ended,
    }

    struct Sim {
        snap: Snapshot,
        alloc: Allocator,
        tasks: BTreeMap<String, (SchedTask, World)>,
        next: usize,
    }

    impl Sim {
        fn pending(&self) -> Vec<SchedTask> {
            self.tasks
                .values()
                .filter(|(_, w)| *w == World::Pending)
                .map(|(t, _)| t.clone())
                .collect()
        }

        fn add(&mut self, t: SchedTask) {
            self.tasks.insert(t.key.clone(), (t, World::Pending));
        }

        fn replacement(&mut self, of: &SchedTask, step: usize) {
            self.next += 1;
            let mut t = of.clone();
            t.key = format!("default/r{}", self.next);
            t.created = at(step as i64);
            t.started = None;
            self.add(t);
        }
    }

    /// Node CPUs, filler CPUs, preemptor CPUs, kill durations in cycles, binding conflicts.
    type Case = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<usize>, Vec<bool>);

    fn arb_case() -> impl Strategy<Value = Case> {
        (
            proptest::collection::vec(2i64..8, 1..6),
            proptest::collection::vec(1i64..4, 0..40),
            proptest::collection::vec(1i64..3, 1..4),
            proptest::collection::vec(1usize..5, 64),
            proptest::collection::vec(proptest::bool::weighted(0.2), 64),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn preemption_is_minimal_once_per_need_and_the_preemptor_binds_next_cycle(
            (nodes, fillers, preemptors, kill_steps, conflicts) in arb_case()
        ) {
            let mut sim = Sim {
                snap: cluster(&nodes),
                alloc: Allocator::new(Policy::BinPack, Rules { min_runtime_seconds: 0, ..Rules::default() }),
                tasks: BTreeMap::new(),
                next: 0,
            };
            for (i, c) in fillers.iter().enumerate() {
                sim.add(task(&format!("f{i}"), &format!("svc{}", i % 3), *c, Tier::Preemptible, (i % 2) as i32));
            }
            let min_node = nodes.iter().copied().min().unwrap_or(2);
            let mut plans: HashMap<String, usize> = HashMap::new();
            let mut evicted: BTreeSet<String> = BTreeSet::new();
            let (mut kills, mut failures) = (kill_steps.iter().cycle(), conflicts.iter().cycle());
            for step in 0..48usize {
                let now = at(1000 + step as i64);
                if step == 2 {
                    for (i, c) in preemptors.iter().enumerate() {
                        sim.add(task(&format!("prod{i}"), "prod", (*c).min(min_node), Tier::Preferred, 10));
                    }
                }
                // Preemptors whose victims are all gone must be bound in this cycle.
                let due: Vec<String> = sim
                    .alloc
                    .holds()
                    .filter(|(k, _, v)| v.is_empty() && sim.tasks.get(*k).is_some_and(|(_, w)| *w == World::Pending))
                    .map(|(k, _, _)| k.to_owned())
                    .collect();
                let pending = sim.pending();
                let d = sim.alloc.cycle(&mut sim.snap, pending, now);
                prop_assert!(sim.snap.consistent());
                for k in &due {
                    prop_assert!(d.bound.iter().any(|(b, _)| b == k), "{k} waited past its victims' stop");
                }
                // Plans: one per preemptor, minimal, victims bound and seen.
                let mut by_preemptor: BTreeMap<&str, Vec<&Eviction>> = BTreeMap::new();
                for e in &d.evictions {
                    by_preemptor.entry(e.preemptor.as_str()).or_default().push(e);
                }
                for (p, es) in &by_preemptor {
                    *plans.entry((*p).to_owned()).or_default() += 1;
                    prop_assert!(plans[*p] == 1, "{p} preempted twice for one need");
                    let sizes: Vec<i64> = es
                        .iter()
                        .map(|e| sim.tasks[&e.victim.key].0.request.0[0])
                        .collect();
                    let freed: i64 = sizes.iter().sum();
                    // Minimal: without its smallest victim the preemptor would
                    // not fit even on an otherwise empty share of the node, so
                    // the excess is under one task's worth.
                    let smallest = sizes.iter().copied().min().unwrap_or(0);
                    let need = sim.tasks[*p].0.request.0[0];
                    prop_assert!(freed - smallest < need, "{p} freed {freed} for {need} ({sizes:?})");
                }
                for e in &d.evictions {
                    prop_assert!(evicted.insert(e.victim.key.clone()), "{} evicted twice", e.victim.key);
                    let (victim, w) = sim.tasks[&e.victim.key].clone();
                    prop_assert_eq!(w, World::Bound { seen: true }, "a victim not seen bound");
                    let stops_at = step + kills.next().copied().unwrap_or(1);
                    sim.tasks.get_mut(&e.victim.key).expect("victim").1 = World::Going { stops_at };
                    sim.replacement(&victim, step);
                }
                // Bindings: some conflict (late in the run, none do).
                for (k, _) in &d.bound {
                    if step < 30 && *failures.next().unwrap_or(&false) {
                        sim.alloc.bind_failed(&mut sim.snap, k);
                    } else {
                        sim.tasks.get_mut(k).expect("bound").1 = World::Bound { seen: false };
                    }
                }
                // What the watch brings next: bindings seen, victims stopped.
                let keys: Vec<String> = sim.tasks.keys().cloned().collect();
                for k in keys {
                    let w = sim.tasks[&k].1.clone();
                    match w {
                        World::Bound { seen: false } if !d.bound.iter().any(|(b, _)| *b == k) => {
                            sim.alloc.confirmed(&mut sim.snap, &k);
                            sim.tasks.get_mut(&k).expect("task").1 = World::Bound { seen: true };
                        }
                        World::Going { stops_at } if stops_at <= step => {
                            prop_assert!(sim.snap.binding(&k).is_none(), "a victim back in the snapshot");
                            sim.alloc.gone(&k);
                            sim.tasks.get_mut(&k).expect("task").1 = World::Ended;
                        }
                        _ => {}
                    }
                }
            }
            // Every preemptor that preempted is bound in the end (or was
            // preempted in turn by a higher-ranked one).
            for p in plans.keys() {
                prop_assert!(
                    matches!(sim.tasks[p].1, World::Bound { .. }) || evicted.contains(p),
                    "{p} never bound: {:?}", sim.tasks[p].1
                );
            }
        }
    }
}

#[cfg(test)]
mod gangs;
