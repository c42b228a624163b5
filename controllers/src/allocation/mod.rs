//! The allocation loop: binds PENDING tasks to nodes.
//!
//! Watches: Nodes, Reservations, Roles, Quotas and Tasks (all namespaces).
//! Keeps: one `corral_core::sched::Snapshot`, updated incrementally from those
//! events (a node or reservation change re-describes one node; a task change
//! binds or unbinds one task), the set of pending tasks, and the
//! `corral_core::sched::Allocator` (preemptions in progress: held room,
//! victims still going, bindings not yet seen).
//! Decides: after each burst of events (or every few seconds while tasks
//! wait), one allocation cycle over all pending tasks, ordered by weighted DRF.
//! Writes: the placements through bulk binding requests (each binding one
//! write of `spec.nodeName`, phase ASSIGNED with its task event and the
//! Scheduled condition, with the task's resourceVersion as precondition),
//! a few requests in flight while the loop goes on reading its watches and
//! deciding (kube-scheduler's "assume": a task whose binding is in flight is
//! neither pending nor placed again; a refused binding returns it to
//! pending). Concurrently, at the end of a cycle: for each victim,
//! PREEMPTING with who and why; for each task left pending, its explanation
//! when it changed (a preemptor's says which victims it waits for).
//! Preempts: a task that finds no node may evict lower-ranked tasks that are
//! seen bound (never one whose binding is in flight); their room is held for
//! it, and it is bound there in the first cycle after they are gone, before
//! any other task is placed (or competes again once the hold lapses).
//! A write that loses a race is undone in the snapshot; the watch brings the
//! task's new state and the next cycle retries. All state lives in the
//! objects: a restarted loop rebuilds everything from its watches.

use corral_core::sched::objects as convert;
mod writes;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use corral_api::ports::TaskPort;
use corral_api::{Node, Quota, Reservation, Role, Task};
use corral_core::sched::preempt::Rules;
use corral_core::sched::{Allocator, Policy, Snapshot, explain};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};

use crate::cache::{Cached, Caches, Change, Shared};
use crate::metrics::{Metrics, rule_label, tier_label};

use writes::Evicted;

pub use convert::{TaskState, key_of, task_state};

/// The actor name written in task events.
pub const ACTOR: &str = "scheduler";
/// How often pending tasks are retried when nothing else happens.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Eviction and explanation writes in flight at once.
const WRITE_CONCURRENCY: usize = 64;
/// Bulk binding requests in flight at once.
const BIND_REQUESTS_IN_FLIGHT: usize = 4;

/// One change of any kind the loop follows, from the shared caches.
enum Input {
    Node(Seen<Node>),
    Reservation(Seen<Reservation>),
    Role(Seen<Role>),
    Quota(Seen<Quota>),
    Task(Seen<Task>),
}

/// A change as the loop takes it: one object, or the whole store after a
/// resync (what the loop knows but the store lacks was deleted meanwhile).
enum Seen<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
    All(Vec<Arc<K>>),
}

/// The changes of one cached kind, a resync carrying the whole store.
fn seen<K: Cached>(shared: &Shared<K>) -> impl Stream<Item = Seen<K>> + Send + 'static {
    let store = shared.store();
    shared.changes().map(move |change| match change {
        Change::Applied(o) => Seen::Applied(o),
        Change::Deleted(o) => Seen::Deleted(o),
        Change::Resynced => Seen::All(store.state()),
    })
}

/// The objects' names.
fn names<K: kube::Resource>(all: &[Arc<K>]) -> std::collections::HashSet<String> {
    all.iter().filter_map(|o| o.meta().name.clone()).collect()
}

/// How the loop decides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Where tasks go first.
    pub policy: Policy,
    /// When and whom a task may preempt.
    pub preemption: Rules,
}

/// What the loop remembers between events (all of it derived from watches).
#[derive(Default)]
struct State {
    snap: Snapshot,
    alloc: Allocator,
    nodes: BTreeMap<String, Arc<Node>>,
    reservations: BTreeMap<String, Arc<Reservation>>,
    roles: BTreeMap<String, Arc<Role>>,
    quotas: BTreeMap<String, Arc<Quota>>,
    tasks: HashMap<String, Arc<Task>>,
    pending: BTreeSet<String>,
}

