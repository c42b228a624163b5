//! The role status controller: what each role holds, waits for, its share
//! and its tasks' scheduling latency, in `Role.status`.
//!
//! Watches (through the shared [`crate::cache`], no polling of the API):
//! Roles, Quotas, Nodes and Tasks in all namespaces. Every [`TICK`] it decides with `corral_core::roles`:
//! `allocated` (tasks holding resources), `pending` (PENDING tasks), the
//! weighted `dominantShare` of the capacity of Ready, schedulable nodes,
//! and `latency` (MTTA / MTTS / MTTR median and p99) — each including the
//! role's descendants. For every Quota it writes `used` (what its role
//! holds) and `borrowed` (the part of `used` beyond the guarantee, in the
//! resources the guarantee names). It writes a status only when a figure
//! changed, so an idle cluster causes no writes. Nothing is kept but the
//! watches' mirrors: a restarted controller recomputes the same figures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corral_api::common::LatencyFigures;
use corral_api::node::NodeConditionType;
use corral_api::quota::QuotaStatus;
use corral_api::resources::MilliResources;
use corral_api::role::RoleStatus;
use corral_api::{ConditionStatus, Node, Quota, Role, Task};
use corral_core::latency::TaskHistory;
use corral_core::roles::{self, RoleInput, RoleTask};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};

use crate::cache::Caches;

/// How often the figures are recomputed.
pub const TICK: Duration = Duration::from_secs(2);

/// Rounded so that float noise does not cause writes.
fn round(share: f64) -> f64 {
    (share * 10_000.0).round() / 10_000.0
}

fn usable(node: &Node) -> bool {
    !node.spec.closed(jiff::Timestamp::now().as_second())
        && node.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == NodeConditionType::Ready && c.status == ConditionStatus::True)
        })
}

fn capacity(nodes: &[std::sync::Arc<Node>]) -> MilliResources {
    nodes
        .iter()
        .filter(|n| usable(n))
        .filter_map(|n| {
            let s = n.status.as_ref()?;
            let r = if s.allocatable.is_empty() {
                &s.total
            } else {
                &s.allocatable
            };
            r.to_milli().ok()
        })
        .fold(MilliResources::default(), |a, r| a.plus(&r))
}

/// The status to write, or None when the role shows it already.
fn desired(role: &Role, f: &roles::RoleFigures) -> Option<RoleStatus> {
    let latency = (f.latency != LatencyFigures::default()).then(|| f.latency.clone());
    let status = RoleStatus {
        allocated: f.allocated.to_resources(),
        pending: f.pending.to_resources(),
        dominant_share: Some(round(f.dominant_share)),
        latency,
        observed_generation: role.metadata.generation,
    };
    let current = role.status.clone().unwrap_or_default();
    let same = |a: &corral_api::Resources, b: &corral_api::Resources| {
        a.to_milli().ok() == b.to_milli().ok()
    };
    let unchanged = same(&current.allocated, &status.allocated)
        && same(&current.pending, &status.pending)
        && current.dominant_share == status.dominant_share
        && current.latency == status.latency
        && current.observed_generation == status.observed_generation;
    (!unchanged).then_some(status)
}

/// A merge patch that also clears what became empty.
fn patch_of(status: &RoleStatus) -> Value {
    json!({"status": {
        "allocated": or_null(json!(status.allocated)),
        "pending": or_null(json!(status.pending)),
        "dominantShare": status.dominant_share,
        "latency": status.latency.as_ref().map_or(Value::Null, |l| json!(l)),
        "observedGeneration": status.observed_generation,
    }})
}

