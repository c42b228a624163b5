//! An agent holding the shared agent credential (group `corral:agents`, as
//! the Helm chart issues it) under RBAC: the bootstrap `corral:agent` role is
//! enough for it to register its node, renew its lease, run a task and
//! report it, and its credential still cannot run jobs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use common::eventually;
use corral_api::{Job, Node, Task, TaskPhase};
use corral_apiserver::testing::TestServer;
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn the_agent_role_is_enough_to_run_tasks_and_no_more() -> Result<()> {
    let store = Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let ts = TestServer::start_rbac(
        store,
        &[("agent-token", "corral-agent", &["corral:agents"])],
    )
    .await
    .map_err(|e| anyhow!(e))?;
    let agent_client = ts.client_as("agent-token").await.map_err(|e| anyhow!(e))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = AgentConfig {
        lease_seconds: 40,
        renew_every: Duration::from_millis(300),
        reconcile_every: Duration::from_millis(500),
        log_endpoint: None,
        ..AgentConfig::new(
            vec!["sim-0".into()],
            corral_node_agent::flags::resources("cpus=4,memory=8Gi")?,
        )
    };
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(Simulated::default())];
    let agent = tokio::spawn(agent::run(
        agent_client.clone(),
        cfg,
        runtimes,
        stop_rx.clone(),
    ));
    // The controllers run as the administrator, as `corral server` runs them.
    let alloc = tokio::spawn(corral_controllers::allocation::run(
        ts.client.clone(),
        corral_core::sched::Policy::BinPack,
        stop_rx.clone(),
    ));
    let jobs_loop = tokio::spawn(corral_controllers::jobs::run(ts.client.clone(), stop_rx));

    let nodes: Api<Node> = Api::all(ts.client.clone());
    eventually("the agent to register its node", || async {
        Ok(nodes
            .get_opt("sim-0")
            .await?
            .is_some_and(|n| n.status.is_some()))
    })
    .await?;
    let job: Job =
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": 1,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"}}}))?;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    jobs.create(&PostParams::default(), &job).await?;
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    eventually("the agent to run the task and report it", || async {
        Ok(tasks
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|t| t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Running)))
    })
    .await?;
    // Its credential runs nothing of its own accord.
    let mut other = job.clone();
    other.metadata.name = Some("agent-job".into());
    let refused = Api::<Job>::namespaced(agent_client, "default")
        .create(&PostParams::default(), &other)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403),
        "{refused:?}"
    );
    stop_tx.send(true)?;
    alloc.await??;
    jobs_loop.await?;
    agent.await??;
    ts.shutdown().await;
    Ok(())
}