impl State {
    fn refresh_node(&mut self, name: &str) {
        let Some(node) = self.nodes.get(name) else {
            if self.snap.node_id(name).is_some() {
                let _ = self.snap.set_health(name, false);
            }
            return;
        };
        if let Some(state) = convert::node_state(
            node,
            self.reservations.values().map(|r| &**r),
            &mut self.snap.dims,
            jiff::Timestamp::now().as_second(),
        ) {
            self.snap.upsert_node(state);
        }
    }

    fn refresh_role(&mut self, role: &str) {
        let quota = self.quotas.values().find(|q| q.spec.role == role);
        let info = convert::role_info(
            self.roles.get(role).map(|r| &**r),
            quota.map(|q| &**q),
            &mut self.snap.dims,
        );
        self.snap.upsert_role(role, info);
    }

    fn apply_task(&mut self, task: Arc<Task>) {
        let key = key_of(&task);
        match task_state(&task) {
            // A binding this loop wrote landed; an event from before it is old news.
            TaskState::Pending if self.snap.in_flight(&key) => {}
            TaskState::Pending => {
                self.snap.unbind(&key);
                self.pending.insert(key.clone());
            }
            TaskState::Bound(_) if self.alloc.is_going(&key) => {
                // Still being killed; its capacity is held for the preemptor.
                self.pending.remove(&key);
            }
            TaskState::Bound(_) if preempting(&task) => {
                // Preempted before this loop started (or by another leader):
                // going, so nobody preempts again for the same need.
                self.pending.remove(&key);
                self.alloc.note_going(&key);
                self.snap.unbind(&key);
            }
            TaskState::Bound(node) => {
                self.pending.remove(&key);
                self.bind_seen(&key, &node, &task);
            }
            TaskState::Ignored => {
                self.pending.remove(&key);
                self.alloc.gone(&key);
                self.snap.unbind(&key);
            }
        }
        self.tasks.insert(key, task);
    }

    /// The store shows `task` bound to `node`: the snapshot follows it.
    fn bind_seen(&mut self, key: &str, node: &str, task: &Task) {
        let current = self.snap.binding(key).map(|b| b.node);
        let wanted = self.snap.node_id(node);
        if current.is_some() && current == wanted {
            self.alloc.confirmed(&mut self.snap, key);
            return;
        }
        self.snap.unbind(key);
        if let (Some(id), Some(t)) = (wanted, convert::sched_task(task, &mut self.snap.dims))
            && let Err(e) = self.snap.bind(t, id)
        {
            tracing::warn!(task = %key, error = %e, "a task bound outside the scheduler does not fit its node");
        }
    }

    /// The answers to a bulk binding: a refused binding is undone in the
    /// snapshot and the task taken again as the watch last showed it
    /// (pending again, or bound elsewhere, or ended).
    fn answered(&mut self, results: Vec<(String, bool)>) {
        for (key, bound) in results {
            if bound {
                continue;
            }
            self.alloc.bind_failed(&mut self.snap, &key);
            if let Some(task) = self.tasks.get(&key).cloned() {
                self.apply_task(task);
            }
        }
    }

    fn remove_task(&mut self, task: &Task) {
        let key = key_of(task);
        self.pending.remove(&key);
        self.alloc.gone(&key);
        self.snap.unbind(&key);
        self.tasks.remove(&key);
    }

    fn apply(&mut self, input: Input) {
        match input {
            Input::Node(seen) => self.apply_node(seen),
            Input::Reservation(seen) => self.apply_reservation(seen),
            Input::Role(seen) => self.apply_role(seen),
            Input::Quota(seen) => self.apply_quota(seen),
            Input::Task(Seen::Applied(t)) => self.apply_task(t),
            Input::Task(Seen::Deleted(t)) => self.remove_task(&t),
            Input::Task(Seen::All(all)) => {
                let present = all
                    .iter()
                    .map(|t| key_of(t))
                    .collect::<std::collections::HashSet<_>>();
                let gone: Vec<Arc<Task>> = self
                    .tasks
                    .iter()
                    .filter(|(k, _)| !present.contains(*k))
                    .map(|(_, t)| t.clone())
                    .collect();
                for t in gone {
                    self.remove_task(&t);
                }
                for t in all {
                    self.apply_task(t);
                }
            }
        }
    }

