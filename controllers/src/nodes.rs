//! The node lifecycle controller: node liveness from agent leases.
//!
//! Watches (through the shared [`crate::cache`]): the Leases in
//! [`LEASE_NAMESPACE`] (one per node, named after it, renewed by its agent),
//! Nodes, Tasks (by node) and Jobs. Keeps in memory, on its own monotonic
//! clock, when it saw each lease last change ([`corral_core::liveness`]): the
//! time an agent writes into its lease never decides, so an agent's clock
//! running ahead or behind changes nothing. A controller that starts, or
//! whose lease watch failed, gives every node a whole lease from the moment
//! it sees again: a renewal it could not see is not the node's fault.
//! Every [`TICK`] it decides with `corral_core::{liveness, nodes}`. Writes:
//! the Node's Ready condition (False with `HeartbeatExpired` when the lease
//! lapsed, True again when it is renewed), and the tasks' phases through the
//! lifecycle state machine (LOST, or PARTITIONED first when their job's
//! partition policy asks to wait), each with a task event. When more than
//! [`Settings::disruption_threshold`] of the leased nodes are stale at once
//! (and at least two), the disruption brake holds: nodes still turn
//! NotReady, their condition (and an Event on each, when the brake engages
//! and when it releases) says why their tasks are kept, and no task is
//! declared lost until enough nodes are back (Kubernetes stops evicting the
//! same way). A live node whose tasks were all settled is not looked into
//! again while it stays live (after a restart every node is looked into
//! once). Nodes without a lease (not run by an agent) are left alone. The
//! job controller replaces lost tasks; the allocation loop places nothing
//! on a node that is not Ready.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use corral_api::node::{NodeConditionType, NodeReason};
use corral_api::{Condition, ConditionStatus, Node, Task};
use corral_core::liveness::{self, Liveness};
use corral_core::{lifecycle, nodes};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::cache::{self, Caches};

/// The namespace of node leases.
pub use corral_api::node::NODE_LEASE_NAMESPACE as LEASE_NAMESPACE;
/// The actor name written in task events.
pub const ACTOR: &str = "node-controller";
/// How often liveness is checked.
const TICK: Duration = Duration::from_millis(500);
/// A lease's duration when it names none.
const DEFAULT_LEASE: Duration = Duration::from_secs(40);

/// How the controller judges nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The share of leased nodes that may be stale at once before the
    /// disruption brake holds (1 or more: never).
    pub disruption_threshold: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            disruption_threshold: liveness::DEFAULT_DISRUPTION_THRESHOLD,
        }
    }
}

/// Runs the controller until `stop` turns true, with caches of its own.
pub async fn run(client: kube::Client, stop: tokio::sync::watch::Receiver<bool>) {
    let caches = Caches::new(client.clone(), stop.clone());
    run_cached(client, caches, Settings::default(), stop).await;
}

/// Runs the controller until `stop` turns true, reading `caches`.
pub async fn run_cached(
    client: kube::Client,
    caches: Arc<Caches>,
    settings: Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(TICK);
    let mut state = Tracker {
        settings,
        start: tokio::time::Instant::now(),
        liveness: Liveness::default(),
        blind: true,
        braked: false,
        braked_nodes: Vec::new(),
        settled: HashSet::new(),
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {
                if let Err(e) = state.check(&client, &caches).await {
                    tracing::debug!(error = %e, "node liveness check failed; retrying");
                }
            }
        }
    }
}

fn ready_condition(node: &Node) -> Option<&Condition<NodeConditionType, NodeReason>> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == NodeConditionType::Ready)
}

