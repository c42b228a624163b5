//! The reservation status controller: whether each dynamic Reservation is
//! in force on its node, and how much of it its role's tasks use.
//!
//! Watches (through the shared [`crate::cache`]): Reservations, Nodes and
//! Tasks (by node). Every [`TICK`] it decides with `core::reservations` —
//! the same decision the allocation loop places by, so a reservation the
//! status calls not applied reserves nothing — and writes `Applied` (True,
//! `Reserved`; or False, `NodeNotFound` or `InsufficientResources` with the
//! resource short, what it asks and what is left) and `used` (the role's
//! tasks on the node, capped by the reservation). It writes only what
//! changed, each write conditional on the version read. Nothing is kept
//! but the watches' mirrors: a restarted controller writes the same.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corral_api::reservation::{ReservationConditionType, ReservationReason, ReservationStatus};
use corral_api::resources::MilliResources;
use corral_api::{Condition, ConditionStatus, Reservation};
use corral_core::reservations::{self, Verdict};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use crate::cache::{BY_NODE, Caches};
use corral_core::sched::objects::verdicts;

/// How often the statuses are recomputed.
pub const TICK: Duration = Duration::from_secs(2);

/// The status `r` should have under `verdict`, its role's tasks on the
/// node holding `held`, at `now`.
pub fn desired(
    r: &Reservation,
    verdict: &Verdict,
    held: &MilliResources,
    now: jiff::Timestamp,
) -> ReservationStatus {
    let (status, reason, message) = match verdict {
        Verdict::Applied => (
            ConditionStatus::True,
            ReservationReason::Reserved,
            format!("held on node {} for role {}", r.spec.node, r.spec.role),
        ),
        Verdict::NodeNotFound => (
            ConditionStatus::False,
            ReservationReason::NodeNotFound,
            format!("no node {} is registered", r.spec.node),
        ),
        Verdict::Insufficient {
            resource,
            needed,
            available,
        } => (
            ConditionStatus::False,
            ReservationReason::InsufficientResources,
            format!(
                "node {} has {} milli-{resource} left beside older reservations; this one asks {}: not applied, it reserves nothing",
                r.spec.node, available, needed
            ),
        ),
    };
    let current = r.status.clone().unwrap_or_default();
    let since = current
        .conditions
        .iter()
        .find(|c| c.type_ == ReservationConditionType::Applied && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
        ));
    let used = match verdict {
        Verdict::Applied => {
            let reserved = r.spec.resources.to_milli().unwrap_or_default();
            reservations::used(&reserved, held).to_resources()
        }
        _ => Default::default(),
    };
    ReservationStatus {
        conditions: vec![Condition {
            type_: ReservationConditionType::Applied,
            status,
            reason,
            message,
            last_transition_time: Some(since),
            observed_generation: r.metadata.generation,
        }],
        used,
    }
}

/// True when `a` and `b` say the same (quantities compared by value).
fn same(a: &ReservationStatus, b: &ReservationStatus) -> bool {
    a.conditions == b.conditions && a.used.to_milli().ok() == b.used.to_milli().ok()
}

async fn tick(client: &kube::Client, caches: &Caches) {
    let all = caches.reservations().store().state();
    let nodes = caches.nodes().store();
    let mut by_node: BTreeMap<&str, Vec<&Reservation>> = BTreeMap::new();
    for r in &all {
        by_node.entry(r.spec.node.as_str()).or_default().push(r);
    }
    let now = jiff::Timestamp::now();
    let api: Api<Reservation> = Api::all(client.clone());
    for (node_name, on) in by_node {
        let node = nodes.get(&ObjectRef::new(node_name));
        let tasks = caches.tasks().indexed(BY_NODE, node_name);
        for (r, verdict) in verdicts(node.as_deref(), &on) {
            let held = tasks
                .iter()
                .filter(|t| {
                    t.spec.role == r.spec.role
                        && t.status
                            .as_ref()
                            .is_some_and(|s| s.phase().holds_resources())
                })
                .filter_map(|t| t.spec.resources.to_milli().ok())
                .fold(MilliResources::default(), |a, m| a.plus(&m));
            let status = desired(r, &verdict, &held, now);
            if r.status.as_ref().is_some_and(|s| same(s, &status)) {
                continue;
            }
            let Some(name) = r.metadata.name.as_deref() else {
                continue;
            };
            // Conditional: a newer version is judged at the next tick.
            // `used` exactly: a resource no longer used is removed.
            let old = json!(r.status.as_ref().map(|s| &s.used));
            let used = crate::merge::to(&old, &json!(status.used));
            let used = if status.used.is_empty() {
                Value::Null
            } else {
                used
            };
            let patch = json!({"metadata": {"resourceVersion": r.metadata.resource_version},
                "status": {"conditions": status.conditions, "used": used}});
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::debug!(reservation = name, error = %e, "writing reservation status failed; next tick retries");
            }
        }
    }
}

/// Runs the controller until `stop` turns true, reading `caches`.
pub async fn run_cached(
    client: kube::Client,
    caches: Arc<Caches>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let filled = async {
        caches.reservations().listed().await;
        caches.nodes().listed().await;
        caches.tasks().listed().await;
        true
    };
    crate::cache::every(TICK, filled, stop, || tick(&client, &caches)).await;
}

/// Runs the controller until `stop` turns true, with caches of its own.
pub async fn run(client: kube::Client, stop: tokio::sync::watch::Receiver<bool>) {
    let caches = Caches::new(client.clone(), stop.clone());
    run_cached(client, caches, stop).await;
}
