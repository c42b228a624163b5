//! The agent loop: registration, heartbeats, and running the node's tasks.
//!
//! Registers each node it stands for (one, or N simulated ones) as a Node
//! with its resources, attributes, static reservations and a Ready condition;
//! renews one Lease per node in `corral-node-lease`; watches the tasks bound
//! to its nodes (`spec.nodeName`, or one shared watch for simulated nodes, as
//! KWOK does). ASSIGNED tasks are started with the first healthy runtime
//! that supports them; kill requests (KILLING, PREEMPTING, RESTARTING,
//! DRAINING) and errant copies of ended tasks are killed with the task's
//! grace period. Starts and kills run off the loop, so a slow container
//! never holds up the others. Every runtime report goes through the
//! lifecycle state machine and is written as the task's status, with a task
//! event by `agent/<node>`.
//!
//! On start, runtimes re-adopt the containers that outlived the previous
//! agent; tasks the cluster believes run here but no runtime knows are
//! reported lost. Every 10 s the agent writes each task's CPU and memory use
//! to `status.usage`, and their sum to the Node's `status.usage`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use corral_api::node::{RuntimeKind, StaticReservation};
use corral_api::task::FailureReason;
use corral_api::{Node, Resources, Task, TaskPhase};
use corral_core::lifecycle::{self, Event, Failure};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::mpsc;

use crate::runtime::{ContainerRuntime, Launch, RuntimeError, RuntimeEvent, kind_name};

/// The namespace of node leases (read by the node lifecycle controller).
pub const LEASE_NAMESPACE: &str = "corral-node-lease";
/// How long a kill waits before it is forced.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// What the agent stands for.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The nodes it registers and runs (one, or `<name>-0 … <name>-(N-1)`).
    pub nodes: Vec<String>,
    /// Each node's resources.
    pub resources: Resources,
    /// Each node's attributes.
    pub attributes: BTreeMap<String, String>,
    /// Static reservations (`cpus(analytics)=2`).
    pub reserved: Vec<StaticReservation>,
    /// Lease duration.
    pub lease_seconds: i32,
    /// How often leases are renewed.
    pub renew_every: Duration,
    /// The log endpoint advertised in Node status (none: logs not served).
    pub log_endpoint: Option<corral_api::node::LogEndpoint>,
    /// How often task usage is measured (and revocable capacity estimated).
    pub sample_every: Duration,
    /// Oversubscription: the fraction of measured idle CPU (allocated to
    /// non-revocable tasks but unused) offered as revocable capacity. None: off.
    pub oversubscribe: Option<f64>,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An API call failed during start-up.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    /// No runtime was configured.
    #[error("no container runtime is configured")]
    NoRuntime,
}

fn micro_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

