//! What the agent runs: launches, kills, status reports, state
//! reconciliation and fencing.
//!
//! The [`Supervisor`] keeps the agent's book: which runtime runs which task
//! (and for which node), the latest Task objects from the watch, which kills
//! are under way and which ends were reported. It decides with
//! `corral_core::reconcile` and `corral_core::lifecycle`, so the watch path
//! (one task changed) and the periodic sweep (everything the runtimes run
//! against everything bound here) take the same decisions:
//! - ASSIGNED tasks are launched with the runtime they ask for, or the
//!   node's default runtime when they name none, never another: a task whose
//!   runtime is missing or down fails with `NoRuntime` and is placed again
//!   (host processes are never a fallback for containers); kill requests are
//!   carried out with the task's grace;
//! - errant copies (their task ended, or no task bound here has their name)
//!   are killed: a task event on the task, or a v1 Event on the Node when
//!   there is no task;
//! - a PARTITIONED task whose copy runs is reported running; one the
//!   cluster believes runs here with no copy is reported as having none.
//!
//! A copy belongs to the task object it was launched for (by uid, which
//! runtimes keep with their containers): should a new task get the name of
//! a deleted one while its copy still runs, that copy is killed as errant
//! and the new task launched once it is gone.
//!
//! Every report goes through the lifecycle state machine and is written as
//! the task's status, many tasks in one request ([`reports`]: per task in
//! order, retried until it is written or the task is gone), dated when the
//! agent learned of it. A
//! task's end, kept on disk by its runtime ([`crate::checkpoint`]), is
//! forgotten once written; after a restart, the ends left on disk count as
//! ended here and are reported once the first list shows their tasks.
//!
//! **Fencing**: when the agent has not renewed its lease for half its
//! duration, it kills the tasks of fenced jobs (`spec.fenced`; every task
//! with `--fence`) with their grace capped at a quarter of the lease, and
//! launches nothing, until a renewal succeeds again. The control plane
//! declares the node lost only when the lease expires, so the old copies of
//! fenced tasks are gone before any replacement is created: two copies of
//! such a task never run at once. Other tasks run on through any outage of
//! the control plane. Once renewed, a v1 Event on each Node says what was
//! fenced.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use corral_api::node::RuntimeKind;
use corral_api::task::FailureReason;
use corral_api::{Task, TaskPhase};
use corral_core::lifecycle::{Event, Failure};
use corral_core::reconcile::{self, Errant, NodeView, Verdict};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;

use crate::checkpoint::{Checkpoints, Ended};

mod disk_limits;
mod figures;
mod launch;
mod probing;
mod reports;
use crate::runtime::{ContainerRuntime, Launch, RuntimeError, RuntimeEvent, kind_name};

/// How long a kill waits before it is forced, unless the task says otherwise.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// The latest task objects, shared with the status writers.
pub(crate) type Objects = Arc<std::sync::Mutex<HashMap<String, Task>>>;
/// Which runtimes answered their last health check.
pub(crate) type Health = Arc<Vec<std::sync::atomic::AtomicBool>>;
/// Where runtimes send what happens to the tasks they run.
pub(crate) type RuntimeEvents = mpsc::Sender<(String, RuntimeEvent)>;
/// What a report says happened.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// A move of the state machine.
    Event(Event),
    /// The task's health check flipped: its `Healthy` condition, with the
    /// last probe's output.
    Health {
        /// Whether it is healthy now.
        healthy: bool,
        /// The last probe's output.
        message: String,
    },
}

/// A report: what happened, on which node, when, about the copy of which
/// task (uid, when known).
type Report = (Step, String, jiff::Timestamp, Option<String>);

/// The key of a task object: `<namespace>/<name>`.
pub(crate) fn key_of(t: &Task) -> String {
    format!(
        "{}/{}",
        t.metadata.namespace.as_deref().unwrap_or("default"),
        t.metadata.name.as_deref().unwrap_or("")
    )
}

fn grace_of(task: &Task) -> Duration {
    task.spec
        .container
        .kill_grace_period_seconds
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(KILL_GRACE)
}

