//! Role status figures (pure): what each role holds, what it waits for, its
//! weighted dominant share, and its tasks' scheduling latency.
//!
//! A role's figures include its descendants' (roles form a tree through
//! `spec.parent`), as the scheduler counts a parent's usage when it orders
//! roles by weighted DRF and checks quotas. `allocated` sums the tasks that
//! hold resources (ASSIGNED through the kill phases), `pending` the PENDING
//! ones; the dominant share is the largest fraction of the cluster's
//! capacity any one resource of `allocated` takes, divided by the weight.

use std::collections::BTreeMap;

use corral_api::TaskPhase;
use corral_api::common::LatencyFigures;
use corral_api::resources::MilliResources;

use crate::latency::{self, TaskHistory};

/// A role as the figures need it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleInput {
    /// Its DRF weight (positive; anything else counts as 1).
    pub weight: f64,
    /// Its parent role, if any.
    pub parent: Option<String>,
}

/// One task as the figures need it.
#[derive(Debug, Clone)]
pub struct RoleTask<'a> {
    /// The role it runs for.
    pub role: &'a str,
    /// Its phase.
    pub phase: TaskPhase,
    /// What it asks for.
    pub resources: MilliResources,
    /// Its creation time and task events.
    pub history: TaskHistory<'a>,
}

/// One role's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleFigures {
    /// Held by its (and its descendants') tasks.
    pub allocated: MilliResources,
    /// Asked for by its (and its descendants') PENDING tasks.
    pub pending: MilliResources,
    /// Its weighted dominant share of `total`.
    pub dominant_share: f64,
    /// MTTA / MTTS / MTTR of its (and its descendants') tasks.
    pub latency: LatencyFigures,
}

/// The role and its ancestors, nearest first (a cycle ends the walk).
fn lineage<'a>(roles: &'a BTreeMap<String, RoleInput>, role: &'a str) -> Vec<&'a str> {
    let mut out = vec![role];
    let mut at = role;
    while let Some(parent) = roles.get(at).and_then(|r| r.parent.as_deref()) {
        if out.contains(&parent) {
            break;
        }
        out.push(parent);
        at = parent;
    }
    out
}

/// The weighted dominant share of `allocated` in a cluster of `total`.
pub fn dominant_share(allocated: &MilliResources, total: &MilliResources, weight: f64) -> f64 {
    let share = allocated
        .0
        .iter()
        .filter_map(|(name, used)| {
            let cap = total.get(name);
            (cap > 0).then(|| *used as f64 / cap as f64)
        })
        .fold(0.0, f64::max);
    share / if weight > 0.0 { weight } else { 1.0 }
}

