//! The job controller with the allocation loop, against the in-process API
//! server; a few lines below stand in for the node agents by writing the
//! statuses an agent would report.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::{eventually, node, start};
use corral_api::job::JobPhase;
use corral_api::{Job, Task, TaskPhase};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The allocation loop and the job controller, running until stopped.
struct Loops {
    stop: tokio::sync::watch::Sender<bool>,
    alloc: tokio::task::JoinHandle<()>,
    jobs: tokio::task::JoinHandle<()>,
}

impl Loops {
    fn start(client: &kube::Client) -> Self {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let alloc = tokio::spawn(corral_controllers::allocation::run(
            client.clone(),
            corral_core::sched::Policy::BinPack,
            stop_rx.clone(),
        ));
        let jobs = tokio::spawn(corral_controllers::jobs::run(client.clone(), stop_rx));
        Loops { stop, alloc, jobs }
    }

    /// Stops both and checks they ended cleanly.
    async fn stop(self) -> Result<()> {
        self.stop.send(true)?;
        self.alloc.await?;
        tokio::time::timeout(Duration::from_secs(10), self.jobs).await??;
        Ok(())
    }
}

fn job(name: &str, kind: &str, instances: u32, max_failures: i32) -> Result<Job> {
    Ok(serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "annotations": {"team": "analytics"}},
        "spec": {"role": "analytics", "environment": "prod", "kind": kind, "instances": instances, "maxTaskFailures": max_failures,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"}}}),
    )?)
}

async fn tasks_of(api: &Api<Task>, job: &str) -> Result<Vec<Task>> {
    Ok(api
        .list(&ListParams::default().labels(&format!("corral.dev/job={job}")))
        .await?
        .items)
}

/// What an agent would report: the task ran and exited with `code`.
/// True once task `name` exists and is bound (an agent reports only on a
/// task bound to its node).
async fn assigned(api: &Api<Task>, name: &str) -> Result<bool> {
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|t| t.status)
        .is_some_and(|s| s.phase() == TaskPhase::Assigned))
}

async fn finish(api: &Api<Task>, name: &str, code: i32) -> Result<()> {
    let phase = if code == 0 { "FINISHED" } else { "FAILED" };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": phase, "exitCode": code}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn jobs_get_their_tasks_replacements_and_retries() -> Result<()> {
    let h = start().await?;
    h.roles(&["analytics"]).await?;
    for n in ["n1", "n2"] {
        node(&h.client, n, 8).await?;
    }
    let loops = Loops::start(&h.client);
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");

    // A service job: one task per instance, bound, annotations copied.
    jobs.create(&PostParams::default(), &job("web", "service", 2, 1)?)
        .await?;
    eventually("two web tasks assigned", || async {
        let ts = tasks_of(&tasks, "web").await?;
        Ok(ts.len() == 2
            && ts
                .iter()
                .all(|t| t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Assigned)))
    })
    .await?;
    eventually("the job to report its time to assigned", || async {
        let st = jobs.get("web").await?.status.unwrap_or_default();
        Ok(st
            .latency
            .and_then(|l| l.time_to_assigned)
            .is_some_and(|m| m.samples == 2))
    })
    .await?;
    let first = tasks.get("web-0-0").await?;
    assert_eq!(
        first
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("team"))
            .map(String::as_str),
        Some("analytics")
    );
    assert_eq!(
        first
            .metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].name.as_str()),
        Some("web")
    );
    // An instance that ends is replaced.
    finish(&tasks, "web-0-0", 0).await?;
    eventually("the replacement web-0-1", || async {
        Ok(tasks.get_opt("web-0-1").await?.is_some())
    })
    .await?;
    // Scaling down kills the extra instance (it was assigned, so KILLING).
    jobs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"instances": 1}})),
    )
    .await?;
    eventually("web-1-0 to be killed", || async {
        Ok(tasks.get("web-1-0").await?.status.map(|s| s.phase()) == Some(TaskPhase::Killing))
    })
    .await?;
    eventually("the job status to count its tasks", || async {
        let st = jobs.get("web").await?.status.unwrap_or_default();
        Ok(st.tasks.get(&TaskPhase::Finished) == Some(&1)
            && st.tasks.get(&TaskPhase::Killing) == Some(&1)
            && st.phase == Some(JobPhase::Active))
    })
    .await?;
    // The Scale names the selector of the job's tasks, for autoscalers.
    let selector = jobs
        .get_scale("web")
        .await?
        .status
        .and_then(|s| s.selector)
        .context("the scale has no selector")?;
    let selected = tasks.list(&ListParams::default().labels(&selector)).await?;
    assert_eq!(selected.items.len(), tasks_of(&tasks, "web").await?.len());
    assert!(!selected.items.is_empty());

    // An ad-hoc job with maxTaskFailures 2 (Aurora's meaning): two attempts, then FAILED.
    jobs.create(&PostParams::default(), &job("batch", "adhoc", 1, 2)?)
        .await?;
    eventually("batch-0-0 to be assigned", || assigned(&tasks, "batch-0-0")).await?;
    finish(&tasks, "batch-0-0", 3).await?;
    eventually("the retry batch-0-1 to be assigned", || {
        assigned(&tasks, "batch-0-1")
    })
    .await?;
    finish(&tasks, "batch-0-1", 3).await?;
    eventually("the batch job to fail", || async {
        Ok(jobs.get("batch").await?.status.and_then(|s| s.phase) == Some(JobPhase::Failed))
    })
    .await?;
    assert!(
        tasks.get_opt("batch-0-2").await?.is_none(),
        "no retry past maxTaskFailures"
    );
    let st = jobs.get("batch").await?.status.context("status")?;
    assert_eq!(st.failures, 2);

    // One that succeeds ends SUCCEEDED.
    jobs.create(&PostParams::default(), &job("once", "adhoc", 1, 1)?)
        .await?;
    eventually("once-0-0 to be assigned", || assigned(&tasks, "once-0-0")).await?;
    finish(&tasks, "once-0-0", 0).await?;
    eventually("the job to succeed", || async {
        Ok(jobs.get("once").await?.status.and_then(|s| s.phase) == Some(JobPhase::Succeeded))
    })
    .await?;

    loops.stop().await
}

