//! The allocation loop's decisions, with the preemptions in progress carried
//! from one cycle to the next.
//!
//! [`Allocator`] remembers what a cycle leaves for the next: the capacity
//! held for each preemptor (a hold pseudo-task bound in the snapshot) and the
//! victims still going. Each [`Allocator::cycle`]:
//! 1. settles the holds first: a preemptor whose victims are all gone is bound
//!    on its held node at once, before anyone else is placed, so the room
//!    freed for it is its own (not its victims' replacements'); a hold whose
//!    preemptor is no longer pending is released; one past its expiry is
//!    released and its preemptor competes again; the others wait, explained
//!    ([`Unplaced::Preempting`]);
//! 2. runs a DRF cycle over every other pending task ([`run_cycle`]); its
//!    bindings are in flight until the caller reports them seen;
//! 3. lets the tasks that found no node preempt, highest rank first, each
//!    plan made on the snapshot as this cycle's bindings and earlier plans
//!    left it: victims already going are gone from it, bindings in flight
//!    count as bound and are never victims, so no need is paid for twice.
//!
//! The caller writes the decisions and reports what became of them:
//! a binding seen in the store ([`Allocator::confirmed`]), one refused
//! ([`Allocator::bind_failed`]), a victim ended or deleted
//! ([`Allocator::gone`]), an eviction the store refused
//! ([`Allocator::eviction_failed`]). Everything here is derived from objects,
//! so a restarted loop may start with an empty allocator: victims already
//! PREEMPTING are then plain bound tasks until they stop.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use corral_api::Tier;

use super::place::{Policy, Unplaced, place, static_fit};
use super::preempt::{self, Rule, Rules, Victim};
use super::queue::run_cycle;
use super::snapshot::{NodeId, SchedTask, Snapshot};

/// Capacity held for one preemptor.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    /// Where.
    node: NodeId,
    /// When the hold lapses if its victims have not all stopped.
    expires: jiff::Timestamp,
    /// Victims yet to stop.
    victims: BTreeSet<String>,
    /// The rules the victims were chosen by (each once).
    rules: Vec<Rule>,
    /// The preemptor is bound on `node`, its binding in flight.
    placed: bool,
    /// The preemptor as planned, to hold its room again if its binding fails.
    task: SchedTask,
    /// Its gang (`namespace/job`), whose members are bound together once
    /// every one's room is free.
    gang: Option<String>,
}

/// One eviction to write: drive `victim` to PREEMPTING for `preemptor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Eviction {
    /// The victim.
    pub victim: Victim,
    /// The preemptor's key.
    pub preemptor: String,
    /// The preemptor's role, tier and priority, for the victim's record.
    pub by: (String, Tier, i32),
    /// The node the victim runs on.
    pub node: NodeId,
}

/// What one cycle decided.
#[derive(Debug, Default, Clone)]
pub struct Decisions {
    /// Bindings to write (in decision order); each is in flight in the snapshot.
    pub bound: Vec<(String, NodeId)>,
    /// Evictions to write.
    pub evictions: Vec<Eviction>,
    /// Tasks left pending, each with why (preemptors waiting for their
    /// victims included).
    pub pending: Vec<(SchedTask, Unplaced)>,
}

/// The allocation loop's memory between cycles (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    /// The placement policy.
    pub policy: Policy,
    /// The preemption rules.
    pub rules: Rules,
    holds: BTreeMap<String, Held>,
    /// Victim → the preemptor it goes for.
    going: HashMap<String, String>,
}

impl Allocator {
    /// An allocator with nothing in progress.
    pub fn new(policy: Policy, rules: Rules) -> Self {
        Allocator {
            policy,
            rules,
            ..Allocator::default()
        }
    }

    /// True while `key` is a victim that has not stopped: the caller keeps it
    /// out of the snapshot (its room is its preemptor's).
    pub fn is_going(&self, key: &str) -> bool {
        self.going.contains_key(key)
    }

    /// True while `key` is a preemptor whose room is held.
    pub fn is_holding(&self, key: &str) -> bool {
        self.holds.contains_key(key)
    }

    /// Preemptors with room held, and the victims each still waits for.
    pub fn holds(&self) -> impl Iterator<Item = (&str, NodeId, &BTreeSet<String>)> {
        self.holds
            .iter()
            .map(|(k, h)| (k.as_str(), h.node, &h.victims))
    }