    fn apply_node(&mut self, seen: Seen<Node>) {
        let touched: Vec<String> = match seen {
            Seen::Applied(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                self.nodes.insert(name.clone(), n);
                vec![name]
            }
            Seen::Deleted(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                self.nodes.remove(&name);
                vec![name]
            }
            Seen::All(all) => {
                let present = names(&all);
                let mut touched: Vec<String> = self
                    .nodes
                    .keys()
                    .filter(|n| !present.contains(*n))
                    .cloned()
                    .collect();
                self.nodes.retain(|n, _| present.contains(n));
                for n in all {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    self.nodes.insert(name.clone(), n);
                    touched.push(name);
                }
                touched
            }
        };
        for name in touched {
            self.refresh_node(&name);
        }
    }

    fn apply_reservation(&mut self, seen: Seen<Reservation>) {
        // The nodes a reservation was or is on are described again.
        let mut touched = BTreeSet::new();
        let all = match seen {
            Seen::Applied(r) => vec![r],
            Seen::Deleted(r) => {
                self.reservations
                    .remove(r.metadata.name.as_deref().unwrap_or_default());
                touched.insert(r.spec.node.clone());
                Vec::new()
            }
            Seen::All(all) => {
                let present = names(&all);
                self.reservations.retain(|n, r| {
                    let keep = present.contains(n);
                    if !keep {
                        touched.insert(r.spec.node.clone());
                    }
                    keep
                });
                all
            }
        };
        for r in all {
            touched.insert(r.spec.node.clone());
            let name = r.metadata.name.clone().unwrap_or_default();
            if let Some(old) = self.reservations.insert(name, r) {
                touched.insert(old.spec.node.clone());
            }
        }
        for node in touched {
            self.refresh_node(&node);
        }
    }

    fn apply_role(&mut self, seen: Seen<Role>) {
        let touched: Vec<String> = match seen {
            Seen::Applied(r) => {
                let name = r.metadata.name.clone().unwrap_or_default();
                self.roles.insert(name.clone(), r);
                vec![name]
            }
            Seen::Deleted(r) => {
                let name = r.metadata.name.clone().unwrap_or_default();
                self.roles.remove(&name);
                vec![name]
            }
            Seen::All(all) => {
                let present = names(&all);
                let mut touched: Vec<String> = self
                    .roles
                    .keys()
                    .filter(|n| !present.contains(*n))
                    .cloned()
                    .collect();
                self.roles.retain(|n, _| present.contains(n));
                for r in all {
                    let name = r.metadata.name.clone().unwrap_or_default();
                    self.roles.insert(name.clone(), r);
                    touched.push(name);
                }
                touched
            }
        };
        for role in touched {
            self.refresh_role(&role);
        }
    }

    fn apply_quota(&mut self, seen: Seen<Quota>) {
        // The roles a quota was or is for are described again.
        let mut touched = BTreeSet::new();
        let all = match seen {
            Seen::Applied(q) => vec![q],
            Seen::Deleted(q) => {
                self.quotas
                    .remove(q.metadata.name.as_deref().unwrap_or_default());
                touched.insert(q.spec.role.clone());
                Vec::new()
            }
            Seen::All(all) => {
                let present = names(&all);
                self.quotas.retain(|n, q| {
                    let keep = present.contains(n);
                    if !keep {
                        touched.insert(q.spec.role.clone());
                    }
                    keep
                });
                all
            }
        };
        for q in all {
            touched.insert(q.spec.role.clone());
            let name = q.metadata.name.clone().unwrap_or_default();
            if let Some(old) = self.quotas.insert(name, q) {
                touched.insert(old.spec.role.clone());
            }
        }
        for role in touched {
            self.refresh_role(&role);
        }
    }
}

