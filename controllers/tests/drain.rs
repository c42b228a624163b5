//! Drains through the controllers, against the in-process API server: the
//! allocation loop, the job controller and the drain controller, with a
//! stand-in agent. A drain of a node holding three instances of a job whose
//! budget allows one down never has two down at once (watched event by
//! event), makes replacements before it breaks where there is room, waits
//! for room where there is none, and ends with the node empty and the job
//! whole elsewhere; a maintenance window empties its node before it opens.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use common::{eventually, node, stand_in_agent, start};
use corral_api::node::{NodeConditionType, NodeReason};
use corral_api::{ConditionStatus, Job, Node, Task, TaskPhase};
use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// Watches job `job`'s tasks: `whole` is set once it has seen every one
/// of `instances` up, and from then on `worst` keeps the most instances
/// ever seen down at once.
fn watch_down(
    client: kube::Client,
    job: &str,
    instances: u32,
    whole: Arc<Mutex<bool>>,
    worst: Arc<Mutex<u32>>,
) -> tokio::task::JoinHandle<()> {
    let selector = format!("corral.dev/job={job}");
    tokio::spawn(async move {
        let api: Api<Task> = Api::namespaced(client, "default");
        let mut events = watcher(api, watcher::Config::default().labels(&selector))
            .applied_objects()
            .boxed();
        let mut running: BTreeMap<String, (u32, bool)> = BTreeMap::new();
        while let Some(Ok(t)) = events.next().await {
            let up = t
                .status
                .as_ref()
                .is_some_and(|s| s.phase() == TaskPhase::Running);
            running.insert(
                t.metadata.name.clone().unwrap_or_default(),
                (t.spec.instance_id, up),
            );
            let up_instances = (0..instances)
                .filter(|i| running.values().any(|(j, up)| j == i && *up))
                .count();
            let down = instances - u32::try_from(up_instances).unwrap_or(0);
            let mut seen_whole = whole.lock().expect("lock");
            if *seen_whole {
                let mut w = worst.lock().expect("lock");
                *w = (*w).max(down);
            }
            *seen_whole |= down == 0;
        }
    })
}

/// The live tasks of the namespace: (name, node, phase).
async fn live(tasks: &Api<Task>) -> Result<Vec<(String, String, TaskPhase)>> {
    Ok(tasks
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|t| {
            let phase = t.status.as_ref()?.phase();
            (!phase.is_terminal()).then(|| {
                (
                    t.metadata.name.clone().unwrap_or_default(),
                    t.spec.node_name.clone().unwrap_or_default(),
                    phase,
                )
            })
        })
        .collect())
}

fn condition(n: &Node, type_: NodeConditionType) -> Option<(ConditionStatus, NodeReason, String)> {
    n.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message.clone()))
}

async fn service(client: &kube::Client, name: &str, instances: u32) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": name},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": instances,
                 "resources": {"cpus": 1, "memory": "256Mi"}, "container": {"image": "web:v1"},
                 "disruptionBudget": {"maxUnavailable": 1}}});
    jobs.create(&PostParams::default(), &serde_json::from_value(job)?)
        .await?;
    Ok(())
}

fn controllers(
    client: &kube::Client,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(corral_controllers::allocation::run(
            client.clone(),
            corral_core::sched::Policy::BinPack,
            stop.clone(),
        )),
        tokio::spawn(corral_controllers::jobs::run(client.clone(), stop.clone())),
        tokio::spawn(corral_controllers::drain::run(client.clone(), stop.clone())),
    ]
}