    /// A task found already being preempted that this allocator did not
    /// evict (it was, before a restart or by another leader): it counts as
    /// going, so its room is not paid for a second time. Its preemptor holds
    /// nothing; it competes for the room like any task.
    pub fn note_going(&mut self, key: &str) {
        self.going.entry(key.to_owned()).or_default();
    }

    /// A task ended or was deleted: if it was a victim, its room is now its
    /// preemptor's alone.
    pub fn gone(&mut self, key: &str) {
        if let Some(p) = self.going.remove(key)
            && let Some(h) = self.holds.get_mut(&p)
        {
            h.victims.remove(key);
        }
    }

    /// A binding this allocator decided was seen in the store.
    pub fn confirmed(&mut self, snap: &mut Snapshot, key: &str) {
        snap.set_in_flight(key, false);
        if self.holds.get(key).is_some_and(|h| h.placed) {
            self.holds.remove(key);
        }
    }

    /// A binding was refused (the task changed meanwhile): it is unbound, and
    /// a preemptor placed on its held room holds it again, so the next cycle
    /// binds it there first.
    pub fn bind_failed(&mut self, snap: &mut Snapshot, key: &str) {
        snap.unbind(key);
        let Some(h) = self.holds.get_mut(key) else {
            return;
        };
        let mut hold = h.task.clone();
        hold.key = format!("{}{}", preempt::HOLD_PREFIX, h.task.key);
        hold.job = format!("{}{}", preempt::HOLD_PREFIX, h.task.job);
        if h.placed && snap.bind(hold, h.node).is_ok() {
            h.placed = false;
        } else {
            self.holds.remove(key);
        }
    }

    /// An eviction could not be written (the victim is not going after all):
    /// its preemptor's hold is released, so the caller can put the victim
    /// back in the snapshot, and the preemptor competes again next cycle.
    /// Returns the preemptor.
    pub fn eviction_failed(&mut self, snap: &mut Snapshot, victim: &str) -> Option<String> {
        let p = self.going.remove(victim)?;
        if self.holds.get(&p).is_some_and(|h| !h.placed) {
            preempt::release(snap, &p);
            self.holds.remove(&p);
        }
        Some(p)
    }

    /// One cycle over `pending` (every task waiting to be placed, preemptors
    /// with held room included).
    pub fn cycle(
        &mut self,
        snap: &mut Snapshot,
        pending: Vec<SchedTask>,
        now: jiff::Timestamp,
    ) -> Decisions {
        let mut decisions = Decisions::default();
        let mut pending: BTreeMap<String, SchedTask> =
            pending.into_iter().map(|t| (t.key.clone(), t)).collect();
        self.settle_holds(snap, &mut pending, now, &mut decisions);
        let cycle = run_cycle(snap, pending.into_values().collect(), self.policy);
        for (key, node) in cycle.bound {
            snap.set_in_flight(&key, true);
            decisions.bound.push((key, node));
        }
        let (mut preemptors, others): (Vec<_>, Vec<_>) =
            cycle.pending.into_iter().partition(|(t, why)| {
                matches!(why, Unplaced::NoNode(_) | Unplaced::Guarantee { .. })
                    && t.tier != Tier::Revocable
            });
        let (gangs, others): (Vec<_>, Vec<_>) = others.into_iter().partition(|(t, why)| {
            t.tier != Tier::Revocable
                && matches!(why, Unplaced::Gang { first: Some(f), .. }
                    if matches!(**f, Unplaced::NoNode(_) | Unplaced::Guarantee { .. }))
        });
        decisions.pending.extend(others);
        self.preempt_gangs(snap, gangs, now, &mut decisions);
        preemptors.sort_by(|(a, _), (b, _)| {
            b.tier
                .rank()
                .cmp(&a.tier.rank())
                .then(b.priority.cmp(&a.priority))
                .then(a.created.cmp(&b.created))
                .then_with(|| a.key.cmp(&b.key))
        });
        for (task, why) in preemptors {
            match self.preempt(snap, &task, now, &mut decisions) {
                Some(waiting) => decisions.pending.push((task, waiting)),
                None => decisions.pending.push((task, why)),
            }
        }
        decisions
    }

