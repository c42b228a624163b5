//! One allocation cycle: many tasks across all roles, ordered by weighted
//! Dominant Resource Fairness.
//!
//! Each role's pending tasks are ordered by tier, then priority, then age.
//! The role with the smallest weighted dominant share (its usage's largest
//! fraction of the cluster, divided by its weight) goes next; after each
//! placement its share is recomputed. A task that cannot be placed does not
//! block the rest of its role's queue.
//!
//! A task of a gang (its job's `gang.minInstances`) is placed like any
//! other, but at the end of the cycle a gang that did not reach its size —
//! the job's tasks bound before the cycle and those placed in it — gives
//! back everything placed of it, and all its pending tasks are explained
//! as [`Unplaced::Gang`]: a cycle binds a whole gang or none of it. (Room
//! given back this way is used from the next cycle.)
//!
//! A cycle only takes room, never gives it back, so a task like one that
//! already found no place in this cycle finds none either: it is left
//! pending with the same reason without being tried (equivalence classes,
//! as kube-scheduler and Nomad have them). Tasks are alike when they have
//! the same job, role, request, tier, runtime, ports and constraints. A skipped
//! task is given its class's reason, which still holds, though its node
//! counts are those of a few placements earlier (and a quota since spent
//! may now hold it back too).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use corral_api::Tier;
use corral_api::job::Constraints;
use corral_api::node::RuntimeKind;

use super::place::{Policy, Unplaced, place};
use super::res::Res;
use super::snapshot::{NodeId, SchedTask, Snapshot};

/// What a cycle decided.
#[derive(Debug, Default, Clone)]
pub struct Cycle {
    /// Tasks bound (in decision order) and their nodes.
    pub bound: Vec<(String, NodeId)>,
    /// Tasks left pending, with why.
    pub pending: Vec<(SchedTask, Unplaced)>,
}

#[derive(Debug, PartialEq)]
struct Turn {
    share: f64,
    role: String,
}

impl Eq for Turn {}