#[tokio::test]
async fn a_drain_keeps_the_budget_replaces_first_and_empties_the_node() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    node(&h.client, "n1", 3).await?;
    service(&h.client, "web", 3).await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let loops = controllers(&h.client, &stop_rx);
    let agent = stand_in_agent(h.client.clone());
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    eventually("three instances running on n1", || async {
        let l = live(&tasks).await?;
        Ok(l.len() == 3
            && l.iter()
                .all(|(_, n, p)| n == "n1" && *p == TaskPhase::Running))
    })
    .await?;
    let (whole, worst) = (Arc::new(Mutex::new(false)), Arc::new(Mutex::new(0)));
    let watch = watch_down(h.client.clone(), "web", 3, whole.clone(), worst.clone());
    eventually("the watch sees every instance up", || async {
        Ok(*whole.lock().expect("lock"))
    })
    .await?;
    // Room for one replacement elsewhere.
    node(&h.client, "n2", 1).await?;
    let nodes: Api<Node> = Api::all(h.client.clone());
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"drain": true}})),
        )
        .await?;
    // One replacement runs on n2 (its predecessor leaves for free); one
    // more instance is let down by the budget; the third waits on it.
    eventually("the drain waits on the budget, saying so", || async {
        let n = nodes.get("n1").await?;
        Ok(
            condition(&n, NodeConditionType::Draining).is_some_and(|(s, r, m)| {
                s == ConditionStatus::True
                    && r == NodeReason::DrainRequested
                    && m.contains("disruption budget")
            }),
        )
    })
    .await?;
    let on_n1 = live(&tasks)
        .await?
        .into_iter()
        .filter(|(_, n, _)| n == "n1")
        .count();
    assert!(on_n1 >= 1, "a task waits on n1");
    // Room for the rest: the drain finishes.
    node(&h.client, "n3", 2).await?;
    eventually("n1 drained, the job whole elsewhere", || async {
        let n = nodes.get("n1").await?;
        let drained = condition(&n, NodeConditionType::Draining)
            .is_some_and(|(s, r, _)| s == ConditionStatus::False && r == NodeReason::Drained);
        let l = live(&tasks).await?;
        Ok(drained
            && l.len() == 3
            && l.iter()
                .all(|(_, n, p)| n != "n1" && *p == TaskPhase::Running))
    })
    .await?;
    assert_eq!(
        *worst.lock().expect("lock"),
        1,
        "one instance down at most, and the budget was used"
    );
    // Called off: the condition goes.
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"drain": false}})),
        )
        .await?;
    eventually("the Draining condition removed", || async {
        Ok(condition(&nodes.get("n1").await?, NodeConditionType::Draining).is_none())
    })
    .await?;
    stop.send(true)?;
    for l in loops {
        l.await?;
    }
    agent.abort();
    watch.abort();
    Ok(())
}

#[tokio::test]
async fn a_maintenance_window_empties_its_node_before_it_opens() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    node(&h.client, "n1", 2).await?;
    service(&h.client, "api", 2).await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let loops = controllers(&h.client, &stop_rx);
    let agent = stand_in_agent(h.client.clone());
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    eventually("two instances running on n1", || async {
        let l = live(&tasks).await?;
        Ok(l.len() == 2
            && l.iter()
                .all(|(_, n, p)| n == "n1" && *p == TaskPhase::Running))
    })
    .await?;
    node(&h.client, "n2", 2).await?;
    let start_at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(12);
    let nodes: Api<Node> = Api::all(h.client.clone());
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maintenance": {"start": start_at.to_string(), "durationSeconds": 3600, "drainAheadSeconds": 10}}})),
        )
        .await?;
    eventually("n1 empty", || async {
        Ok(live(&tasks)
            .await?
            .iter()
            .all(|(_, n, p)| n != "n1" && *p == TaskPhase::Running))
    })
    .await?;
    assert!(
        jiff::Timestamp::now() < start_at,
        "emptied before the window opened"
    );
    let n = nodes.get("n1").await?;
    assert!(
        condition(&n, NodeConditionType::Maintenance).is_some_and(|(s, r, _)| s
            == ConditionStatus::False
            && r == NodeReason::MaintenanceAhead),
        "{:?}",
        condition(&n, NodeConditionType::Maintenance)
    );
    eventually("the window opens", || async {
        Ok(
            condition(&nodes.get("n1").await?, NodeConditionType::Maintenance).is_some_and(
                |(s, r, _)| s == ConditionStatus::True && r == NodeReason::MaintenanceWindowOpen,
            ),
        )
    })
    .await?;
    stop.send(true)?;
    for l in loops {
        l.await?;
    }
    agent.abort();
    Ok(())
}