/// A task nobody starts within the assign timeout is LOST and replaced.
#[tokio::test]
async fn a_task_never_started_is_lost_and_replaced() -> Result<()> {
    let h = start().await?;
    h.roles(&["analytics"]).await?;
    node(&h.client, "n1", 8).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let alloc = tokio::spawn(corral_controllers::allocation::run(
        h.client.clone(),
        corral_core::sched::Policy::BinPack,
        stop_rx.clone(),
    ));
    let jobs_loop = tokio::spawn(corral_controllers::jobs::run(
        h.client.clone(),
        stop_rx.clone(),
    ));
    let lost_loop = tokio::spawn(corral_controllers::lost::run(h.client.clone(), stop_rx));
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let mut j = job("slow", "service", 1, 1)?;
    j.spec.timeouts = Some(corral_api::job::Timeouts {
        assign_seconds: 1,
        start_seconds: 1,
    });
    jobs.create(&PostParams::default(), &j).await?;
    eventually("the first task to be lost", || async {
        Ok(tasks
            .get_opt("slow-0-0")
            .await?
            .and_then(|t| t.status)
            .map(|s| s.phase())
            == Some(TaskPhase::Lost))
    })
    .await?;
    let lost = tasks.get("slow-0-0").await?.status.context("status")?;
    assert_eq!(
        lost.task_events
            .last()
            .map(|e| (e.actor.as_str(), e.message.as_str())),
        Some((
            "lost-task-controller",
            "not started within the assign timeout"
        ))
    );
    eventually("its replacement to be assigned", || async {
        Ok(tasks
            .get_opt("slow-0-1")
            .await?
            .and_then(|t| t.status)
            .map(|s| s.phase())
            == Some(TaskPhase::Assigned))
    })
    .await?;
    stop_tx.send(true)?;
    alloc.await?;
    tokio::time::timeout(Duration::from_secs(10), jobs_loop).await??;
    tokio::time::timeout(Duration::from_secs(10), lost_loop).await??;
    Ok(())
}

/// What an agent would report for a task that crashed right after starting.
async fn crash(api: &Api<Task>, name: &str) -> Result<()> {
    fail_after(api, name, 0).await
}