async fn register(
    client: &kube::Client,
    cfg: &AgentConfig,
    runtimes: &[RuntimeKind],
) -> Result<(), AgentError> {
    let nss: Api<Namespace> = Api::all(client.clone());
    match nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": LEASE_NAMESPACE}}))
                .unwrap_or_default(),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let apply = PatchParams::apply("corral-agent").force();
    for name in &cfg.nodes {
        let node = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node", "metadata": {"name": name}, "spec": {"attributes": cfg.attributes}});
        nodes.patch(name, &apply, &Patch::Apply(&node)).await?;
        let status = json!({"status": {
            "total": cfg.resources, "allocatable": cfg.resources, "staticReservations": cfg.reserved, "runtimes": runtimes,
            "logEndpoint": cfg.log_endpoint,
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady", "message": "the agent is registered"}],
            "lastHeartbeatTime": jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default().to_string(),
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": cfg.lease_seconds, "renewTime": micro_now()}});
        leases.patch(name, &apply, &Patch::Apply(&lease)).await?;
    }
    Ok(())
}

async fn renew(client: kube::Client, nodes: Vec<String>) {
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let renewals = nodes.into_iter().map(|name| {
        let leases = leases.clone();
        async move {
            let patch = json!({"spec": {"renewTime": micro_now()}});
            if let Err(e) = leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::warn!(node = %name, error = %e, "renewing the lease failed");
            }
        }
    });
    futures::stream::iter(renewals)
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

/// The latest task objects, shared with the status writers.
type Objects = Arc<std::sync::Mutex<HashMap<String, Task>>>;

/// The runtime-side state of the agent.
struct Running {
    /// Task key → (runtime index, node).
    tasks: HashMap<String, (usize, String)>,
    /// Latest task objects.
    objects: Objects,
    /// One status writer per task: reports of one task are written in order,
    /// reports of different tasks concurrently.
    writers: HashMap<String, mpsc::UnboundedSender<(Event, String, jiff::Timestamp)>>,
    /// Tasks a kill was sent for (one kill per task).
    killing: HashSet<String>,
    /// Tasks whose end this agent reported (until their object is deleted),
    /// so a stale RUNNING from the watch is not mistaken for a lost task.
    ended: HashSet<String>,
}

impl Running {
    fn finished(&mut self, key: &str) {
        self.tasks.remove(key);
        self.killing.remove(key);
        self.ended.insert(key.to_owned());
    }

    fn report(&mut self, client: &kube::Client, key: &str, event: Event, node: &str) {
        let done = matches!(
            event,
            Event::AgentExited { .. } | Event::AgentKilled | Event::NodeLost
        );
        let tx = self.writers.entry(key.to_owned()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<(Event, String, jiff::Timestamp)>();
            let (client, objects, key) = (client.clone(), self.objects.clone(), key.to_owned());
            tokio::spawn(async move {
                while let Some((event, node, at)) = rx.recv().await {
                    report(&client, &objects, &key, &event, &node, at).await;
                }
            });
            tx
        });
        // Dated when the agent learns of it, not when its write gets its turn.
        let _ = tx.send((event, node.to_owned(), jiff::Timestamp::now()));
        if done {
            // The writer finishes what is queued, then stops.
            self.writers.remove(key);
        }
    }
}

fn key_of(t: &Task) -> String {
    format!(
        "{}/{}",
        t.metadata.namespace.as_deref().unwrap_or("default"),
        t.metadata.name.as_deref().unwrap_or("")
    )
}

/// Writes a runtime report, which happened `at`, as the task's new status
/// (retrying on races).
async fn report(
    client: &kube::Client,
    objects: &Objects,
    key: &str,
    event: &Event,
    node: &str,
    at: jiff::Timestamp,
) {
    let Some((ns, name)) = key.split_once('/') else {
        return;
    };
    let api: Api<Task> = Api::namespaced(client.clone(), ns);
    let actor = format!("agent/{node}");
    for _ in 0..3 {
        let Some(task) = objects.lock().ok().and_then(|o| o.get(key).cloned()) else {
            return;
        };
        let mut status = task.status.clone().unwrap_or_default();
        match lifecycle::apply(&mut status, event, at, &actor) {
            Err(e) => {
                tracing::debug!(task = %key, error = %e, "report not applicable");
                return;
            }
            Ok(_) if Some(&status) == task.status.as_ref() => return,
            Ok(_) => {}
        }
        let patch = json!({"metadata": {"resourceVersion": task.metadata.resource_version}, "status": status});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(updated) => {
                if let Ok(mut o) = objects.lock() {
                    o.insert(key.to_owned(), updated);
                }
                return;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                if let Ok(fresh) = api.get(name).await
                    && let Ok(mut o) = objects.lock()
                {
                    o.insert(key.to_owned(), fresh);
                }
            }
            Err(e) => {
                tracing::warn!(task = %key, error = %e, "writing the task status failed");
                return;
            }
        }
    }
}

/// How often task usage is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How often runtimes' health is checked (a stopped containerd is noticed
/// within this, and its tasks' successors go to the next runtime).
pub const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// Which runtimes answered their last health check.
type Health = Arc<Vec<std::sync::atomic::AtomicBool>>;

async fn check_health(runtimes: &[Arc<dyn ContainerRuntime>], health: &Health) {
    for (r, h) in runtimes.iter().zip(health.iter()) {
        let ok = r.healthy().await;
        if h.swap(ok, std::sync::atomic::Ordering::Relaxed) != ok {
            tracing::info!(
                runtime = kind_name(r.kind()),
                healthy = ok,
                "runtime health changed"
            );
        }
    }
}

/// The first runtime, in configured order, that is healthy and supports `launch`.
fn pick(runtimes: &[Arc<dyn ContainerRuntime>], health: &Health, launch: &Launch) -> Option<usize> {
    runtimes
        .iter()
        .zip(health.iter())
        .position(|(r, h)| h.load(std::sync::atomic::Ordering::Relaxed) && r.supports(launch))
}

fn grace_of(task: &Task) -> Duration {
    task.spec
        .container
        .kill_grace_period_seconds
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(KILL_GRACE)
}

/// Runs the agent until `stop` turns true.
///
/// Before watching, every runtime re-adopts the containers that outlived a
/// previous agent; a task this node's API objects show STARTING or RUNNING
/// that no runtime knows is reported lost (its container died with the
/// previous agent), so the job controller replaces it.
pub async fn run(
    client: kube::Client,
    cfg: AgentConfig,
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    if runtimes.is_empty() {
        return Err(AgentError::NoRuntime);
    }
    let kinds: Vec<RuntimeKind> = runtimes.iter().map(|r| r.kind()).collect();
    register(&client, &cfg, &kinds).await?;
    let health: Health = Arc::new(
        runtimes
            .iter()
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
    );
    check_health(&runtimes, &health).await;
    {
        // Health is sampled off the loop: a hung containerd must not stall it.
        let (runtimes, health, mut stop) = (runtimes.clone(), health.clone(), stop.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEALTH_EVERY);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = every.tick() => check_health(&runtimes, &health).await,
                }
            }
        });
    }
    let ours: BTreeSet<String> = cfg.nodes.iter().cloned().collect();
    let (events_tx, mut events) = mpsc::channel::<(String, RuntimeEvent)>(4096);
    let mut state = Running {
        tasks: HashMap::new(),
        objects: Arc::new(std::sync::Mutex::new(HashMap::new())),
        writers: HashMap::new(),
        killing: HashSet::new(),
        ended: HashSet::new(),
    };
    if let [node] = cfg.nodes.as_slice() {
        for (idx, r) in runtimes.iter().enumerate() {
            match r.recover(events_tx.clone()).await {
                Ok(keys) => {
                    if !keys.is_empty() {
                        tracing::info!(
                            runtime = kind_name(r.kind()),
                            tasks = keys.len(),
                            "re-adopted tasks"
                        );
                    }
                    for k in keys {
                        state.tasks.insert(k, (idx, node.clone()));
                    }
                }
                Err(e) => {
                    tracing::warn!(runtime = kind_name(r.kind()), error = %e, "recovery failed")
                }
            }
        }
    }
    let tasks: Api<Task> = Api::all(client.clone());
    let wc = match cfg.nodes.as_slice() {
        [one] => watcher::Config::default().fields(&format!("spec.nodeName={one}")),
        _ => watcher::Config::default(),
    };
    let mut watch = watcher::watcher(tasks, wc).boxed();
    let mut renewals = tokio::time::interval(cfg.renew_every);
    let mut samples = tokio::time::interval(cfg.sample_every);
    let mut last_cpu: HashMap<String, (u64, tokio::time::Instant)> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = renewals.tick() => {
                tokio::spawn(renew(client.clone(), cfg.nodes.clone()));
            }
            _ = samples.tick() => {
                if let [node] = cfg.nodes.as_slice() {
                    let usage = sample_usage(&runtimes, &state.tasks, &mut last_cpu);
                    let revocable = cfg.oversubscribe.map(|factor| {
                        let objects = state.objects.lock().map(|o| o.clone()).unwrap_or_default();
                        let measured = usage.iter().filter(|(k, _)| !k.is_empty()).filter_map(|(k, (cpu, mem))| {
                            let t = objects.get(k)?;
                            let milli = |r: &str| t.spec.resources.get(r).and_then(|q| q.milli().ok()).unwrap_or(0);
                            Some(TaskUse {
                                cpu_milli: (milli("cpus"), *cpu),
                                memory_bytes: (milli("memory") / 1000, *mem),
                                revocable: t.spec.tier == corral_api::common::Tier::Revocable,
                            })
                        });
                        revocable_estimate(measured, factor)
                    });
                    tokio::spawn(write_usage(client.clone(), node.clone(), usage, revocable));
                }
            }
            Some((key, ev)) = events.recv() => {
                let node = state.tasks.get(&key).map(|(_, n)| n.clone())
                    .or_else(|| single(&cfg.nodes))
                    .unwrap_or_default();
                let event = match ev {
                    RuntimeEvent::Starting => Event::AgentStarting,
                    RuntimeEvent::Running => Event::AgentRunning,
                    RuntimeEvent::Exited { code, failure } => {
                        state.finished(&key);
                        Event::AgentExited { code, failure }
                    }
                    RuntimeEvent::Killed => {
                        state.finished(&key);
                        Event::AgentKilled
                    }
                };
                state.report(&client, &key, event, &node);
            }
            next = watch.next() => {
                let ev = match next {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "task watch error");
                        continue;
                    }
                    Some(Ok(ev)) => ev,
                };
                match ev {
                    watcher::Event::Apply(t) | watcher::Event::InitApply(t) => {
                        let Some(node) = t.spec.node_name.clone().filter(|n| ours.contains(n)) else { continue };
                        let key = key_of(&t);
                        let phase = t.status.as_ref().map(|s| s.phase()).unwrap_or(TaskPhase::Pending);
                        let grace = grace_of(&t);
                        let launch = Launch {
                            key: key.clone(),
                            container: t.spec.container.clone(),
                            resources: t.spec.resources.clone(),
                            annotations: t.metadata.annotations.clone().unwrap_or_default(),
                        };
                        if let Ok(mut o) = state.objects.lock() {
                            o.insert(key.clone(), t);
                        }
                        let here = state.tasks.get(&key).map(|(r, _)| *r);
                        match (phase, here) {
                            (TaskPhase::Assigned, None) if !state.ended.contains(&key) => {
                                let Some(idx) = pick(&runtimes, &health, &launch) else {
                                    let names: Vec<&str> = runtimes.iter().map(|r| kind_name(r.kind())).collect();
                                    let failure = Failure::new(
                                        FailureReason::NoRuntime,
                                        format!("no healthy runtime among [{}] supports this container", names.join(", ")),
                                    );
                                    state.ended.insert(key.clone());
                                    state.report(&client, &key, Event::AgentExited { code: 127, failure: Some(failure) }, &node);
                                    continue;
                                };
                                state.tasks.insert(key.clone(), (idx, node));
                                let (rt, tx) = (runtimes[idx].clone(), events_tx.clone());
                                tokio::spawn(async move {
                                    if let Err(e) = rt.start(launch, tx.clone()).await {
                                        let ev = RuntimeEvent::failed(FailureReason::LaunchFailed, e.to_string());
                                        let _ = tx.send((key, ev)).await;
                                    }
                                });
                            }
                            (TaskPhase::Killing | TaskPhase::Preempting | TaskPhase::Restarting | TaskPhase::Draining, Some(idx))
                            | (TaskPhase::Finished | TaskPhase::Failed | TaskPhase::Killed | TaskPhase::Lost, Some(idx))
                                if state.killing.insert(key.clone()) =>
                            {
                                let (rt, tx) = (runtimes[idx].clone(), events_tx.clone());
                                tokio::spawn(async move {
                                    if let Err(RuntimeError::NotRunning(_)) = rt.kill(&key, grace).await {
                                        let _ = tx.send((key, RuntimeEvent::Killed)).await;
                                    }
                                });
                            }
                            (TaskPhase::Killing | TaskPhase::Preempting | TaskPhase::Restarting | TaskPhase::Draining, None) => {
                                // Never started here (or already gone): it is dead.
                                state.report(&client, &key, Event::AgentKilled, &node);
                            }
                            (TaskPhase::Starting | TaskPhase::Running, None) if !state.ended.contains(&key) => {
                                // Known to the cluster as running here, unknown to every
                                // runtime: its container died with an earlier agent.
                                state.ended.insert(key.clone());
                                state.report(&client, &key, Event::NodeLost, &node);
                            }
                            _ => {}
                        }
                    }
                    watcher::Event::Delete(t) => {
                        let key = key_of(&t);
                        if let Ok(mut o) = state.objects.lock() {
                            o.remove(&key);
                        }
                        state.ended.remove(&key);
                        if let Some((idx, _)) = state.tasks.get(&key).cloned()
                            && state.killing.insert(key.clone())
                        {
                            let grace = grace_of(&t);
                            let rt = runtimes[idx].clone();
                            tokio::spawn(async move {
                                let _ = rt.kill(&key, grace).await;
                            });
                        }
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
            }
        }
    }
}

