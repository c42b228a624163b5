//! The drain controller: empties the nodes that are to be emptied — a drain
//! asked for (`spec.drain`, `corral node drain`) or a maintenance window
//! whose drain lead has begun — without breaking any job's disruption
//! budget, and says on each Node how it stands.
//!
//! Watches (through the shared [`crate::cache`]): Nodes, Jobs and Tasks (by
//! node and by job). Every [`TICK`], for each node:
//! - **draining**: each live task on it is first marked as leaving (its
//!   `DisruptionTarget` condition), which lets the job controller make a
//!   service instance's replacement before it goes; then, as
//!   `core::disruption::drain_step` says, it waits for a replacement on
//!   its way, or evicts the task through the `tasks/eviction` subresource —
//!   the same door any tool uses — when its job's budget, judged here over
//!   the cache first, allows (the server judges again, and refuses a race
//!   with a 429). The `Draining` condition (True, `DrainRequested` or
//!   `MaintenanceAhead`) counts what is left and says what each waits on;
//!   once no task is left it turns False, reason `Drained`.
//! - **not draining** (a drain called off, a window over): marks are
//!   cleared and the `Draining` condition removed.
//! - the `Maintenance` condition follows the window: scheduled, ahead (new
//!   work avoids the node), open, complete.
//!
//! Every write is conditional on the version read; nothing is kept between
//! ticks, so a restarted controller carries on where the objects say.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corral_api::disruption::WindowPhase;
use corral_api::node::{NodeConditionType, NodeReason};
use corral_api::task::{TaskConditionType, TaskReason};
use corral_api::{Condition, ConditionStatus, JobKind, Node, Task};
use corral_core::disruption::{self, Budget, DrainStep, Replacement, Verdict};
use corral_core::jobs;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::cache::{BY_JOB, BY_NODE, Caches};

/// How often nodes are looked at.
pub const TICK: Duration = Duration::from_secs(1);
/// How long an eviction may take: a refusal retried by the client is
/// given up on after this, to be asked again at a later tick.
const EVICTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Who marks tasks.
const ACTOR: &str = "drain-controller";

/// What a node's drain found this tick.
#[derive(Debug, Default)]
struct Tally {
    /// Live tasks on the node.
    left: usize,
    /// Of those, being killed (evicted, or otherwise leaving).
    leaving: usize,
    /// Waiting for their replacements.
    awaiting: Vec<String>,
    /// Waiting on their jobs' budgets: job → how it stands.
    budgets: BTreeMap<String, String>,
}

impl Tally {
    fn message(&self) -> String {
        if self.left == 0 {
            return "no task is left on the node".into();
        }
        let mut parts = vec![format!("{} task(s) left", self.left)];
        if self.leaving > 0 {
            parts.push(format!("{} being killed", self.leaving));
        }
        if !self.awaiting.is_empty() {
            parts.push(format!(
                "{} waiting for their replacements to run elsewhere ({})",
                self.awaiting.len(),
                self.awaiting.join(", ")
            ));
        }
        for (job, why) in &self.budgets {
            parts.push(format!("job {job} waits on its disruption budget: {why}"));
        }
        parts.join("; ")
    }
}

/// The job `task` belongs to, from the cache.
fn job_of(caches: &Caches, task: &Task) -> Option<Arc<corral_api::Job>> {
    let ns = task.metadata.namespace.as_deref()?;
    let name = task
        .metadata
        .labels
        .as_ref()?
        .get(corral_api::job::JOB_LABEL)?;
    caches.jobs().store().get(&ObjectRef::new(name).within(ns))
}

/// The tasks of `task`'s job, from the cache.
fn siblings(caches: &Caches, task: &Task) -> Vec<Arc<Task>> {
    crate::cache::task_job(task)
        .map(|key| caches.tasks().indexed(BY_JOB, &key))
        .unwrap_or_default()
}

/// Where `task`'s replacement stands (it was marked at `marked`, Unix s).
fn replacement_of(
    job: Option<&corral_api::Job>,
    tasks: &[Arc<Task>],
    task: &Task,
    marked: i64,
    now: i64,
) -> Replacement {
    let Some(job) = job else {
        return Replacement::NotMade;
    };
    let job_name = job.metadata.name.as_deref().unwrap_or_default();
    let Some(own) = jobs::view(job_name, task) else {
        return Replacement::NotMade;
    };
    let newest = tasks
        .iter()
        .filter_map(|t| jobs::view(job_name, t).map(|v| (v, t)))
        .filter(|(v, _)| {
            v.instance == own.instance && v.attempt > own.attempt && !v.phase.is_terminal()
        })
        .max_by_key(|(v, _)| v.attempt);
    match newest {
        Some((v, t)) => {
            let unplaceable = t.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == TaskConditionType::Scheduled
                        && c.status == ConditionStatus::False
                        && c.reason == TaskReason::Unschedulable
                })
            });
            Replacement::of(v.phase, v.healthy_since.is_some(), unplaceable)
        }
        None if job.spec.kind == JobKind::Service => Replacement::Due {
            waited: now - marked,
        },
        None => Replacement::NotMade,
    }
}

