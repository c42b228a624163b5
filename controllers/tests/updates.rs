//! Job updates against the in-process API server: the job controller and
//! the allocation loop, with a stand-in agent (a watch that runs what is
//! assigned and ends what is killed). An update is paused, resumed and
//! aborted mid-way by request, and a requested rollback brings every
//! instance back to the template kept in the job's status.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::{eventually, node, stand_in_agent, start};
use corral_api::update::{UPDATE_REQUEST_ANNOTATION, UpdateState, UpdateStatus};
use corral_api::{Job, Task};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The template hashes of the job's live tasks, by instance.
async fn live_templates(api: &Api<Task>) -> Result<Vec<(u32, String)>> {
    let mut out: Vec<(u32, String)> = api
        .list(&ListParams::default().labels("corral.dev/job=web"))
        .await?
        .items
        .into_iter()
        .filter(|t| t.status.as_ref().is_some_and(|s| !s.phase().is_terminal()))
        .map(|t| {
            let hash = t
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(corral_core::jobs::TEMPLATE_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            (t.spec.instance_id, hash)
        })
        .collect();
    out.sort();
    Ok(out)
}

async fn update_of(jobs: &Api<Job>) -> Result<Option<UpdateStatus>> {
    Ok(jobs
        .get("web")
        .await?
        .status
        .and_then(|s| s.update.map(|u| *u)))
}

async fn request(jobs: &Api<Job>, action: &str) -> Result<()> {
    let value = format!("{action} {}", jiff::Timestamp::now());
    jobs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {UPDATE_REQUEST_ANNOTATION: value}}})),
    )
    .await?;
    Ok(())
}

async fn set_image(jobs: &Api<Job>, image: &str) -> Result<()> {
    jobs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"container": {"image": image}}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_update_is_paused_resumed_aborted_and_rolled_back_on_request() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    node(&h.client, "n1", 16).await?;
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let job = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "web"},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": 3,
                 "resources": {"cpus": 1, "memory": "256Mi"}, "container": {"image": "web:v1"},
                 "update": {"batchSize": 1, "minHealthySeconds": 2}}});
    jobs.create(&PostParams::default(), &serde_json::from_value(job)?)
        .await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let loops = [
        tokio::spawn(corral_controllers::allocation::run(
            h.client.clone(),
            corral_core::sched::Policy::BinPack,
            stop_rx.clone(),
        )),
        tokio::spawn(corral_controllers::jobs::run(h.client.clone(), stop_rx)),
    ];
    let agent = stand_in_agent(h.client.clone());
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let v1 = corral_core::jobs::template_hash(&jobs.get("web").await?.spec);
    eventually("three instances on v1, the template kept", || async {
        let kept = jobs
            .get("web")
            .await?
            .status
            .and_then(|s| s.template)
            .is_some();
        let live = live_templates(&tasks).await?;
        Ok(kept && live.len() == 3 && live.iter().all(|(_, h)| *h == v1))
    })
    .await?;

    // Update 1 (v2), paused before instance 1 moves.
    set_image(&jobs, "web:v2").await?;
    eventually("update 1 rolling forward", || async {
        Ok(update_of(&jobs)
            .await?
            .is_some_and(|u| u.id == 1 && u.state == UpdateState::RollingForward))
    })
    .await?;
    request(&jobs, "pause").await?;
    eventually("update 1 paused, instance 0 done", || async {
        Ok(update_of(&jobs)
            .await?
            .is_some_and(|u| u.state == UpdateState::Paused && u.done_instances == vec![0]))
    })
    .await?;
    let paused = live_templates(&tasks).await?;
    assert_eq!(
        paused.iter().filter(|(_, h)| *h == v1).count(),
        2,
        "paused: only instance 0 moved: {paused:?}"
    );
    // Resumed: instance 1 goes; aborted while it does, instance 2 stays on v1.
    request(&jobs, "resume").await?;
    eventually("instance 1 updating", || async {
        Ok(update_of(&jobs).await?.is_some_and(|u| {
            u.events.iter().any(|e| {
                e.instance == 1 && e.action == corral_api::update::InstanceAction::Updating
            })
        }))
    })
    .await?;
    request(&jobs, "abort").await?;
    eventually("update 1 aborted", || async {
        Ok(update_of(&jobs)
            .await?
            .is_some_and(|u| u.state == UpdateState::Aborted))
    })
    .await?;
    let u = update_of(&jobs).await?.context("update 1")?;
    assert!(u.finished_at.is_some());
    let after_abort = live_templates(&tasks).await?;
    assert_eq!(after_abort[2].1, v1, "{after_abort:?}");

    // Update 2 (v3) supersedes nothing final; rolled back on request, every
    // instance ends on the kept template (v1).
    set_image(&jobs, "web:v3").await?;
    eventually("update 2 rolling forward", || async {
        Ok(update_of(&jobs)
            .await?
            .is_some_and(|u| u.id == 2 && u.state == UpdateState::RollingForward))
    })
    .await?;
    // Nothing of update 1 is left in it (its end, for one).
    let second = update_of(&jobs).await?.context("update 2")?;
    assert!(second.finished_at.is_none(), "{second:?}");
    request(&jobs, "rollback").await?;
    eventually("update 2 rolled back, every instance on v1", || async {
        let rolled = update_of(&jobs)
            .await?
            .is_some_and(|u| u.state == UpdateState::RolledBack);
        let live = live_templates(&tasks).await?;
        Ok(rolled && live.len() == 3 && live.iter().all(|(_, h)| *h == v1))
    })
    .await?;
    let job = jobs.get("web").await?;
    let status = job.status.context("a status")?;
    let u = status.update.context("update 2")?;
    assert_eq!((u.id, u.from_template.as_str()), (2, v1.as_str()));
    assert_eq!(
        status.update_history.first().map(|h| (h.id, h.state)),
        Some((1, UpdateState::Aborted))
    );
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == corral_api::job::JobConditionType::Progressing)
        .context("Progressing")?;
    assert_eq!(
        progressing.reason,
        corral_api::job::JobReason::UpdateRolledBack
    );

    stop.send(true)?;
    agent.abort();
    for l in loops {
        tokio::time::timeout(Duration::from_secs(10), l).await??;
    }
    Ok(())
}
