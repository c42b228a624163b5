//! The pod controller: each core/v1 Pod runs as one Corral Task, named as
//! the Pod and owned by it (`corral_api::pods` maps one onto the other), so
//! that Kubernetes-native batch tools — Spark's Kubernetes backend,
//! Airflow's KubernetesPodOperator — run on Corral's scheduler, quotas and
//! preemption unmodified.
//!
//! Watches (through the shared [`crate::cache`]): Pods and Tasks. A change
//! to a Pod, or to a task a Pod owns, marks the Pod; marked Pods are
//! reconciled after [`BATCH`] (changes meanwhile merged). Nothing is
//! decided while a watch is not synced.
//!
//! Decides with `corral_core::pods::decide` and writes: the task (created
//! from the Pod); the Pod's `spec.nodeName` once bound; the Pod's status
//! mirrored from the task (replaced at the version read); a Warning Event
//! `FailedScheduling` with Corral's explanation each time it changes; a
//! kill of the task when the Pod is deleted, and the release of the Pod's
//! finalizer once the task has ended (the task then goes with the Pod, by
//! owner reference); the deletion of a Pod whose task the infrastructure
//! took (preempted, drained, lost with its node). A restarted controller
//! decides the same from the same objects and writes nothing new.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corral_api::Task;
use corral_api::pods::TASK_FINALIZER;
use corral_core::lifecycle;
use corral_core::pods::{CONTAINER_NAME_ANNOTATION, PodAction};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tokio::time::Instant;

use crate::cache::Caches;

/// How long a marked Pod waits, gathering further changes, before its pass.
pub const BATCH: Duration = Duration::from_millis(50);
/// How long a Pod whose pass failed waits before the next.
const RETRY: Duration = Duration::from_secs(1);
/// Who moves a deleted Pod's task to KILLING, in its events.
pub const ACTOR: &str = "pod-controller";
/// The component named on the Events it records.
const COMPONENT: &str = "corral-pod-controller";

fn key_of(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The Pod that owns `task`, as `namespace/name`, if a Pod does.
fn owning_pod(task: &Task) -> Option<String> {
    let owner = task
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Pod" && o.api_version == "v1")?;
    Some(key_of(task.metadata.namespace.as_deref()?, &owner.name))
}

/// Brings Pod `key` and its task in line (see the module doc).
async fn reconcile(client: &kube::Client, caches: &Caches, key: &str) -> Result<(), kube::Error> {
    let Some((ns, name)) = key.split_once('/') else {
        return Ok(());
    };
    let Some(pod) = caches.pods().store().get(&ObjectRef::new(name).within(ns)) else {
        return Ok(());
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let task = caches.tasks().store().get(&ObjectRef::new(name).within(ns));
    // A task of the same name that another Pod owned (one deleted before
    // this one was made) is not this Pod's: it goes with its own Pod.
    let task = match task {
        Some(t) if is_owned_by(&t, &uid) => Some(t),
        Some(_) => {
            tracing::debug!(pod = %key, "a task of this name belongs to an earlier pod; waiting for it to go");
            return Ok(());
        }
        None => None,
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let tasks: Api<Task> = Api::namespaced(client.clone(), ns);
    let now = jiff::Timestamp::now();
    // The Pod's version, as each write of this pass leaves it.
    let mut rv = pod.metadata.resource_version.clone();
    for action in corral_core::pods::decide(&pod, task.as_deref(), now) {
        match action {
            PodAction::CreateTask => {
                let Ok(mut t) = corral_api::pods::task_for(&pod, None) else {
                    // Admission checked it; a Pod that no longer maps (its
                    // role label removed) waits for a change.
                    tracing::warn!(pod = %key, "a pod no longer maps onto a task");
                    continue;
                };
                let container = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                t.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(CONTAINER_NAME_ANNOTATION.to_owned(), container);
                match tasks.create(&PostParams::default(), &t).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            PodAction::SetNode(node) => {
                let patch =
                    json!({"metadata": {"resourceVersion": rv}, "spec": {"nodeName": node}});
                pods.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
                // The status is written on the next pass, at the new version.
                return Ok(());
            }
            PodAction::WriteStatus(status) => {
                let mut next = (*pod).clone();
                next.status = Some(*status);
                next.metadata.managed_fields = None;
                next.metadata.resource_version = rv.clone();
                let written = pods
                    .replace_status(name, &PostParams::default(), &next)
                    .await?;
                rv = written.metadata.resource_version;
            }
            PodAction::ExplainPending(message) => {
                record(client, &pod, "FailedScheduling", message).await;
            }
            PodAction::KillTask => {
                let Some(t) = &task else { continue };
                let mut st = t.status.clone().unwrap_or_default();
                if lifecycle::apply(&mut st, &lifecycle::Event::KillRequested, now, ACTOR).is_ok() {
                    let patch = json!({"metadata": {"resourceVersion": t.metadata.resource_version}, "status": st});
                    tasks
                        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await?;
                }
            }
            PodAction::DeletePod => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match pods.delete(name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(e),
                }
                // The deleted Pod's next pass releases it once its task ends.
                return Ok(());
            }
            PodAction::Release => {
                let kept: Vec<String> = pod
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .filter(|f| *f != TASK_FINALIZER)
                    .cloned()
                    .collect();
                let patch = json!({"metadata": {"resourceVersion": rv, "finalizers": kept}});
                match pods
                    .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

fn is_owned_by(task: &Task, uid: &str) -> bool {
    task.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Pod" && o.uid == uid)
}

/// Records a Warning Event about `pod` (best effort: an Event lost is not
/// worth a retry of the pass).
async fn record(client: &kube::Client, pod: &Pod, reason: &str, message: String) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let event = CoreEvent {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(COMPONENT.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..CoreEvent::default()
    };
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(pod = %name, reason, error = %e, "recording an event about a pod failed");
    }
}

/// Runs the controller over `caches` until `stop` turns true.
pub async fn run_cached(
    client: kube::Client,
    caches: Arc<Caches>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let pods = caches
        .pods()
        .touched()
        .filter_map(|p| async move {
            Some(key_of(
                p.metadata.namespace.as_deref()?,
                p.metadata.name.as_deref()?,
            ))
        })
        .boxed();
    let tasks = caches
        .tasks()
        .touched()
        .filter_map(|t| async move { owning_pod(&t) })
        .boxed();
    let mut marks = futures::stream::select_all([pods, tasks]);
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
                let synced = caches.pods().healthy() && caches.tasks().healthy();
                for key in ready {
                    if !synced {
                        due.insert(key, now + RETRY);
                        continue;
                    }
                    due.remove(&key);
                    match reconcile(&client, &caches, &key).await {
                        Ok(()) => {}
                        // Another write came first: the watch brings it, and
                        // with it the next pass.
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            due.insert(key, Instant::now() + BATCH);
                        }
                        Err(e) => {
                            tracing::warn!(pod = %key, error = %e, "running a pod as a task failed; retrying");
                            due.insert(key, Instant::now() + RETRY);
                        }
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
