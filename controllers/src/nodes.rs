//! The node lifecycle controller: node liveness from agent leases.
//!
//! Reads, every tick: the Leases in [`LEASE_NAMESPACE`] (one per node, named
//! after it, renewed by its agent), the Nodes, and the tasks bound to nodes
//! whose lease expired, or that came back, or whose tasks were not all
//! settled at the last look. A live node whose tasks were all settled is not
//! looked into again while it stays live (the set is kept in memory: after a
//! restart every node is looked into once), so a tick costs two lists, not
//! one per node. Decides with `corral_core::nodes`. Writes: the Node's
//! Ready condition (False with `HeartbeatExpired` when the lease lapsed, True
//! again when it is renewed), and the tasks' phases through the lifecycle
//! state machine (LOST, or PARTITIONED first when their job's partition
//! policy asks to wait), each with a task event. Nodes without a lease (not
//! run by an agent) are left alone. The job controller replaces lost tasks;
//! the allocation loop no longer places anything on a node that is not Ready.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use corral_api::job::PartitionPolicy;
use corral_api::node::{NodeConditionType, NodeReason};
use corral_api::{Condition, ConditionStatus, Job, Node, Task};
use corral_core::{lifecycle, nodes};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// The namespace of node leases.
pub use corral_api::node::NODE_LEASE_NAMESPACE as LEASE_NAMESPACE;
/// The actor name written in task events.
pub const ACTOR: &str = "node-controller";
/// How often liveness is checked.
const TICK: Duration = Duration::from_millis(500);

/// Runs the controller until `stop` turns true.
pub async fn run(client: kube::Client, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(TICK);
    let mut settled = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {
                if let Err(e) = check(&client, &mut settled).await {
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
    ready: bool,
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let (status, reason, message) = if ready {
        (
            ConditionStatus::True,
            NodeReason::AgentReady,
            "the agent renews its lease",
        )
    } else {
        (
            ConditionStatus::False,
            NodeReason::HeartbeatExpired,
            "the agent stopped renewing its lease",
        )
    };
    if ready_condition(node).is_some_and(|c| c.status == status && c.reason == reason) {
        return Ok(());
    }
    let mut conditions = node
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != NodeConditionType::Ready);
    conditions.push(Condition {
        type_: NodeConditionType::Ready,
        status,
        reason,
        message: message.into(),
        last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
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

/// One tick. `settled`: the live nodes whose tasks needed nothing (or got
/// it) at their last look; they are not looked into again while they stay
/// live and Ready.
async fn check(client: &kube::Client, settled: &mut HashSet<String>) -> Result<(), kube::Error> {
    let now = jiff::Timestamp::now();
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let expiry: BTreeMap<String, jiff::Timestamp> = match leases.list(&ListParams::default()).await
    {
        Ok(l) => l
            .items
            .into_iter()
            .filter_map(|l| {
                let spec = l.spec?;
                let renewed = spec.renew_time.or(spec.acquire_time)?.0;
                Some((
                    l.metadata.name?,
                    nodes::lease_expiry(renewed, spec.lease_duration_seconds.unwrap_or(40)),
                ))
            })
            .collect(),
        // No lease namespace yet: no agent has registered.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    };
    let nodes_api: Api<Node> = Api::all(client.clone());
    for node in nodes_api.list(&ListParams::default()).await?.items {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        let Some(expires) = expiry.get(&name) else {
            continue;
        };
        let alive = now <= *expires;
        let was_ready = ready_condition(&node).is_some_and(|c| c.status == ConditionStatus::True);
        if alive && was_ready && settled.contains(&name) {
            continue;
        }
        settled.remove(&name);
        set_ready(&nodes_api, &node, alive, now).await?;
        let mut all_settled = alive;
        let tasks: Api<Task> = Api::all(client.clone());
        let bound = tasks
            .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await?
            .items;
        for task in bound {
            let status = task.status.clone().unwrap_or_default();
            let event = if alive {
                nodes::on_node_back(&status)
            } else {
                let ns = task
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let policy = Api::<Job>::namespaced(client.clone(), &ns)
                    .get_opt(&task.spec.job)
                    .await?
                    .and_then(|j| j.spec.partition_policy)
                    .unwrap_or_else(PartitionPolicy::default);
                nodes::on_lost_node(&status, &policy, now)
            };
            let Some(event) = event else { continue };
            let mut next = status.clone();
            if lifecycle::apply(&mut next, &event, now, ACTOR).is_ok() && next != status {
                let ns = task
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let api: Api<Task> = Api::namespaced(client.clone(), &ns);
                let patch = json!({"metadata": {"resourceVersion": task.metadata.resource_version}, "status": next});
                let tn = task.metadata.name.clone().unwrap_or_default();
                if let Err(e) = api
                    .patch_status(&tn, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    all_settled = false;
                    tracing::debug!(task = %tn, error = %e, "a task changed under the node controller; next tick retries");
                }
            }
        }
        if all_settled {
            settled.insert(name);
        }
    }
    Ok(())
}
