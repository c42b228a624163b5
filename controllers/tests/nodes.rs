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
                    .await;
                Ok(())
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

/// Writes `node`'s lease renewal as an agent whose clock is `skew` seconds
/// off would: the time it names is the agent's, not the controller's.
async fn renew(client: &kube::Client, node: &str, skew: i64) -> Result<()> {
    let leases: Api<Lease> =
        Api::namespaced(client.clone(), corral_controllers::nodes::LEASE_NAMESPACE);
    let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(skew))
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    leases
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewTime": at}})),
        )
        .await?;
    Ok(())
}

/// The nodes whose leases are renewed, each with its agent's clock skew in seconds.
type Renewing = tokio::sync::watch::Sender<Vec<(&'static str, i64)>>;

/// Renews the leases of the nodes in `renewing` (with their clock skews)
/// every 200 ms until the sender is dropped, as their agents would.
fn renewer(client: kube::Client) -> (Renewing, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::watch::channel(Vec::<(&'static str, i64)>::new());
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tick.tick() => {
                    let renewing = rx.borrow().clone();
                    for (node, skew) in renewing {
                        let _ = renew(&client, node, skew).await;
                    }
                }
            }
        }
    });
    (tx, handle)
}

/// A job of `instances` instances that each fill a 2-CPU node, replaced at
/// once when lost.
fn filling(name: &str, instances: u32) -> Result<Job> {
    Ok(serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": instances,
                 "resources": {"cpus": 2, "memory": "1Gi"}, "container": {"image": "busybox"},
                 "partitionPolicy": {"reschedule": true, "delaySeconds": 0}}}),
    )?)
}

/// The node controller and the loops that place and replace tasks.
fn loops(
    client: &kube::Client,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (c, s) = (client.clone(), stop.clone());
    let alloc = tokio::spawn(async move {
        corral_controllers::allocation::run(c, corral_core::sched::Policy::BinPack, s).await;
    });
    vec![
        alloc,
        tokio::spawn(corral_controllers::jobs::run(client.clone(), stop.clone())),
        tokio::spawn(corral_controllers::nodes::run(client.clone(), stop.clone())),
    ]
}

/// Binds all of `job`'s `instances` and marks them RUNNING, as agents would.
async fn all_running(tasks: &Api<Task>, job: &str, instances: u32) -> Result<()> {
    for i in 0..instances {
        let name = format!("{job}-{i}-0");
        eventually(&format!("{name} to be bound"), || async {
            Ok(tasks
                .get_opt(&name)
                .await?
                .is_some_and(|t| t.spec.node_name.is_some()))
        })
        .await?;
        tasks
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "RUNNING"}})),
            )
            .await?;
    }
    Ok(())
}

fn ready_message(node: &Node) -> Option<String> {
    node.status.as_ref()?.conditions.iter().find_map(|c| {
        (c.type_ == corral_api::node::NodeConditionType::Ready
            && c.status == corral_api::ConditionStatus::False)
            .then(|| c.message.clone())
    })
}

fn phase(t: &Task) -> TaskPhase {
    t.status.as_ref().map_or(TaskPhase::Pending, |s| s.phase())
}

