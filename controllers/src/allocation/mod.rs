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
//! Writes, concurrently: for each placement, `spec.nodeName` (with the task's
//! resourceVersion as precondition) then the status (phase ASSIGNED, a task
//! event from the lifecycle state machine, the Scheduled condition). For each
//! victim, PREEMPTING with who and why. For each task left pending, its
//! explanation when it changed (a preemptor's says which victims it waits for).
//! Preempts: a task that finds no node may evict lower-ranked tasks that are
//! seen bound (never one whose binding is in flight); their room is held for
//! it, and it is bound there in the first cycle after they are gone, before
//! any other task is placed (or competes again once the hold lapses).
//! A write that loses a race is undone in the snapshot; the watch brings the
//! task's new state and the next cycle retries. All state lives in the
//! objects: a restarted loop rebuilds everything from its watches.

mod convert;
mod writes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use corral_api::{Node, Quota, Reservation, Role, Task};
use corral_core::sched::preempt::Rules;
use corral_core::sched::{Allocator, Policy, Snapshot, explain};
use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};

use writes::Evicted;

pub use convert::{TaskState, key_of, task_state};

/// The actor name written in task events.
pub const ACTOR: &str = "scheduler";
/// How often pending tasks are retried when nothing else happens.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Writes in flight at once.
const WRITE_CONCURRENCY: usize = 64;

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    /// A watch failed for good.
    #[error("watch failed: {0}")]
    Watch(#[from] watcher::Error),
}

/// One watch event of any kind the loop follows (boxed: the kinds differ a lot in size).
enum Input {
    Node(Box<Event<Node>>),
    Reservation(Box<Event<Reservation>>),
    Role(Box<Event<Role>>),
    Quota(Box<Event<Quota>>),
    Task(Box<Event<Task>>),
}

