//! The agent loop: registration, heartbeats, and running the node's tasks.
//!
//! Registers each node it stands for (one, or N simulated ones) as a Node
//! with its resources, attributes, static reservations and a Ready condition;
//! renews one Lease per node in `corral-node-lease`; watches the tasks bound
//! to its nodes (`spec.nodeName`, or one shared watch for simulated nodes, as
//! KWOK does) and hands every change to the [`crate::supervise`] book, which
//! launches, kills and reports. Starts and kills run off the loop, so a slow
//! container never holds up the others.
//!
//! On start, runtimes re-adopt the containers that outlived the previous
//! agent. State reconciliation runs once the watch has listed the node's
//! tasks (at start and after every reconnection) and every
//! `reconcile_every`: errant copies are killed, lost ones reported. With
//! `fence`, the agent kills its tasks when it cannot renew its lease. Every
//! `sample_every` it writes each task's CPU and memory use to `status.usage`,
//! and their sum to the Node's `status.usage`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use corral_api::node::{NodeAddress, NodeAddressType, RuntimeKind, StaticReservation};
use corral_api::{Node, Resources, Task};
use corral_core::lifecycle::Failure;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::mpsc;

use crate::runtime::{ContainerRuntime, RuntimeEvent, kind_name};
use crate::supervise::{Health, Supervisor, key_of};
use crate::usage::{
    RevocableTask, TaskUse, qos_evictions, revocable_estimate, sample_usage, write_usage,
};

pub use crate::supervise::KILL_GRACE;

/// The namespace of node leases (read by the node lifecycle controller).
pub use corral_api::node::NODE_LEASE_NAMESPACE as LEASE_NAMESPACE;
/// How often usage is sampled, by default.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How often runtimes' health is checked (a stopped containerd is noticed
/// within this, and its tasks' successors go to the next runtime).
pub const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// How often state reconciliation runs, by default.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// What the agent stands for.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The nodes it registers and runs (one, or `<name>-0 … <name>-(N-1)`).
    pub nodes: Vec<String>,
    /// Each node's resources.
    pub resources: Resources,
    /// The host ports each node offers for assignment.
    pub ports: Vec<corral_api::ports::PortRange>,
    /// Where the node is reached (its tasks' ports are served there).
    pub address: Option<String>,
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
    /// How often state reconciliation runs.
    pub reconcile_every: Duration,
    /// Fence every task, not only those of fenced jobs (`spec.fenced`,
    /// always fenced): kill it once the lease has gone unrenewed for half
    /// its duration, so that no replacement ever runs alongside.
    pub fence: bool,
    /// Where the runtimes keep task ends until they are reported (the same
    /// directory they were given; none: ends are not kept across restarts).
    pub checkpoints: Option<crate::checkpoint::Checkpoints>,
    /// Removing ended tasks' sandboxes (none: they stay).
    pub sandbox_gc: Option<crate::sandbox_gc::SandboxGc>,
    /// Rotating running tasks' output by size (none: it grows).
    pub log_rotation: Option<crate::log_rotation::LogRotation>,
    /// The runtime of tasks that name none: the first the operator named,
    /// even when it could not be set up, so that such tasks wait for it
    /// rather than run on another (None: the first runtime set up).
    pub default_runtime: Option<RuntimeKind>,
    /// What the agent counts and samples (served by its endpoint).
    pub metrics: crate::metrics::AgentMetrics,
}

impl AgentConfig {
    /// An agent for `nodes` with `resources` each, and every other setting
    /// at its default: ports 31000–32000, no address, no attributes or reservations, a 40 s lease renewed
    /// every 10 s, no log endpoint, usage every 10 s, no oversubscription,
    /// reconciliation every 5 s, no fencing.
    pub fn new(nodes: Vec<String>, resources: Resources) -> Self {
        Self {
            nodes,
            resources,
            ports: vec![corral_api::ports::DEFAULT_RANGE],
            address: None,
            attributes: BTreeMap::new(),
            reserved: Vec::new(),
            lease_seconds: 40,
            renew_every: Duration::from_secs(10),
            log_endpoint: None,
            sample_every: SAMPLE_EVERY,
            oversubscribe: None,
            reconcile_every: RECONCILE_EVERY,
            fence: false,
            checkpoints: None,
            sandbox_gc: None,
            log_rotation: None,
            default_runtime: None,
            metrics: crate::metrics::AgentMetrics::new(),
        }
    }