/// What an agent would report for a task that failed after running `ran_s` seconds.
async fn fail_after(api: &Api<Task>, name: &str, ran_s: i64) -> Result<()> {
    let end = jiff::Timestamp::now();
    let start = (end - jiff::SignedDuration::from_secs(ran_s)).to_string();
    let now = end.to_string();
    let mut status = api.get(name).await?.status.unwrap_or_default();
    let mut events = serde_json::to_value(&status.task_events)?;
    if let Some(list) = events.as_array_mut() {
        list.push(json!({"timestamp": start, "status": "RUNNING", "message": "running", "actor": "agent/n1"}));
        list.push(json!({"timestamp": now, "status": "FAILED", "message": "exited with code 1", "actor": "agent/n1"}));
    }
    status.task_events.clear();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "FAILED", "exitCode": 1, "taskEvents": events}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_flapping_service_instance_is_held_back_then_released() -> Result<()> {
    let h = start().await?;
    h.roles(&["analytics"]).await?;
    node(&h.client, "n1", 8).await?;
    let loops = Loops::start(&h.client);
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("flappy", "service", 1, 1)?)
        .await?;
    let phase = |name: &'static str| {
        let tasks = tasks.clone();
        async move {
            Ok::<_, anyhow::Error>(
                tasks
                    .get_opt(name)
                    .await?
                    .and_then(|t| t.status)
                    .map(|s| s.phase()),
            )
        }
    };
    // The first crash is replaced at once.
    eventually("flappy-0-0 assigned", || async {
        Ok(phase("flappy-0-0").await? == Some(TaskPhase::Assigned))
    })
    .await?;
    crash(&tasks, "flappy-0-0").await?;
    eventually("flappy-0-1 assigned", || async {
        Ok(phase("flappy-0-1").await? == Some(TaskPhase::Assigned))
    })
    .await?;
    // The second crash in a row: the replacement is held back, with the reason.
    crash(&tasks, "flappy-0-1").await?;
    eventually("flappy-0-2 throttled", || async {
        Ok(phase("flappy-0-2").await? == Some(TaskPhase::Throttled))
    })
    .await?;
    let held = tasks.get("flappy-0-2").await?;
    assert!(
        held.spec.node_name.is_none(),
        "a held-back task is not placed"
    );
    let why = held
        .status
        .and_then(|s| s.explanation)
        .context("explanation")?;
    assert_eq!(
        why.reasons.first().map(|r| r.kind),
        Some(corral_api::task::PendingReasonKind::Throttled)
    );
    // After the hold (5 s), it is released and placed.
    eventually("flappy-0-2 released and assigned", || async {
        Ok(phase("flappy-0-2").await? == Some(TaskPhase::Assigned))
    })
    .await?;
    let events: Vec<TaskPhase> = tasks
        .get("flappy-0-2")
        .await?
        .status
        .map(|s| s.task_events.iter().map(|e| e.status).collect())
        .unwrap_or_default();
    assert_eq!(
        events,
        [
            TaskPhase::Pending,
            TaskPhase::Throttled,
            TaskPhase::Pending,
            TaskPhase::Assigned
        ]
    );
    loops.stop().await
}

#[tokio::test]
async fn a_service_keeps_a_bounded_history_and_still_counts_every_failure() -> Result<()> {
    let h = start().await?;
    h.roles(&["analytics"]).await?;
    node(&h.client, "n1", 8).await?;
    let loops = Loops::start(&h.client);
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("churn", "service", 1, 1)?)
        .await?;
    // The instance keeps its newest end; the job a hundred more.
    let kept = corral_core::jobs::ENDED_TASKS_KEPT_PER_JOB + 1;
    let rounds = kept + 2;
    for attempt in 0..rounds {
        let name = format!("churn-0-{attempt}");
        eventually("the next attempt to be assigned", || {
            assigned(&tasks, &name)
        })
        .await
        .with_context(|| format!("attempt {attempt}"))?;
        // Failures after a long run: no flapping backoff slows the churn.
        fail_after(&tasks, &name, 600).await?;
    }
    eventually(
        "old attempts pruned, every failure still counted",
        || async {
            let left = tasks_of(&tasks, "churn").await?;
            let st = jobs.get("churn").await?.status.unwrap_or_default();
            Ok(left.len() == kept + 1 && st.failures == u32::try_from(rounds)?)
        },
    )
    .await?;
    assert!(
        tasks.get_opt("churn-0-0").await?.is_none(),
        "the oldest went first"
    );
    loops.stop().await
}