/// The bindings decided and not yet answered: bulk requests waiting their
/// turn, and those in flight.
struct Binder {
    client: kube::Client,
    metrics: Metrics,
    queued: VecDeque<(String, Vec<(String, crate::bulk::Binding)>)>,
    in_flight: FuturesUnordered<futures::future::BoxFuture<'static, Vec<(String, bool)>>>,
}

impl Binder {
    fn new(client: kube::Client, metrics: Metrics) -> Self {
        Binder {
            client,
            metrics,
            queued: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Queues one cycle's bindings, a request per namespace and chunk.
    fn queue(&mut self, bindings: BTreeMap<String, Vec<(String, crate::bulk::Binding)>>) {
        for (ns, mut all) in bindings {
            while !all.is_empty() {
                let rest = all.split_off(all.len().min(crate::bulk::CHUNK));
                self.queued
                    .push_back((ns.clone(), std::mem::replace(&mut all, rest)));
            }
        }
    }

    /// Starts queued requests while there is room.
    fn start(&mut self) {
        while self.in_flight.len() < BIND_REQUESTS_IN_FLIGHT
            && let Some((ns, bindings)) = self.queued.pop_front()
        {
            let (client, metrics) = (self.client.clone(), self.metrics.clone());
            self.in_flight.push(Box::pin(async move {
                let started = std::time::Instant::now();
                let results = writes::bind(client, ns, bindings).await;
                let refused = results.iter().filter(|(_, bound)| !bound).count();
                metrics.bound(started.elapsed().as_secs_f64(), refused);
                results
            }));
        }
    }
}

/// True when `task` is PREEMPTING (its kill under way).
fn preempting(task: &Task) -> bool {
    task.status
        .as_ref()
        .is_some_and(|s| s.phase() == corral_api::TaskPhase::Preempting)
}

/// Runs the allocation loop with the default preemption rules until `stop`
/// turns true.
pub async fn run(client: kube::Client, policy: Policy, stop: tokio::sync::watch::Receiver<bool>) {
    let settings = Settings {
        policy,
        ..Settings::default()
    };
    run_with(client, settings, stop).await;
}

/// Runs the allocation loop until `stop` turns true, with caches of its own.
pub async fn run_with(
    client: kube::Client,
    settings: Settings,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let caches = Caches::new(client.clone(), stop.clone());
    run_cached(client, &caches, settings, Metrics::default(), stop).await;
}

/// Runs the allocation loop until `stop` turns true, reading `caches`
/// (writing through `client`, counting into `metrics`).
pub async fn run_cached(
    client: kube::Client,
    caches: &Caches,
    settings: Settings,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut inputs = futures::stream::select_all(vec![
        seen(caches.nodes()).map(Input::Node).boxed(),
        seen(caches.reservations()).map(Input::Reservation).boxed(),
        seen(caches.roles()).map(Input::Role).boxed(),
        seen(caches.quotas()).map(Input::Quota).boxed(),
        seen(caches.tasks()).map(Input::Task).boxed(),
    ]);
    let mut state = State {
        alloc: Allocator::new(settings.policy, settings.preemption),
        ..State::default()
    };
    let mut binder = Binder::new(client.clone(), metrics.clone());
    let mut ticker = tokio::time::interval(RETRY_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
            Some(results) = binder.in_flight.next(), if !binder.in_flight.is_empty() => {
                state.answered(results);
            }
            next = inputs.next() => match next {
                None => return,
                Some(input) => {
                    state.apply(input);
                    // Take the whole burst before deciding.
                    while let Some(Some(more)) = futures::FutureExt::now_or_never(inputs.next()) {
                        state.apply(more);
                    }
                }
            },
        }
        if !state.pending.is_empty() {
            cycle(&client, &mut state, &mut binder, &metrics).await;
        } else {
            // Nothing waits (the last pending went without a cycle: deleted).
            metrics.nothing_pending();
        }
        binder.start();
    }
}

/// One allocation cycle: its bindings queued on `binder`, its evictions and
/// explanations written.
async fn cycle(client: &kube::Client, state: &mut State, binder: &mut Binder, metrics: &Metrics) {
    let now = jiff::Timestamp::now();
    let mut tasks = Vec::new();
    for key in &state.pending {
        if let Some(t) = state
            .tasks
            .get(key)
            .and_then(|t| convert::sched_task(t, &mut state.snap.dims))
        {
            tasks.push(t);
        }
    }
    let considered = tasks.len();
    let started = std::time::Instant::now();
    let decided = state.alloc.cycle(&mut state.snap, tasks, now);
    let decided_in = started.elapsed().as_secs_f64();
    metrics.holds(state.alloc.holds().count());
    let mut bindings: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (key, node) in &decided.bound {
        // In flight: no longer pending, and placed on `node` in the snapshot.
        state.pending.remove(key);
        let Some(task) = state.tasks.get(key).cloned() else {
            state.alloc.bind_failed(&mut state.snap, key);
            continue;
        };
        let ns = task.metadata.namespace.clone().unwrap_or_default();
        let node = state.snap.node(*node).name.clone();
        let assigned = state.snap.binding(key).map(|b| b.ports.as_slice());
        let ports = task
            .spec
            .ports
            .iter()
            .zip(assigned.unwrap_or_default())
            .map(|(p, &port)| TaskPort {
                name: p.name.clone(),
                port,
            })
            .collect();
        let binding = crate::bulk::Binding {
            task: task.metadata.name.clone().unwrap_or_default(),
            resource_version: task.metadata.resource_version.clone(),
            host_ip: state
                .nodes
                .get(&node)
                .and_then(|n| n.status.as_ref()?.reach_address().map(str::to_owned)),
            node,
            ports,
        };
        bindings.entry(ns).or_default().push((key.clone(), binding));
    }
    binder.queue(bindings);
    binder.start();
    let evictions: Vec<_> = decided
        .evictions
        .iter()
        .filter_map(|e| {
            let task = Task::clone(state.tasks.get(&e.victim.key)?);
            Some(writes::evict(client.clone(), task, e.clone(), now))
        })
        .collect();
    let mut explanations = Vec::new();
    let mut pending: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    for (t, why) in &decided.pending {
        let Some(task) = state.tasks.get(&t.key) else {
            continue;
        };
        let e = explain(&state.snap, t, why, now);
        let reason = e.reasons.first().map_or("Unknown", |r| r.kind.as_str());
        *pending.entry((t.role.clone(), reason)).or_default() += 1;
        let unchanged = task
            .status
            .as_ref()
            .and_then(|s| s.explanation.as_ref())
            .is_some_and(|old| old.summary == e.summary);
        if !unchanged {
            explanations.push(writes::write_explanation(
                client.clone(),
                task.clone(),
                e,
                why.clone(),
            ));
        }
    }
    metrics.cycle(decided_in, considered, decided.bound.len(), &pending);
    let victims: HashMap<&str, (&'static str, &'static str)> = decided
        .evictions
        .iter()
        .map(|e| {
            let v = &e.victim;
            (v.key.as_str(), (rule_label(v.rule), tier_label(v.tier)))
        })
        .collect();
    let (evicted, ()) = futures::join!(
        futures::stream::iter(evictions)
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect::<Vec<(String, Evicted)>>(),
        futures::stream::iter(explanations)
            .buffer_unordered(WRITE_CONCURRENCY)
            .for_each(|()| async {}),
    );
    for (key, outcome) in evicted {
        match outcome {
            Evicted::Yes => {
                if let Some((rule, tier)) = victims.get(key.as_str()) {
                    metrics.preempted(rule, tier);
                }
            }
            // Its room is free for good; the watch brings its end.
            Evicted::AlreadyEnded => state.alloc.gone(&key),
            Evicted::Refused => {
                // Not going after all: its preemptor competes again, and the
                // snapshot gets the victim back as the store last showed it.
                state.alloc.eviction_failed(&mut state.snap, &key);
                if let Some(task) = state.tasks.get(&key).cloned() {
                    state.apply_task(task);
                }
            }
        }
    }
}
