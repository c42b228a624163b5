//! Stable preemption.
//!
//! Only when a task cannot be placed otherwise; only victims that rank below
//! it (a lower tier anywhere; a lower priority within its own role and tier);
//! never a task that has run less than the minimum runtime (revocable tasks
//! excepted: they are the first to go); within each role's preemption budget.
//! On every node that passes the task's static filters the cheapest victims
//! (revocable first, then lowest tier and priority, youngest first) are taken
//! until the task fits; the node needing the fewest and lowest-ranked victims
//! wins, ties broken by node order, so the same snapshot always gives the same
//! plan. Applying a plan evicts the victims in the snapshot and holds their
//! capacity for the preemptor until it is placed or the hold expires.

use std::collections::HashMap;

use corral_api::Tier;

use super::place::{check_quota, free_for_task, static_fit};
use super::res::Res;
use super::snapshot::{Binding, NodeId, SchedTask, Snapshot};

/// The rules preemption follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Seconds a task must have run before it may be preempted.
    pub min_runtime_seconds: i64,
    /// The most victims one decision may take from each role.
    pub budget_per_role: u32,
    /// Seconds the freed capacity is held for the preemptor.
    pub hold_seconds: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            min_runtime_seconds: 60,
            budget_per_role: 10,
            hold_seconds: 120,
        }
    }
}

/// Which rule made a task a victim (recorded in its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The victim runs on revocable capacity.
    Revocable,
    /// The victim is of a lower tier.
    LowerTier,
    /// The victim has a lower priority in the same role and tier.
    LowerPriority,
}

/// One victim.
#[derive(Debug, Clone, PartialEq)]
pub struct Victim {
    /// Task key.
    pub key: String,
    /// Its role.
    pub role: String,
    /// Its tier.
    pub tier: Tier,
    /// Its priority.
    pub priority: i32,
    /// Why it may be preempted.
    pub rule: Rule,
}

/// A preemption decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The preemptor.
    pub preemptor: String,
    /// The node it will run on.
    pub node: NodeId,
    /// The tasks to evict, in eviction order.
    pub victims: Vec<Victim>,
}

fn rule(preemptor: &SchedTask, victim: &SchedTask) -> Option<Rule> {
    if victim.tier == Tier::Revocable && preemptor.tier != Tier::Revocable {
        return None; // different pools: evicting it frees nothing the preemptor can use
    }
    if victim.tier.rank() < preemptor.tier.rank() {
        return Some(if victim.tier == Tier::Revocable {
            Rule::Revocable
        } else {
            Rule::LowerTier
        });
    }
    if victim.tier == preemptor.tier
        && victim.role == preemptor.role
        && victim.priority < preemptor.priority
    {
        return Some(if victim.tier == Tier::Revocable {
            Rule::Revocable
        } else {
            Rule::LowerPriority
        });
    }
    None
}

fn eligible(b: &Binding, now: jiff::Timestamp, rules: &Rules) -> bool {
    b.task.tier == Tier::Revocable
        || b.task
            .started
            .is_none_or(|s| now.as_second() - s.as_second() >= rules.min_runtime_seconds)
}

/// What evicting `victim` gives back to `preemptor` on their node.
fn gain(preemptor: &SchedTask, victim: &Binding) -> Res {
    let shared = victim.task.request.minus(victim.from_reserved);
    if victim.task.role == preemptor.role {
        victim.task.request
    } else {
        shared
    }
}

/// Finds the cheapest preemption that lets `task` run, if any.
pub fn plan(
    snap: &Snapshot,
    task: &SchedTask,
    now: jiff::Timestamp,
    rules: &Rules,
) -> Option<Plan> {
    check_quota(snap, task).ok()?;
    let mut best: Option<((usize, u8, i32, NodeId), Plan)> = None;
    for id in 0..NodeId::try_from(snap.node_count()).unwrap_or(NodeId::MAX) {
        let node = snap.node(id);
        if static_fit(task, node).is_err() {
            continue;
        }
        let mut free = free_for_task(task, node);
        if free.fits(&task.request) {
            continue; // placement, not preemption, handles it
        }
        let mut candidates: Vec<(&Binding, Rule)> = snap
            .tasks_on(id)
            .filter(|b| !b.task.key.starts_with(HOLD_PREFIX) && eligible(b, now, rules))
            .filter_map(|b| rule(task, &b.task).map(|r| (b, r)))
            .collect();
        candidates.sort_by(|(a, _), (b, _)| {
            a.task
                .tier
                .rank()
                .cmp(&b.task.tier.rank())
                .then(a.task.priority.cmp(&b.task.priority))
                .then(b.task.created.cmp(&a.task.created))
                .then(a.task.key.cmp(&b.task.key))
        });
        let mut taken: HashMap<&str, u32> = HashMap::new();
        let mut victims = Vec::new();
        for (b, r) in candidates {
            if free.fits(&task.request) {
                break;
            }
            let n = taken.entry(b.task.role.as_str()).or_default();
            if *n >= rules.budget_per_role {
                continue;
            }
            *n += 1;
            free = free.plus(gain(task, b));
            victims.push(Victim {
                key: b.task.key.clone(),
                role: b.task.role.clone(),
                tier: b.task.tier,
                priority: b.task.priority,
                rule: r,
            });
        }
        if !free.fits(&task.request) || victims.is_empty() {
            continue;
        }
        let cost = (
            victims.len(),
            victims.iter().map(|v| v.tier.rank()).max().unwrap_or(0),
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            id,
        );
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((
                cost,
                Plan {
                    preemptor: task.key.clone(),
                    node: id,
                    victims,
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}

/// The key prefix of the pseudo-task holding capacity for a preemptor.
pub const HOLD_PREFIX: &str = "hold/";

/// A capacity hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// The node.
    pub node: NodeId,
    /// When it lapses.
    pub expires: jiff::Timestamp,
}

/// Carries out a plan in the snapshot: evicts the victims and holds their
/// capacity for the preemptor (as a pseudo-task bound to the node).
pub fn apply(
    snap: &mut Snapshot,
    plan: &Plan,
    task: &SchedTask,
    now: jiff::Timestamp,
    rules: &Rules,
) -> Option<Hold> {
    for v in &plan.victims {
        snap.unbind(&v.key);
    }
    let mut hold = task.clone();
    hold.key = format!("{HOLD_PREFIX}{}", task.key);
    hold.job = format!("{HOLD_PREFIX}{}", task.job);
    snap.bind(hold, plan.node).ok()?;
    Some(Hold {
        node: plan.node,
        expires: jiff::Timestamp::from_second(now.as_second() + rules.hold_seconds).unwrap_or(now),
    })
}

/// Gives a preemptor's held capacity back (it is being placed, or the hold lapsed).
pub fn release(snap: &mut Snapshot, task_key: &str) -> Option<NodeId> {
    snap.unbind(&format!("{HOLD_PREFIX}{task_key}"))
        .map(|b| b.node)
}