    /// When fencing kills: this long after the last renewal that succeeded.
    pub fn fence_after(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.lease_seconds.max(1)).unwrap_or(40) * 500)
    }
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
        // It exists; or this is a node's credential, which creates no
        // namespace (the API server makes this one at its start).
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => {}
        Err(e) => return Err(e.into()),
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let apply = PatchParams::apply("corral-agent").force();
    let addresses: Vec<NodeAddress> = cfg
        .address
        .iter()
        .map(|a| NodeAddress {
            type_: if a.parse::<std::net::IpAddr>().is_ok() {
                NodeAddressType::InternalIp
            } else {
                NodeAddressType::Hostname
            },
            address: a.clone(),
        })
        .collect();
    for name in &cfg.nodes {
        let node = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node", "metadata": {"name": name}, "spec": {"attributes": cfg.attributes}});
        nodes.patch(name, &apply, &Patch::Apply(&node)).await?;
        let status = json!({"status": {
            "total": cfg.resources, "allocatable": cfg.resources, "staticReservations": cfg.reserved, "runtimes": runtimes,
            "defaultRuntime": cfg.default_runtime.or(runtimes.first().copied()),
            "logEndpoint": cfg.log_endpoint,
            "portRanges": cfg.ports, "addresses": addresses,
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

/// Why a lease renewal failed, as far as the agent can tell. Either way the
/// lease is not renewed, so fenced tasks stop all the same (another API
/// server may be recording this node as lost); the difference is what the
/// agent says: its log, and the Event it leaves on its Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewalFailure {
    /// No answer came: this machine is cut off, or no API server runs.
    NoAnswer(String),
    /// The API server answered with an error: the control plane is up but
    /// cannot record the renewal (429: overloaded; 503: its store is down).
    Refused {
        /// The HTTP status code.
        code: u16,
        /// The server's message.
        message: String,
    },
}

impl RenewalFailure {
    fn of(e: &kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => RenewalFailure::Refused {
                code: status.code,
                message: status.message.clone(),
            },
            other => RenewalFailure::NoAnswer(other.to_string()),
        }
    }
}

impl std::fmt::Display for RenewalFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenewalFailure::NoAnswer(e) => write!(
                f,
                "no answer from the API server (this machine is cut off, or the control plane is down): {e}"
            ),
            RenewalFailure::Refused { code, message } => write!(
                f,
                "the API server answered {code} ({message}): the control plane is reachable but could not record the renewal"
            ),
        }
    }
}

/// Renews every node's lease; the first failure, if any renewal failed.
async fn renew(client: kube::Client, nodes: Vec<String>) -> Result<(), RenewalFailure> {
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let renewals = nodes.into_iter().map(|name| {
        let leases = leases.clone();
        async move {
            let patch = json!({"spec": {"renewTime": micro_now()}});
            leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(drop)
                .map_err(|e| {
                    let failure = RenewalFailure::of(&e);
                    tracing::warn!(node = %name, error = %failure, "renewing the lease failed");
                    failure
                })
        }
    });
    futures::stream::iter(renewals)
        .buffer_unordered(64)
        .collect::<Vec<Result<(), RenewalFailure>>>()
        .await
        .into_iter()
        .collect()
}

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

/// Clears its flag when dropped: a renewal round is over however it ends.
struct ClearOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// How often ended tasks' sandboxes are looked for.
const SANDBOX_GC_EVERY: Duration = Duration::from_secs(30);

/// How often running tasks' output is checked against its size limit.
const LOG_ROTATION_EVERY: Duration = Duration::from_secs(10);

/// When the last lease renewal that succeeded was sent, and why the last
/// one failed (cleared by a success).
type Renewed = Arc<std::sync::Mutex<(tokio::time::Instant, Option<RenewalFailure>)>>;

/// Runs the agent until `stop` turns true.
///
/// Before watching, every runtime re-adopts the containers that outlived a
/// previous agent; once the watch has listed the node's tasks, state
/// reconciliation kills the copies no task accounts for and reports the
/// tasks no runtime knows (their containers died with the previous agent),
/// so the job controller replaces them.
pub async fn run(
    client: kube::Client,
    cfg: AgentConfig,
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    run_renewing_with(client.clone(), client, cfg, runtimes, stop).await
}

