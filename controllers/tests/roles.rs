//! Role status: the role status controller with the allocation loop, over
//! the in-process API server and simulated nodes (Node objects only).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{eventually, node, start};
use corral_api::{Quota, Role, Task};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

async fn role(client: &kube::Client, name: &str, weight: u32, parent: Option<&str>) -> Result<()> {
    let r: Role =
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role",
        "metadata": {"name": name}, "spec": {"weight": weight, "parent": parent}}))?;
    Api::<Role>::all(client.clone())
        .create(&PostParams::default(), &r)
        .await?;
    Ok(())
}

async fn task(client: &kube::Client, name: &str, role: &str, cpus: i64) -> Result<()> {
    let t: Task = serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
        "spec": {"job": "j", "role": role, "instanceId": 0, "resources": {"cpus": cpus, "memory": "1Gi"}, "container": {"image": "busybox"}}}),
    )?;
    Api::<Task>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &t)
        .await?;
    Ok(())
}

fn milli(r: &corral_api::Resources, name: &str) -> i64 {
    r.get(name).and_then(|q| q.milli().ok()).unwrap_or(0)
}

#[tokio::test]
async fn roles_show_what_they_hold_wait_for_their_share_and_latency() -> Result<()> {
    let h = start().await?;
    node(&h.client, "n1", 4).await?;
    node(&h.client, "n2", 4).await?;
    role(&h.client, "eng", 2, None).await?;
    role(&h.client, "analytics", 1, Some("eng")).await?;
    role(&h.client, "idle", 1, None).await?;
    let quota: Quota = serde_json::from_value(json!({"metadata": {"name": "analytics"},
        "spec": {"role": "analytics", "guarantee": {"cpus": 2}}}))?;
    let quotas: Api<Quota> = Api::all(h.client.clone());
    quotas.create(&PostParams::default(), &quota).await?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let alloc = tokio::spawn(corral_controllers::allocation::run(
        h.client.clone(),
        corral_core::sched::Policy::BinPack,
        rx.clone(),
    ));
    let status = tokio::spawn(corral_controllers::roles::run(h.client.clone(), rx));
    // analytics: 3 + 2 CPUs placed; 6 more cannot fit anywhere (pending).
    task(&h.client, "a1", "analytics", 3).await?;
    task(&h.client, "a2", "analytics", 2).await?;
    task(&h.client, "big", "analytics", 6).await?;
    task(&h.client, "e1", "eng", 1).await?;

    let roles: Api<Role> = Api::all(h.client.clone());
    // Each role's status is its own write: wait for both.
    eventually("role figures to appear", || async {
        let eng = roles.get("eng").await?.status.unwrap_or_default();
        let analytics = roles.get("analytics").await?.status.unwrap_or_default();
        Ok(milli(&eng.allocated, "cpus") == 6_000
            && milli(&analytics.allocated, "cpus") == 5_000
            && milli(&analytics.pending, "cpus") == 6_000)
    })
    .await?;
    let analytics = roles.get("analytics").await?.status.unwrap_or_default();
    assert_eq!(milli(&analytics.allocated, "cpus"), 5_000);
    assert_eq!(milli(&analytics.pending, "cpus"), 6_000);
    assert_eq!(
        analytics.dominant_share,
        Some(0.625),
        "5 of 8 CPUs, weight 1"
    );
    let eng = roles.get("eng").await?.status.unwrap_or_default();
    assert_eq!(
        milli(&eng.allocated, "memory"),
        3 * 1024 * 1024 * 1024 * 1000
    );
    assert_eq!(eng.dominant_share, Some(0.375), "6 of 8 CPUs, weight 2");
    let mtta = eng
        .latency
        .and_then(|l| l.time_to_assigned)
        .expect("MTTA over the placed tasks");
    assert_eq!(mtta.samples, 3);
    eventually(
        "the quota to show what analytics uses and borrows",
        || async {
            let q = quotas.get("analytics").await?.status.unwrap_or_default();
            Ok(milli(&q.used, "cpus") == 5_000
                && milli(&q.borrowed, "cpus") == 3_000
                && q.borrowed.get("memory").is_none())
        },
    )
    .await?;
    let idle = roles.get("idle").await?.status.unwrap_or_default();
    assert_eq!(idle.dominant_share, Some(0.0));
    assert!(idle.allocated.is_empty());

    // What ends stops counting; what was allocated is cleared.
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    for t in ["a1", "a2", "big"] {
        tasks.delete(t, &DeleteParams::default()).await?;
    }
    eventually("analytics to hold and wait for nothing", || async {
        let a = roles.get("analytics").await?.status.unwrap_or_default();
        let q = quotas.get("analytics").await?.status.unwrap_or_default();
        Ok(a.allocated.is_empty()
            && a.pending.is_empty()
            && a.dominant_share == Some(0.0)
            && q.used.is_empty()
            && q.borrowed.is_empty())
    })
    .await?;

    stop.send(true)?;
    alloc.await?;
    tokio::time::timeout(Duration::from_secs(10), status).await??;
    Ok(())
}