/// The figures of every role in `roles` (roles without tasks get zeros).
/// Tasks of roles that do not exist count for nobody.
pub fn figures(
    roles: &BTreeMap<String, RoleInput>,
    tasks: &[RoleTask<'_>],
    total: &MilliResources,
) -> BTreeMap<String, RoleFigures> {
    let mut allocated: BTreeMap<&str, MilliResources> = BTreeMap::new();
    let mut pending: BTreeMap<&str, MilliResources> = BTreeMap::new();
    let mut histories: BTreeMap<&str, Vec<TaskHistory<'_>>> = BTreeMap::new();
    for t in tasks {
        if !roles.contains_key(t.role) {
            continue;
        }
        for role in lineage(roles, t.role) {
            if t.phase.holds_resources() {
                let a = allocated.entry(role).or_default();
                *a = a.plus(&t.resources);
            } else if t.phase == TaskPhase::Pending {
                let p = pending.entry(role).or_default();
                *p = p.plus(&t.resources);
            }
            histories.entry(role).or_default().push(t.history);
        }
    }
    roles
        .iter()
        .map(|(name, r)| {
            let alloc = allocated.remove(name.as_str()).unwrap_or_default();
            let figures = RoleFigures {
                dominant_share: dominant_share(&alloc, total, r.weight),
                allocated: alloc,
                pending: pending.remove(name.as_str()).unwrap_or_default(),
                latency: latency::figures(histories.remove(name.as_str()).unwrap_or_default()),
            };
            (name.clone(), figures)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_api::task::TaskEvent;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn milli(pairs: &[(&str, i64)]) -> MilliResources {
        MilliResources(pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
    }

    fn at(ms: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(1_800_000_000_000 + ms).expect("time")
    }

    fn task<'a>(
        role: &'a str,
        phase: TaskPhase,
        cpus: i64,
        events: &'a [TaskEvent],
    ) -> RoleTask<'a> {
        RoleTask {
            role,
            phase,
            resources: milli(&[("cpus", cpus), ("memory", 1_000)]),
            history: TaskHistory {
                created: at(0),
                events,
            },
        }
    }

    fn role(weight: f64, parent: Option<&str>) -> RoleInput {
        RoleInput {
            weight,
            parent: parent.map(str::to_owned),
        }
    }

    #[test]
    fn roles_count_their_own_and_their_childrens_tasks() {
        let roles: BTreeMap<String, RoleInput> = [
            ("eng".to_owned(), role(2.0, None)),
            ("eng/web".to_owned(), role(1.0, Some("eng"))),
            ("ads".to_owned(), role(1.0, None)),
        ]
        .into();
        let assigned_after = |ms: i64| {
            vec![TaskEvent {
                timestamp: MicroTime(at(ms)),
                status: TaskPhase::Assigned,
                message: String::new(),
                actor: "scheduler".into(),
            }]
        };
        let (e1, e2) = (assigned_after(100), assigned_after(300));
        let tasks = [
            task("eng/web", TaskPhase::Running, 2_000, &e1),
            task("eng", TaskPhase::Killing, 1_000, &e2),
            task("eng/web", TaskPhase::Pending, 500, &[]),
            task("ads", TaskPhase::Finished, 4_000, &[]),
            task("nobody", TaskPhase::Running, 8_000, &[]),
        ];
        let total = milli(&[("cpus", 10_000), ("memory", 100_000)]);
        let f = figures(&roles, &tasks, &total);
        let eng = &f["eng"];
        assert_eq!(eng.allocated, milli(&[("cpus", 3_000), ("memory", 2_000)]));
        assert_eq!(eng.pending, milli(&[("cpus", 500), ("memory", 1_000)]));
        assert!((eng.dominant_share - 0.15).abs() < 1e-9, "30% / weight 2");
        let mtta = eng.latency.time_to_assigned.as_ref().expect("mtta");
        assert_eq!((mtta.median_millis, mtta.samples), (100, 2));
        let web = &f["eng/web"];
        assert_eq!(web.allocated, milli(&[("cpus", 2_000), ("memory", 1_000)]));
        assert!((web.dominant_share - 0.2).abs() < 1e-9);
        let ads = &f["ads"];
        assert_eq!(
            ads.allocated,
            MilliResources::default(),
            "finished holds nothing"
        );
        assert_eq!(ads.dominant_share, 0.0);
        assert!(!f.contains_key("nobody"));
    }

    #[test]
    fn a_parent_cycle_does_not_loop() {
        let roles: BTreeMap<String, RoleInput> = [
            ("a".to_owned(), role(1.0, Some("b"))),
            ("b".to_owned(), role(0.0, Some("a"))),
        ]
        .into();
        assert_eq!(lineage(&roles, "a"), vec!["a", "b"]);
        let tasks = [RoleTask {
            role: "a",
            phase: TaskPhase::Running,
            resources: milli(&[("cpus", 1_000)]),
            history: TaskHistory {
                created: at(0),
                events: &[],
            },
        }];
        let f = figures(&roles, &tasks, &milli(&[("cpus", 4_000)]));
        assert!(
            (f["b"].dominant_share - 0.25).abs() < 1e-9,
            "weight 0 counts as 1"
        );
    }
}