/// How `task`'s job's budget stands on evicting it: None when it allows it.
fn over_budget(job: &corral_api::Job, tasks: &[Arc<Task>], task: &str, now: i64) -> Option<String> {
    let budget = job.spec.disruption_budget.as_ref()?;
    let max = budget.max_unavailable(job.spec.instances).ok()?;
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let members = disruption::members(name, tasks.iter().map(|t| &**t));
    let disrupted = disruption::records(job.status.as_ref());
    let b = Budget {
        instances: job.spec.instances,
        max_unavailable: Some(max),
        members: &members,
        disrupted: &disrupted,
        now,
    };
    match b.judge(task) {
        Verdict::OverBudget { down, max } => Some(format!(
            "{down} of its {} instance(s) down, {max} allowed",
            job.spec.instances
        )),
        _ => None,
    }
}

/// Marks `task` as leaving (or not), conditionally.
async fn mark(client: &kube::Client, task: &Task, leaving: bool, message: String) {
    let (Some(ns), Some(name)) = (
        task.metadata.namespace.as_deref(),
        task.metadata.name.as_deref(),
    ) else {
        return;
    };
    let mut status = task.status.clone().unwrap_or_default();
    status.set_disruption_target(leaving, message, jiff::Timestamp::now());
    let patch = json!({"metadata": {"resourceVersion": task.metadata.resource_version},
        "status": {"conditions": status.conditions}});
    let api: Api<Task> = Api::namespaced(client.clone(), ns);
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::debug!(task = name, error = %e, actor = ACTOR, "marking a task failed; next tick retries");
    }
}

/// Asks the server to evict `task`: Ok(true) when it did, Ok(false) when
/// its budget refused (or the refusal outlasted [`EVICTION_TIMEOUT`]).
async fn evict(client: &kube::Client, ns: &str, task: &str) -> Result<bool, kube::Error> {
    let path = format!("/apis/corral.dev/v1alpha1/namespaces/{ns}/tasks/{task}/eviction");
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": task, "namespace": ns}});
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(kube::Error::HttpError)?;
    match tokio::time::timeout(EVICTION_TIMEOUT, client.request::<serde_json::Value>(req)).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(kube::Error::Api(e))) if e.code == 429 => Ok(false),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(false),
    }
}

/// One draining node's tasks: marked, awaited or evicted.
async fn drain_tasks(
    client: &kube::Client,
    caches: &Caches,
    live: &[Arc<Task>],
    now: i64,
) -> Tally {
    let mut tally = Tally {
        left: live.len(),
        ..Tally::default()
    };
    for t in live {
        let Some(status) = t.status.as_ref() else {
            continue;
        };
        let name = t.metadata.name.clone().unwrap_or_default();
        let phase = status.phase();
        if phase.is_being_killed() {
            tally.leaving += 1;
            continue;
        }
        let marked = status.conditions.iter().find(|c| {
            c.type_ == TaskConditionType::DisruptionTarget && c.status == ConditionStatus::True
        });
        let Some(marked) = marked else {
            // Marked first; judged from the next tick, once the job
            // controller has seen the mark.
            mark(client, t, true, "its node is being drained".into()).await;
            tally.awaiting.push(name);
            continue;
        };
        let marked_at = marked
            .last_transition_time
            .as_ref()
            .map_or(now, |t| t.0.as_second());
        let job = job_of(caches, t);
        let tasks = siblings(caches, t);
        let replacement = replacement_of(job.as_deref(), &tasks, t, marked_at, now);
        match disruption::drain_step(phase, replacement) {
            DrainStep::Leaving => tally.leaving += 1,
            DrainStep::AwaitReplacement => tally.awaiting.push(name),
            DrainStep::Evict => {
                let job_name = job
                    .as_ref()
                    .and_then(|j| j.metadata.name.clone())
                    .unwrap_or_default();
                if let Some(why) = job
                    .as_deref()
                    .and_then(|j| over_budget(j, &tasks, &name, now))
                {
                    tally.budgets.insert(job_name, why);
                    continue;
                }
                let ns = t.metadata.namespace.as_deref().unwrap_or("default");
                match evict(client, ns, &name).await {
                    Ok(true) => tally.leaving += 1,
                    Ok(false) => {
                        tally
                            .budgets
                            .insert(job_name, "the server refused the eviction for now".into());
                    }
                    Err(e) => {
                        tracing::debug!(task = name, error = %e, "eviction failed; next tick retries");
                    }
                }
            }
        }
    }
    tally
}

