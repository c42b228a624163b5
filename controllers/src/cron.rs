//! The cron controller: one run per schedule tick, exactly once.
//!
//! Watches: cron Jobs, and the Tasks they own. For each job it asks
//! `corral_core::cron::plan` which tick is due (in the schedule's time zone,
//! with the missed-run policy), then applies the collision policy against the
//! job's active run: KILL_EXISTING kills its tasks first, CANCEL_NEW skips the
//! tick, RUN_OVERLAP starts beside it. A run is one task per instance, named
//! `<job>-<minutes since the epoch>-<instance>` and created by name, so a tick
//! creates exactly one run even if the controller restarts (or two run) in
//! between. Status keeps `lastScheduleTime` and the started / cancelled /
//! missed counters, written with the resourceVersion the pass read, so a pass
//! on a stale copy of the job conflicts and retries instead of counting a tick
//! twice; finished runs beyond `historyLimit` are deleted. The controller
//! requeues itself for the next tick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corral_api::job::{CollisionPolicy, JobKind};
use corral_api::{Job, Task};
use corral_core::{cron, lifecycle};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use serde_json::json;

use crate::cache::{self, Caches};
use crate::jobs::JOB_LABEL;
use crate::metrics::{CronOutcome, Metrics};

/// The label naming a task's cron run.
pub const RUN_LABEL: &str = "corral.dev/run";
/// The actor name written in task events.
pub const ACTOR: &str = "cron-controller";

/// Where "now" comes from (the real clock, or a test's).
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum CronControllerError {
    /// An API call failed.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    /// The schedule cannot be read.
    #[error(transparent)]
    Schedule(#[from] cron::CronError),
    /// The job lacks a name, namespace or uid.
    #[error("the job has no namespace, name or uid")]
    Unnamed,
    /// A task could not be built from the job.
    #[error("building a run's task: {0}")]
    Build(String),
}

struct Ctx {
    client: kube::Client,
    caches: Arc<Caches>,
    clock: Clock,
    metrics: Metrics,
}

fn run_task(job: &Job, run: &str, instance: u32) -> Result<Task, CronControllerError> {
    let name = job
        .metadata
        .name
        .clone()
        .ok_or(CronControllerError::Unnamed)?;
    let ns = job
        .metadata
        .namespace
        .clone()
        .ok_or(CronControllerError::Unnamed)?;
    let uid = job
        .metadata
        .uid
        .clone()
        .ok_or(CronControllerError::Unnamed)?;
    let s = &job.spec;
    serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {
            "name": format!("{run}-{instance}"), "namespace": ns,
            "labels": {JOB_LABEL: name, RUN_LABEL: run, corral_api::job::JOB_KIND_LABEL: "cron"},
            "ownerReferences": [{"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {"job": name, "role": s.role, "instanceId": instance, "resources": s.resources, "tier": s.tier,
                 "priority": s.priority, "container": s.container, "constraints": s.constraints,
                 "fenced": s.fenced, "ports": s.ports, "healthCheck": s.health_check},
    }))
    .map_err(|e| CronControllerError::Build(e.to_string()))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, CronControllerError> {
    let (Some(spec), JobKind::Cron) = (job.spec.cron.clone(), job.spec.kind) else {
        return Ok(Action::await_change());
    };
    // A killed cron job starts no more runs (the job controller kills the live ones).
    if job
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(corral_core::jobs::KILL_ANNOTATION))
    {
        return Ok(Action::await_change());
    }
    let name = job
        .metadata
        .name
        .clone()
        .ok_or(CronControllerError::Unnamed)?;
    let ns = job
        .metadata
        .namespace
        .clone()
        .ok_or(CronControllerError::Unnamed)?;
    let now = (ctx.clock)();
    let status = job.status.clone().unwrap_or_default();
    let mut counters = status.cron.clone().unwrap_or_default();
    let before = counters.clone();
    let last_handled = counters
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| job.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let plan = cron::plan(&spec, last_handled, now)?;
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), &ns);
    // From the shared cache: a run created a moment ago and not seen yet is
    // created again harmlessly (409), and counted once (the status write
    // carries the version this pass read).
    let owned = ctx
        .caches
        .tasks()
        .indexed(cache::BY_JOB, &cache::job_key(&ns, &name));
    // Runs by name: (any task still active, newest tick).
    let mut runs: BTreeMap<String, bool> = BTreeMap::new();
    for t in &owned {
        let Some(run) = t
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(RUN_LABEL))
            .cloned()
        else {
            continue;
        };
        let active = !t
            .status
            .as_ref()
            .map_or(corral_api::TaskPhase::Pending, |s| s.phase())
            .is_terminal();
        *runs.entry(run).or_default() |= active;
    }
    if let Some(tick) = plan.run {
        let run = cron::run_name(&name, tick);
        let others_active: Vec<&String> = runs
            .iter()
            .filter(|(r, active)| **active && **r != run)
            .map(|(r, _)| r)
            .collect();
        let start = match spec.collision_policy {
            CollisionPolicy::CancelNew if !others_active.is_empty() => {
                counters.runs_cancelled += 1;
                false
            }
            CollisionPolicy::KillExisting => {
                for t in owned.iter().filter(|t| {
                    t.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(RUN_LABEL))
                        .is_some_and(|r| others_active.contains(&r))
                }) {
                    let mut st = t.status.clone().unwrap_or_default();
                    if lifecycle::apply(&mut st, &lifecycle::Event::KillRequested, now, ACTOR)
                        .is_ok()
                    {
                        let tn = t.metadata.name.clone().unwrap_or_default();
                        tasks
                            .patch_status(
                                &tn,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"metadata": {"resourceVersion": t.metadata.resource_version}, "status": st})),
                            )
                            .await?;
                    }
                }
                true
            }
            _ => true,
        };
        if start {
            // The tick is after the last one recorded, so its run is counted
            // here whether this pass created its tasks or an earlier pass did
            // and stopped before recording the tick.
            for instance in 0..job.spec.instances.max(1) {
                match tasks
                    .create(&PostParams::default(), &run_task(&job, &run, instance)?)
                    .await
                {
                    // The server gives the task its PENDING status in the create.
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            crate::failpoints::hit("cron-run-created");
            counters.runs_started += 1;
            runs.insert(run, true);
        }
    }
    counters.runs_missed += plan.missed;
    if let Some(t) = plan.last_tick {
        counters.last_schedule_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t));
    }
    // Finished runs beyond the history limit go, oldest first (names sort by tick).
    let finished: Vec<&String> = runs
        .iter()
        .filter(|(_, active)| !**active)
        .map(|(r, _)| r)
        .collect();
    let excess = finished.len().saturating_sub(spec.history_limit as usize);
    // Each of a run's tasks is deleted by name, as read from the cache (the
    // controller manager may delete tasks, not collections of them).
    let gone: Vec<&String> = finished.into_iter().take(excess).collect();
    for t in owned.iter().filter(|t| {
        t.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(RUN_LABEL))
            .is_some_and(|r| gone.contains(&r))
    }) {
        let tn = t.metadata.name.clone().unwrap_or_default();
        match tasks.delete(&tn, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    jobs.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"resourceVersion": job.metadata.resource_version},
            "status": {"cron": counters},
        })),
    )
    .await?;
    // Counted once the counters are recorded: a pass that lost a race is
    // repeated, and counted then.
    let m = &ctx.metrics;
    m.cron(
        CronOutcome::started,
        counters.runs_started.saturating_sub(before.runs_started),
    );
    m.cron(
        CronOutcome::missed,
        counters.runs_missed.saturating_sub(before.runs_missed),
    );
    m.cron(
        CronOutcome::cancelled,
        counters
            .runs_cancelled
            .saturating_sub(before.runs_cancelled),
    );
    Ok(match plan.next {
        Some(next) => Action::requeue(Duration::from_millis(
            u64::try_from((next.as_millisecond() - now.as_millisecond()).max(0)).unwrap_or(0) + 50,
        )),
        None => Action::await_change(),
    })
}