impl Ord for Turn {
    /// Reversed: the smallest share (then name) is the greatest, for a max-heap.
    fn cmp(&self, o: &Self) -> Ordering {
        o.share
            .total_cmp(&self.share)
            .then_with(|| o.role.cmp(&self.role))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The weighted dominant share of `role` in a cluster of capacity `total`.
pub fn weighted_share(snap: &Snapshot, role: &str, total: &Res) -> f64 {
    let weight = snap
        .roles
        .get(role)
        .map(|r| r.weight)
        .filter(|w| *w > 0.0)
        .unwrap_or(1.0);
    snap.role_usage_with_children(role).dominant_share(total) / weight
}

/// The part of a task that decides where it fits (besides its
/// constraints, compared apart since they are not hashable).
type ClassKey = (
    String,
    String,
    Res,
    Tier,
    Option<RuntimeKind>,
    Vec<Option<u16>>,
);

/// The classes of tasks that found no place in this cycle, and why.
#[derive(Default)]
struct Unplaceable(HashMap<ClassKey, Vec<(Constraints, Unplaced)>>);

impl Unplaceable {
    fn key(t: &SchedTask) -> ClassKey {
        (
            t.job.clone(),
            t.role.clone(),
            t.request,
            t.tier,
            t.runtime,
            t.ports.clone(),
        )
    }

    /// Why a task like `t` found no place, if one did not.
    fn why(&self, t: &SchedTask) -> Option<&Unplaced> {
        self.0
            .get(&Self::key(t))?
            .iter()
            .find(|(c, _)| *c == t.constraints)
            .map(|(_, why)| why)
    }

    fn note(&mut self, t: &SchedTask, why: &Unplaced) {
        self.0
            .entry(Self::key(t))
            .or_default()
            .push((t.constraints.clone(), why.clone()));
    }
}

/// Where a task stands in its role's queue, to sort by: higher tiers
/// first, then higher priorities, then older tasks, then by key (`corral
/// why` tells a pending task's position by the same order).
pub fn queue_order(
    tier: Tier,
    priority: i32,
    created: jiff::Timestamp,
    key: &str,
) -> (
    std::cmp::Reverse<u8>,
    std::cmp::Reverse<i32>,
    jiff::Timestamp,
    &str,
) {
    (
        std::cmp::Reverse(tier.rank()),
        std::cmp::Reverse(priority),
        created,
        key,
    )
}

/// Places as many `pending` tasks as fit, binding them in `snap`.
pub fn run_cycle(snap: &mut Snapshot, pending: Vec<SchedTask>, policy: Policy) -> Cycle {
    cycle(snap, pending, policy, true)
}

/// [`run_cycle`] trying every task, even one like a task that found no
/// place: what the equivalence classes must not change.
#[cfg(test)]
pub(crate) fn run_cycle_trying_every_task(
    snap: &mut Snapshot,
    pending: Vec<SchedTask>,
    policy: Policy,
) -> Cycle {
    cycle(snap, pending, policy, false)
}

fn cycle(snap: &mut Snapshot, pending: Vec<SchedTask>, policy: Policy, classes: bool) -> Cycle {
    let total = snap.total();
    // Each gang's size and its job's tasks bound before the cycle.
    let gangs: HashMap<String, (u32, u32)> = pending
        .iter()
        .filter_map(|t| Some((t.job.clone(), (t.gang?, snap.bound_of_job(&t.job)))))
        .collect();
    let mut queues: HashMap<String, VecDeque<SchedTask>> = HashMap::new();
    for t in pending {
        queues.entry(t.role.clone()).or_default().push_back(t);
    }
    for q in queues.values_mut() {
        q.make_contiguous().sort_by(|a, b| {
            queue_order(a.tier, a.priority, a.created, &a.key)
                .cmp(&queue_order(b.tier, b.priority, b.created, &b.key))
        });
    }
    let mut heap: BinaryHeap<Turn> = queues
        .keys()
        .map(|r| Turn {
            share: weighted_share(snap, r, &total),
            role: r.clone(),
        })
        .collect();
    let mut cycle = Cycle::default();
    let mut unplaceable = Unplaceable::default();
    while let Some(Turn { role, .. }) = heap.pop() {
        let Some(queue) = queues.get_mut(&role) else {
            continue;
        };
        let Some(task) = queue.pop_front() else {
            continue;
        };
        if let Some(why) = unplaceable.why(&task).filter(|_| classes) {
            let why = why.clone();
            cycle.pending.push((task, why));
            if !queue.is_empty() {
                heap.push(Turn {
                    share: weighted_share(snap, &role, &total),
                    role,
                });
            }
            continue;
        }
        match place(snap, &task, policy) {
            Ok(node) => {
                let key = task.key.clone();
                match snap.bind(task.clone(), node) {
                    Ok(()) => cycle.bound.push((key, node)),
                    Err(_) => cycle
                        .pending
                        .push((task, Unplaced::NoNode(Default::default()))),
                }
            }
            Err(why) => {
                unplaceable.note(&task, &why);
                cycle.pending.push((task, why));
            }
        }
        if !queue.is_empty() {
            heap.push(Turn {
                share: weighted_share(snap, &role, &total),
                role,
            });
        }
    }
    if !gangs.is_empty() {
        settle_gangs(snap, &mut cycle, &gangs);
    }
    cycle
}

/// Gives back what was placed of each gang that did not reach its size,
/// and explains its pending tasks (see the module doc).
fn settle_gangs(snap: &mut Snapshot, cycle: &mut Cycle, gangs: &HashMap<String, (u32, u32)>) {
    let job_of = |key: &str, snap: &Snapshot| snap.binding(key).map(|b| b.task.job.clone());
    let mut placed: HashMap<String, u32> = HashMap::new();
    for (key, _) in &cycle.bound {
        if let Some(job) = job_of(key, snap).filter(|j| gangs.contains_key(j)) {
            *placed.entry(job).or_default() += 1;
        }
    }
    let short: HashMap<&String, (u32, u32, u32)> = gangs
        .iter()
        .map(|(job, (size, bound))| (job, (*size, *bound, placed.get(job).copied().unwrap_or(0))))
        .filter(|(_, (size, bound, placed))| bound + placed < *size)
        .collect();
    if short.is_empty() {
        return;
    }
    let mut first: HashMap<String, Unplaced> = HashMap::new();
    for (t, why) in &cycle.pending {
        if short.contains_key(&t.job) {
            first.entry(t.job.clone()).or_insert_with(|| why.clone());
        }
    }
    let why = |job: &String| {
        let (size, bound, placed) = short[job];
        Unplaced::Gang {
            size,
            bound,
            placed,
            first: first.get(job).cloned().map(Box::new),
        }
    };
    let mut kept = Vec::with_capacity(cycle.bound.len());
    for (key, node) in std::mem::take(&mut cycle.bound) {
        match job_of(&key, snap).filter(|j| short.contains_key(j)) {
            Some(job) => {
                if let Some(b) = snap.unbind(&key) {
                    cycle.pending.push((b.task, why(&job)));
                }
            }
            None => kept.push((key, node)),
        }
    }
    cycle.bound = kept;
    for (t, w) in &mut cycle.pending {
        if short.contains_key(&t.job) && !matches!(w, Unplaced::Gang { .. }) {
            *w = why(&t.job);
        }
    }
}
