use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn m(name: &str, instance: u32, available: bool) -> Member {
    Member {
        name: name.into(),
        instance,
        available,
    }
}

fn budget<'a>(
    members: &'a [Member],
    disrupted: &'a BTreeMap<String, i64>,
    max: Option<u32>,
) -> Budget<'a> {
    Budget {
        instances: 3,
        max_unavailable: max,
        members,
        disrupted,
        now: 1_000,
    }
}

#[test]
fn evictions_are_judged_against_the_budget() {
    let none = BTreeMap::new();
    let all_up = [m("a", 0, true), m("b", 1, true), m("c", 2, true)];
    let one_down = [m("a", 0, true), m("b", 1, true), m("c", 2, false)];
    let surged = [
        m("a", 0, true),
        m("a2", 0, true),
        m("b", 1, true),
        m("c", 2, false),
    ];
    let recent: BTreeMap<String, i64> = [("b".to_owned(), 990)].into();
    let stale: BTreeMap<String, i64> = [("b".to_owned(), 1_000 - 120)].into();
    for (what, members, disrupted, max, target, want) in [
        (
            "all up, budget 1",
            &all_up[..],
            &none,
            Some(1),
            "a",
            Verdict::WithinBudget {
                down_after: 1,
                max: 1,
            },
        ),
        (
            "one down, budget 1",
            &one_down[..],
            &none,
            Some(1),
            "a",
            Verdict::OverBudget { down: 1, max: 1 },
        ),
        (
            "one down, budget 2",
            &one_down[..],
            &none,
            Some(2),
            "a",
            Verdict::WithinBudget {
                down_after: 2,
                max: 2,
            },
        ),
        (
            "the down one itself",
            &one_down[..],
            &none,
            Some(1),
            "c",
            Verdict::Free,
        ),
        (
            "covered by its replacement",
            &surged[..],
            &none,
            Some(1),
            "a",
            Verdict::Free,
        ),
        (
            "a recent eviction counts as down",
            &all_up[..],
            &recent,
            Some(1),
            "a",
            Verdict::OverBudget { down: 1, max: 1 },
        ),
        (
            "an eviction recorded two minutes ago no longer counts",
            &all_up[..],
            &stale,
            Some(1),
            "a",
            Verdict::WithinBudget {
                down_after: 1,
                max: 1,
            },
        ),
        (
            "budget 0 refuses any",
            &all_up[..],
            &none,
            Some(0),
            "a",
            Verdict::OverBudget { down: 0, max: 0 },
        ),
        ("no budget", &one_down[..], &none, None, "a", Verdict::Free),
        (
            "unknown task",
            &all_up[..],
            &none,
            Some(0),
            "zz",
            Verdict::Free,
        ),
    ] {
        assert_eq!(
            budget(members, disrupted, max).judge(target),
            want,
            "{what}"
        );
    }
    assert_eq!(
        budget(&one_down, &none, Some(2)).disruptions_allowed(),
        Some(1)
    );
    assert_eq!(budget(&one_down, &none, None).disruptions_allowed(), None);
}

#[test]
fn records_drop_once_stale_or_ended() {
    let disrupted: BTreeMap<String, i64> = [
        ("old".to_owned(), 1_000 - 200),
        ("gone".to_owned(), 990),
        ("going".to_owned(), 995),
    ]
    .into();
    let b = budget(&[], &disrupted, Some(1));
    let kept = b.records_after("new", |n| n == "gone");
    assert_eq!(
        kept.into_iter().collect::<Vec<_>>(),
        vec![("going".to_owned(), 995), ("new".to_owned(), 1_000)]
    );
}

#[test]
fn a_drain_waits_only_for_a_replacement_on_its_way() {
    use DrainStep::*;
    use TaskPhase as P;
    for (phase, replacement, want) in [
        (P::Running, Replacement::NotMade, Evict),
        (P::Running, Replacement::Due { waited: 0 }, AwaitReplacement),
        (
            P::Running,
            Replacement::Due {
                waited: REPLACEMENT_GRACE_SECONDS,
            },
            Evict,
        ),
        (P::Running, Replacement::Placing, AwaitReplacement),
        (P::Running, Replacement::Starting, AwaitReplacement),
        (P::Running, Replacement::Unplaceable, Evict),
        (P::Running, Replacement::Available, Evict),
        (P::Assigned, Replacement::NotMade, Evict),
        (P::Draining, Replacement::NotMade, Leaving),
        (P::Killing, Replacement::Placing, Leaving),
        (P::Killed, Replacement::NotMade, Leaving),
    ] {
        assert_eq!(
            drain_step(phase, replacement),
            want,
            "{phase} {replacement:?}"
        );
    }
    assert_eq!(
        Replacement::of(P::Pending, false, true),
        Replacement::Unplaceable
    );
    assert_eq!(
        Replacement::of(P::Pending, false, false),
        Replacement::Placing
    );
    assert_eq!(
        Replacement::of(P::Running, false, false),
        Replacement::Starting
    );
    assert_eq!(
        Replacement::of(P::Running, true, false),
        Replacement::Available
    );
}

/// One step of a random history of a job: an eviction asked for, or an
/// instance coming back.
#[derive(Debug, Clone)]
enum Step {
    Evict(usize),
    Recover(usize),
    Tick(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..8).prop_map(Step::Evict),
        (0usize..8).prop_map(Step::Recover),
        (1i64..200).prop_map(Step::Tick),
    ]
}

proptest! {
    /// However evictions and recoveries interleave, no allowed eviction
    /// leaves more instances down than the budget: the count of down
    /// instances only passes the budget by instances going down by
    /// themselves, never by an eviction.
    #[test]
    fn evictions_never_overspend_the_budget(
        instances in 1u32..8,
        max in 0u32..4,
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut members: Vec<Member> = (0..instances)
            .map(|i| m(&format!("t{i}-0"), i, true))
            .collect();
        let mut disrupted: BTreeMap<String, i64> = BTreeMap::new();
        let mut now = 1_000;
        let mut attempt = 1;
        for s in steps {
            match s {
                Step::Evict(k) => {
                    let Some(target) = members.get(k % members.len()).cloned() else { continue };
                    let b = Budget { instances, max_unavailable: Some(max), members: &members, disrupted: &disrupted, now };
                    let before = b.down();
                    let verdict = b.judge(&target.name);
                    if verdict.allowed() {
                        disrupted = b.records_after(&target.name, |_| false);
                        // The eviction lands later, or never: the record
                        // alone keeps it counted.
                        let after = Budget { instances, max_unavailable: Some(max), members: &members, disrupted: &disrupted, now }.down();
                        prop_assert!(after <= before.max(max), "{before} down, {after} after evicting {} ({verdict:?})", target.name);
                        if let Some(t) = members.iter_mut().find(|t| t.name == target.name) {
                            t.available = false;
                        }
                    }
                }
                Step::Recover(k) => {
                    let instance = u32::try_from(k).unwrap_or(0) % instances;
                    members.push(m(&format!("t{instance}-{attempt}"), instance, true));
                    attempt += 1;
                }
                Step::Tick(s) => now += s,
            }
        }
    }
}
