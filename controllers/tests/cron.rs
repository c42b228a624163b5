//! The cron controller on a test clock: each tick makes exactly one run, also
//! across a controller restart; CANCEL_NEW skips a tick while a run is active.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use common::{eventually, start};
use corral_api::{Job, Task};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn cron_job(name: &str, policy: &str) -> Result<Job> {
    Ok(serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
        "spec": {"role": "analytics", "environment": "prod", "kind": "cron", "instances": 1,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"},
                 "cron": {"schedule": "* * * * *", "timezone": "UTC", "collisionPolicy": policy}}}),
    )?)
}

async fn runs(tasks: &Api<Task>, job: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = tasks
        .list(&ListParams::default().labels(&format!("corral.dev/job={job}")))
        .await?
        .items
        .into_iter()
        .filter_map(|t| t.metadata.name)
        .collect();
    names.sort();
    Ok(names)
}

/// A test clock set just past the first minute boundary after `born`
/// (seconds), and the handle that moves it.
fn clock_after(born: i64) -> (Arc<AtomicI64>, corral_controllers::cron::Clock) {
    let now = Arc::new(AtomicI64::new((born / 60 + 1) * 60 + 5));
    let at = now.clone();
    let clock: corral_controllers::cron::Clock = Arc::new(move || {
        jiff::Timestamp::from_second(at.load(Ordering::SeqCst)).unwrap_or_default()
    });
    (now, clock)
}

#[tokio::test]
async fn each_tick_runs_once_even_across_a_restart() -> Result<()> {
    let h = start().await?;
    h.roles(&["analytics"]).await?;
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let created = jobs
        .create(&PostParams::default(), &cron_job("nightly", "RUN_OVERLAP")?)
        .await?;
    let born = created
        .metadata
        .creation_timestamp
        .context("created")?
        .0
        .as_second();
    // The test's clock: just past the first minute boundary after creation.
    let (now, clock) = clock_after(born);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let first = tokio::spawn(corral_controllers::cron::run_with_clock(
        h.client.clone(),
        clock.clone(),
        stop_rx,
    ));
    // The run's task is created before the tick is recorded in the Job's status.
    eventually("the first run, recorded", || async {
        let recorded = jobs
            .get("nightly")
            .await?
            .status
            .and_then(|s| s.cron)
            .is_some_and(|c| c.runs_started > 0);
        Ok(recorded && runs(&tasks, "nightly").await?.len() == 1)
    })
    .await?;
    let st = jobs
        .get("nightly")
        .await?
        .status
        .and_then(|s| s.cron)
        .context("cron status")?;
    assert_eq!((st.runs_started, st.runs_missed), (1, 0));
    // Restart the controller on the same tick: no second run.
    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), first)
        .await?
        .ok();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let second = tokio::spawn(corral_controllers::cron::run_with_clock(
        h.client.clone(),
        clock.clone(),
        stop_rx,
    ));
    // The next minute: a second run beside the first (RUN_OVERLAP).
    now.fetch_add(60, Ordering::SeqCst);
    jobs.patch(
        "nightly",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"nudge": "2"}}})),
    )
    .await?;
    eventually("the second run", || async {
        Ok(runs(&tasks, "nightly").await?.len() == 2)
    })
    .await?;
    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), second)
        .await?
        .ok();
    Ok(())
}

#[tokio::test]
async fn cancel_new_skips_a_tick_while_a_run_is_active() -> Result<()> {
    let h = start().await?;
    h.roles(&["analytics"]).await?;
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let created = jobs
        .create(&PostParams::default(), &cron_job("report", "CANCEL_NEW")?)
        .await?;
    let born = created
        .metadata
        .creation_timestamp
        .context("created")?
        .0
        .as_second();
    let (now, clock) = clock_after(born);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctl = tokio::spawn(corral_controllers::cron::run_with_clock(
        h.client.clone(),
        clock,
        stop_rx,
    ));
    eventually("the first run", || async {
        Ok(runs(&tasks, "report").await?.len() == 1)
    })
    .await?;
    now.fetch_add(60, Ordering::SeqCst);
    jobs.patch(
        "report",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"nudge": "1"}}})),
    )
    .await?;
    eventually("the tick to be cancelled", || async {
        Ok(jobs
            .get("report")
            .await?
            .status
            .and_then(|s| s.cron)
            .is_some_and(|c| c.runs_cancelled == 1))
    })
    .await?;
    assert_eq!(runs(&tasks, "report").await?.len(), 1);
    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), ctl)
        .await?
        .ok();
    Ok(())
}

#[tokio::test]
async fn finished_runs_past_the_history_limit_go_under_the_controller_managers_own_rights()
-> Result<()> {
    use corral_apiserver::transport::rbac::bootstrap::CONTROLLER_MANAGER;
    let ts = corral_apiserver::testing::TestServer::start_rbac(
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        &[("manager-token", CONTROLLER_MANAGER, &[])],
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    ts.roles(&["analytics"])
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    // The controller acts as the controller manager, with only its rights.
    let manager = ts
        .client_as("manager-token")
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let mut job = cron_job("hourly", "RUN_OVERLAP")?;
    if let Some(c) = job.spec.cron.as_mut() {
        c.history_limit = 1;
    }
    let created = jobs.create(&PostParams::default(), &job).await?;
    let born = created
        .metadata
        .creation_timestamp
        .context("created")?
        .0
        .as_second();
    let (now, clock) = clock_after(born);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctl = tokio::spawn(corral_controllers::cron::run_with_clock(
        manager, clock, stop_rx,
    ));
    // Three runs, each ended before the next tick.
    for run in 1..=3 {
        eventually(&format!("run {run}"), || async {
            Ok(runs(&tasks, "hourly").await?.len() >= run.min(2))
        })
        .await?;
        let newest = runs(&tasks, "hourly")
            .await?
            .pop()
            .context("a run's task")?;
        tasks
            .patch_status(
                &newest,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "KILLED"}})),
            )
            .await?;
        now.fetch_add(60, Ordering::SeqCst);
        jobs.patch(
            "hourly",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"nudge": run.to_string()}}})),
        )
        .await?;
    }
    // With a history of one, only the newest ended run stays beside the live one.
    eventually("older runs to be deleted", || async {
        Ok(runs(&tasks, "hourly").await?.len() == 2)
    })
    .await?;
    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), ctl)
        .await?
        .ok();
    Ok(())
}