fn single(nodes: &[String]) -> Option<String> {
    match nodes {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Per task: CPU in use (cores, from the CPU time used since the last
/// sample) and memory in use; the node's sum under `""`.
fn sample_usage(
    runtimes: &[Arc<dyn ContainerRuntime>],
    tasks: &HashMap<String, (usize, String)>,
    last_cpu: &mut HashMap<String, (u64, tokio::time::Instant)>,
) -> BTreeMap<String, (u64, u64)> {
    let now = tokio::time::Instant::now();
    let mut out = BTreeMap::new();
    let (mut node_cpu, mut node_mem) = (0u64, 0u64);
    for (key, (idx, _)) in tasks {
        let Some(u) = runtimes[*idx].usage(key) else {
            continue;
        };
        // CPU is a rate: a task is reported from its second reading on.
        let Some(milli_cores) = last_cpu.get(key).map(|(prev, at)| {
            let elapsed = now.duration_since(*at).as_nanos().max(1);
            let used = u128::from(u.cpu_nanos.saturating_sub(*prev));
            u64::try_from(used * 1000 / elapsed).unwrap_or(u64::MAX)
        }) else {
            last_cpu.insert(key.clone(), (u.cpu_nanos, now));
            continue;
        };
        last_cpu.insert(key.clone(), (u.cpu_nanos, now));
        node_cpu += milli_cores;
        node_mem += u.memory_bytes;
        out.insert(key.clone(), (milli_cores, u.memory_bytes));
    }
    last_cpu.retain(|k, _| tasks.contains_key(k));
    if !tasks.is_empty() || !out.is_empty() {
        out.insert(String::new(), (node_cpu, node_mem));
    }
    out
}

fn usage_json(milli_cores: u64, memory: u64) -> serde_json::Value {
    json!({"cpus": format!("{milli_cores}m"), "memory": memory})
}

/// One measured task, for the revocable estimate: (allocated, used) per resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskUse {
    /// CPU in milli-cores.
    pub cpu_milli: (i64, u64),
    /// Memory in bytes.
    pub memory_bytes: (i64, u64),
    /// Whether it runs on revocable capacity itself.
    pub revocable: bool,
}

/// The revocable capacity to offer, as (CPU milli-cores, memory bytes):
/// `factor` of what non-revocable tasks were allocated but did not use
/// (Mesos's resource estimator). Revocable tasks are the first to go when
/// the node's own tasks need the capacity back.
pub fn revocable_estimate(tasks: impl Iterator<Item = TaskUse>, factor: f64) -> (u64, u64) {
    let slack = |(alloc, used): (i64, u64)| u64::try_from(alloc).unwrap_or(0).saturating_sub(used);
    let (cpu, mem) = tasks
        .filter(|t| !t.revocable)
        .fold((0u64, 0u64), |(c, m), t| {
            (c + slack(t.cpu_milli), m + slack(t.memory_bytes))
        });
    let f = factor.clamp(0.0, 1.0);
    (
        (cpu as f64 * f).floor() as u64,
        (mem as f64 * f).floor() as u64,
    )
}

fn revocable_json((cpu, mem): (u64, u64)) -> serde_json::Value {
    json!({"cpus": format!("{cpu}m"), "memory": mem})
}

/// Writes each task's `status.usage` and the node's `status.usage` (and its
/// revocable CPU, when oversubscription is on).
async fn write_usage(
    client: kube::Client,
    node: String,
    usage: BTreeMap<String, (u64, u64)>,
    revocable: Option<(u64, u64)>,
) {
    let pp = PatchParams::default();
    if usage.is_empty()
        && let Some(r) = revocable
    {
        // No measured task: the whole revocable estimate is zero.
        let nodes: Api<Node> = Api::all(client.clone());
        let patch = json!({"status": {"revocable": revocable_json(r)}});
        if let Err(e) = nodes.patch_status(&node, &pp, &Patch::Merge(patch)).await {
            tracing::debug!(error = %e, "writing revocable capacity failed");
        }
    }
    for (key, (cpu, mem)) in &usage {
        let mut patch = json!({"status": {"usage": usage_json(*cpu, *mem)}});
        if key.is_empty()
            && let Some(r) = revocable
        {
            patch["status"]["revocable"] = revocable_json(r);
        }
        let result = if key.is_empty() {
            let nodes: Api<Node> = Api::all(client.clone());
            nodes
                .patch_status(&node, &pp, &Patch::Merge(patch))
                .await
                .map(|_| ())
        } else if let Some((ns, name)) = key.split_once('/') {
            let tasks: Api<Task> = Api::namespaced(client.clone(), ns);
            tasks
                .patch_status(name, &pp, &Patch::Merge(patch))
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::debug!(object = %key, error = %e, "writing usage failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocable_capacity_is_a_fraction_of_what_non_revocable_tasks_leave_idle() {
        let t = |cpu: (i64, u64), mem: (i64, u64), revocable| TaskUse {
            cpu_milli: cpu,
            memory_bytes: mem,
            revocable,
        };
        let tasks = [
            t((2000, 500), (1000, 200), false),
            t((1000, 1200), (100, 300), false),
            t((1000, 0), (1000, 0), true),
        ];
        // 1500 m and 800 B idle in the first; the second uses more than it
        // holds (nothing idle); revocable tasks add no slack.
        assert_eq!(revocable_estimate(tasks.into_iter(), 0.5), (750, 400));
        assert_eq!(revocable_estimate(tasks.into_iter(), 1.0), (1500, 800));
        assert_eq!(
            revocable_estimate(tasks.into_iter(), 7.0),
            (1500, 800),
            "clamped to 1"
        );
        assert_eq!(revocable_estimate(std::iter::empty(), 0.5), (0, 0));
    }
}
