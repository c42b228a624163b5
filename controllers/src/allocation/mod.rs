//! The allocation loop: binds PENDING tasks to nodes.
//!
//! Watches: Nodes, Reservations, Roles, Quotas and Tasks (all namespaces).
//! Keeps: one `corral_core::sched::Snapshot`, updated incrementally from those
//! events (a node or reservation change re-describes one node; a task change
//! binds or unbinds one task), and the set of pending tasks.
//! Decides: after each burst of events (or every few seconds while tasks
//! wait), one allocation cycle over all pending tasks, ordered by weighted DRF.
//! Writes: for each placement, `spec.nodeName` (with the task's
//! resourceVersion as precondition) then the status (phase ASSIGNED, a task
//! event from the lifecycle state machine, the Scheduled condition);
//! concurrently. For each task left pending, its explanation, when it changed.
//! Preempts: a task that finds no node may evict lower-ranked tasks (the
//! `corral_core::sched::preempt` plan): victims go PREEMPTING with who and why
//! in their status; their room is held for the preemptor, which is placed
//! once they are gone (or the hold lapses).
//! A write that loses a race is undone in the snapshot; the watch brings the
//! task's new state and the next cycle retries. All state lives in the
//! objects: a restarted loop rebuilds everything from its watches.

mod convert;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use corral_api::task::{TaskConditionType, TaskReason};
use corral_api::{Condition, ConditionStatus, Node, Quota, Reservation, Role, Task};
use corral_core::lifecycle;
use corral_core::sched::{Policy, Snapshot, Unplaced, explain, preempt, run_cycle};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

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

/// What the loop remembers between events (all of it derived from watches).
#[derive(Default)]
struct State {
    snap: Snapshot,
    nodes: BTreeMap<String, Node>,
    reservations: BTreeMap<String, Reservation>,
    roles: BTreeMap<String, Role>,
    quotas: BTreeMap<String, Quota>,
    tasks: HashMap<String, Task>,
    pending: BTreeSet<String>,
    /// Tasks evicted in the snapshot for a preemptor; their room belongs to its hold.
    evicted: BTreeSet<String>,
    /// Capacity held for preemptors: preemptor → (expiry, victims).
    holds: HashMap<String, (jiff::Timestamp, Vec<String>)>,
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
            TaskState::Pending => {
                self.snap.unbind(&key);
                self.pending.insert(key.clone());
            }
            TaskState::Bound(_) if self.evicted.contains(&key) => {
                // Still being killed; its capacity is held for the preemptor.
                self.pending.remove(&key);
            }
            TaskState::Bound(node) => {
                self.pending.remove(&key);
                let current = self.snap.binding(&key).map(|b| b.node);
                let wanted = self.snap.node_id(&node);
                if current != wanted || current.is_none() {
                    self.snap.unbind(&key);
                    if let (Some(id), Some(t)) =
                        (wanted, convert::sched_task(&task, &mut self.snap.dims))
                        && let Err(e) = self.snap.bind(t, id)
                    {
                        tracing::warn!(task = %key, error = %e, "a task bound outside the scheduler does not fit its node");
                    }
                }
            }
            TaskState::Ignored => {
                self.pending.remove(&key);
                self.evicted.remove(&key);
                self.snap.unbind(&key);
            }
        }
        self.tasks.insert(key, task);
    }

    fn remove_task(&mut self, task: &Task) {
        let key = key_of(task);
        self.pending.remove(&key);
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

/// Runs the allocation loop until `stop` turns true.
pub async fn run(
    client: kube::Client,
    policy: Policy,
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
    let mut state = State::default();
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
            cycle(&client, &mut state, policy).await;
        }
    }
}