async fn set_ready(
    nodes: &Api<Node>,
    node: &Node,
    verdict: &Verdict,
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let (status, reason, message) = match verdict {
        Verdict::Alive => (
            ConditionStatus::True,
            NodeReason::AgentReady,
            "the agent renews its lease".to_owned(),
        ),
        Verdict::Lost => (
            ConditionStatus::False,
            NodeReason::HeartbeatExpired,
            "the agent stopped renewing its lease".to_owned(),
        ),
        Verdict::Braked { stale, nodes } => (
            ConditionStatus::False,
            NodeReason::HeartbeatExpired,
            format!(
                "the agent stopped renewing its lease; its tasks are kept: {stale} of {nodes} nodes \
                 stopped at once (the disruption brake), so the control plane or the network to it \
                 is the likelier cause"
            ),
        ),
    };
    // The brake's message is news (how many nodes are stale); the others'
    // wording is not worth a write (an agent writes its own).
    let braked = matches!(verdict, Verdict::Braked { .. });
    if ready_condition(node).is_some_and(|c| {
        c.status == status && c.reason == reason && (!braked || c.message == message)
    }) {
        return Ok(());
    }
    let mut conditions = node
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let since = ready_condition(node)
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    conditions.retain(|c| c.type_ != NodeConditionType::Ready);
    conditions.push(Condition {
        type_: NodeConditionType::Ready,
        status,
        reason,
        message,
        last_transition_time: Some(since),
        observed_generation: None,
    });
    let name = node.metadata.name.clone().unwrap_or_default();
    nodes
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": conditions}})),
        )
        .await?;
    Ok(())
}

/// What the controller knows between ticks (all of it rebuilt after a restart).
struct Tracker {
    settings: Settings,
    /// The instant the controller's clock counts from.
    start: tokio::time::Instant,
    liveness: Liveness,
    /// The lease watch failed, or has not listed yet: renewals may have been missed.
    blind: bool,
    /// The disruption brake held at the last tick.
    braked: bool,
    /// The nodes that were stale when the brake engaged (told when it releases).
    braked_nodes: Vec<String>,
    /// The live nodes whose tasks needed nothing (or got it) at their last
    /// look; they are not looked into again while they stay live and Ready.
    settled: HashSet<String>,
}

impl Tracker {
    /// The brake engaged (`braked`) or released: says so in the log and in
    /// an Event on each node that was stale when it engaged.
    fn brake_changed(&mut self, client: &kube::Client, braked: bool, stale: usize, now: Duration) {
        let nodes = self.liveness.len();
        let (reason, type_, message, told) = if braked {
            tracing::warn!(
                stale,
                nodes,
                "disruption brake: too many nodes stale at once; no task is declared lost"
            );
            self.braked_nodes = self.liveness.stale(now).map(str::to_owned).collect();
            (
                "DisruptionBrake",
                "Warning",
                format!(
                    "{stale} of {nodes} nodes stopped renewing their leases at once: their tasks \
                     are kept (the disruption brake) until fewer are stale"
                ),
                self.braked_nodes.clone(),
            )
        } else {
            tracing::info!(stale, nodes, "disruption brake released");
            (
                "DisruptionBrakeReleased",
                "Normal",
                format!(
                    "{stale} of {nodes} nodes are stale now: tasks on lost nodes are declared lost again"
                ),
                std::mem::take(&mut self.braked_nodes),
            )
        };
        for node in told {
            tokio::spawn(record_on_node(
                client.clone(),
                node,
                reason,
                type_,
                message.clone(),
            ));
        }
        self.braked = braked;
    }

