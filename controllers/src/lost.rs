//! The lost-task controller: tasks stuck in a transient phase become LOST.
//!
//! Watches (through the shared [`crate::cache`]): Tasks and Jobs; only the
//! changes of tasks in ASSIGNED or STARTING reach it. For each such task it
//! reads its job's timeouts from the cache, not the API server (Aurora's
//! five minutes by default) and, once the timeout passed,
//! drives the task to LOST through the lifecycle state machine (a task event
//! records why); otherwise it requeues the task for the moment its timeout
//! falls due. The job controller then replaces the lost task. No state is
//! kept in memory: the time a task entered its phase is its task event.

use std::sync::Arc;
use std::time::Duration;

use corral_api::{Job, Task};
use corral_core::{lifecycle, timeouts};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};

use crate::cache::Caches;
use serde_json::json;

/// The actor name written in task events.
pub const ACTOR: &str = "lost-task-controller";

/// How soon a reconcile is tried again while the cache has not listed
/// every job yet.
const NOT_READY_RETRY: Duration = Duration::from_millis(100);

/// How soon a task is looked at again when its job is not in the cache
/// (just created, or none: a task created on its own).
const UNSEEN_JOB_RECHECK: Duration = Duration::from_secs(5);

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum LostError {
    /// An API call failed.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    /// The cache of jobs stopped.
    #[error("the cache of jobs stopped")]
    JobsUnwatched,
}

struct Ctx {
    client: kube::Client,
    /// Every Job, as the cache last saw it.
    jobs: reflector::Store<Job>,
}

async fn reconcile(task: Arc<Task>, ctx: Arc<Ctx>) -> Result<Action, LostError> {
    let Some(status) = task.status.as_ref() else {
        return Ok(Action::await_change());
    };
    let ns = task
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    // Until the cache has listed the jobs, a job's own timeouts are unknown.
    // Not waited for: a reconcile that waits would hold a shutdown up,
    // since the cache is driven only while the controller runs.
    match futures::FutureExt::now_or_never(ctx.jobs.wait_until_ready()) {
        Some(Ok(())) => {}
        Some(Err(_)) => return Err(LostError::JobsUnwatched),
        None => return Ok(Action::requeue(NOT_READY_RETRY)),
    }
    let job = ctx.jobs.get(&ObjectRef::new(&task.spec.job).within(&ns));
    let limits = job
        .as_ref()
        .and_then(|job| job.spec.timeouts.clone())
        .unwrap_or_default();
    let now = jiff::Timestamp::now();
    let Some(event) = timeouts::due(status, &limits, now) else {
        return Ok(match timeouts::deadline(status, &limits) {
            Some(at) => {
                let wait = Duration::from_millis(
                    u64::try_from((at.as_millisecond() - now.as_millisecond()).max(0)).unwrap_or(0)
                        + 10,
                );
                // A job the cache has yet to see may have shorter timeouts.
                Action::requeue(if job.is_none() {
                    wait.min(UNSEEN_JOB_RECHECK)
                } else {
                    wait
                })
            }
            None => Action::await_change(),
        });
    };
    let mut next = status.clone();
    if lifecycle::apply(&mut next, &event, now, ACTOR).is_ok() {
        let name = task.metadata.name.clone().unwrap_or_default();
        let api: Api<Task> = Api::namespaced(ctx.client.clone(), &ns);
        // The precondition keeps a late agent report from being overwritten.
        let patch = json!({"metadata": {"resourceVersion": task.metadata.resource_version}, "status": next});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    Ok(Action::await_change())
}

fn error_policy(_task: Arc<Task>, error: &LostError, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(%error, "lost-task reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
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
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let ctx = Arc::new(Ctx {
        client,
        jobs: caches.jobs().store(),
    });
    let tasks = caches.tasks();
    // Only a task in a phase that can time out needs looking at: a task
    // that leaves it meanwhile is looked at once more when its requeue
    // falls due, and found with nothing to do.
    let timed = tasks.touched().filter(|t| {
        let phase = t.status.as_ref().map(|s| s.phase());
        std::future::ready(phase.is_some_and(timeouts::timed))
    });
    Controller::for_shared_stream(timed, tasks.store())
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