/// The runtime that runs `launch`: the one it asks for, or `default` when it
/// names none (a simulated runtime stands in for any), healthy and able to
/// run it; else why not.
fn pick(
    runtimes: &[Arc<dyn ContainerRuntime>],
    health: &Health,
    launch: &Launch,
    default: Option<RuntimeKind>,
) -> Result<usize, String> {
    let wanted = launch.container.runtime.or(default);
    let named = |r: &Arc<dyn ContainerRuntime>| {
        r.kind() == RuntimeKind::Simulated || wanted.is_none_or(|w| r.kind() == w)
    };
    let healthy = |i: usize| health[i].load(std::sync::atomic::Ordering::Relaxed);
    let what = wanted.map_or("a", RuntimeKind::as_str);
    let Some(i) = runtimes.iter().position(named) else {
        let names: Vec<&str> = runtimes.iter().map(|r| kind_name(r.kind())).collect();
        return Err(format!(
            "this node does not offer the {what} runtime (it offers {})",
            names.join(", ")
        ));
    };
    if !healthy(i) {
        return Err(format!(
            "the {} runtime is not healthy",
            kind_name(runtimes[i].kind())
        ));
    }
    if let Some(why) = runtimes[i].unsupported(launch) {
        return Err(format!(
            "the {} runtime cannot run this task: {why}",
            kind_name(runtimes[i].kind())
        ));
    }
    Ok(i)
}

/// The agent's book of what it runs, and the decisions over it.
pub(crate) struct Supervisor {
    client: kube::Client,
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
    health: Health,
    /// The runtime of tasks that name none.
    default_runtime: Option<RuntimeKind>,
    events: RuntimeEvents,
    /// The nodes this agent stands for.
    nodes: BTreeSet<String>,
    /// Task key → (runtime index, node): what this agent launched or re-adopted.
    pub(crate) tasks: HashMap<String, (usize, String)>,
    /// Latest task objects bound to our nodes.
    pub(crate) objects: Objects,
    /// Where status reports go (started with the first).
    reporter: Option<reports::Reporter>,
    /// The uid of the task each copy in the book was launched for, when known.
    uids: HashMap<String, String>,
    /// Tasks a kill was sent for (one kill per task).
    killing: HashSet<String>,
    /// Tasks waiting for another job's endpoints before they start: the
    /// wait is abandoned when the sender is dropped.
    waiting: HashMap<String, tokio::sync::watch::Sender<()>>,
    /// Tasks whose end this agent reported (until their object is deleted),
    /// with their uid when known, so a stale RUNNING from the watch is not
    /// mistaken for a lost copy.
    ended: HashMap<String, Option<String>>,
    /// While fenced: the tasks fencing killed.
    fenced: Option<Vec<String>>,
    /// Why the lease went unrenewed when fencing began, and when it was
    /// last renewed before.
    fence_cause: String,
    last_renewed: tokio::time::Instant,
    /// Where runtimes keep ends until they are reported.
    checkpoints: Option<Checkpoints>,
    /// Ends kept by an earlier run of the agent, reported after the first list.
    restored: Vec<Ended>,
    /// Tasks the agent killed for a reason of its own (their disk use,
    /// their health check), and the failure each ends with.
    over_disk: HashMap<String, Failure>,
    /// Health checking: where probe results go, each checked task's probe
    /// loop and run of results.
    probing: probing::Probing,
    /// Where container starts are counted.
    metrics: crate::metrics::AgentMetrics,
}

impl Supervisor {
    pub(crate) fn new(
        client: kube::Client,
        runtimes: Vec<Arc<dyn ContainerRuntime>>,
        health: Health,
        default_runtime: Option<RuntimeKind>,
        events: RuntimeEvents,
        nodes: &[String],
        checkpoints: Option<Checkpoints>,
    ) -> Self {
        let restored = checkpoints
            .as_ref()
            .map(Checkpoints::load)
            .unwrap_or_default();
        let ended = restored
            .iter()
            .map(|e| (e.key.clone(), Some(e.uid.clone())))
            .collect();
        Self {
            client,
            runtimes,
            health,
            default_runtime,
            events,
            nodes: nodes.iter().cloned().collect(),
            tasks: HashMap::new(),
            objects: Arc::new(std::sync::Mutex::new(HashMap::new())),
            reporter: None,
            uids: HashMap::new(),
            killing: HashSet::new(),
            waiting: HashMap::new(),
            ended,
            fenced: None,
            fence_cause: String::new(),
            last_renewed: tokio::time::Instant::now(),
            checkpoints,
            restored,
            over_disk: HashMap::new(),
            probing: probing::Probing::default(),
            metrics: crate::metrics::AgentMetrics::default(),
        }
    }

