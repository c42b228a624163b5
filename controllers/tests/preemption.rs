//! Preemption through the allocation loop: a preferred task evicts
//! preemptible ones, which go PREEMPTING with provenance; it is bound once
//! they are gone.

mod common;

use anyhow::{Context, Result};
use common::{eventually, node, start};
use corral_api::task::TaskConditionType;
use corral_api::{Task, TaskPhase};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn task(api: &Api<Task>, name: &str, tier: &str, cpus: i64) -> Result<()> {
    let t: Task = serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
        "spec": {"job": name, "role": "analytics", "instanceId": 0, "tier": tier, "resources": {"cpus": cpus, "memory": "256Mi"}, "container": {"image": "busybox"}}}),
    )?;
    api.create(&PostParams::default(), &t).await?;
    Ok(())
}

#[tokio::test]
async fn a_preferred_task_preempts_and_then_runs_where_its_victims_were() -> Result<()> {
    let h = start().await?;
    node(&h.client, "n1", 4).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let alloc = tokio::spawn(corral_controllers::allocation::run(
        h.client.clone(),
        corral_core::sched::Policy::BinPack,
        stop_rx,
    ));
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    for i in 0..4 {
        task(&tasks, &format!("batch-{i}"), "preemptible", 1).await?;
    }
    eventually("the node to fill up", || async {
        Ok(tasks
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|t| t.spec.node_name.is_some())
            .count()
            == 4)
    })
    .await?;
    task(&tasks, "prod", "preferred", 2).await?;
    eventually("two victims to be preempted", || async {
        let list = tasks.list(&ListParams::default()).await?.items;
        Ok(list
            .iter()
            .filter(|t| t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Preempting))
            .count()
            == 2)
    })
    .await?;
    let list = tasks.list(&ListParams::default()).await?.items;
    let victims: Vec<&Task> = list
        .iter()
        .filter(|t| t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Preempting))
        .collect();
    for v in &victims {
        let st = v.status.as_ref().context("status")?;
        let cond = st
            .conditions
            .iter()
            .find(|c| c.type_ == TaskConditionType::Preempted)
            .context("no Preempted condition")?;
        assert!(
            cond.message.contains("preempted by default/prod"),
            "{}",
            cond.message
        );
        assert!(
            st.task_events
                .last()
                .is_some_and(|e| e.message.contains("LowerTier")),
            "{:?}",
            st.task_events.last()
        );
    }
    assert!(
        tasks.get("prod").await?.spec.node_name.is_none(),
        "the preemptor waits for its victims"
    );
    // The agent kills the victims.
    for v in victims {
        let name = v.metadata.name.clone().context("name")?;
        tasks
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "KILLED"}})),
            )
            .await?;
    }
    eventually("the preemptor to be bound", || async {
        Ok(tasks.get("prod").await?.spec.node_name.as_deref() == Some("n1"))
    })
    .await?;
    stop_tx.send(true)?;
    alloc.await??;
    Ok(())
}