/// One allocation cycle and its writes.
async fn cycle(client: &kube::Client, state: &mut State, policy: Policy) {
    let now = jiff::Timestamp::now();
    // A preemptor waits for its victims to go (or its hold to lapse), then
    // takes the held room back for its own placement.
    let mut waiting = BTreeSet::new();
    let holders: Vec<String> = state.holds.keys().cloned().collect();
    for key in holders {
        let Some((expires, victims)) = state.holds.get(&key) else {
            continue;
        };
        let gone = victims.iter().all(|v| !state.evicted.contains(v));
        if gone || now > *expires || !state.pending.contains(&key) {
            preempt::release(&mut state.snap, &key);
            state.holds.remove(&key);
        } else {
            waiting.insert(key);
        }
    }
    let mut tasks = Vec::new();
    for key in state.pending.iter().filter(|k| !waiting.contains(*k)) {
        if let Some(t) = state
            .tasks
            .get(key)
            .and_then(|t| convert::sched_task(t, &mut state.snap.dims))
        {
            tasks.push(t);
        }
    }
    let decided = run_cycle(&mut state.snap, tasks, policy);
    let mut writes = Vec::new();
    for (key, node) in &decided.bound {
        if let Some(task) = state.tasks.get(key) {
            writes.push(bind(
                client.clone(),
                task.clone(),
                state.snap.node(*node).name.clone(),
                now,
            ));
        }
    }
    let results: Vec<(String, bool)> = futures::stream::iter(writes)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    for (key, ok) in results {
        if ok {
            state.pending.remove(&key);
        } else {
            state.snap.unbind(&key);
        }
    }
    // Tasks that found no node may preempt lower-ranked ones, highest rank first.
    let mut preemptors: Vec<&(corral_core::sched::SchedTask, Unplaced)> = decided
        .pending
        .iter()
        .filter(|(t, why)| {
            matches!(why, Unplaced::NoNode(_) | Unplaced::Guarantee { .. })
                && t.tier != corral_api::Tier::Revocable
        })
        .collect();
    preemptors.sort_by(|(a, _), (b, _)| {
        b.tier
            .rank()
            .cmp(&a.tier.rank())
            .then(b.priority.cmp(&a.priority))
            .then(a.created.cmp(&b.created))
    });
    let rules = preempt::Rules::default();
    let mut evictions = Vec::new();
    let mut preempting = BTreeSet::new();
    for (t, _) in preemptors {
        let Some(plan) = preempt::plan(&state.snap, t, now, &rules) else {
            continue;
        };
        let Some(hold) = preempt::apply(&mut state.snap, &plan, t, now, &rules) else {
            continue;
        };
        state.holds.insert(
            t.key.clone(),
            (
                hold.expires,
                plan.victims.iter().map(|v| v.key.clone()).collect(),
            ),
        );
        preempting.insert(t.key.clone());
        for v in &plan.victims {
            state.evicted.insert(v.key.clone());
            if let Some(task) = state.tasks.get(&v.key) {
                let why = format!(
                    "preempted by {} ({:?}: {} tier {:?} priority {} over {:?} priority {})",
                    t.key, v.rule, t.role, t.tier, t.priority, v.tier, v.priority
                );
                evictions.push(evict(client.clone(), task.clone(), t.key.clone(), why, now));
            }
        }
    }
    futures::stream::iter(evictions)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let mut explanations = Vec::new();
    for (t, why) in decided
        .pending
        .iter()
        .filter(|(t, _)| !preempting.contains(&t.key))
    {
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
            explanations.push(write_explanation(
                client.clone(),
                task.clone(),
                e,
                why.clone(),
            ));
        }
    }
    futures::stream::iter(explanations)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

/// Drives a victim to PREEMPTING, recording who preempted it and why.
async fn evict(client: kube::Client, task: Task, by: String, why: String, now: jiff::Timestamp) {
    let ns = task
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = task.metadata.name.clone().unwrap_or_default();
    let api: Api<Task> = Api::namespaced(client, &ns);
    let mut status = task.status.clone().unwrap_or_default();
    if let Err(e) = lifecycle::apply(&mut status, &lifecycle::Event::Preempted { by }, now, ACTOR) {
        tracing::warn!(task = %name, error = %e, "preempting a task the state machine does not allow");
        return;
    }
    if let Some(last) = status.task_events.last_mut() {
        last.message = why.clone();
    }
    status.message = Some(why.clone());
    let time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
    ));
    status
        .conditions
        .retain(|c| c.type_ != TaskConditionType::Preempted);
    status.conditions.push(Condition {
        type_: TaskConditionType::Preempted,
        status: ConditionStatus::True,
        reason: TaskReason::PreemptedByHigherPriority,
        message: why,
        last_transition_time: time,
        observed_generation: None,
    });
    // The precondition keeps a concurrent kill or agent report from being overwritten.
    let patch =
        json!({"metadata": {"resourceVersion": task.metadata.resource_version}, "status": status});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::warn!(task = %name, error = %e, "writing PREEMPTING failed");
    }
}

