//! Stable preemption.
//!
//! Only when a task cannot be placed otherwise; only victims that rank below
//! it (a lower tier anywhere; a lower priority within its own role and tier);
//! never a task that has run less than the minimum runtime (revocable tasks
//! excepted: they are the first to go); within each role's preemption budget.
//! Never a hold, nor a task whose binding is still in flight (it may be
//! PENDING in the store). On every node that passes the task's static
//! filters the cheapest victims (revocable first, then lowest tier and
//! priority, youngest first) are taken until the task fits, then every
//! victim the task fits without is given back, most valuable first (the
//! set is minimal: no victim can be spared); the node needing the fewest and
//! lowest-ranked victims wins, ties broken by node order, so the same snapshot always gives the same
//! plan. A task within its role's guarantee may also take tasks of roles
//! beyond theirs (reclaim, see [`super::guarantee`]); a task beyond its own
//! guarantee only preempts where the capacity freed is not protected. Applying a plan evicts the victims in the snapshot and holds their
//! capacity for the preemptor until it is placed or the hold expires.

use corral_api::Tier;

use super::guarantee::{self, Gate};
use super::place::{check_quota, free_for_task, static_fit};
use super::res::Res;
use super::snapshot::{Lite, NodeId, SchedTask, Snapshot};

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
    /// The victim's role uses more than its guarantee and the preemptor's
    /// role reclaims its own (see [`super::guarantee`]).
    Reclaim,
}

impl Rule {
    /// The rule in words, for explanations.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::Revocable => "revocable",
            Rule::LowerTier => "lower tier",
            Rule::LowerPriority => "lower priority",
            Rule::Reclaim => "reclaiming a lent guarantee",
        }
    }
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

/// Why `v` may be preempted for a task of tier rank `p_rank`, role
/// `p_role` and priority `p_priority` that may reclaim from `borrowers`.
fn rule(
    p_rank: u8,
    p_role: Option<u32>,
    p_priority: i32,
    borrowers: &[(u32, Res)],
    v: &Lite,
) -> Option<Rule> {
    let revocable = Tier::Revocable.rank();
    if v.tier_rank == revocable && p_rank != revocable {
        return None; // different pools: evicting it frees nothing the preemptor can use
    }
    if v.tier_rank < p_rank {
        return Some(if v.tier_rank == revocable {
            Rule::Revocable
        } else {
            Rule::LowerTier
        });
    }
    if v.tier_rank == p_rank && Some(v.role) == p_role && v.priority < p_priority {
        return Some(if v.tier_rank == revocable {
            Rule::Revocable
        } else {
            Rule::LowerPriority
        });
    }
    if v.tier_rank != revocable && borrowers.iter().any(|(r, _)| *r == v.role) {
        return Some(Rule::Reclaim);
    }
    None
}

fn eligible(v: &Lite, now: i64, rules: &Rules) -> bool {
    !v.hold
        && !v.in_flight
        && (v.tier_rank == Tier::Revocable.rank()
            || v.started
                .is_none_or(|s| now - s >= rules.min_runtime_seconds))
}

/// How bad a plan is: victims, their highest tier rank and priority, then the
/// node (for a deterministic tie-break). Lower is better.
type Cost = (usize, u8, i32, NodeId);

