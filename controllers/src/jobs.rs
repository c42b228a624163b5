//! The job controller: keeps each Job's tasks as `corral_core::jobs` decides.
//!
//! Watches (through the shared [`crate::cache`]): Jobs, and the Tasks they
//! own (a task change updates its job's [`views`] and requeues the job; a
//! reconcile reads those views instead of listing or walking the tasks, and
//! the cache's store only for the few tasks it writes).
//! Decides: [`corral_core::jobs::reconcile`] over the job's task views
//! (found by the `corral.dev/job` label).
//! Writes: new tasks, created by deterministic name in instance order (an existing one is
//! fine: the write is idempotent), owned by the job, with the job's
//! annotations and labels, and a held-back one with the time its hold ends
//! (the server gives each its PENDING or THROTTLED status in the create:
//! one write per task); THROTTLED tasks released when their hold is over; kills (through the lifecycle state machine) of
//! instances beyond the count and of killed jobs; restarts requested by
//! `corral job restart`; deletions of a service instance's ended tasks
//! beyond the history kept (their failures still counted); the job's
//! status (tasks per phase, failures,
//! phase, observedGeneration, and MTTA/MTTS/MTTR from the tasks' events).
//! Cron jobs' runs belong to the cron controller.

use std::sync::Arc;
use std::time::Duration;

use corral_api::job::{JobConditionType, JobReason};
use corral_api::update::{TaskTemplate, UpdateState, UpdateStatus};
use corral_api::{Condition, ConditionStatus, Job, Task, TaskPhase};
use corral_core::jobs::{self, task_name};
use corral_core::lifecycle;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector;

use crate::cache::{self, Caches};
use crate::metrics::{Metrics, ReconcileResult};
use serde_json::{Map, Value, json};
use views::Views;

mod views;

pub use corral_api::job::{INSTANCE_LABEL, JOB_KIND_LABEL, JOB_LABEL};
type JobCondition = Condition<JobConditionType, JobReason>;

/// The actor name written in task events.
pub const ACTOR: &str = "job-controller";
/// How often a job is looked at even when nothing changed.
const RESYNC: Duration = Duration::from_secs(60);

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// An API call failed.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    /// The job has no namespace or name.
    #[error("the job has no namespace or name")]
    Unnamed,
    /// A task could not be built from the job.
    #[error("building a task from the job: {0}")]
    Build(String),
    /// The reflector of tasks stopped.
    #[error("the reflector of tasks stopped")]
    TasksUnwatched,
}