    /// One tick.
    async fn check(&mut self, client: &kube::Client, caches: &Caches) -> Result<(), kube::Error> {
        let (leases, node_cache) = (caches.leases(), caches.nodes());
        let (tasks, jobs) = (caches.tasks(), caches.jobs());
        let now = self.start.elapsed();
        if !(leases.healthy() && node_cache.healthy() && tasks.healthy() && jobs.healthy()) {
            // Nothing is judged on a partial view.
            self.blind = true;
            return Ok(());
        }
        let all_leases = leases.store().state();
        for lease in &all_leases {
            let (Some(name), Some(spec)) = (&lease.metadata.name, &lease.spec) else {
                continue;
            };
            let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
                continue;
            };
            let lasts = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s.max(1)).ok())
                .map_or(DEFAULT_LEASE, Duration::from_secs);
            // Only that the renewal changed counts, not the time it names.
            self.liveness
                .observe(name, &renewed.0.to_string(), lasts, now);
        }
        let present: HashSet<&str> = all_leases
            .iter()
            .filter_map(|l| l.metadata.name.as_deref())
            .collect();
        self.liveness.retain(|n| present.contains(n));
        if std::mem::take(&mut self.blind) {
            self.liveness.forgive(now);
        }
        let stale = self.liveness.stale(now).count();
        let braked = liveness::brake(
            stale,
            self.liveness.len(),
            self.settings.disruption_threshold,
        );
        if braked != self.braked {
            self.brake_changed(client, braked, stale, now);
        }
        let nodes_api: Api<Node> = Api::all(client.clone());
        let wall = jiff::Timestamp::now();
        for node in node_cache.store().state() {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            let Some(alive) = self.liveness.alive(&name, now) else {
                continue;
            };
            let was_ready =
                ready_condition(&node).is_some_and(|c| c.status == ConditionStatus::True);
            if alive && was_ready && self.settled.contains(&name) {
                continue;
            }
            self.settled.remove(&name);
            let verdict = match (alive, braked) {
                (true, _) => Verdict::Alive,
                (false, false) => Verdict::Lost,
                (false, true) => Verdict::Braked {
                    stale,
                    nodes: self.liveness.len(),
                },
            };
            set_ready(&nodes_api, &node, &verdict, wall).await?;
            if matches!(verdict, Verdict::Braked { .. }) {
                continue;
            }
            let mut all_settled = alive;
            for task in tasks.indexed(cache::BY_NODE, &name) {
                if let Err(e) = settle(client, &jobs.store(), &task, alive, wall).await {
                    all_settled = false;
                    tracing::debug!(task = ?task.metadata.name, error = %e, "a task changed under the node controller; next tick retries");
                }
            }
            if all_settled {
                self.settled.insert(name);
            }
        }
        Ok(())
    }
}

/// What the controller concludes about one leased node.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// It renews its lease.
    Alive,
    /// Its lease lapsed: its tasks are lost (or partitioned).
    Lost,
    /// Its lease lapsed, but so did too many others': its tasks are kept.
    Braked { stale: usize, nodes: usize },
}

/// Moves one task on a lost or returning node as its job's partition
/// policy says (the job read from the cache).
async fn settle(
    client: &kube::Client,
    jobs: &kube::runtime::reflector::Store<corral_api::Job>,
    task: &Task,
    alive: bool,
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let status = task.status.clone().unwrap_or_default();
    let ns = task
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let event = if alive {
        nodes::on_node_back(&status)
    } else {
        let policy = jobs
            .get(&ObjectRef::new(&task.spec.job).within(&ns))
            .and_then(|j| j.spec.partition_policy.clone())
            .unwrap_or_default();
        nodes::on_lost_node(&status, &policy, now)
    };
    let Some(event) = event else { return Ok(()) };
    let mut next = status.clone();
    if lifecycle::apply(&mut next, &event, now, ACTOR).is_ok() && next != status {
        let api: Api<Task> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"metadata": {"resourceVersion": task.metadata.resource_version}, "status": next});
        let name = task.metadata.name.clone().unwrap_or_default();
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    Ok(())
}

/// Records a v1 Event about a Node (in `default`, as Kubernetes does for
/// cluster-scoped objects); a failure is only logged.
async fn record_on_node(
    client: kube::Client,
    node: String,
    reason: &'static str,
    type_: &'static str,
    message: String,
) {
    let event = corral_api::node::node_event(
        &node,
        reason,
        type_,
        message,
        (ACTOR, None),
        jiff::Timestamp::now(),
    );
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    if let Err(e) = events.create(&Default::default(), &event).await {
        tracing::warn!(node = %node, reason, error = %e, "recording a node event failed");
    }
}
