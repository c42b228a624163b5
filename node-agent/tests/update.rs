//! Rolling updates through the whole loop: a job's template changes, and
//! its instances move onto it one batch at a time, each batch waiting for
//! the previous one to run. Tasks run on a simulated node.

mod common;

use anyhow::{Context, Result};
use common::{Agent, Controllers, eventually, phase, running_on, service, start};
use corral_api::job::{JobConditionType, JobReason};
use corral_api::{ConditionStatus, Job, Task, TaskPhase};
use corral_core::jobs::{TEMPLATE_ANNOTATION, template_hash};
use corral_node_agent::runtime::Simulated;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// When a task entered `phase` last, from its task events.
fn entered(t: &Task, phase: TaskPhase) -> Option<jiff::Timestamp> {
    t.status
        .as_ref()?
        .task_events
        .iter()
        .rev()
        .find(|e| e.status == phase)
        .map(|e| e.timestamp.0)
}

#[tokio::test]
async fn a_template_change_rolls_one_instance_at_a_time_and_a_scale_change_rolls_nothing()
-> Result<()> {
    let h = start().await?;
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let a = Agent::with_lease(h.client.clone(), "a", false, Simulated::default(), 40);
    let ctl = Controllers::start(&h.client);
    service(&h.client, "web", 3).await?;
    eventually("three instances running", || async {
        let mut n = 0;
        for i in 0..3 {
            n += usize::from(running_on(&tasks, &format!("web-{i}-0"), "a").await?);
        }
        Ok(n == 3)
    })
    .await?;

    jobs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"container": {"image": "busybox:1.37"}}})),
    )
    .await?;
    let current = template_hash(&jobs.get("web").await?.spec);
    eventually("every instance to run the new template", || async {
        let mut n = 0;
        for i in 0..3 {
            let name = format!("web-{i}-1");
            n += usize::from(running_on(&tasks, &name, "a").await?);
        }
        let job = jobs.get("web").await?;
        Ok(n == 3 && job.status.and_then(|s| s.updated_instances) == Some(3))
    })
    .await?;
    for i in 0..3 {
        let new = tasks.get(&format!("web-{i}-1")).await?;
        let template = new
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TEMPLATE_ANNOTATION));
        assert_eq!(template, Some(&current));
        assert_eq!(new.spec.container.image, "busybox:1.37");
        let old = tasks.get(&format!("web-{i}-0")).await?;
        assert_eq!(phase(&old), TaskPhase::Killed, "restarted, not failed");
    }
    // One at a time: instance i+1 was restarted only once i's new task ran.
    for i in 0..2 {
        let ran = entered(&tasks.get(&format!("web-{i}-1")).await?, TaskPhase::Running)
            .context("new task ran")?;
        let next = entered(
            &tasks.get(&format!("web-{}-0", i + 1)).await?,
            TaskPhase::Restarting,
        )
        .context("old task restarted")?;
        assert!(
            ran <= next,
            "instance {} restarted at {next} before {i} ran at {ran}",
            i + 1
        );
    }
    let job = jobs.get("web").await?;
    let progressing = job
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == JobConditionType::Progressing)
        })
        .context("Progressing condition")?;
    assert_eq!(
        (progressing.status, progressing.reason),
        (ConditionStatus::False, JobReason::UpdateComplete)
    );

    // Scaling is not a template change: nothing restarts.
    jobs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"instances": 4}})),
    )
    .await?;
    eventually("the fourth instance running", || async {
        running_on(&tasks, "web-3-0", "a").await
    })
    .await?;
    for i in 0..3 {
        let t = tasks.get(&format!("web-{i}-1")).await?;
        assert_eq!(phase(&t), TaskPhase::Running, "web-{i}-1 untouched");
    }

    a.stop().await?;
    ctl.stop().await
}
