//! The allocation loop against the in-process API server over the embedded
//! store, with simulated nodes (Node objects only; no agents needed).

mod common;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use common::{eventually, node, start};
use corral_api::task::PendingReasonKind;
use corral_api::{Quota, Role, Task, TaskPhase};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

async fn task(client: &kube::Client, name: &str, role: &str, cpus: i64) -> Result<()> {
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let t: Task = serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
        "spec": {"job": "j", "role": role, "instanceId": 0, "resources": {"cpus": cpus, "memory": "256Mi"}, "container": {"image": "busybox"}}}),
    )?;
    tasks.create(&PostParams::default(), &t).await?;
    Ok(())
}

fn bound(tasks: &[Task]) -> Vec<&Task> {
    tasks
        .iter()
        .filter(|t| t.spec.node_name.is_some())
        .collect()
}

#[tokio::test]
async fn pending_tasks_are_bound_within_capacity_and_quota_and_the_rest_explained() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    for n in ["n1", "n2", "n3"] {
        node(&h.client, n, 4).await?;
    }
    let roles: Api<Role> = Api::all(h.client.clone());
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "analytics"}, "spec": {"weight": 1}}),
            )?,
        )
        .await?;
    let quotas: Api<Quota> = Api::all(h.client.clone());
    quotas.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "analytics"}, "spec": {"role": "analytics", "limit": {"cpus": 6}}}))?).await?;
    for i in 0..8 {
        task(&h.client, &format!("a{i}"), "analytics", 1).await?;
    }
    task(&h.client, "huge", "web", 8).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(corral_controllers::allocation::run(
        h.client.clone(),
        corral_core::sched::Policy::Spread,
        stop_rx,
    ));
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    eventually(
        "six analytics tasks bound and the rest explained",
        || async {
            let list = tasks.list(&ListParams::default()).await?.items;
            let explained = list
                .iter()
                .filter(|t| {
                    t.status
                        .as_ref()
                        .and_then(|s| s.explanation.as_ref())
                        .is_some()
                })
                .count();
            Ok(bound(&list).len() == 6 && explained == 3)
        },
    )
    .await?;
    let list = tasks.list(&ListParams::default()).await?.items;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for t in bound(&list) {
        let st = t.status.as_ref().context("no status")?;
        assert_eq!(st.phase(), TaskPhase::Assigned);
        assert_eq!(
            st.task_events.last().map(|e| e.actor.as_str()),
            Some("scheduler")
        );
        *per_node
            .entry(t.spec.node_name.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert!(
        per_node.values().all(|n| *n <= 4),
        "over-committed: {per_node:?}"
    );
    assert_eq!(per_node.len(), 3, "spread over every node: {per_node:?}");
    let huge = tasks.get("huge").await?;
    let e = huge
        .status
        .and_then(|s| s.explanation)
        .context("no explanation")?;
    assert!(
        e.reasons
            .iter()
            .any(|r| r.kind == PendingReasonKind::InsufficientResources
                && r.resource.as_deref() == Some("cpus")),
        "{e:?}"
    );
    let quota_blocked = list.iter().filter(|t| {
        t.status
            .as_ref()
            .and_then(|s| s.explanation.as_ref())
            .is_some_and(|e| {
                e.reasons
                    .iter()
                    .any(|r| r.kind == PendingReasonKind::QuotaExceeded)
            })
    });
    assert_eq!(quota_blocked.count(), 2);

    // Freeing quota lets a waiting task in.
    let first = bound(&list)
        .first()
        .and_then(|t| t.metadata.name.clone())
        .context("none bound")?;
    tasks.delete(&first, &DeleteParams::default()).await?;
    eventually("a waiting task to take the freed quota", || async {
        let list = tasks.list(&ListParams::default()).await?.items;
        Ok(bound(&list).len() == 6 && list.len() == 8)
    })
    .await?;
    stop_tx.send(true)?;
    loop_task.await?;
    Ok(())
}

#[tokio::test]
async fn a_cordoned_node_takes_no_new_task_until_uncordoned() -> Result<()> {
    use corral_api::Node;
    use kube::api::{Patch, PatchParams};
    let h = start().await?;
    h.roles(&["web"]).await?;
    node(&h.client, "n1", 4).await?;
    let nodes: Api<Node> = Api::all(h.client.clone());
    let cordon = |on: bool| {
        let nodes = nodes.clone();
        async move {
            nodes
                .patch(
                    "n1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"unschedulable": on}})),
                )
                .await
        }
    };
    cordon(true).await?;
    task(&h.client, "t", "web", 1).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(corral_controllers::allocation::run(
        h.client.clone(),
        corral_core::sched::Policy::BinPack,
        stop_rx,
    ));
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    eventually("the task explained, not bound", || async {
        let t = tasks.get("t").await?;
        let unavailable = t
            .status
            .as_ref()
            .and_then(|s| s.explanation.as_ref())
            .is_some_and(|e| {
                e.reasons
                    .iter()
                    .any(|r| r.kind == PendingReasonKind::NodeUnavailable)
            });
        Ok(unavailable && t.spec.node_name.is_none())
    })
    .await?;
    cordon(false).await?;
    eventually("bound once uncordoned", || async {
        Ok(tasks.get("t").await?.spec.node_name.as_deref() == Some("n1"))
    })
    .await?;
    stop_tx.send(true)?;
    loop_task.await?;
    Ok(())
}

#[tokio::test]
async fn a_gang_binds_none_until_all_of_it_fits_then_all_at_once() -> Result<()> {
    use corral_api::Job;
    let h = start().await?;
    h.roles(&["spark"]).await?;
    node(&h.client, "n1", 1).await?;
    node(&h.client, "n2", 1).await?;
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let job = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "app"},
        "spec": {"role": "spark", "environment": "prod", "kind": "adhoc", "instances": 3,
                 "resources": {"cpus": 1, "memory": "256Mi"}, "container": {"image": "spark"},
                 "gang": {"minInstances": 3}}});
    jobs.create(&PostParams::default(), &serde_json::from_value(job)?)
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loops = [
        tokio::spawn(corral_controllers::allocation::run(
            h.client.clone(),
            corral_core::sched::Policy::BinPack,
            stop_rx.clone(),
        )),
        tokio::spawn(corral_controllers::jobs::run(h.client.clone(), stop_rx)),
    ];
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let bound = || async {
        let all = tasks.list(&Default::default()).await?.items;
        let explained = all.iter().all(|t| {
            t.status
                .as_ref()
                .and_then(|s| s.explanation.as_ref())
                .is_some_and(|e| {
                    e.reasons
                        .iter()
                        .any(|r| r.kind == PendingReasonKind::GangIncomplete)
                })
        });
        let bound = all.iter().filter(|t| t.spec.node_name.is_some()).count();
        anyhow::Ok((all.len(), bound, explained))
    };
    eventually(
        "three tasks, none bound, each saying its gang is incomplete",
        || async {
            let (n, b, explained) = bound().await?;
            anyhow::ensure!(b == 0, "{b} of the gang bound while it cannot fit whole");
            Ok(n == 3 && explained)
        },
    )
    .await?;
    node(&h.client, "n3", 1).await?;
    eventually("all three bound once a third node appears", || async {
        Ok(bound().await?.1 == 3)
    })
    .await?;
    stop_tx.send(true)?;
    for l in loops {
        l.await?;
    }
    Ok(())
}