/// Writes one binding: the node name (conditional on the version the decision
/// saw), then the status. Returns whether the task is now bound.
async fn bind(
    client: kube::Client,
    task: Task,
    node: String,
    now: jiff::Timestamp,
) -> (String, bool) {
    let key = key_of(&task);
    let ns = task
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = task.metadata.name.clone().unwrap_or_default();
    let api: Api<Task> = Api::namespaced(client, &ns);
    let spec = json!({"metadata": {"resourceVersion": task.metadata.resource_version}, "spec": {"nodeName": node}});
    let mut current = match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(spec))
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(task = %key, error = %e, "binding lost a race; will retry");
            return (key, false);
        }
    };
    // Read-modify-write under the version just written: a kill or an agent
    // report that lands in between is re-read, never overwritten.
    for _ in 0..5 {
        let mut status = current.status.clone().unwrap_or_default();
        // Its creator's PENDING step may not have landed yet (the scheduler was
        // quicker); history starts at PENDING, dated at the task's creation.
        if status.task_events.is_empty() {
            let created = current
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(now, |t| t.0);
            status.task_events =
                lifecycle::created("pending since its creation".into(), created, ACTOR).task_events;
        }
        if let Err(e) = lifecycle::apply(
            &mut status,
            &lifecycle::Event::Assigned { node: node.clone() },
            now,
            ACTOR,
        ) {
            tracing::warn!(task = %key, error = %e, "bound a task the state machine does not allow");
            break;
        }
        set_condition(
            &mut status.conditions,
            ConditionStatus::True,
            TaskReason::Assigned,
            format!("assigned to {node}"),
            now,
        );
        let patch = json!({"metadata": {"resourceVersion": current.metadata.resource_version}, "status": status});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => match api.get(&name).await {
                Ok(t) => current = t,
                Err(e) => {
                    tracing::warn!(task = %key, error = %e, "re-reading a bound task failed");
                    break;
                }
            },
            Err(e) => {
                tracing::warn!(task = %key, error = %e, "writing the ASSIGNED status failed");
                break;
            }
        }
    }
    (key, true)
}

async fn write_explanation(
    client: kube::Client,
    task: Task,
    e: corral_api::task::PendingExplanation,
    why: Unplaced,
) {
    let ns = task
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = task.metadata.name.clone().unwrap_or_default();
    let api: Api<Task> = Api::namespaced(client, &ns);
    let mut status = task.status.clone().unwrap_or_default();
    let reason = match why {
        Unplaced::Quota { .. } | Unplaced::Guarantee { .. } | Unplaced::NoNode(_) => {
            TaskReason::Unschedulable
        }
    };
    set_condition(
        &mut status.conditions,
        ConditionStatus::False,
        reason,
        e.summary.clone(),
        e.evaluated_at
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    );
    status.explanation = Some(e);
    if status.phase.is_none() {
        status.phase = Some(corral_api::TaskPhase::Pending);
    }
    // Conditional: a task killed or bound meanwhile keeps its phase; the next cycle re-evaluates.
    let patch =
        json!({"metadata": {"resourceVersion": task.metadata.resource_version}, "status": status});
    if let Err(err) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::debug!(task = %name, error = %err, "writing an explanation failed");
    }
}

fn set_condition(
    conditions: &mut Vec<Condition<TaskConditionType, TaskReason>>,
    status: ConditionStatus,
    reason: TaskReason,
    message: String,
    now: jiff::Timestamp,
) {
    let time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
    ));
    match conditions
        .iter_mut()
        .find(|c| c.type_ == TaskConditionType::Scheduled)
    {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = time;
            }
            c.status = status;
            c.reason = reason;
            c.message = message;
        }
        None => conditions.push(Condition {
            type_: TaskConditionType::Scheduled,
            status,
            reason,
            message,
            last_transition_time: time,
            observed_generation: None,
        }),
    }
}
