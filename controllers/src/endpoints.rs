//! The discovery controller: every service job's instances as
//! `discovery.k8s.io/v1` EndpointSlices, so that Envoy, Prometheus'
//! Kubernetes discovery, client-go informers and `kubectl get
//! endpointslices` find Corral jobs as they find Kubernetes services.
//!
//! Watches (through the shared [`crate::cache`]): Jobs, Tasks and
//! EndpointSlices. A change to a job, one of its tasks or one of its slices
//! marks the job; marked jobs are reconciled after [`BATCH`], so a burst of
//! task changes costs one pass per job (Kubernetes' endpoint slice
//! controller batches the same way). Nothing is decided while a watch is
//! not synced: a slice is never dropped for a task not yet seen.
//!
//! Writes: for each service job, the slices `corral_core::endpoints`
//! decides, labelled `kubernetes.io/service-name: <job>` and
//! `endpointslice.kubernetes.io/managed-by: endpoints-controller.corral.dev`, owned by
//! the job (deleted with it); each created, replaced at the version read,
//! or deleted at the version read when it is no longer wanted. Slices that
//! another manager labelled are left alone. A restarted controller computes
//! the same slices from the same tasks and writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use corral_api::job::JobKind;
use corral_api::{Job, Task, TaskPhase};
use corral_core::endpoints::{self, Member, Slice};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tokio::time::Instant;

use crate::cache::{BY_JOB, BY_SERVICE, Caches, job_key, slice_service, task_job};
use crate::jobs::JOB_LABEL;

pub use corral_api::discovery::{
    ENDPOINTS_MANAGER as MANAGER, MANAGED_BY_LABEL, SERVICE_NAME_LABEL,
};
/// How long a marked job waits, gathering further changes, before its pass.
pub const BATCH: Duration = Duration::from_secs(1);
/// How long a job whose pass failed waits before the next.
const RETRY: Duration = Duration::from_secs(2);

/// True while the task is being killed.
fn terminating(phase: TaskPhase) -> bool {
    matches!(
        phase,
        TaskPhase::Killing | TaskPhase::Restarting | TaskPhase::Preempting | TaskPhase::Draining
    )
}

/// The task as discovery sees it, or None when it is no endpoint (not on a
/// node with a known address, or not holding one: pending, ended).
pub fn member(task: &Task) -> Option<Member> {
    let status = task.status.as_ref()?;
    let phase = status.phase();
    if !phase.holds_resources() {
        return None;
    }
    let ran = status
        .task_events
        .iter()
        .any(|e| e.status == TaskPhase::Running);
    // With a health check, only while it passes (the agent's `Healthy`).
    let healthy = task.spec.health_check.is_none() || status.is_healthy();
    let serving = healthy && (phase == TaskPhase::Running || (terminating(phase) && ran));
    Some(Member {
        task: task.metadata.name.clone()?,
        uid: task.metadata.uid.clone(),
        node: task.spec.node_name.clone()?,
        address: status.host_ip.clone()?,
        ports: status.ports.clone(),
        serving,
        terminating: terminating(phase),
    })
}