/// [`run`], renewing leases through `lease_client`: a client that does not
/// retry behind the agent's back (kube's default retries 429, 503 and 504
/// with a backoff), so each renewal's outcome, and why it failed, is known
/// when it happens; the agent renews again on its own schedule anyway.
pub async fn run_renewing_with(
    client: kube::Client,
    lease_client: kube::Client,
    cfg: AgentConfig,
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    if runtimes.is_empty() {
        return Err(AgentError::NoRuntime);
    }
    let kinds: Vec<RuntimeKind> = runtimes.iter().map(|r| r.kind()).collect();
    register(&client, &cfg, &kinds).await?;
    let leases = Leases::new(lease_client, cfg.nodes.clone());
    let health = check_health_in_background(&runtimes, stop.clone()).await;
    let runtime_health = health.clone();
    let (events_tx, mut events) = mpsc::channel::<(String, RuntimeEvent)>(4096);
    let mut book = Supervisor::new(
        client.clone(),
        runtimes.clone(),
        health,
        cfg.default_runtime.or(kinds.first().copied()),
        events_tx.clone(),
        &cfg.nodes,
        cfg.checkpoints.clone(),
    )
    .with_metrics(cfg.metrics.clone());
    recover(&runtimes, &cfg, &events_tx, &mut book).await;
    let tasks: Api<Task> = Api::all(client.clone());
    let wc = match cfg.nodes.as_slice() {
        [one] => watcher::Config::default().fields(&format!("spec.nodeName={one}")),
        _ => watcher::Config::default(),
    };
    // Reconnects with a backoff: a partition must not spin the loop.
    let mut watch = watcher::watcher(tasks, wc).default_backoff().boxed();
    let mut renewals = tokio::time::interval(cfg.renew_every);
    let mut samples = tokio::time::interval(cfg.sample_every);
    let mut sweeps = tokio::time::interval(cfg.reconcile_every);
    let mut fence_checks = tokio::time::interval(Duration::from_millis(200));
    let mut sandbox_sweeps = tokio::time::interval(SANDBOX_GC_EVERY);
    let mut log_checks = tokio::time::interval(LOG_ROTATION_EVERY);
    let mut last_cpu: HashMap<String, (u64, tokio::time::Instant)> = HashMap::new();
    let mut listing = Listing::default();
    // Disk use is measured off the loop, one pass at a time.
    let mut disk_checks = tokio::time::interval(cfg.sample_every);
    let (over_disk_tx, mut over_disk) = mpsc::channel::<Vec<(String, Failure)>>(1);
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut probed = book
        .probe_results()
        .expect("a new book's probe results are not taken yet");
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = renewals.tick() => leases.renew_unless_renewing(),
            _ = fence_checks.tick() => leases.fence_or_unfence(&mut book, &cfg, listing.listed),
            _ = sweeps.tick(), if listing.listed => book.sweep(),
            _ = log_checks.tick(), if cfg.log_rotation.is_some() => {
                if let Some(rotation) = cfg.log_rotation.clone() {
                    let live = book.live_keys();
                    tokio::task::spawn_blocking(move || crate::log_rotation::rotate(&rotation, &live));
                }
            }
            _ = sandbox_sweeps.tick(), if listing.listed && cfg.sandbox_gc.is_some() => {
                if let Some(gc) = cfg.sandbox_gc.clone() {
                    let live = book.live_keys();
                    tokio::task::spawn_blocking(move || {
                        let gone = crate::sandbox_gc::collect(&gc, &live);
                        if !gone.is_empty() {
                            tracing::info!(tasks = gone.len(), "removed ended tasks' sandboxes");
                        }
                    });
                }
            }
            _ = samples.tick() => {
                cfg.metrics.runtimes(
                    kinds
                        .iter()
                        .zip(runtime_health.iter())
                        .map(|(k, h)| (*k, h.load(std::sync::atomic::Ordering::Relaxed)))
                        .collect(),
                );
                if let [node] = cfg.nodes.as_slice() {
                    let usage = sample_usage(&runtimes, &book.tasks, &mut last_cpu);
                    cfg.metrics.tasks(book.figures(&usage));
                    let revocable = cfg
                        .oversubscribe
                        .map(|factor| oversubscription(&mut book, &usage, factor, node));
                    tokio::spawn(write_usage(client.clone(), node.clone(), usage, revocable));
                }
            }
            _ = disk_checks.tick(), if !measuring.load(std::sync::atomic::Ordering::Relaxed) => {
                let watched = book.disk_watch();
                if !watched.is_empty() {
                    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
                    let (tx, measuring) = (over_disk_tx.clone(), measuring.clone());
                    let metrics = cfg.metrics.clone();
                    tokio::task::spawn_blocking(move || {
                        let used = crate::disk::measure(&watched);
                        metrics.disk_used(&used);
                        let over = crate::disk::over(&watched, &used);
                        measuring.store(false, std::sync::atomic::Ordering::Relaxed);
                        let _ = tx.blocking_send(over);
                    });
                }
            }
            Some(over) = over_disk.recv() => {
                for (key, failure) in over {
                    book.exceeded_disk(&key, failure);
                }
            }
            Some((key, ev)) = events.recv() => book.runtime_event(&key, ev),
            Some(result) = probed.recv() => {
                cfg.metrics.probed(result.passed);
                book.probed(result);
            }
            next = watch.next() => match next {
                None => return Ok(()),
                Some(Err(e)) => tracing::warn!(error = %e, "task watch error"),
                Some(Ok(ev)) => listing.apply(&mut book, ev),
            },
        }
    }
}

