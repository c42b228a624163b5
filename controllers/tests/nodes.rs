//! Node liveness: when a node's agent stops renewing its lease, the node
//! turns NotReady and its tasks are LOST (or PARTITIONED first) and replaced
//! elsewhere.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{eventually, node, start};
use corral_api::{Job, Node, Task, TaskPhase};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn job(name: &str, delay: u32) -> Result<Job> {
    Ok(serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": 1,
                 "resources": {"cpus": 2, "memory": "1Gi"}, "container": {"image": "busybox"},
                 "partitionPolicy": {"reschedule": true, "delaySeconds": delay}}}),
    )?)
}

async fn lease(client: &kube::Client, node: &str, seconds: i32) -> Result<()> {
    let leases: Api<Lease> =
        Api::namespaced(client.clone(), corral_controllers::nodes::LEASE_NAMESPACE);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let l: Lease = serde_json::from_value(
        json!({"metadata": {"name": node}, "spec": {"holderIdentity": node, "leaseDurationSeconds": seconds, "renewTime": now}}),
    )?;
    leases.create(&PostParams::default(), &l).await?;
    Ok(())
}

#[tokio::test]
async fn tasks_on_a_node_that_stops_heartbeating_are_replaced_elsewhere() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    // The server made the Lease namespace at its start.
    let nss: Api<Namespace> = Api::all(h.client.clone());
    nss.get(corral_controllers::nodes::LEASE_NAMESPACE).await?;
    node(&h.client, "small", 4).await?;
    node(&h.client, "big", 8).await?;
    // Only "small" has an agent; its lease lasts one second and is never renewed.
    lease(&h.client, "small", 1).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loops: Vec<tokio::task::JoinHandle<Result<()>>> = vec![
        tokio::spawn({
            let (c, s) = (h.client.clone(), stop_rx.clone());
            async move {
                corral_controllers::allocation::run(c, corral_core::sched::Policy::BinPack, s)
                    .await
                    .map_err(anyhow::Error::from)
            }
        }),
        tokio::spawn({
            let (c, s) = (h.client.clone(), stop_rx.clone());
            async move {
                corral_controllers::jobs::run(c, s).await;
                Ok(())
            }
        }),
        tokio::spawn({
            let (c, s) = (h.client.clone(), stop_rx.clone());
            async move {
                corral_controllers::nodes::run(c, s).await;
                Ok(())
            }
        }),
    ];
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let nodes: Api<Node> = Api::all(h.client.clone());
    // A partition delay: the task is PARTITIONED before it is LOST.
    jobs.create(&PostParams::default(), &job("web", 1)?).await?;
    eventually(
        "the first task to be bound to the tightest node",
        || async {
            Ok(tasks
                .get_opt("web-0-0")
                .await?
                .and_then(|t| t.spec.node_name)
                .as_deref()
                == Some("small"))
        },
    )
    .await?;
    // Mark it running, as its agent would have.
    tasks
        .patch_status(
            "web-0-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "RUNNING"}})),
        )
        .await?;
    eventually("the node to turn NotReady", || async {
        let n = nodes.get("small").await?;
        Ok(n.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.reason == corral_api::node::NodeReason::HeartbeatExpired)
        }))
    })
    .await?;
    eventually("the task to be partitioned, then lost", || async {
        let t = tasks.get("web-0-0").await?;
        let phases: Vec<TaskPhase> = t
            .status
            .map(|s| s.task_events.iter().map(|e| e.status).collect())
            .unwrap_or_default();
        Ok(phases.ends_with(&[TaskPhase::Partitioned, TaskPhase::Lost]))
    })
    .await?;
    eventually("the replacement to run on the healthy node", || async {
        Ok(tasks
            .get_opt("web-0-1")
            .await?
            .and_then(|t| t.spec.node_name)
            .as_deref()
            == Some("big"))
    })
    .await?;
    stop_tx.send(true)?;
    for l in loops {
        tokio::time::timeout(Duration::from_secs(10), l).await???;
    }
    Ok(())
}
