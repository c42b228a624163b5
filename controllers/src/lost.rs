//! The lost-task controller: tasks stuck in a transient phase become LOST.
//!
//! Watches: Tasks. For each task in ASSIGNED or STARTING it reads its job's
//! timeouts (Aurora's five minutes by default) and, once the timeout passed,
//! drives the task to LOST through the lifecycle state machine (a task event
//! records why); otherwise it requeues the task for the moment its timeout
//! falls due. The job controller then replaces the lost task. No state is
//! kept in memory: the time a task entered its phase is its task event.

use std::sync::Arc;
use std::time::Duration;

use corral_api::job::Timeouts;
use corral_api::{Job, Task};
use corral_core::{lifecycle, timeouts};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

/// The actor name written in task events.
pub const ACTOR: &str = "lost-task-controller";

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum LostError {
    /// An API call failed.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
}

struct Ctx {
    client: kube::Client,
}

async fn reconcile(task: Arc<Task>, ctx: Arc<Ctx>) -> Result<Action, LostError> {
    let Some(status) = task.status.clone() else {
        return Ok(Action::await_change());
    };
    let ns = task
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let limits = match jobs.get_opt(&task.spec.job).await? {
        Some(job) => job.spec.timeouts.unwrap_or_default(),
        None => Timeouts::default(),
    };
    let now = jiff::Timestamp::now();
    let Some(event) = timeouts::due(&status, &limits, now) else {
        return Ok(match timeouts::deadline(&status, &limits) {
            Some(at) => Action::requeue(Duration::from_millis(
                u64::try_from((at.as_millisecond() - now.as_millisecond()).max(0)).unwrap_or(0)
                    + 10,
            )),
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

/// Runs the controller until `stop` turns true.
pub async fn run(client: kube::Client, mut stop: tokio::sync::watch::Receiver<bool>) {
    let tasks: Api<Task> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(tasks, watcher::Config::default())
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