    /// Step 1 of a cycle: preemptors whose victims are gone are bound on
    /// their held room; the holds of tasks no longer pending, or past their
    /// expiry, are released; waiting preemptors are taken out of `pending`.
    fn settle_holds(
        &mut self,
        snap: &mut Snapshot,
        pending: &mut BTreeMap<String, SchedTask>,
        now: jiff::Timestamp,
        decisions: &mut Decisions,
    ) {
        self.settle_gang_holds(snap, pending, now, decisions);
        let keys: Vec<String> = self.holds.keys().cloned().collect();
        for key in keys {
            let Some(h) = self.holds.get_mut(&key) else {
                continue;
            };
            if h.gang.is_some() && !h.placed {
                continue;
            }
            if h.placed {
                if snap.binding(&key).is_some() {
                    // Bound, in flight: never placed twice.
                    pending.remove(&key);
                } else {
                    // Its binding went (the task was deleted): nothing to keep.
                    self.holds.remove(&key);
                }
                continue;
            }
            let Some(task) = pending.remove(&key) else {
                preempt::release(snap, &key);
                self.holds.remove(&key);
                continue;
            };
            if h.victims.is_empty() {
                preempt::release(snap, &key);
                let fits = static_fit(&task, snap.node(h.node)).is_ok()
                    && snap.bind(task.clone(), h.node).is_ok();
                if fits {
                    snap.set_in_flight(&key, true);
                    h.placed = true;
                    decisions.bound.push((key, h.node));
                } else {
                    self.holds.remove(&key);
                    pending.insert(key, task);
                }
            } else if now > h.expires {
                preempt::release(snap, &key);
                self.holds.remove(&key);
                pending.insert(key, task);
            } else {
                let why = Unplaced::Preempting {
                    node: h.node,
                    victims: h.victims.iter().cloned().collect(),
                    rules: h.rules.clone(),
                };
                decisions.pending.push((task, why));
            }
        }
    }

    /// Step 3 for one task: plans a preemption and carries it out in the
    /// snapshot; returns the task's new reason to wait, if it preempts.
    fn preempt(
        &mut self,
        snap: &mut Snapshot,
        task: &SchedTask,
        now: jiff::Timestamp,
        decisions: &mut Decisions,
    ) -> Option<Unplaced> {
        let plan = preempt::plan(snap, task, now, &self.rules)?;
        let hold = preempt::apply(snap, &plan, task, now, &self.rules)?;
        Some(self.record(task, &plan, hold, None, decisions))
    }

    /// Keeps a hold carried out in the snapshot: its victims going, their
    /// evictions to write; returns the preemptor's reason to wait.
    fn record(
        &mut self,
        task: &SchedTask,
        plan: &preempt::Plan,
        hold: preempt::Hold,
        gang: Option<String>,
        decisions: &mut Decisions,
    ) -> Unplaced {
        let mut rules = Vec::new();
        for v in &plan.victims {
            if !rules.contains(&v.rule) {
                rules.push(v.rule);
            }
            self.going.insert(v.key.clone(), task.key.clone());
            decisions.evictions.push(Eviction {
                victim: v.clone(),
                preemptor: task.key.clone(),
                by: (task.role.clone(), task.tier, task.priority),
                node: plan.node,
            });
        }
        let victims: BTreeSet<String> = plan.victims.iter().map(|v| v.key.clone()).collect();
        let why = Unplaced::Preempting {
            node: plan.node,
            victims: victims.iter().cloned().collect(),
            rules: rules.clone(),
        };
        self.holds.insert(
            task.key.clone(),
            Held {
                node: hold.node,
                expires: hold.expires,
                victims,
                rules,
                placed: false,
                task: task.clone(),
                gang,
            },
        );
        why
    }