/// Finds the cheapest preemption that lets `task` run, if any.
pub fn plan(
    snap: &Snapshot,
    task: &SchedTask,
    now: jiff::Timestamp,
    rules: &Rules,
) -> Option<Plan> {
    check_quota(snap, task).ok()?;
    let gate = Gate::new(snap, task);
    let borrowers = guarantee::reclaimable(snap, task);
    let mut left: Vec<(u32, Res)> = Vec::new();
    let (p_rank, p_role, now) = (
        task.tier.rank(),
        snap.known_role_id(&task.role),
        now.as_second(),
    );
    let mut best: Option<(Cost, NodeId, Vec<usize>)> = None;
    let mut candidates: Vec<(usize, Rule)> = Vec::new();
    let mut chosen: Vec<usize> = Vec::new();
    let mut gains: Vec<Res> = Vec::new();
    let mut taken: Vec<(u32, u32)> = Vec::new();
    for id in 0..NodeId::try_from(snap.node_count()).unwrap_or(NodeId::MAX) {
        let node = snap.node(id);
        // Preemption frees room, never ports: a node must have the task's
        // ports free already.
        if static_fit(task, node).is_err()
            || (!task.ports.is_empty() && node.ports.check(&task.ports).is_err())
        {
            continue;
        }
        let mut free = free_for_task(task, node);
        if free.fits(&task.request) {
            continue; // placement, not preemption, handles it
        }
        let lite = &snap.lite[id as usize];
        candidates.clear();
        candidates.extend(
            lite.iter()
                .enumerate()
                .filter(|(_, v)| eligible(v, now, rules))
                .filter_map(|(i, v)| {
                    rule(p_rank, p_role, task.priority, &borrowers, v).map(|r| (i, r))
                }),
        );
        let cheapest_first = |&(a, _): &(usize, Rule), &(b, _): &(usize, Rule)| {
            let (a, b) = (&lite[a], &lite[b]);
            a.tier_rank
                .cmp(&b.tier_rank)
                .then(a.priority.cmp(&b.priority))
                .then(b.created.cmp(&a.created))
                .then_with(|| a.key.cmp(&b.key))
        };
        // No node needing more victims than the best so far can win, so only
        // that many of the cheapest candidates need ordering (plus the budget's
        // skips, which the full sort covers when the prefix is not enough).
        let most = best.as_ref().map_or(usize::MAX, |(c, _, _)| c.0);
        if most < candidates.len() && rules.budget_per_role as usize >= most && borrowers.is_empty()
        {
            candidates.select_nth_unstable_by(most, cheapest_first);
            candidates.truncate(most);
        }
        candidates.sort_unstable_by(cheapest_first);
        taken.clear();
        chosen.clear();
        gains.clear();
        left.clone_from(&borrowers);
        for &(i, why) in &candidates {
            if (free.fits(&task.request)
                && gate.admits(chosen.iter().map(|&i| (lite[i].role, lite[i].request))))
                || chosen.len() >= most
            {
                break;
            }
            let v = &lite[i];
            let n = match taken.iter().position(|(r, _)| *r == v.role) {
                Some(k) => &mut taken[k].1,
                None => {
                    taken.push((v.role, 0));
                    let last = taken.len() - 1;
                    &mut taken[last].1
                }
            };
            if *n >= rules.budget_per_role {
                continue;
            }
            // A reclaim never takes a borrower below its own guarantee.
            if why == Rule::Reclaim
                && !left
                    .iter_mut()
                    .find(|(r, _)| *r == v.role)
                    .is_some_and(|(_, l)| guarantee::take(l, &v.request))
            {
                continue;
            }
            *n += 1;
            // What evicting it gives back to the preemptor's pool on this node.
            let gain = if Some(v.role) == p_role {
                v.request
            } else {
                v.request.minus(v.from_reserved)
            };
            free = free.plus(gain);
            chosen.push(i);
            gains.push(gain);
        }
        if !free.fits(&task.request)
            || chosen.is_empty()
            || !gate.admits(chosen.iter().map(|&i| (lite[i].role, lite[i].request)))
        {
            continue;
        }
        // Reprieve: the cheapest-first walk may have taken victims a later,
        // larger one made unnecessary. Most valuable first, give back every
        // victim the preemptor fits without, so the set is minimal.
        for k in (0..chosen.len()).rev() {
            let without = free.minus(gains[k]);
            if without.fits(&task.request)
                && gate.admits(
                    chosen
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != k)
                        .map(|(_, &i)| (lite[i].role, lite[i].request)),
                )
            {
                free = without;
                chosen.remove(k);
                gains.remove(k);
            }
        }
        let cost = (
            chosen.len(),
            chosen.iter().map(|&i| lite[i].tier_rank).max().unwrap_or(0),
            chosen
                .iter()
                .map(|&i| lite[i].priority)
                .max()
                .unwrap_or(i32::MIN),
            id,
        );
        if best.as_ref().is_none_or(|(c, _, _)| cost < *c) {
            best = Some((cost, id, chosen.clone()));
        }
    }
    let (_, node, picked) = best?;
    let rules_of: Vec<(usize, Rule)> = picked
        .iter()
        .filter_map(|&i| {
            rule(
                p_rank,
                p_role,
                task.priority,
                &borrowers,
                &snap.lite[node as usize][i],
            )
            .map(|r| (i, r))
        })
        .collect();
    let victims = rules_of
        .into_iter()
        .filter_map(|(i, r)| {
            let v = &snap.lite[node as usize][i];
            let b = snap.binding(&v.key)?;
            Some(Victim {
                key: b.task.key.clone(),
                role: b.task.role.clone(),
                tier: b.task.tier,
                priority: b.task.priority,
                rule: r,
            })
        })
        .collect();
    Some(Plan {
        preemptor: task.key.clone(),
        node,
        victims,
    })
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