/// An [`Input`] taken out of its box, for matching (one at a time, on the stack).
#[allow(clippy::large_enum_variant)]
enum Unboxed {
    Node(Event<Node>),
    Reservation(Event<Reservation>),
    Role(Event<Role>),
    Quota(Event<Quota>),
    Task(Event<Task>),
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
    nodes: BTreeMap<String, Node>,
    reservations: BTreeMap<String, Reservation>,
    roles: BTreeMap<String, Role>,
    quotas: BTreeMap<String, Quota>,
    tasks: HashMap<String, Task>,
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
        if let Some(state) =
            convert::node_state(node, self.reservations.values(), &mut self.snap.dims)
        {
            self.snap.upsert_node(state);
        }
    }

    fn refresh_role(&mut self, role: &str) {
        let quota = self.quotas.values().find(|q| q.spec.role == role);
        let info = convert::role_info(self.roles.get(role), quota, &mut self.snap.dims);
        self.snap.upsert_role(role, info);
    }

    fn apply_task(&mut self, task: Task) {
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

    fn remove_task(&mut self, task: &Task) {
        let key = key_of(task);
        self.pending.remove(&key);
        self.alloc.gone(&key);
        self.snap.unbind(&key);
        self.tasks.remove(&key);
    }

    fn apply(&mut self, input: Input) {
        let input = match input {
            Input::Node(e) => Unboxed::Node(*e),
            Input::Reservation(e) => Unboxed::Reservation(*e),
            Input::Role(e) => Unboxed::Role(*e),
            Input::Quota(e) => Unboxed::Quota(*e),
            Input::Task(e) => Unboxed::Task(*e),
        };
        match input {
            Unboxed::Node(Event::Apply(n) | Event::InitApply(n)) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                self.nodes.insert(name.clone(), n);
                self.refresh_node(&name);
            }
            Unboxed::Node(Event::Delete(n)) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                self.nodes.remove(&name);
                self.refresh_node(&name);
            }
            Unboxed::Reservation(Event::Apply(r) | Event::InitApply(r)) => {
                let node = r.spec.node.clone();
                let old = self
                    .reservations
                    .insert(r.metadata.name.clone().unwrap_or_default(), r)
                    .map(|o| o.spec.node);
                self.refresh_node(&node);
                if let Some(o) = old.filter(|o| *o != node) {
                    self.refresh_node(&o);
                }
            }
            Unboxed::Reservation(Event::Delete(r)) => {
                self.reservations
                    .remove(r.metadata.name.as_deref().unwrap_or_default());
                self.refresh_node(&r.spec.node);
            }
            Unboxed::Role(Event::Apply(r) | Event::InitApply(r)) => {
                let name = r.metadata.name.clone().unwrap_or_default();
                self.roles.insert(name.clone(), r);
                self.refresh_role(&name);
            }
            Unboxed::Role(Event::Delete(r)) => {
                let name = r.metadata.name.clone().unwrap_or_default();
                self.roles.remove(&name);
                self.refresh_role(&name);
            }
            Unboxed::Quota(Event::Apply(q) | Event::InitApply(q)) => {
                let role = q.spec.role.clone();
                self.quotas
                    .insert(q.metadata.name.clone().unwrap_or_default(), q);
                self.refresh_role(&role);
            }
            Unboxed::Quota(Event::Delete(q)) => {
                self.quotas
                    .remove(q.metadata.name.as_deref().unwrap_or_default());
                self.refresh_role(&q.spec.role);
            }
            Unboxed::Task(Event::Apply(t) | Event::InitApply(t)) => self.apply_task(t),
            Unboxed::Task(Event::Delete(t)) => self.remove_task(&t),
            Unboxed::Node(Event::Init | Event::InitDone)
            | Unboxed::Reservation(Event::Init | Event::InitDone)
            | Unboxed::Role(Event::Init | Event::InitDone)
            | Unboxed::Quota(Event::Init | Event::InitDone)
            | Unboxed::Task(Event::Init | Event::InitDone) => {}
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
pub async fn run(
    client: kube::Client,
    policy: Policy,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AllocationError> {
    let settings = Settings {
        policy,
        ..Settings::default()
    };
    run_with(client, settings, stop).await
}

/// Runs the allocation loop until `stop` turns true.
pub async fn run_with(
    client: kube::Client,
    settings: Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AllocationError> {
    let cfg = watcher::Config::default();
    let inputs = futures::stream::select_all(vec![
        watcher::watcher(Api::<Node>::all(client.clone()), cfg.clone())
            .map_ok(|e| Input::Node(Box::new(e)))
            .boxed(),
        watcher::watcher(Api::<Reservation>::all(client.clone()), cfg.clone())
            .map_ok(|e| Input::Reservation(Box::new(e)))
            .boxed(),
        watcher::watcher(Api::<Role>::all(client.clone()), cfg.clone())
            .map_ok(|e| Input::Role(Box::new(e)))
            .boxed(),
        watcher::watcher(Api::<Quota>::all(client.clone()), cfg.clone())
            .map_ok(|e| Input::Quota(Box::new(e)))
            .boxed(),
        watcher::watcher(Api::<Task>::all(client.clone()), cfg)
            .map_ok(|e| Input::Task(Box::new(e)))
            .boxed(),
    ]);
    let mut inputs = inputs;
    let mut state = State {
        alloc: Allocator::new(settings.policy, settings.preemption),
        ..State::default()
    };
    let mut ticker = tokio::time::interval(RETRY_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = ticker.tick() => {}
            next = inputs.next() => match next {
                None => return Ok(()),
                Some(Err(e)) => {
                    // The watcher retries by itself after transient errors.
                    tracing::warn!(error = %e, "allocation watch error");
                    continue;
                }
                Some(Ok(input)) => {
                    state.apply(input);
                    // Take the whole burst before deciding.
                    while let Some(Some(Ok(more))) = futures::FutureExt::now_or_never(inputs.next()) {
                        state.apply(more);
                    }
                }
            },
        }
        if !state.pending.is_empty() {
            cycle(&client, &mut state).await;
        }
    }
}

/// One allocation cycle and its writes.
async fn cycle(client: &kube::Client, state: &mut State) {
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
    let decided = state.alloc.cycle(&mut state.snap, tasks, now);
    let binds: Vec<_> = decided
        .bound
        .iter()
        .filter_map(|(key, node)| {
            let task = state.tasks.get(key)?.clone();
            let node = state.snap.node(*node).name.clone();
            Some(writes::bind(client.clone(), task, node))
        })
        .collect();
    let evictions: Vec<_> = decided
        .evictions
        .iter()
        .filter_map(|e| {
            let task = state.tasks.get(&e.victim.key)?.clone();
            Some(writes::evict(client.clone(), task, e.clone(), now))
        })
        .collect();
    let mut explanations = Vec::new();
    for (t, why) in &decided.pending {
        let Some(task) = state.tasks.get(&t.key) else {
            continue;
        };
        let e = explain(&state.snap, t, why, now);
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
    let (bound, evicted, ()) = futures::join!(
        futures::stream::iter(binds)
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect::<Vec<(String, bool)>>(),
        futures::stream::iter(evictions)
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect::<Vec<(String, Evicted)>>(),
        futures::stream::iter(explanations)
            .buffer_unordered(WRITE_CONCURRENCY)
            .for_each(|()| async {}),
    );
    for (key, ok) in bound {
        if ok {
            state.pending.remove(&key);
        } else {
            state.alloc.bind_failed(&mut state.snap, &key);
        }
    }
    for (key, outcome) in evicted {
        match outcome {
            Evicted::Yes => {}
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
