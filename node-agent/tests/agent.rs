//! The agent with the simulated runtime, standing in for two nodes, together
//! with the controllers and the in-process API server: jobs run to their end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{eventually, start};
use corral_api::job::JobPhase;
use corral_api::{Job, Node, Task, TaskPhase};
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn job(name: &str, kind: &str, instances: u32, annotations: serde_json::Value) -> Result<Job> {
    Ok(serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"role": "analytics", "environment": "prod", "kind": kind, "instances": instances, "maxTaskFailures": 2,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox", "command": ["true"]}}}),
    )?)
}

#[tokio::test]
async fn simulated_nodes_run_jobs_to_their_end() -> Result<()> {
    let h = start().await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = AgentConfig {
        nodes: vec!["sim-0".into(), "sim-1".into()],
        resources: corral_node_agent::flags::resources("cpus=4,memory=8Gi")?,
        attributes: corral_node_agent::flags::attributes("rack=r1")?,
        reserved: corral_node_agent::flags::reserved("cpus(analytics)=1")?,
        lease_seconds: 40,
        renew_every: Duration::from_secs(10),
        log_endpoint: None,
        ..AgentConfig::new(Vec::new(), Default::default())
    };
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(Simulated::default())];
    let agent_task = tokio::spawn(agent::run(h.client.clone(), cfg, runtimes, stop_rx.clone()));
    let alloc = tokio::spawn(corral_controllers::allocation::run(
        h.client.clone(),
        corral_core::sched::Policy::Spread,
        stop_rx.clone(),
    ));
    let jobs_loop = tokio::spawn(corral_controllers::jobs::run(h.client.clone(), stop_rx));

    let nodes: Api<Node> = Api::all(h.client.clone());
    eventually("both simulated nodes to register", || async {
        Ok(nodes.list(&ListParams::default()).await?.items.len() == 2)
    })
    .await?;
    let n0 = nodes.get("sim-0").await?;
    assert_eq!(
        n0.status.as_ref().map(|s| s.static_reservations.len()),
        Some(1)
    );

    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    // An ad-hoc job that runs for a moment and exits 0.
    jobs.create(
        &PostParams::default(),
        &job(
            "quick",
            "adhoc",
            2,
            json!({"corral.dev/simulate-duration": "200ms"}),
        )?,
    )
    .await?;
    eventually("the ad-hoc job to succeed", || async {
        Ok(jobs.get("quick").await?.status.and_then(|s| s.phase) == Some(JobPhase::Succeeded))
    })
    .await?;
    let t = tasks.get("quick-0-0").await?;
    let phases: Vec<TaskPhase> = t
        .status
        .as_ref()
        .map(|s| s.task_events.iter().map(|e| e.status).collect())
        .unwrap_or_default();
    assert_eq!(
        phases,
        vec![
            TaskPhase::Pending,
            TaskPhase::Assigned,
            TaskPhase::Starting,
            TaskPhase::Running,
            TaskPhase::Finished
        ]
    );
    assert!(
        t.status.as_ref().context("status")?.task_events[2]
            .actor
            .starts_with("agent/sim-")
    );

    // One that fails: with maxTaskFailures 2, two attempts, then the job fails.
    jobs.create(
        &PostParams::default(),
        &job(
            "broken",
            "adhoc",
            1,
            json!({"corral.dev/simulate-duration": "100ms", "corral.dev/simulate-exit-code": "2"}),
        )?,
    )
    .await?;
    eventually("the failing job to fail after one retry", || async {
        Ok(jobs.get("broken").await?.status.and_then(|s| s.phase) == Some(JobPhase::Failed))
    })
    .await?;
    assert_eq!(
        tasks
            .get("broken-0-1")
            .await?
            .status
            .and_then(|s| s.exit_code),
        Some(2)
    );

    // A service runs until scaled down; the agent kills the extra instance.
    jobs.create(
        &PostParams::default(),
        &job("web", "service", 2, json!({}))?,
    )
    .await?;
    eventually("two web tasks running", || async {
        let ts = tasks
            .list(&ListParams::default().labels("corral.dev/job=web"))
            .await?
            .items;
        Ok(ts.len() == 2
            && ts
                .iter()
                .all(|t| t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Running)))
    })
    .await?;
    jobs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"instances": 1}})),
    )
    .await?;
    eventually("the extra instance to be killed by its agent", || async {
        Ok(tasks.get("web-1-0").await?.status.map(|s| s.phase()) == Some(TaskPhase::Killed))
    })
    .await?;
    assert_eq!(
        tasks.get("web-0-0").await?.status.map(|s| s.phase()),
        Some(TaskPhase::Running)
    );

    stop_tx.send(true)?;
    agent_task.await??;
    alloc.await?;
    tokio::time::timeout(Duration::from_secs(10), jobs_loop).await??;
    Ok(())
}