    /// Counts container starts into `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: crate::metrics::AgentMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Reports the ends an earlier run of the agent kept on disk and could
    /// not report (call once the first list filled the book: a task it does
    /// not show is gone, and its end is dropped).
    pub(crate) fn report_restored(&mut self) {
        for e in std::mem::take(&mut self.restored) {
            tracing::info!(task = %e.key, "reporting an end kept across an agent restart");
            let node = self.node_of(&e.key);
            self.report_at(&e.key, e.end.event(), &node, Some(e.uid), e.at);
        }
    }

    /// The only node, when the agent stands for one.
    fn single(&self) -> Option<String> {
        match self.nodes.len() {
            1 => self.nodes.first().cloned(),
            _ => None,
        }
    }

    fn node_of(&self, key: &str) -> String {
        self.tasks
            .get(key)
            .map(|(_, n)| n.clone())
            .or_else(|| self.object(key).and_then(|t| t.spec.node_name))
            .or_else(|| self.single())
            .unwrap_or_default()
    }

    fn object(&self, key: &str) -> Option<Task> {
        self.objects.lock().ok().and_then(|o| o.get(key).cloned())
    }

    /// The kill grace period of the task `key` (the default when unknown).
    fn grace(&self, key: &str) -> Duration {
        self.object(key).map_or(KILL_GRACE, |t| grace_of(&t))
    }

    /// Takes over a task a runtime re-adopted after an agent restart.
    pub(crate) fn adopt(&mut self, key: String, runtime: usize, node: String) {
        if let Some(uid) = self.runtimes[runtime].uid(&key) {
            self.uids.insert(key.clone(), uid);
        }
        self.tasks.insert(key, (runtime, node));
    }

    /// True when the copy of `key` in the book was launched for another
    /// task than `uid` (a deleted one of the same name).
    fn copy_of_another(&self, key: &str, uid: Option<&str>) -> bool {
        matches!((self.uids.get(key), uid), (Some(mine), Some(theirs)) if mine != theirs)
    }

    /// True when the agent reported the end of the task `uid` named `key`.
    fn ended_here(&self, key: &str, uid: Option<&str>) -> bool {
        match (self.ended.get(key), uid) {
            (None, _) => false,
            (Some(Some(mine)), Some(theirs)) => mine == theirs,
            (Some(_), _) => true,
        }
    }

    /// A runtime reported on one of its tasks.
    pub(crate) fn runtime_event(&mut self, key: &str, ev: RuntimeEvent) {
        let node = self.node_of(key);
        let uid = self.uids.get(key).cloned();
        let event = match ev {
            RuntimeEvent::Starting => Event::AgentStarting,
            RuntimeEvent::Running => {
                self.probe_if_unprobed(key);
                Event::AgentRunning
            }
            RuntimeEvent::Exited { .. } | RuntimeEvent::Killed
                if self.over_disk.contains_key(key) =>
            {
                self.finished(key);
                let failure = self.over_disk.remove(key);
                Event::AgentExited { code: 137, failure }
            }
            RuntimeEvent::Exited { code, failure } => {
                self.finished(key);
                Event::AgentExited { code, failure }
            }
            RuntimeEvent::Killed => {
                self.finished(key);
                Event::AgentKilled
            }
        };
        self.report_about(key, event, &node, uid);
    }

    fn finished(&mut self, key: &str) {
        self.stop_probing(key);
        self.waiting.remove(key);
        self.tasks.remove(key);
        self.killing.remove(key);
        let uid = self.uids.remove(key);
        self.ended.insert(key.to_owned(), uid);
    }