struct Ctx {
    client: kube::Client,
    caches: Arc<Caches>,
    /// Every job's task views, fed by the stream that requeues jobs.
    views: Views,
    /// When each job's last reconcile began (see [`Ctx::pace`]).
    last: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How soon a reconcile is tried again while the reflector has not listed
/// everything yet.
const NOT_READY_RETRY: Duration = Duration::from_millis(100);

/// The least time between two reconciles of one job.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

impl Ctx {
    /// Waits until [`MIN_INTERVAL`] has passed since job `key`'s last
    /// reconcile began. The controller never runs two reconciles of one job
    /// at once and merges the changes that arrive meanwhile into one, so a
    /// burst of task changes makes a few reconciles of their job, each of
    /// them reading the latest tasks, not one per change; and unlike a
    /// trailing debounce, a job whose tasks never stop changing is still
    /// reconciled.
    async fn pace(&self, key: &str) {
        let since = self
            .last
            .lock()
            .ok()
            .and_then(|l| l.get(key).map(std::time::Instant::elapsed));
        if let Some(wait) = since.and_then(|s| MIN_INTERVAL.checked_sub(s)) {
            tokio::time::sleep(wait).await;
        }
        if let Ok(mut l) = self.last.lock() {
            if l.len() > 4096 {
                l.retain(|_, at| at.elapsed() < MIN_INTERVAL);
            }
            l.insert(key.to_owned(), std::time::Instant::now());
        }
    }
}

fn task_for(
    job: &Job,
    (template, hash): (&TaskTemplate, &str),
    instance: u32,
    attempt: u32,
    hold: Option<jiff::Timestamp>,
) -> Result<Task, JobError> {
    let name = job.metadata.name.clone().ok_or(JobError::Unnamed)?;
    let ns = job.metadata.namespace.clone().ok_or(JobError::Unnamed)?;
    let uid = job.metadata.uid.clone().ok_or(JobError::Unnamed)?;
    let mut annotations: Map<String, Value> = job
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "kubectl.kubernetes.io/last-applied-configuration"
                    | jobs::KILL_ANNOTATION
                    | jobs::RESTART_ANNOTATION
                    | jobs::THROTTLED_UNTIL_ANNOTATION
                    | corral_api::update::UPDATE_REQUEST_ANNOTATION
            )
        })
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    annotations.insert(
        "corral.dev/job-generation".into(),
        json!(job.metadata.generation.unwrap_or(0).to_string()),
    );
    annotations.insert(jobs::TEMPLATE_ANNOTATION.into(), json!(hash));
    if let Some(until) = hold {
        annotations.insert(
            jobs::THROTTLED_UNTIL_ANNOTATION.into(),
            json!(until.to_string()),
        );
    }
    let s = template;
    let v = json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {
            "name": task_name(&name, instance, attempt), "namespace": ns,
            "labels": {JOB_LABEL: name, INSTANCE_LABEL: instance.to_string(), JOB_KIND_LABEL: job.spec.kind},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {"job": name, "role": s.role, "instanceId": instance, "resources": s.resources, "tier": s.tier,
                 "priority": s.priority, "container": s.container, "constraints": s.constraints,
                 "fenced": s.fenced, "ports": s.ports, "healthCheck": s.health_check,
                 "gang": job.spec.gang},
    });
    serde_json::from_value(v).map_err(|e| JobError::Build(e.to_string()))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, JobError> {
    let name = job.metadata.name.clone().ok_or(JobError::Unnamed)?;
    let ns = job.metadata.namespace.clone().ok_or(JobError::Unnamed)?;
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), &ns);
    ctx.pace(&format!("{ns}/{name}")).await;
    // The job as it is after the wait: gone or replaced, nothing is done
    // for it (the server refuses tasks for a job that is gone anyway).
    let job = match ctx
        .caches
        .jobs()
        .store()
        .get(&reflector::ObjectRef::from_obj(&*job))
    {
        Some(now) if now.metadata.uid == job.metadata.uid => now,
        _ => return Ok(Action::await_change()),
    };
    // Until it has listed every task once, it knows none of a job's.
    // Not waited for: a reconcile that waits would hold a shutdown up,
    // since the reflector is driven only while the controller runs.
    let tasks_cache = ctx.caches.tasks();
    if let Some(Err(_)) = futures::FutureExt::now_or_never(tasks_cache.store().wait_until_ready()) {
        return Err(JobError::TasksUnwatched);
    }
    // The job's tasks as views kept by the change stream, not a LIST nor a
    // walk of every task object per reconcile. A task created a moment ago
    // may not be there yet: creating it again is a harmless 409, and
    // writes to the ones there are conditional.
    let now = jiff::Timestamp::now();
    let decided = ctx.views.with(&cache::job_key(&ns, &name), |owned| {
        let plan = jobs::reconcile(&job, &owned.views, now.as_microsecond());
        // MTTA / MTTS / MTTR over the job's tasks, from their task events.
        let latency = corral_core::latency::figures_of(owned.samples.iter().copied());
        let throttled: Vec<String> = owned
            .views
            .iter()
            .filter(|v| v.phase == TaskPhase::Throttled)
            .map(|v| v.name.clone())
            .collect();
        (plan, latency, throttled)
    });
    let Some((plan, latency, throttled)) = decided else {
        return Ok(Action::requeue(NOT_READY_RETRY));
    };
    // The few tasks written to, read from the cache's store by name.
    let store = tasks_cache.store();
    let task_named = |n: &str| store.get(&reflector::ObjectRef::new(n).within(&ns));
    // New tasks are made from the update's target: the spec's template, or
    // the one a rollback returns to.
    let spec_template = job.spec.template();
    let template = match plan.rollout.as_ref() {
        Some(r) if r.target == jobs::update::Target::Previous => r
            .update
            .as_ref()
            .and_then(|u| u.from.as_ref())
            .unwrap_or(&spec_template),
        _ => &spec_template,
    };
    // Hashed once, not per task made.
    let hash = match plan.rollout.as_ref() {
        Some(r) => r.target_hash.clone(),
        None => jobs::update::hash_of(template),
    };
    let new_tasks = plan
        .create
        .iter()
        .map(|(instance, attempt)| {
            let hold = plan
                .holds
                .get(&(*instance, *attempt))
                .and_then(|us| jiff::Timestamp::from_microsecond(*us).ok());
            task_for(&job, (template, &hash), *instance, *attempt, hold)
        })
        .collect::<Result<Vec<Task>, JobError>>()?;
    // The server gives each task its PENDING (or THROTTLED) status in the
    // create. In bulk, in instance order: the scheduler then meets the lower
    // instances first. One created meanwhile is a harmless 409.
    for result in crate::bulk::create_tasks(&ctx.client, &ns, &new_tasks).await? {
        match result {
            Ok(()) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(kube::Error::Api(e).into()),
        }
    }
    let throttled: Vec<Arc<Task>> = throttled.iter().filter_map(|n| task_named(n)).collect();
    let next_release = release_throttled(&tasks, &throttled, now).await?;
    let requests = plan
        .kill
        .iter()
        .map(|n| (n, lifecycle::Event::KillRequested))
        .chain(
            plan.restart
                .iter()
                .map(|n| (n, lifecycle::Event::RestartRequested)),
        );
    for (victim, event) in requests {
        let Some(t) = task_named(victim) else {
            continue;
        };
        let mut status = t.status.clone().unwrap_or_default();
        if lifecycle::apply(&mut status, &event, now, ACTOR).is_ok() {
            tasks
                .patch_status(
                    victim,
                    &PatchParams::default(),
                    // Conditional: a concurrent report is re-read on the retry, never overwritten.
                    &Patch::Merge(json!({"metadata": {"resourceVersion": t.metadata.resource_version}, "status": status})),
                )
                .await?;
        }
    }
    // Every phase is written, absent ones as null, so counts that drop to zero go.
    let counts: Map<String, Value> = TaskPhase::ALL
        .iter()
        .map(|p| {
            (
                p.as_str().to_owned(),
                plan.counts.get(p).map_or(Value::Null, |n| json!(n)),
            )
        })
        .collect();
    // The history limit: old ended tasks go; their failures stay counted.
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let already_pruned = if plan.prune.is_empty() {
        job.status.as_ref().map_or(0, |s| s.pruned_failures)
    } else {
        // Read fresh: the count must not go back to a stale cached value.
        jobs_api
            .get(&name)
            .await?
            .status
            .map_or(0, |s| s.pruned_failures)
    };
    let mut pruned_failed = 0u32;
    for victim in &plan.prune {
        let Some(t) = task_named(victim) else {
            continue;
        };
        let dp = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: t.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match tasks.delete(victim, &dp).await {
            Ok(_) => {
                if t.status
                    .as_ref()
                    .is_some_and(|s| s.phase() == TaskPhase::Failed)
                {
                    pruned_failed += 1;
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut status = json!({"status": {"phase": plan.phase, "tasks": counts,
        "failures": plan.failures + already_pruned,
        "prunedFailures": already_pruned + pruned_failed,
        "observedGeneration": job.metadata.generation, "latency": latency,
        "selector": format!("{JOB_LABEL}={name}")}});
    if let Some((updated, rolling)) = plan.update {
        status["status"]["updatedInstances"] = json!(updated);
        let update = plan.rollout.as_ref().and_then(|r| r.update.as_ref());
        status["status"]["conditions"] = json!(progressing(&job, updated, rolling, update, now));
    }
    if let Some(r) = &plan.rollout {
        // Exactly these values: a member they no longer have is removed.
        let stored = job.status.as_ref();
        if let Some(t) = &r.template {
            let old = json!(stored.and_then(|s| s.template.as_ref()));
            status["status"]["template"] = crate::merge::to(&old, &json!(t));
        }
        if let Some(u) = &r.update {
            let old = json!(stored.and_then(|s| s.update.as_ref()));
            status["status"]["update"] = crate::merge::to(&old, &json!(u));
        }
        if let Some(done) = &r.archived {
            let mut history = vec![done.clone()];
            history.extend(
                job.status
                    .as_ref()
                    .map(|st| st.update_history.clone())
                    .unwrap_or_default(),
            );
            history.truncate(corral_api::update::HISTORY_LIMIT);
            status["status"]["updateHistory"] = json!(history);
        }
    }
    jobs_api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    // Back when the next held-back task may run, or at the resync.
    let wake = next_release
        .map(|at| {
            Duration::from_millis(
                u64::try_from((at.as_millisecond() - now.as_millisecond()).max(0)).unwrap_or(0)
                    + 10,
            )
        })
        .map_or(RESYNC, |d| d.min(RESYNC));
    // Back when an updated instance will have been healthy long enough.
    let healthy_at = plan.rollout.as_ref().and_then(|r| r.wake).map(|us| {
        Duration::from_micros(u64::try_from(us - now.as_microsecond()).unwrap_or(0) + 10_000)
    });
    Ok(Action::requeue(healthy_at.map_or(wake, |d| d.min(wake))))
}

/// The job's conditions with `Progressing` set for a rolling update (True
/// while one is under way); its transition time moves only when it flips.
fn progressing(
    job: &Job,
    updated: u32,
    rolling: bool,
    update: Option<&UpdateStatus>,
    now: jiff::Timestamp,
) -> Vec<JobCondition> {
    let mut conditions = job
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let n = job.spec.instances;
    let (status, reason, message) = match update.map(|u| (u.state, u)) {
        Some((UpdateState::RollingBack, u)) => (
            ConditionStatus::True,
            JobReason::RollingBack,
            format!(
                "update {}: {} ({updated} of {n} instances back)",
                u.id, u.message
            ),
        ),
        Some((UpdateState::Paused | UpdateState::RollBackPaused, u)) => (
            ConditionStatus::True,
            JobReason::UpdatePaused,
            format!(
                "update {} is paused ({updated} of {n} instances moved)",
                u.id
            ),
        ),
        Some((UpdateState::RolledBack, u)) => (
            ConditionStatus::False,
            JobReason::UpdateRolledBack,
            format!("update {}: {}", u.id, u.message),
        ),
        Some((UpdateState::Failed, u)) => (
            ConditionStatus::False,
            JobReason::UpdateFailed,
            format!("update {}: {}", u.id, u.message),
        ),
        Some((UpdateState::Aborted, u)) => (
            ConditionStatus::False,
            JobReason::UpdateAborted,
            format!("update {}: {}", u.id, u.message),
        ),
        _ if rolling => (
            ConditionStatus::True,
            JobReason::RollingUpdate,
            format!("{updated} of {n} instances run the current template"),
        ),
        _ => (
            ConditionStatus::False,
            JobReason::UpdateComplete,
            "every instance runs the current template".to_owned(),
        ),
    };
    let since = conditions
        .iter()
        .find(|c| c.type_ == JobConditionType::Progressing && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_ != JobConditionType::Progressing);
    conditions.push(JobCondition {
        type_: JobConditionType::Progressing,
        status,
        reason,
        message,
        last_transition_time: Some(since),
        observed_generation: job.metadata.generation,
    });
    conditions
}

/// THROTTLED tasks whose hold is over go PENDING; returns when the next
/// hold ends.
async fn release_throttled(
    tasks: &Api<Task>,
    throttled: &[Arc<Task>],
    now: jiff::Timestamp,
) -> Result<Option<jiff::Timestamp>, JobError> {
    let mut next: Option<jiff::Timestamp> = None;
    for t in throttled {
        let Some(status) = t
            .status
            .as_ref()
            .filter(|s| s.phase() == TaskPhase::Throttled)
        else {
            continue;
        };
        let Some(until) = t
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(jobs::THROTTLED_UNTIL_ANNOTATION))
            .map(|v| v.parse::<jiff::Timestamp>().unwrap_or(now))
        else {
            continue;
        };
        if until > now {
            next = Some(next.map_or(until, |n| n.min(until)));
            continue;
        }
        let mut released = status.clone();
        if lifecycle::apply(
            &mut released,
            &lifecycle::Event::ThrottleExpired,
            now,
            ACTOR,
        )
        .is_ok()
        {
            released.explanation = None;
            let name = t.metadata.name.clone().unwrap_or_default();
            let patch = json!({"metadata": {"resourceVersion": t.metadata.resource_version}, "status": released});
            tasks
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
    }
    Ok(next)
}

fn error_policy(_job: Arc<Job>, error: &JobError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "job reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the job controller until `stop` turns true, with caches of its own.
pub async fn run(client: kube::Client, stop: tokio::sync::watch::Receiver<bool>) {
    let caches = Caches::new(client.clone(), stop.clone());
    run_cached(client, caches, Metrics::default(), stop).await;
}

/// Runs the job controller until `stop` turns true, reading `caches` (each
/// reconcile's result counted into `metrics`).
pub async fn run_cached(
    client: kube::Client,
    caches: Arc<Caches>,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let jobs = caches.jobs();
    let views = Views::default();
    let controller = Controller::for_shared_stream(jobs.touched(), jobs.store())
        // Every task change (deletions too) updates its job's views, then
        // requeues the job.
        .owns_shared_stream(views::feed(caches.tasks(), views.clone()));
    let ctx = Arc::new(Ctx {
        client,
        caches: caches.clone(),
        views,
        last: std::sync::Mutex::new(std::collections::HashMap::new()),
    });
    controller
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok(_) => metrics.reconciled(ReconcileResult::success),
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {
                    metrics.reconciled(ReconcileResult::error)
                }
                // The object left the cache, or the queue failed: no reconcile ran.
                Err(_) => {}
            }
            async {}
        })
        .await;
}