/// The Quota status for a role holding `used`, or None when it shows it already.
fn quota_status(quota: &Quota, used: &MilliResources) -> Option<QuotaStatus> {
    let guarantee = quota.spec.guarantee.to_milli().unwrap_or_default();
    let borrowed = MilliResources(
        guarantee
            .0
            .iter()
            .filter_map(|(name, g)| {
                let over = used.get(name) - g;
                (over > 0).then(|| (name.clone(), over))
            })
            .collect(),
    );
    let status = QuotaStatus {
        used: used.to_resources(),
        borrowed: borrowed.to_resources(),
        observed_generation: quota.metadata.generation,
    };
    let current = quota.status.clone().unwrap_or_default();
    let unchanged = current.used.to_milli().ok() == status.used.to_milli().ok()
        && current.borrowed.to_milli().ok() == status.borrowed.to_milli().ok()
        && current.observed_generation == status.observed_generation;
    (!unchanged).then_some(status)
}

fn or_null(v: Value) -> Value {
    match &v {
        Value::Object(m) if m.is_empty() => Value::Null,
        _ => v,
    }
}

async fn tick(
    client: &kube::Client,
    roles: &Store<Role>,
    quotas: &Store<Quota>,
    nodes: &Store<Node>,
    tasks: &Store<Task>,
) {
    let role_objs = roles.state();
    let quota_objs = quotas.state();
    let mut inputs: BTreeMap<String, RoleInput> = role_objs
        .iter()
        .filter_map(|r| {
            Some((
                r.metadata.name.clone()?,
                RoleInput {
                    weight: r.spec.weight,
                    parent: r.spec.parent.clone(),
                },
            ))
        })
        .collect();
    // A role with a Quota but no Role object still has figures.
    for q in &quota_objs {
        inputs.entry(q.spec.role.clone()).or_insert(RoleInput {
            weight: 1.0,
            parent: None,
        });
    }
    let task_objs = tasks.state();
    let views: Vec<RoleTask<'_>> = task_objs
        .iter()
        .filter_map(|t| {
            Some(RoleTask {
                role: t.spec.role.as_str(),
                phase: t
                    .status
                    .as_ref()
                    .map(|s| s.phase())
                    .unwrap_or(corral_api::TaskPhase::Pending),
                resources: t.spec.resources.to_milli().ok()?,
                history: TaskHistory::of(t)?,
            })
        })
        .collect();
    let figures = roles::figures(&inputs, &views, &capacity(&nodes.state()));
    let api: Api<Role> = Api::all(client.clone());
    for role in &role_objs {
        let Some(name) = role.metadata.name.as_deref() else {
            continue;
        };
        let Some(status) = figures.get(name).and_then(|f| desired(role, f)) else {
            continue;
        };
        if let Err(e) = api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(patch_of(&status)),
            )
            .await
        {
            tracing::debug!(role = name, error = %e, "writing role status failed; next tick retries");
        }
    }
    let quota_api: Api<Quota> = Api::all(client.clone());
    for quota in &quota_objs {
        let (Some(name), Some(f)) = (
            quota.metadata.name.as_deref(),
            figures.get(&quota.spec.role),
        ) else {
            continue;
        };
        let Some(status) = quota_status(quota, &f.allocated) else {
            continue;
        };
        let patch = json!({"status": {
            "used": or_null(json!(status.used)),
            "borrowed": or_null(json!(status.borrowed)),
            "observedGeneration": status.observed_generation,
        }});
        if let Err(e) = quota_api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::debug!(quota = name, error = %e, "writing quota status failed; next tick retries");
        }
    }
}

/// Runs the controller until `stop` turns true, with caches of its own.
pub async fn run(client: kube::Client, stop: tokio::sync::watch::Receiver<bool>) {
    let caches = Caches::new(client.clone(), stop.clone());
    run_cached(client, caches, stop).await;
}

/// Runs the controller until `stop` turns true, reading `caches`.
pub async fn run_cached(
    client: kube::Client,
    caches: Arc<Caches>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let roles = caches.roles().store();
    let quotas = caches.quotas().store();
    let nodes = caches.nodes().store();
    let tasks = caches.tasks().store();
    let filled = async {
        caches.roles().listed().await;
        caches.quotas().listed().await;
        caches.nodes().listed().await;
        caches.tasks().listed().await;
        true
    };
    crate::cache::every(TICK, filled, stop, || {
        tick(&client, &roles, &quotas, &nodes, &tasks)
    })
    .await;
}
