//! An agent's status reports go in bulk and survive conflicts: with another
//! writer changing the tasks' status all along (each change a new version,
//! so the agent's conditional writes conflict), every task of a service
//! still ends RUNNING with STARTING before RUNNING in its history, in far
//! fewer requests than tasks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::{Controllers, eventually, phase, quick_config, service, start};
use corral_api::{Task, TaskPhase};
use corral_node_agent::agent;
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const INSTANCES: usize = 40;

/// The bulk status requests the server answered, from its metrics.
async fn bulk_reports(client: &kube::Client) -> Result<u64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let needle = r#"verb="POST",group="corral.dev",resource="tasks",subresource="status""#;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

#[tokio::test]
async fn reports_go_in_bulk_and_survive_conflicting_writers() -> Result<()> {
    let h = start().await?;
    let resources = corral_node_agent::flags::resources("cpus=64,memory=128Gi")?;
    let cfg = quick_config("n1", resources, 10);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(Simulated::default())];
    let agent = tokio::spawn(agent::run(h.client.clone(), cfg, runtimes, stop_rx));
    let controllers = Controllers::start(&h.client);
    let tasks: Api<Task> = Api::namespaced(h.client.clone(), "default");

    // Another writer: every task's status message, rewritten unconditionally
    // every few milliseconds until every task runs.
    let (quiet, mut quiet_rx) = tokio::sync::watch::channel(false);
    let meddler = tokio::spawn({
        let tasks = tasks.clone();
        async move {
            let mut round = 0u64;
            while !*quiet_rx.borrow() {
                round += 1;
                for t in tasks.list(&ListParams::default()).await?.items {
                    let name = t.metadata.name.unwrap_or_default();
                    let patch = json!({"status": {"message": format!("meddled {round}")}});
                    let _ = tasks
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await;
                }
                tokio::select! {
                    _ = quiet_rx.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
            anyhow::Ok(round)
        }
    });

    service(&h.client, "web", u32::try_from(INSTANCES)?).await?;
    eventually("every instance to run", || async {
        let all = tasks.list(&ListParams::default()).await?.items;
        Ok(all.len() == INSTANCES && all.iter().all(|t| phase(t) == TaskPhase::Running))
    })
    .await?;
    quiet.send(true)?;
    let rounds = meddler.await??;
    assert!(rounds > 1, "the other writer wrote");

    for t in tasks.list(&ListParams::default()).await?.items {
        let history: Vec<TaskPhase> = t
            .status
            .as_ref()
            .map(|s| s.task_events.iter().map(|e| e.status).collect())
            .unwrap_or_default();
        let at = |p: TaskPhase| history.iter().position(|h| *h == p);
        assert!(
            matches!((at(TaskPhase::Starting), at(TaskPhase::Running)), (Some(s), Some(r)) if s < r),
            "{:?}: STARTING then RUNNING, in {history:?}",
            t.metadata.name
        );
    }
    let requests = bulk_reports(&h.client).await?;
    assert!(
        (1..INSTANCES as u64).contains(&requests),
        "{requests} bulk report requests for {INSTANCES} tasks"
    );

    stop.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), agent).await???;
    controllers.stop().await?;
    Ok(())
}