/// Where the agent's watch of its tasks stands.
#[derive(Debug, Default)]
struct Listing {
    /// Keys listed since the watch began (re)listing; None outside a listing.
    seen: Option<HashSet<String>>,
    /// Reconciliation waits for the first full list of the node's tasks.
    listed: bool,
}

impl Listing {
    fn apply(&mut self, book: &mut Supervisor, ev: watcher::Event<Task>) {
        match ev {
            watcher::Event::Init => self.seen = Some(HashSet::new()),
            watcher::Event::InitApply(t) => {
                if let Some(seen) = self.seen.as_mut() {
                    seen.insert(key_of(&t));
                }
                book.observe(t);
            }
            watcher::Event::InitDone => {
                book.relisted(&self.seen.take().unwrap_or_default());
                if !self.listed {
                    book.report_restored();
                }
                self.listed = true;
                book.sweep();
            }
            watcher::Event::Apply(t) => book.observe(t),
            watcher::Event::Delete(t) => book.forget(&t),
        }
    }
}

/// Runtime health, checked now and then every [`HEALTH_EVERY`] off the
/// agent's loop (a hung containerd must not stall it) until `stop`.
async fn check_health_in_background(
    runtimes: &[Arc<dyn ContainerRuntime>],
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Health {
    let health: Health = Arc::new(
        runtimes
            .iter()
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
    );
    check_health(runtimes, &health).await;
    let (runtimes, shared) = (runtimes.to_vec(), health.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(HEALTH_EVERY);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = every.tick() => check_health(&runtimes, &shared).await,
            }
        }
    });
    health
}

/// Re-adopts what outlived a previous agent (one real node only).
async fn recover(
    runtimes: &[Arc<dyn ContainerRuntime>],
    cfg: &AgentConfig,
    events: &mpsc::Sender<(String, RuntimeEvent)>,
    book: &mut Supervisor,
) {
    let [node] = cfg.nodes.as_slice() else {
        return;
    };
    for (idx, r) in runtimes.iter().enumerate() {
        match r.recover(events.clone()).await {
            Ok(keys) => {
                if !keys.is_empty() {
                    tracing::info!(
                        runtime = kind_name(r.kind()),
                        tasks = keys.len(),
                        "re-adopted tasks"
                    );
                }
                for k in keys {
                    book.adopt(k, idx, node.clone());
                }
            }
            Err(e) => {
                tracing::warn!(runtime = kind_name(r.kind()), error = %e, "recovery failed")
            }
        }
    }
}