/// The EndpointSlice object for `slice` of `job`.
fn object(job: &Job, slice: &Slice) -> EndpointSlice {
    let name = job.metadata.name.clone().unwrap_or_default();
    let ns = job.metadata.namespace.clone();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice.name.clone()),
            namespace: ns.clone(),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.to_owned(), name.clone()),
                (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
                (JOB_LABEL.to_owned(), name.clone()),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "corral.dev/v1alpha1".into(),
                kind: "Job".into(),
                name,
                uid: job.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        address_type: slice.address_type.as_str().to_owned(),
        endpoints: slice
            .endpoints
            .iter()
            .map(|e| Endpoint {
                addresses: vec![e.member.address.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(e.ready),
                    serving: Some(e.member.serving),
                    terminating: Some(e.member.terminating),
                }),
                node_name: Some(e.member.node.clone()),
                target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some("corral.dev/v1alpha1".into()),
                    kind: Some("Task".into()),
                    name: Some(e.member.task.clone()),
                    namespace: ns.clone(),
                    uid: e.member.uid.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            slice
                .ports
                .iter()
                .map(|p| EndpointPort {
                    name: Some(p.name.clone()),
                    port: Some(i32::from(p.port)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

/// True when `actual` already says what `wanted` says.
fn same(actual: &EndpointSlice, wanted: &EndpointSlice) -> bool {
    let labels_kept = wanted
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| actual.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    labels_kept
        && actual.address_type == wanted.address_type
        && actual.endpoints == wanted.endpoints
        && actual.ports.as_deref().unwrap_or_default()
            == wanted.ports.as_deref().unwrap_or_default()
        && actual.metadata.owner_references == wanted.metadata.owner_references
}

fn managed(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|m| m == MANAGER)
}

/// One pass for job `key` (`namespace/name`): its slices made to match
/// its tasks. An error leaves the rest for the next pass.
async fn reconcile(client: &kube::Client, caches: &Caches, key: &str) -> Result<(), kube::Error> {
    let Some((ns, name)) = key.split_once('/') else {
        return Ok(());
    };
    let job = caches
        .jobs()
        .store()
        .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns));
    let wanted: Vec<EndpointSlice> = match &job {
        Some(job)
            if job.spec.kind == JobKind::Service && job.metadata.deletion_timestamp.is_none() =>
        {
            let members = caches
                .tasks()
                .indexed(BY_JOB, key)
                .iter()
                .filter_map(|t| member(t))
                .collect();
            endpoints::slices(name, members)
                .iter()
                .map(|s| object(job, s))
                .collect()
        }
        _ => Vec::new(),
    };
    let actual: BTreeMap<String, Arc<EndpointSlice>> = caches
        .endpoint_slices()
        .indexed(BY_SERVICE, key)
        .into_iter()
        .filter(|s| managed(s))
        .filter_map(|s| Some((s.metadata.name.clone()?, s)))
        .collect();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let mut kept = BTreeSet::new();
    for w in wanted {
        let slice_name = w.metadata.name.clone().unwrap_or_default();
        kept.insert(slice_name.clone());
        match actual.get(&slice_name) {
            None => match api.create(&PostParams::default(), &w).await {
                Ok(_) => {}
                // Made meanwhile (the cache is behind): the next pass compares.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            },
            Some(a) if same(a, &w) => {}
            Some(a) => {
                let mut next = w;
                next.metadata.resource_version = a.metadata.resource_version.clone();
                next.metadata.uid = a.metadata.uid.clone();
                match api
                    .replace(&slice_name, &PostParams::default(), &next)
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    for (slice_name, a) in &actual {
        if kept.contains(slice_name) {
            continue;
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: a.metadata.resource_version.clone(),
                uid: a.metadata.uid.clone(),
            }),
            ..Default::default()
        };
        match api.delete(slice_name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs the controller over `caches` until `stop` turns true.
pub async fn run_cached(
    client: kube::Client,
    caches: Arc<Caches>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let jobs = caches
        .jobs()
        .touched()
        .filter_map(|j| async move {
            Some(job_key(
                j.metadata.namespace.as_deref()?,
                j.metadata.name.as_deref()?,
            ))
        })
        .boxed();
    let tasks = caches
        .tasks()
        .touched()
        .filter_map(|t| async move { task_job(&t) })
        .boxed();
    let slices = caches
        .endpoint_slices()
        .touched()
        .filter_map(|s| async move { managed(&s).then(|| slice_service(&s)).flatten() })
        .boxed();
    let mut marks = futures::stream::select_all([jobs, tasks, slices]);
    // Marked jobs and when their pass is due.
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let next = due.values().min().copied();
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    return;
                }
            }
            mark = marks.next() => match mark {
                Some(key) => {
                    due.entry(key).or_insert_with(|| Instant::now() + BATCH);
                }
                None => return,
            },
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                let ready: Vec<String> = due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                let synced = caches.jobs().healthy()
                    && caches.tasks().healthy()
                    && caches.endpoint_slices().healthy();
                for key in ready {
                    if !synced {
                        due.insert(key, now + RETRY);
                        continue;
                    }
                    due.remove(&key);
                    if let Err(e) = reconcile(&client, &caches, &key).await {
                        tracing::warn!(job = %key, error = %e, "keeping a job's endpoint slices failed; retrying");
                        due.insert(key, Instant::now() + RETRY);
                    }
                }
            }
        }
    }
}

/// Runs the controller with caches of its own until `stop` turns true.
pub async fn run(client: kube::Client, stop: tokio::sync::watch::Receiver<bool>) {
    let caches = Caches::new(client.clone(), stop.clone());
    run_cached(client, caches, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(phase: &str, events: &[&str]) -> Task {
        let events: Vec<_> = events
            .iter()
            .map(|s| json!({"timestamp": "2026-01-01T00:00:00.000000Z", "status": s, "actor": "agent/n1"}))
            .collect();
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "web-0", "namespace": "default", "uid": "u1"},
            "spec": {"job": "web", "role": "web", "instanceId": 0, "resources": {"cpus": 1},
                     "container": {"image": "busybox"}, "nodeName": "n1"},
            "status": {"phase": phase, "hostIP": "10.0.0.7", "ports": [{"name": "http", "port": 31000}], "taskEvents": events}}))
        .expect("a task")
    }

    #[test]
    fn a_task_is_an_endpoint_while_it_holds_its_node_and_serves_only_once_running() {
        let cases = [
            ("PENDING", vec![], None),
            ("ASSIGNED", vec!["ASSIGNED"], Some((false, false))),
            ("STARTING", vec!["STARTING"], Some((false, false))),
            ("RUNNING", vec!["RUNNING"], Some((true, false))),
            ("KILLING", vec!["RUNNING", "KILLING"], Some((true, true))),
            ("KILLING", vec!["STARTING", "KILLING"], Some((false, true))),
            (
                "RESTARTING",
                vec!["RUNNING", "RESTARTING"],
                Some((true, true)),
            ),
            (
                "PARTITIONED",
                vec!["RUNNING", "PARTITIONED"],
                Some((false, false)),
            ),
            ("FINISHED", vec!["RUNNING", "FINISHED"], None),
            ("KILLED", vec!["RUNNING", "KILLED"], None),
        ];
        for (phase, events, want) in cases {
            let got = member(&task(phase, &events)).map(|m| (m.serving, m.terminating));
            assert_eq!(got, want, "{phase} after {events:?}");
        }
        // With a health check: serving only once the agent found it healthy.
        let mut checked = task("RUNNING", &["RUNNING"]);
        checked.spec.health_check = serde_json::from_value(json!({"tcp": {"port": "http"}})).ok();
        assert_eq!(member(&checked).map(|m| m.serving), Some(false));
        if let Some(s) = checked.status.as_mut() {
            s.set_healthy(true, "connected".into(), jiff::Timestamp::UNIX_EPOCH);
        }
        assert_eq!(member(&checked).map(|m| m.serving), Some(true));
        let mut no_address = task("RUNNING", &["RUNNING"]);
        if let Some(s) = no_address.status.as_mut() {
            s.host_ip = None;
        }
        assert_eq!(member(&no_address), None);
    }

    #[test]
    fn a_slice_is_rewritten_only_when_what_it_says_changed() {
        let job: Job = serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
            "metadata": {"name": "web", "namespace": "default", "uid": "j1"},
            "spec": {"role": "web", "environment": "prod", "kind": "service", "resources": {"cpus": 1},
                     "container": {"image": "busybox"}}}))
        .expect("a job");
        let members = vec![member(&task("RUNNING", &["RUNNING"])).expect("a member")];
        let slice = &endpoints::slices("web", members)[0];
        let wanted = object(&job, slice);
        assert_eq!(wanted.address_type, "IPv4");
        assert_eq!(
            wanted
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str),
            Some("web")
        );
        let mut stored = wanted.clone();
        stored.metadata.resource_version = Some("7".into());
        stored
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "web".into());
        assert!(
            same(&stored, &wanted),
            "extra labels and versions change nothing"
        );
        let mut stale = stored.clone();
        stale.endpoints[0].conditions = Some(EndpointConditions {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(true),
        });
        assert!(!same(&stale, &wanted));
    }
}