    /// The watch delivered `t` (created or changed).
    pub(crate) fn observe(&mut self, t: Task) {
        let Some(node) = t.spec.node_name.clone().filter(|n| self.nodes.contains(n)) else {
            return;
        };
        let key = key_of(&t);
        let uid = t.metadata.uid.clone();
        let phase = t
            .status
            .as_ref()
            .map(|s| s.phase())
            .unwrap_or(TaskPhase::Pending);
        if let Ok(mut o) = self.objects.lock() {
            o.insert(key.clone(), t);
        }
        if self.copy_of_another(&key, uid.as_deref()) {
            // The copy of a deleted task of this name: killed as unknown;
            // this task is launched by the sweep once it is gone.
            self.act(&key, Verdict::KillErrant(Errant::Unknown), &node, false);
            return;
        }
        // Here the book stands for what runs: a launch just made is not
        // known to its runtime yet.
        let running = self.tasks.contains_key(&key);
        let ended = self.ended_here(&key, uid.as_deref());
        if let Some(v) = reconcile::verdict(running, ended, Some(phase)) {
            self.act(&key, v, &node, false);
        }
        // A running copy this agent adopted (it restarted) is probed too.
        if running && phase == TaskPhase::Running && !self.killing.contains(&key) {
            self.probe_if_unprobed(&key);
        }
    }

    /// The watch reported `t` deleted: a copy that still runs is killed.
    pub(crate) fn forget(&mut self, t: &Task) {
        let key = key_of(t);
        if let Ok(mut o) = self.objects.lock() {
            o.remove(&key);
        }
        self.ended.remove(&key);
        if let Some((idx, _)) = self.tasks.get(&key).cloned() {
            self.kill(&key, idx, grace_of(t));
        }
    }

    /// The watch listed every task anew (at start, and after it lost its
    /// connection): objects it no longer lists were deleted meanwhile.
    pub(crate) fn relisted(&mut self, listed: &HashSet<String>) {
        if let Ok(mut o) = self.objects.lock() {
            o.retain(|k, _| listed.contains(k));
        }
        self.ended.retain(|k, _| listed.contains(k));
    }