#[tokio::test]
async fn when_most_nodes_go_quiet_at_once_the_brake_keeps_their_tasks() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    let names = ["n1", "n2", "n3"];
    for n in names {
        node(&h.client, n, 2).await?;
        lease(&h.client, n, 1).await?;
    }
    let (renewing, renewer) = renewer(h.client.clone());
    renewing.send(names.iter().map(|n| (*n, 0)).collect())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loops = loops(&h.client, &stop_rx);
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let nodes: Api<Node> = Api::all(h.client.clone());
    jobs.create(&PostParams::default(), &filling("svc", 3)?)
        .await?;
    all_running(&tasks, "svc", 3).await?;

    // Every agent goes quiet at once (the control plane's network failed,
    // say): the nodes turn NotReady, and say why their tasks are kept.
    renewing.send(Vec::new())?;
    eventually("every node to show the brake", || async {
        let all = nodes.list(&Default::default()).await?.items;
        Ok(all
            .iter()
            .all(|n| ready_message(n).is_some_and(|m| m.contains("3 of 3 nodes stopped at once"))))
    })
    .await?;
    for i in 0..3 {
        let t = tasks.get(&format!("svc-{i}-0")).await?;
        assert_eq!(phase(&t), TaskPhase::Running, "{:?}", t.status);
    }
    // And an Event on each says so.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(h.client.clone(), "default");
    eventually("an Event on each node about the brake", || async {
        let about: std::collections::BTreeSet<String> = events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("DisruptionBrake"))
            .filter_map(|e| e.involved_object.name)
            .collect();
        Ok(about.len() == 3)
    })
    .await?;

    // Two come back: one quiet node alone is that node's trouble, and its
    // task is lost (and replaced; there is no room for it yet).
    renewing.send(vec![("n1", 0), ("n2", 0)])?;
    let quiet = tasks
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .find(|t| t.spec.node_name.as_deref() == Some("n3"))
        .and_then(|t| t.metadata.name)
        .ok_or_else(|| anyhow::anyhow!("no task on n3"))?;
    eventually("the quiet node's task to be lost", || async {
        Ok(phase(&tasks.get(&quiet).await?) == TaskPhase::Lost)
    })
    .await?;
    for n in ["n1", "n2"] {
        eventually(&format!("{n} to be Ready"), || async {
            Ok(ready_message(&nodes.get(n).await?).is_none())
        })
        .await?;
    }
    let running = tasks
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|t| phase(t) == TaskPhase::Running)
        .count();
    assert_eq!(running, 2, "the tasks on the nodes that came back run on");
    stop_tx.send(true)?;
    drop(renewing);
    renewer.await?;
    for l in loops {
        tokio::time::timeout(Duration::from_secs(10), l).await??;
    }
    Ok(())
}

#[tokio::test]
async fn an_agent_clock_ahead_or_behind_decides_nothing() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    // One agent's clock is five minutes behind, one's five minutes ahead.
    node(&h.client, "behind", 2).await?;
    node(&h.client, "ahead", 2).await?;
    lease(&h.client, "behind", 1).await?;
    lease(&h.client, "ahead", 1).await?;
    let (renewing, renewer) = renewer(h.client.clone());
    renewing.send(vec![("behind", -300), ("ahead", 300)])?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loops = loops(&h.client, &stop_rx);
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let nodes: Api<Node> = Api::all(h.client.clone());
    jobs.create(&PostParams::default(), &filling("svc", 2)?)
        .await?;
    all_running(&tasks, "svc", 2).await?;
    let on = |node: &'static str| {
        let tasks = tasks.clone();
        async move {
            tasks
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .find(|t| t.spec.node_name.as_deref() == Some(node))
                .and_then(|t| t.metadata.name)
                .ok_or_else(|| anyhow::anyhow!("no task on {node}"))
        }
    };
    let (behind, ahead) = (on("behind").await?, on("ahead").await?);

    // The agent whose clock is ahead stops: its node is lost on time (its
    // lease's last renewal names a time five minutes from now).
    let stopped = tokio::time::Instant::now();
    renewing.send(vec![("behind", -300)])?;
    eventually("the stopped node's task to be lost", || async {
        Ok(phase(&tasks.get(&ahead).await?) == TaskPhase::Lost)
    })
    .await?;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "lost after {:?}, its lease lasts 1 s",
        stopped.elapsed()
    );
    // The one whose clock is behind renews all along: never lost.
    assert_eq!(phase(&tasks.get(&behind).await?), TaskPhase::Running);
    assert!(ready_message(&nodes.get("behind").await?).is_none());
    stop_tx.send(true)?;
    drop(renewing);
    renewer.await?;
    for l in loops {
        tokio::time::timeout(Duration::from_secs(10), l).await??;
    }
    Ok(())
}