/// The node's conditions with `type_` set to `wanted` (or removed), the
/// transition time kept while the status stays.
fn with_condition(
    conditions: &[Condition<NodeConditionType, NodeReason>],
    type_: NodeConditionType,
    wanted: Option<(ConditionStatus, NodeReason, String)>,
    now: jiff::Timestamp,
) -> Vec<Condition<NodeConditionType, NodeReason>> {
    let old = conditions.iter().find(|c| c.type_ == type_);
    let mut out: Vec<_> = conditions
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect();
    if let Some((status, reason, message)) = wanted {
        let since = old
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
            ));
        out.push(Condition {
            type_,
            status,
            reason,
            message,
            last_transition_time: Some(since),
            observed_generation: None,
        });
    }
    out
}

/// The Maintenance condition a window in `phase` gives.
fn maintenance_condition(
    w: &corral_api::disruption::MaintenanceWindow,
    phase: WindowPhase,
) -> (ConditionStatus, NodeReason, String) {
    let start = w.start.0;
    let end = start
        .checked_add(jiff::SignedDuration::from_secs(i64::from(
            w.duration_seconds,
        )))
        .unwrap_or(start);
    match phase {
        WindowPhase::Ahead => (
            ConditionStatus::False,
            NodeReason::MaintenanceScheduled,
            format!("a maintenance window opens at {start} until {end}"),
        ),
        WindowPhase::Near => (
            ConditionStatus::False,
            NodeReason::MaintenanceAhead,
            format!("a maintenance window opens at {start}: new services avoid the node"),
        ),
        WindowPhase::Draining => (
            ConditionStatus::False,
            NodeReason::MaintenanceAhead,
            format!("a maintenance window opens at {start}: the node is drained ahead of it"),
        ),
        WindowPhase::Open => (
            ConditionStatus::True,
            NodeReason::MaintenanceWindowOpen,
            format!("in maintenance until {end}"),
        ),
        WindowPhase::Over => (
            ConditionStatus::False,
            NodeReason::MaintenanceComplete,
            format!("the maintenance window closed at {end}"),
        ),
    }
}

async fn node_pass(client: &kube::Client, caches: &Caches, node: &Node, now: jiff::Timestamp) {
    let Some(name) = node.metadata.name.as_deref() else {
        return;
    };
    let secs = now.as_second();
    let live: Vec<Arc<Task>> = caches
        .tasks()
        .indexed(BY_NODE, name)
        .into_iter()
        .filter(|t| t.status.as_ref().is_some_and(|s| !s.phase().is_terminal()))
        .collect();
    let conditions = node
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let draining = if node.spec.draining(secs) {
        let reason = if node.spec.drain {
            NodeReason::DrainRequested
        } else {
            NodeReason::MaintenanceAhead
        };
        let tally = drain_tasks(client, caches, &live, secs).await;
        Some(if tally.left == 0 {
            (ConditionStatus::False, NodeReason::Drained, tally.message())
        } else {
            (ConditionStatus::True, reason, tally.message())
        })
    } else {
        for t in live.iter().filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.is_disruption_target() && !s.phase().is_being_killed())
        }) {
            mark(
                client,
                t,
                false,
                "the drain of its node was called off".into(),
            )
            .await;
        }
        None
    };
    let next = with_condition(&conditions, NodeConditionType::Draining, draining, now);
    let window = node
        .spec
        .maintenance
        .as_ref()
        .map(|w| maintenance_condition(w, w.phase(secs)));
    let next = with_condition(&next, NodeConditionType::Maintenance, window, now);
    if next == conditions {
        return;
    }
    let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
        "status": {"conditions": next}});
    let api: Api<Node> = Api::all(client.clone());
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        tracing::debug!(node = name, error = %e, "writing drain conditions failed; next tick retries");
    }
}

async fn tick(client: &kube::Client, caches: &Caches) {
    let now = jiff::Timestamp::now();
    for node in caches.nodes().store().state() {
        node_pass(client, caches, &node, now).await;
    }
}

/// Runs the controller until `stop` turns true, reading `caches`.
pub async fn run_cached(
    client: kube::Client,
    caches: Arc<Caches>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let filled = async {
        caches.nodes().listed().await;
        caches.jobs().listed().await;
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