    /// State reconciliation: what the runtimes run against what is bound here.
    pub(crate) fn sweep(&mut self) {
        let mut inventory: BTreeMap<String, usize> = BTreeMap::new();
        for (idx, r) in self.runtimes.iter().enumerate() {
            for key in r.running() {
                inventory.entry(key).or_insert(idx);
            }
        }
        let running: BTreeSet<String> = inventory.keys().cloned().collect();
        for (key, idx) in &inventory {
            if !self.uids.contains_key(key)
                && let Some(uid) = self.runtimes[*idx].uid(key)
            {
                self.uids.insert(key.clone(), uid);
            }
        }
        let launched: BTreeSet<String> = self.tasks.keys().cloned().collect();
        let objects: Vec<(String, Option<String>, TaskPhase)> = self
            .objects
            .lock()
            .map(|o| {
                o.iter()
                    .map(|(k, t)| {
                        let phase = t
                            .status
                            .as_ref()
                            .map(|s| s.phase())
                            .unwrap_or(TaskPhase::Pending);
                        (k.clone(), t.metadata.uid.clone(), phase)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut bound = BTreeMap::new();
        let mut reported = BTreeSet::new();
        for (key, uid, phase) in objects {
            // A copy of a deleted task of the same name does not run this one.
            if self.copy_of_another(&key, uid.as_deref()) {
                continue;
            }
            if self.ended_here(&key, uid.as_deref()) {
                reported.insert(key.clone());
            }
            bound.insert(key, phase);
        }
        let verdicts = reconcile::reconcile(NodeView {
            running: &running,
            launched: &launched,
            reported_ended: &reported,
            bound: &bound,
        });
        for (key, v) in verdicts {
            // A copy the book does not hold (the runtime kept it from an
            // earlier agent) is killed through the runtime that runs it.
            if let Some(idx) = inventory.get(&key)
                && !self.tasks.contains_key(&key)
            {
                let node = self.node_of(&key);
                self.tasks.insert(key.clone(), (*idx, node));
            }
            let node = self.node_of(&key);
            self.act(&key, v, &node, true);
        }
    }

    fn act(&mut self, key: &str, verdict: Verdict, node: &str, swept: bool) {
        let grace = self.grace(key);
        let here = self.tasks.get(key).map(|(r, _)| *r);
        match verdict {
            Verdict::Launch => self.launch(key, node),
            Verdict::CarryOutKill => {
                if let Some(idx) = here {
                    self.kill(key, idx, grace);
                }
            }
            Verdict::KillErrant(why) => {
                let Some(idx) = here else { return };
                if !self.kill(key, idx, grace) {
                    return;
                }
                tracing::info!(task = %key, node, reason = ?why, swept, "killing an errant copy");
                match why {
                    // The state machine records the errant copy on the task.
                    Errant::Ended(_) => self.report(key, Event::AgentRunning, node),
                    Errant::Unknown => {
                        tokio::spawn(record_on_node(
                            self.client.clone(),
                            node.to_owned(),
                            "ErrantTaskKilled",
                            format!(
                                "killed a copy of task {key}: no task of that name is bound to this node"
                            ),
                        ));
                    }
                }
            }
            Verdict::ReportRunning => self.report(key, Event::AgentRunning, node),
            Verdict::ReportNoCopy => {
                let uid = self.object(key).and_then(|t| t.metadata.uid);
                self.ended.insert(key.to_owned(), uid);
                self.report(key, Event::AgentHasNoCopy, node);
            }
        }
    }

    /// Sends one kill per task; false when one was sent already.
    fn kill(&mut self, key: &str, idx: usize, grace: Duration) -> bool {
        if !self.killing.insert(key.to_owned()) {
            return false;
        }
        // One still waiting for endpoints is never started.
        self.waiting.remove(key);
        let (rt, tx, key) = (
            self.runtimes[idx].clone(),
            self.events.clone(),
            key.to_owned(),
        );
        tokio::spawn(async move {
            if let Err(RuntimeError::NotRunning(_)) = rt.kill(&key, grace).await {
                let _ = tx.send((key, RuntimeEvent::Killed)).await;
            }
        });
        true
    }

    /// Evicts a revocable task the node's own tasks need the room of: it
    /// goes PREEMPTING (by the node's QoS controller), is killed, and is
    /// replaced like any preempted task.
    pub(crate) fn evict(&mut self, key: &str, node: &str) {
        let Some((idx, _)) = self.tasks.get(key).cloned() else {
            return;
        };
        if self.killing.contains(key) {
            return;
        }
        tracing::info!(task = %key, node, "QoS: evicting a revocable task");
        self.report(
            key,
            Event::Preempted {
                by: format!(
                    "the QoS controller of node {node}: its own tasks use their idle capacity again"
                ),
            },
            node,
        );
        let grace = self.grace(key);
        self.kill(key, idx, grace);
    }

    /// Fencing: the lease went unrenewed too long. Kills the tasks of fenced
    /// jobs (with `every_task`, everything this agent runs), each with a
    /// grace of at most `grace_cap`, and launches nothing until
    /// [`Supervisor::unfence`].
    pub(crate) fn fence(
        &mut self,
        grace_cap: Duration,
        every_task: bool,
        cause: &str,
        last_renewed: tokio::time::Instant,
    ) {
        let newly = self.fenced.is_none();
        let mut killed = self.fenced.take().unwrap_or_default();
        let book: Vec<(String, usize)> = {
            let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
            self.tasks
                .iter()
                .filter(|(k, _)| every_task || objects.get(*k).is_some_and(|t| t.spec.fenced))
                .map(|(k, (i, _))| (k.clone(), *i))
                .collect()
        };
        for (key, idx) in book {
            let grace = self.grace(&key);
            if self.kill(&key, idx, grace.min(grace_cap)) {
                killed.push(key);
            }
        }
        if newly {
            tracing::warn!(
                tasks = killed.len(),
                %cause,
                "lease not renewed: fencing this node's fenced tasks"
            );
            self.fence_cause = cause.to_owned();
            self.last_renewed = last_renewed;
        }
        self.fenced = Some(killed);
    }

    /// Every task this agent runs, is launching, or is bound to and has not
    /// seen end: their sandboxes are in use.
    pub(crate) fn live_keys(&self) -> std::collections::HashSet<String> {
        let mut live: std::collections::HashSet<String> = self.tasks.keys().cloned().collect();
        for r in &self.runtimes {
            live.extend(r.running());
        }
        if let Ok(objects) = self.objects.lock() {
            live.extend(
                objects
                    .iter()
                    .filter(|(_, t)| !t.status.as_ref().is_some_and(|s| s.phase().is_terminal()))
                    .map(|(k, _)| k.clone()),
            );
        }
        live
    }

    /// True while fenced.
    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.is_some()
    }

    /// The lease is renewed again: launches resume; what fencing killed is
    /// recorded on the nodes.
    pub(crate) fn unfence(&mut self) {
        let unrenewed_for = self.last_renewed.elapsed();
        let Some(killed) = self.fenced.take() else {
            return;
        };
        tracing::info!(tasks = killed.len(), "lease renewed again: fencing lifted");
        for node in &self.nodes {
            let mine: Vec<&str> = killed
                .iter()
                .filter(|k| self.node_of(k) == *node)
                .map(String::as_str)
                .collect();
            if mine.is_empty() {
                continue;
            }
            tokio::spawn(record_on_node(
                self.client.clone(),
                node.clone(),
                "Fenced",
                format!(
                    "the lease went unrenewed for {}s ({}), so the agent killed its fenced tasks before the control plane could replace them: {}",
                    unrenewed_for.as_secs(),
                    self.fence_cause,
                    mine.join(", ")
                ),
            ));
        }
    }

    /// Reports on the copy in the book, or else on the task object as it is.
    fn report(&mut self, key: &str, event: Event, node: &str) {
        let uid = self
            .uids
            .get(key)
            .cloned()
            .or_else(|| self.object(key).and_then(|t| t.metadata.uid));
        self.report_about(key, event, node, uid);
    }

    /// Reports on the copy of the task `uid`: a report about the copy of a
    /// deleted task never lands on a new task of the same name.
    fn report_about(&mut self, key: &str, event: Event, node: &str, uid: Option<String>) {
        // Dated when the agent learns of it, not when its write gets its turn.
        self.report_at(key, event, node, uid, jiff::Timestamp::now());
    }

    /// Reports what happened at `at`.
    fn report_at(
        &mut self,
        key: &str,
        event: Event,
        node: &str,
        uid: Option<String>,
        at: jiff::Timestamp,
    ) {
        let reporter = self.reporter.get_or_insert_with(|| {
            reports::Reporter::start(
                self.client.clone(),
                self.objects.clone(),
                self.checkpoints.clone(),
            )
        });
        reporter.send(key, (Step::Event(event), node.to_owned(), at, uid));
    }

    /// Reports the task's health flipping.
    fn report_health(&mut self, key: &str, healthy: bool, message: String) {
        let node = self.node_of(key);
        let uid = self.uids.get(key).cloned();
        let reporter = self.reporter.get_or_insert_with(|| {
            reports::Reporter::start(
                self.client.clone(),
                self.objects.clone(),
                self.checkpoints.clone(),
            )
        });
        let step = Step::Health { healthy, message };
        reporter.send(key, (step, node, jiff::Timestamp::now(), uid));
    }
}

/// True for a report of a copy's end: the last one about it.
fn is_end(event: &Event) -> bool {
    matches!(
        event,
        Event::AgentExited { .. } | Event::AgentKilled | Event::AgentHasNoCopy
    )
}

/// Records a v1 Event about a Node (in `default`, as Kubernetes does for
/// cluster-scoped objects).
async fn record_on_node(client: kube::Client, node: String, reason: &'static str, message: String) {
    let event = corral_api::node::node_event(
        &node,
        reason,
        "Warning",
        message,
        ("corral-agent", Some(&node)),
        jiff::Timestamp::now(),
    );
    let events: Api<CoreEvent> = Api::namespaced(client, "default");
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(node = %node, reason, error = %e, "recording a node event failed");
    }
}
