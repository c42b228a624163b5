//! Every controller that `run_all` runs reads one shared watch per kind:
//! the API server serves one watch of Tasks to the whole process, not one
//! per controller.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{eventually, node, start};
use corral_api::{Job, Task};
use kube::api::{Api, PostParams};
use serde_json::json;

/// The watches of `resource` the server has started, from its metrics.
async fn watches_started(client: &kube::Client, resource: &str) -> Result<u64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let needle = format!(r#"verb="WATCH",group="corral.dev",resource="{resource}",subresource="""#);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

#[tokio::test]
async fn all_controllers_share_one_watch_per_kind() -> Result<()> {
    let h = start().await?;
    h.roles(&["web"]).await?;
    node(&h.client, "n1", 8).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = corral_controllers::metrics::Metrics::new();
    let all = tokio::spawn(corral_controllers::run_all(
        corral_controllers::Clients::one(h.client.clone()),
        corral_controllers::Settings::default(),
        metrics.clone(),
        stop_rx,
    ));
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "svc", "namespace": "default"},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": 2,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"}}}))?;
    jobs.create(&PostParams::default(), &job).await?;
    // The job controller made the tasks, the allocation loop bound them,
    // and the role controller counted them: every controller is at work.
    eventually("both tasks to be bound and counted", || async {
        let bound = tasks
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|t| t.spec.node_name.is_some())
            .count();
        let role: corral_api::Role = Api::all(h.client.clone()).get("web").await?;
        let counted = role
            .status
            .is_some_and(|s| s.allocated.0.contains_key("cpus"));
        Ok(bound == 2 && counted)
    })
    .await?;
    for (resource, most) in [("tasks", 1), ("jobs", 1), ("nodes", 1), ("roles", 1)] {
        let started = watches_started(&h.client, resource).await?;
        assert!(
            (1..=most).contains(&started),
            "{started} watches of {resource} for six controllers"
        );
    }
    // What they counted, and the cluster as their caches show it.
    let wanted = [
        r#"corral_scheduler_schedule_attempts_total{result="scheduled"} "#,
        r#"corral_job_reconciles_total{result="success"}"#,
        r#"corral_task_time_to_assigned_seconds_count{role="web"} 2"#,
        r#"corral_node_resource_allocated{node="n1",resource="cpus",unit="core"} 2.0"#,
        r#"corral_cluster_resource_allocatable{resource="cpus",unit="core"} 8.0"#,
        r#"corral_node_ready{node="n1"} 1.0"#,
        r#"corral_role_resource_allocated{role="web",resource="cpus",unit="core"} 2.0"#,
        r#"corral_tasks{role="web",phase="ASSIGNED"} 2.0"#,
        "corral_scheduler_cycle_duration_seconds_count",
        "corral_scheduler_binding_duration_seconds_count",
    ];
    eventually("the metrics to show both tasks", || async {
        let text = metrics.scrape()?;
        Ok(wanted
            .iter()
            .all(|series| text.lines().any(|l| l.starts_with(series))))
    })
    .await?;
    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), all).await??;
    // Stopped, the controllers leave the cluster's figures to the next leader.
    assert!(!metrics.scrape()?.contains("corral_node_ready"));
    Ok(())
}