fn error_policy(_job: Arc<Job>, error: &CronControllerError, _ctx: Arc<Ctx>) -> Action {
    // The job changed since this pass read it (the job controller writes its
    // status too): the pass is made again on the fresh copy.
    if matches!(error, CronControllerError::Api(kube::Error::Api(e)) if e.code == 409) {
        tracing::debug!(%error, "the job changed under the cron pass; again");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!(%error, "cron reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the cron controller with the real clock until `stop` turns true.
pub async fn run(client: kube::Client, stop: tokio::sync::watch::Receiver<bool>) {
    run_with_clock(client, Arc::new(jiff::Timestamp::now), stop).await;
}

/// Runs the cron controller with `clock` as "now", with caches of its own.
pub async fn run_with_clock(
    client: kube::Client,
    clock: Clock,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let caches = Caches::new(client.clone(), stop.clone());
    run_cached(client, caches, clock, Metrics::default(), stop).await;
}

/// Runs the cron controller with `clock` as "now", reading `caches`
/// (counting runs into `metrics`).
pub async fn run_cached(
    client: kube::Client,
    caches: Arc<Caches>,
    clock: Clock,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let jobs = caches.jobs();
    let controller = Controller::for_shared_stream(jobs.touched(), jobs.store())
        .owns_shared_stream(caches.tasks().touched());
    let ctx = Arc::new(Ctx {
        client,
        caches: caches.clone(),
        clock,
        metrics,
    });
    controller
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
