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

/// What the agent reports once it killed `task`.
async fn killed(api: &Api<Task>, task: &Task) -> Result<()> {
    let name = task.metadata.name.clone().context("name")?;
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "KILLED"}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_preferred_task_preempts_and_then_runs_where_its_victims_were() -> Result<()> {
    let h = start().await?;
    h.roles(&["analytics"]).await?;
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
    // The preferred tier runs only on a role granted a Quota.
    Api::<corral_api::Quota>::all(h.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "analytics"}, "spec": {"role": "analytics"}}),
            )?,
        )
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
        killed(&tasks, v).await?;
    }
    eventually("the preemptor to be bound", || async {
        Ok(tasks.get("prod").await?.spec.node_name.as_deref() == Some("n1"))
    })
    .await?;
    stop_tx.send(true)?;
    alloc.await?;
    Ok(())
}

async fn role_task(
    api: &Api<Task>,
    name: &str,
    role: &str,
    priority: i32,
    cpus: i64,
) -> Result<()> {
    let t: Task = serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
        "spec": {"job": name, "role": role, "instanceId": 0, "priority": priority, "resources": {"cpus": cpus, "memory": "256Mi"}, "container": {"image": "busybox"}}}),
    )?;
    api.create(&PostParams::default(), &t).await?;
    Ok(())
}

#[tokio::test]
async fn a_role_reclaims_the_guarantee_it_lent_and_protects_what_it_does_not_lend() -> Result<()> {
    let h = start().await?;
    h.roles(&["web", "db", "batch"]).await?;
    node(&h.client, "n1", 6).await?;
    let quotas: Api<corral_api::Quota> = Api::all(h.client.clone());
    for q in [
        json!({"metadata": {"name": "web"}, "spec": {"role": "web", "guarantee": {"cpus": 4}}}),
        json!({"metadata": {"name": "db"}, "spec": {"role": "db", "guarantee": {"cpus": 1}, "lendUnused": false}}),
    ] {
        quotas
            .create(&PostParams::default(), &serde_json::from_value(q)?)
            .await?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let alloc = tokio::spawn(corral_controllers::allocation::run(
        h.client.clone(),
        corral_core::sched::Policy::BinPack,
        stop_rx,
    ));
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    // batch borrows web's unused guarantee, but not db's: 5 of 6 CPUs.
    for i in 0..6 {
        role_task(&tasks, &format!("batch-{i}"), "batch", 5, 1).await?;
    }
    eventually("batch to fill all but db's guarantee", || async {
        let list = tasks.list(&ListParams::default()).await?.items;
        let bound = list.iter().filter(|t| t.spec.node_name.is_some()).count();
        let protected = list.iter().any(|t| {
            t.status
                .as_ref()
                .and_then(|s| s.explanation.as_ref())
                .is_some_and(|e| {
                    e.reasons
                        .iter()
                        .any(|r| r.kind == corral_api::task::PendingReasonKind::GuaranteeProtected)
                })
        });
        Ok(bound == 5 && protected)
    })
    .await?;
    // web wants 2 of its 4 back: batch has a higher priority and the same
    // tier, but it borrows, so two of its tasks give back what web lent
    // (the free CPU is db's: protected, web does not take it either).
    role_task(&tasks, "web-0", "web", 0, 2).await?;
    eventually("two batch tasks to be preempted for web", || async {
        let list = tasks.list(&ListParams::default()).await?.items;
        Ok(list
            .iter()
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.phase() == TaskPhase::Preempting
                        && s.task_events
                            .last()
                            .is_some_and(|e| e.message.contains("Reclaim: web"))
                })
            })
            .count()
            == 2)
    })
    .await?;
    // The agent kills the victims.
    for t in tasks.list(&ListParams::default()).await?.items {
        if t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Preempting) {
            killed(&tasks, &t).await?;
        }
    }
    eventually("web to run on what it reclaimed", || async {
        Ok(tasks.get("web-0").await?.spec.node_name.as_deref() == Some("n1"))
    })
    .await?;
    // db's guarantee was kept free for it.
    role_task(&tasks, "db-0", "db", 0, 1).await?;
    eventually("db to run on its protected CPU", || async {
        Ok(tasks.get("db-0").await?.spec.node_name.as_deref() == Some("n1"))
    })
    .await?;
    let list = tasks.list(&ListParams::default()).await?.items;
    let batch_holding = list
        .iter()
        .filter(|t| {
            t.spec.role == "batch"
                && t.status
                    .as_ref()
                    .is_some_and(|s| s.phase().holds_resources())
        })
        .count();
    assert_eq!(batch_holding, 3, "6 CPUs: web 2, db 1, batch the rest");
    stop_tx.send(true)?;
    alloc.await?;
    Ok(())
}
