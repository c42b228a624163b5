//! The agent loop: registration, heartbeats, and running the node's tasks.
//!
//! Registers each node it stands for (one, or N simulated ones) as a Node
//! with its resources, attributes, static reservations and a Ready condition;
//! renews one Lease per node in `corral-node-lease`; watches the tasks bound
//! to its nodes (`spec.nodeName`, or one shared watch for simulated nodes, as
//! KWOK does). ASSIGNED tasks are started with the first runtime that
//! supports them; kill requests (KILLING, PREEMPTING, RESTARTING, DRAINING)
//! and errant copies of ended tasks are killed. Every runtime report goes
//! through the lifecycle state machine and is written as the task's status,
//! with a task event by `agent/<node>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use corral_api::node::StaticReservation;
use corral_api::{Node, Resources, Task, TaskPhase};
use corral_core::lifecycle::{self, Event};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::mpsc;

use crate::runtime::{ContainerRuntime, Launch, RuntimeEvent};

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
    runtimes: &[String],
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
    writers: HashMap<String, mpsc::UnboundedSender<(Event, String)>>,
}

impl Running {
    fn report(&mut self, client: &kube::Client, key: &str, event: Event, node: &str) {
        let done = matches!(event, Event::AgentExited { .. } | Event::AgentKilled);
        let tx = self.writers.entry(key.to_owned()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<(Event, String)>();
            let (client, objects, key) = (client.clone(), self.objects.clone(), key.to_owned());
            tokio::spawn(async move {
                while let Some((event, node)) = rx.recv().await {
                    report(&client, &objects, &key, &event, &node).await;
                }
            });
            tx
        });
        let _ = tx.send((event, node.to_owned()));
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

/// Writes a runtime report as the task's new status (retrying on races).
async fn report(client: &kube::Client, objects: &Objects, key: &str, event: &Event, node: &str) {
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
        match lifecycle::apply(&mut status, event, jiff::Timestamp::now(), &actor) {
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

/// Runs the agent until `stop` turns true.
pub async fn run(
    client: kube::Client,
    cfg: AgentConfig,
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    if runtimes.is_empty() {
        return Err(AgentError::NoRuntime);
    }
    let names: Vec<String> = runtimes.iter().map(|r| r.name().to_owned()).collect();
    register(&client, &cfg, &names).await?;
    let ours: BTreeSet<String> = cfg.nodes.iter().cloned().collect();
    let tasks: Api<Task> = Api::all(client.clone());
    let wc = match cfg.nodes.as_slice() {
        [one] => watcher::Config::default().fields(&format!("spec.nodeName={one}")),
        _ => watcher::Config::default(),
    };
    let mut watch = watcher::watcher(tasks, wc).boxed();
    let (events_tx, mut events) = mpsc::channel::<(String, RuntimeEvent)>(4096);
    let mut renewals = tokio::time::interval(cfg.renew_every);
    let mut state = Running {
        tasks: HashMap::new(),
        objects: Arc::new(std::sync::Mutex::new(HashMap::new())),
        writers: HashMap::new(),
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = renewals.tick() => {
                tokio::spawn(renew(client.clone(), cfg.nodes.clone()));
            }
            Some((key, ev)) = events.recv() => {
                let node = state.tasks.get(&key).map(|(_, n)| n.clone()).unwrap_or_default();
                let event = match ev {
                    RuntimeEvent::Starting => Event::AgentStarting,
                    RuntimeEvent::Running => Event::AgentRunning,
                    RuntimeEvent::Exited { code } => {
                        state.tasks.remove(&key);
                        Event::AgentExited { code }
                    }
                    RuntimeEvent::Killed => {
                        state.tasks.remove(&key);
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
                        let launch = Launch {
                            key: key.clone(),
                            container: t.spec.container.clone(),
                            annotations: t.metadata.annotations.clone().unwrap_or_default(),
                        };
                        if let Ok(mut o) = state.objects.lock() {
                            o.insert(key.clone(), t);
                        }
                        let here = state.tasks.get(&key).map(|(r, _)| *r);
                        match (phase, here) {
                            (TaskPhase::Assigned, None) => {
                                let Some(idx) = runtimes.iter().position(|r| r.supports(&launch)) else {
                                    state.report(&client, &key, Event::AgentExited { code: 127 }, &node);
                                    continue;
                                };
                                state.tasks.insert(key.clone(), (idx, node));
                                if let Err(e) = runtimes[idx].start(launch, events_tx.clone()).await {
                                    tracing::warn!(task = %key, error = %e, "starting failed");
                                    state.tasks.remove(&key);
                                    state.report(&client, &key, Event::AgentExited { code: 128 }, "");
                                }
                            }
                            (TaskPhase::Killing | TaskPhase::Preempting | TaskPhase::Restarting | TaskPhase::Draining, Some(idx))
                            | (TaskPhase::Finished | TaskPhase::Failed | TaskPhase::Killed | TaskPhase::Lost, Some(idx)) => {
                                if runtimes[idx].kill(&key, KILL_GRACE).await.is_ok() {
                                    let _ = events_tx.send((key.clone(), RuntimeEvent::Killed)).await;
                                } else {
                                    state.tasks.remove(&key);
                                }
                            }
                            (TaskPhase::Killing | TaskPhase::Preempting | TaskPhase::Restarting | TaskPhase::Draining, None) => {
                                // Never started here (or already gone): it is dead.
                                state.report(&client, &key, Event::AgentKilled, &node);
                            }
                            _ => {}
                        }
                    }
                    watcher::Event::Delete(t) => {
                        let key = key_of(&t);
                        if let Ok(mut o) = state.objects.lock() {
                            o.remove(&key);
                        }
                        if let Some((idx, _)) = state.tasks.remove(&key) {
                            let _ = runtimes[idx].kill(&key, KILL_GRACE).await;
                        }
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
            }
        }
    }
}