    /// Step 3 for gangs that did not fit whole in the cycle: room for every
    /// member still needed is planned at once — free room where there is
    /// some, preemption elsewhere — on a copy of the snapshot, and carried
    /// out only if every member gets a node. Each member then holds its
    /// room (a hold without victims where the room is free) until the whole
    /// gang can be bound in one cycle ([`Allocator::settle_gang_holds`]);
    /// a gang that cannot be planned whole holds nothing and preempts no one.
    fn preempt_gangs(
        &mut self,
        snap: &mut Snapshot,
        pending: Vec<(SchedTask, Unplaced)>,
        now: jiff::Timestamp,
        decisions: &mut Decisions,
    ) {
        let mut by_gang: BTreeMap<String, Vec<(SchedTask, Unplaced)>> = BTreeMap::new();
        for (t, why) in pending {
            by_gang.entry(t.job.clone()).or_default().push((t, why));
        }
        for (job, mut members) in by_gang {
            members.sort_by(|(a, _), (b, _)| {
                super::queue::queue_order(a.tier, a.priority, a.created, &a.key).cmp(
                    &super::queue::queue_order(b.tier, b.priority, b.created, &b.key),
                )
            });
            let size = members.first().and_then(|(t, _)| t.gang).unwrap_or(0);
            let missing = size.saturating_sub(snap.bound_of_job(&job)) as usize;
            if missing == 0 || members.len() < missing {
                decisions.pending.extend(members);
                continue;
            }
            let chosen: Vec<SchedTask> = members
                .iter()
                .take(missing)
                .map(|(t, _)| t.clone())
                .collect();
            let mut trial = snap.clone();
            let mut plans = Vec::new();
            for m in &chosen {
                let plan = match place(&trial, m, self.policy) {
                    Ok(node) => Some(preempt::Plan {
                        preemptor: m.key.clone(),
                        node,
                        victims: Vec::new(),
                    }),
                    Err(_) => preempt::plan(&trial, m, now, &self.rules),
                };
                let Some(plan) =
                    plan.filter(|p| preempt::apply(&mut trial, p, m, now, &self.rules).is_some())
                else {
                    break;
                };
                plans.push(plan);
            }
            if plans.len() < chosen.len() {
                decisions.pending.extend(members);
                continue;
            }
            let mut held = Vec::new();
            for (m, plan) in chosen.iter().zip(&plans) {
                match preempt::apply(snap, plan, m, now, &self.rules) {
                    Some(hold) => {
                        let why = self.record(m, plan, hold, Some(job.clone()), decisions);
                        held.push((m.clone(), why));
                    }
                    // The copy said it fits: not reached. Its members then
                    // compete again with their gang.
                    None => break,
                }
            }
            let keys: BTreeSet<&String> = held.iter().map(|(t, _)| &t.key).collect();
            for (t, why) in members {
                if !keys.contains(&t.key) {
                    decisions.pending.push((t, why));
                }
            }
            decisions.pending.extend(held);
        }
    }

    /// Step 1 for the holds of gangs: a gang whose every member's room is
    /// free (its victims gone) and still pending is bound whole, now and
    /// together; one whose hold lapsed, or whose member went, gives all its
    /// holds back and competes again; the others wait.
    fn settle_gang_holds(
        &mut self,
        snap: &mut Snapshot,
        pending: &mut BTreeMap<String, SchedTask>,
        now: jiff::Timestamp,
        decisions: &mut Decisions,
    ) {
        let mut gangs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, h) in &self.holds {
            if let (Some(g), false) = (&h.gang, h.placed) {
                gangs.entry(g.clone()).or_default().push(key.clone());
            }
        }
        for keys in gangs.into_values() {
            let holds: Vec<&Held> = keys.iter().filter_map(|k| self.holds.get(k)).collect();
            let present = keys.iter().all(|k| pending.contains_key(k));
            let ready = present && holds.iter().all(|h| h.victims.is_empty());
            let lapsed = !present
                || holds
                    .iter()
                    .any(|h| !h.victims.is_empty() && now > h.expires);
            if ready {
                let mut bound = Vec::new();
                for k in &keys {
                    preempt::release(snap, k);
                }
                for k in &keys {
                    let (Some(h), Some(task)) = (self.holds.get(k), pending.get(k)) else {
                        continue;
                    };
                    if static_fit(task, snap.node(h.node)).is_ok()
                        && snap.bind(task.clone(), h.node).is_ok()
                    {
                        bound.push((k.clone(), h.node));
                    } else {
                        break;
                    }
                }
                if bound.len() == keys.len() {
                    for (k, node) in bound {
                        snap.set_in_flight(&k, true);
                        if let Some(h) = self.holds.get_mut(&k) {
                            h.placed = true;
                        }
                        pending.remove(&k);
                        decisions.bound.push((k, node));
                    }
                } else {
                    // Not whole after all: nothing of it stays bound.
                    for (k, _) in bound {
                        snap.unbind(&k);
                    }
                    for k in &keys {
                        self.holds.remove(k);
                    }
                }
            } else if lapsed {
                for k in &keys {
                    preempt::release(snap, k);
                    self.holds.remove(k);
                }
            } else {
                for k in &keys {
                    let (Some(h), Some(task)) = (self.holds.get(k), pending.remove(k)) else {
                        continue;
                    };
                    let why = Unplaced::Preempting {
                        node: h.node,
                        victims: h.victims.iter().cloned().collect(),
                        rules: h.rules.clone(),
                    };
                    decisions.pending.push((task, why));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