/// The nodes' leases: renewal rounds, one at a time, and what their
/// outcomes mean for fencing.
struct Leases {
    client: kube::Client,
    nodes: Vec<String>,
    renewed: Renewed,
    /// True while a round is in flight.
    renewing: Arc<std::sync::atomic::AtomicBool>,
}

impl Leases {
    fn new(client: kube::Client, nodes: Vec<String>) -> Self {
        Leases {
            client,
            nodes,
            renewed: Arc::new(std::sync::Mutex::new((tokio::time::Instant::now(), None))),
            renewing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Starts a renewal round, unless the last one is still going: a round
    /// that outlasts the period (thousands of simulated nodes, a slow
    /// server) is not joined by another, which would only add to the load.
    fn renew_unless_renewing(&self) {
        if self
            .renewing
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::debug!("the previous lease renewal round is still going; skipping a tick");
            return;
        }
        let (client, nodes, renewed) = (
            self.client.clone(),
            self.nodes.clone(),
            self.renewed.clone(),
        );
        let round = self.renewing.clone();
        let sent = tokio::time::Instant::now();
        tokio::spawn(async move {
            let _done = ClearOnDrop(round);
            let outcome = renew(client, nodes).await;
            if let Ok(mut r) = renewed.lock() {
                match outcome {
                    Ok(()) => *r = (r.0.max(sent), None),
                    Err(failure) => r.1 = Some(failure),
                }
            }
        });
    }

    /// Fences once the leases have gone unrenewed for half their duration
    /// (kills end by three quarters of it; the control plane replaces
    /// nothing before it expires); lifts the fence once a renewal is back.
    fn fence_or_unfence(&self, book: &mut Supervisor, cfg: &AgentConfig, listed: bool) {
        let (last, failure) = self
            .renewed
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| (tokio::time::Instant::now(), None));
        if last.elapsed() >= cfg.fence_after() {
            let cause =
                failure.map_or_else(|| "no renewal has come back".to_owned(), |f| f.to_string());
            book.fence(cfg.fence_after() / 2, cfg.fence, &cause, last);
        } else if book.is_fenced() {
            book.unfence();
            if listed {
                book.sweep();
            }
        }
    }
}

/// Oversubscription after a usage sample: the revocable capacity to offer
/// (Mesos's resource estimator), and the QoS controller's evictions when
/// revocable tasks hold more than that. Evicts nothing until every
/// non-revocable task here has been measured (a fresh agent has no rates
/// yet, which would read as no idle capacity at all).
fn oversubscription(
    book: &mut Supervisor,
    usage: &BTreeMap<String, (u64, u64)>,
    factor: f64,
    node: &str,
) -> (u64, u64) {
    let objects = book.objects.lock().map(|o| o.clone()).unwrap_or_default();
    let milli = |t: &Task, r: &str| {
        t.spec
            .resources
            .get(r)
            .and_then(|q| q.milli().ok())
            .unwrap_or(0)
    };
    let revocable_tier = |t: &Task| t.spec.tier == corral_api::common::Tier::Revocable;
    let measured: Vec<TaskUse> = usage
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .filter_map(|(k, (cpu, mem))| {
            let t = objects.get(k)?;
            Some(TaskUse {
                cpu_milli: (milli(t, "cpus"), *cpu),
                memory_bytes: (milli(t, "memory") / 1000, *mem),
                revocable: revocable_tier(t),
            })
        })
        .collect();
    let estimate = revocable_estimate(measured.iter().copied(), factor);
    let own_tasks = book
        .tasks
        .keys()
        .filter(|k| objects.get(*k).is_some_and(|t| !revocable_tier(t)))
        .count();
    if measured.iter().filter(|m| !m.revocable).count() < own_tasks {
        return estimate;
    }
    let revocable: Vec<RevocableTask> = objects
        .iter()
        .filter(|(k, t)| revocable_tier(t) && book.tasks.contains_key(*k))
        .map(|(k, t)| RevocableTask {
            key: k.clone(),
            cpu_milli: u64::try_from(milli(t, "cpus")).unwrap_or(0),
            memory_bytes: u64::try_from(milli(t, "memory") / 1000).unwrap_or(0),
            created: t
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |c| c.0.as_second()),
        })
        .collect();
    for key in qos_evictions(&revocable, estimate) {
        book.evict(&key, node);
    }
    estimate
}
