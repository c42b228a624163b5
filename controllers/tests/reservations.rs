//! Reservations through the controllers, against the in-process API
//! server: each one's status says whether it is in force (or why not) and
//! what of it is used, and the allocation loop reserves exactly what the
//! status says — an over-committing reservation reserves nothing.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::{eventually, node, start};
use corral_api::reservation::ReservationReason;
use corral_api::{ConditionStatus, Reservation, Task};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

async fn reserve(
    api: &Api<Reservation>,
    name: &str,
    node: &str,
    role: &str,
    cpus: i64,
) -> Result<()> {
    let r = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Reservation", "metadata": {"name": name},
        "spec": {"node": node, "role": role, "resources": {"cpus": cpus}}});
    api.create(&PostParams::default(), &serde_json::from_value(r)?)
        .await?;
    Ok(())
}

async fn task(api: &Api<Task>, name: &str, role: &str) -> Result<()> {
    let t = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
        "spec": {"job": "j", "role": role, "instanceId": 0, "resources": {"cpus": 1, "memory": "64Mi"}, "container": {"image": "busybox"}}});
    api.create(&PostParams::default(), &serde_json::from_value(t)?)
        .await?;
    Ok(())
}

/// The Applied condition of `name`: (status, reason, message), and `used` cpus.
async fn applied(
    api: &Api<Reservation>,
    name: &str,
) -> Result<Option<(ConditionStatus, ReservationReason, String, String)>> {
    let r = api.get(name).await?;
    Ok(r.status.and_then(|s| {
        let used = s
            .used
            .get("cpus")
            .map(|q| q.to_string())
            .unwrap_or_default();
        s.conditions
            .first()
            .map(|c| (c.status, c.reason, c.message.clone(), used))
    }))
}

#[tokio::test]
async fn a_reservation_is_in_force_only_where_its_node_holds_it_and_says_so() -> Result<()> {
    let h = start().await?;
    h.roles(&["analytics", "web", "batch"]).await?;
    node(&h.client, "n1", 4).await?;
    let rsv: Api<Reservation> = Api::all(h.client.clone());
    reserve(&rsv, "analytics-on-n1", "n1", "analytics", 3).await?;
    // One second later: older first decides who gets the node.
    let first = rsv.get("analytics-on-n1").await?;
    eventually("a second passed", || async {
        Ok(jiff::Timestamp::now().as_second()
            > first
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()))
    })
    .await?;
    reserve(&rsv, "web-on-n1", "n1", "web", 2).await?;
    reserve(&rsv, "web-on-ghost", "ghost", "web", 1).await?;

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let loops = [
        tokio::spawn(corral_controllers::allocation::run(
            h.client.clone(),
            corral_core::sched::Policy::BinPack,
            stop_rx.clone(),
        )),
        tokio::spawn(corral_controllers::reservations::run(
            h.client.clone(),
            stop_rx,
        )),
    ];
    eventually("each reservation's status", || async {
        Ok(applied(&rsv, "analytics-on-n1").await?.is_some()
            && applied(&rsv, "web-on-n1").await?.is_some()
            && applied(&rsv, "web-on-ghost").await?.is_some())
    })
    .await?;
    let (s, reason, _, _) = applied(&rsv, "analytics-on-n1").await?.context("a")?;
    assert_eq!(
        (s, reason),
        (ConditionStatus::True, ReservationReason::Reserved)
    );
    let (s, reason, message, _) = applied(&rsv, "web-on-n1").await?.context("b")?;
    assert_eq!(
        (s, reason),
        (
            ConditionStatus::False,
            ReservationReason::InsufficientResources
        )
    );
    assert!(
        message.contains("cpus") && message.contains("reserves nothing"),
        "{message}"
    );
    let (s, reason, _, _) = applied(&rsv, "web-on-ghost").await?.context("c")?;
    assert_eq!(
        (s, reason),
        (ConditionStatus::False, ReservationReason::NodeNotFound)
    );

    // The over-committing reservation reserves nothing: one CPU stays free
    // for anyone (had it been applied, nothing would be).
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    task(&tasks, "batch-0", "batch").await?;
    task(&tasks, "analytics-0", "analytics").await?;
    eventually(
        "both bound, the analytics one using its reservation",
        || async {
            let bound = |t: Task| t.spec.node_name.is_some();
            let both = bound(tasks.get("batch-0").await?) && bound(tasks.get("analytics-0").await?);
            let used = applied(&rsv, "analytics-on-n1").await?.map(|a| a.3);
            Ok(both && used.as_deref() == Some("1"))
        },
    )
    .await?;

    // Its task gone, nothing of it is used any more.
    tasks
        .delete("analytics-0", &DeleteParams::default())
        .await?;
    eventually("analytics-on-n1 unused", || async {
        Ok(applied(&rsv, "analytics-on-n1")
            .await?
            .is_some_and(|a| a.3.is_empty()))
    })
    .await?;

    // The older reservation goes: the other now fits, and is in force.
    rsv.delete("analytics-on-n1", &DeleteParams::default())
        .await?;
    eventually("web-on-n1 in force", || async {
        Ok(applied(&rsv, "web-on-n1")
            .await?
            .is_some_and(|a| a.0 == ConditionStatus::True && a.1 == ReservationReason::Reserved))
    })
    .await?;

    stop.send(true)?;
    for l in loops {
        tokio::time::timeout(Duration::from_secs(10), l).await??;
    }
    Ok(())
}
