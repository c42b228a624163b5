//! The allocation loop's writes, each conditional on the resourceVersion it
//! read: bindings (node name and the ASSIGNED status in one write each, many
//! in one request), an eviction
//! (PREEMPTING with who and why), a pending task's explanation.

use corral_api::task::{TaskConditionType, TaskReason};
use corral_api::{Condition, ConditionStatus, Task};
use corral_core::lifecycle;
use corral_core::sched::{Eviction, Unplaced};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{ACTOR, key_of};

/// A task's namespace and name.
fn ns_name(task: &Task) -> (String, String) {
    (
        task.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        task.metadata.name.clone().unwrap_or_default(),
    )
}

/// What became of an eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Evicted {
    /// The victim is PREEMPTING.
    Yes,
    /// The victim had already ended: its room is free anyway.
    AlreadyEnded,
    /// The victim could not be evicted (the state machine refused, or the
    /// API server did): it keeps running.
    Refused,
}

/// Drives a victim to PREEMPTING, recording who preempted it and why; on a
/// conflict (an agent report or a kill landed first) re-reads and tries
/// again from what it finds.
pub(super) async fn evict(
    client: kube::Client,
    mut task: Task,
    eviction: Eviction,
    now: jiff::Timestamp,
) -> (String, Evicted) {
    let key = key_of(&task);
    let (ns, name) = ns_name(&task);
    let api: Api<Task> = Api::namespaced(client, &ns);
    let v = &eviction.victim;
    let (role, tier, priority) = &eviction.by;
    let why = format!(
        "preempted by {} ({:?}: {role} tier {tier:?} priority {priority} over {:?} priority {})",
        eviction.preemptor, v.rule, v.tier, v.priority
    );
    for _ in 0..5 {
        let mut status = task.status.clone().unwrap_or_default();
        let by = eviction.preemptor.clone();
        if let Err(e) =
            lifecycle::apply(&mut status, &lifecycle::Event::Preempted { by }, now, ACTOR)
        {
            if status.phase().is_terminal() {
                return (key, Evicted::AlreadyEnded);
            }
            tracing::warn!(task = %key, error = %e, "preempting a task the state machine does not allow");
            return (key, Evicted::Refused);
        }
        if let Some(last) = status.task_events.last_mut() {
            last.message = why.clone();
        }
        status.message = Some(why.clone());
        status
            .conditions
            .retain(|c| c.type_ != TaskConditionType::Preempted);
        status.conditions.push(Condition {
            type_: TaskConditionType::Preempted,
            status: ConditionStatus::True,
            reason: TaskReason::PreemptedByHigherPriority,
            message: why.clone(),
            last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
            )),
            observed_generation: None,
        });
        // The precondition keeps a concurrent kill or agent report from being overwritten.
        let patch = json!({"metadata": {"resourceVersion": task.metadata.resource_version}, "status": status});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return (key, Evicted::Yes),
            Err(kube::Error::Api(e)) if e.code == 409 => match api.get_opt(&name).await {
                Ok(Some(t)) => task = t,
                Ok(None) => return (key, Evicted::AlreadyEnded),
                Err(e) => {
                    tracing::warn!(task = %key, error = %e, "re-reading a victim failed");
                    return (key, Evicted::Refused);
                }
            },
            Err(kube::Error::Api(e)) if e.code == 404 => return (key, Evicted::AlreadyEnded),
            Err(e) => {
                tracing::warn!(task = %key, error = %e, "writing PREEMPTING failed");
                return (key, Evicted::Refused);
            }
        }
    }
    (key, Evicted::Refused)
}

/// Writes bindings of tasks in namespace `ns` in one bulk request: for
/// each, the node, ASSIGNED and its task event in one write, conditional on
/// the version the decision saw. Returns each task's key and whether it is
/// now bound (a request that failed whole binds none of them).
pub(super) async fn bind(
    client: kube::Client,
    ns: String,
    bindings: Vec<(String, crate::bulk::Binding)>,
) -> Vec<(String, bool)> {
    let items: Vec<crate::bulk::Binding> = bindings.iter().map(|(_, b)| b.clone()).collect();
    match crate::bulk::bind_tasks(&client, &ns, &items).await {
        Ok(results) => bindings
            .into_iter()
            .zip(results)
            .map(|((key, _), r)| {
                if let Err(e) = &r {
                    tracing::debug!(task = %key, error = %e.message, "binding lost a race; will retry");
                }
                (key, r.is_ok())
            })
            .collect(),
        Err(e) => {
            tracing::warn!(namespace = %ns, tasks = bindings.len(), error = %e, "binding failed; will retry");
            bindings.into_iter().map(|(key, _)| (key, false)).collect()
        }
    }
}

pub(super) async fn write_explanation(
    client: kube::Client,
    task: std::sync::Arc<Task>,
    e: corral_api::task::PendingExplanation,
    why: Unplaced,
) {
    let (ns, name) = ns_name(&task);
    let api: Api<Task> = Api::namespaced(client, &ns);
    let mut status = task.status.clone().unwrap_or_default();
    let reason = match why {
        Unplaced::Quota { .. }
        | Unplaced::Borrowing { .. }
        | Unplaced::Guarantee { .. }
        | Unplaced::NoNode(_)
        | Unplaced::Gang { .. } => TaskReason::Unschedulable,
        Unplaced::Preempting { .. } => TaskReason::PreemptionNominated,
    };
    status.set_scheduled(
        ConditionStatus::False,
        reason,
        e.summary.clone(),
        e.evaluated_at
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    );
    status.explanation = Some(e);
    if status.phase.is_none() {
        status.phase = Some(corral_api::TaskPhase::Pending);
    }
    // Conditional: a task killed or bound meanwhile keeps its phase; the next cycle re-evaluates.
    let patch =
        json!({"metadata": {"resourceVersion": task.metadata.resource_version}, "status": status});
    if let Err(err) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::debug!(task = %name, error = %err, "writing an explanation failed");
    }
}
