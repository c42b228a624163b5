//! An agent killed between a task's exit and its report, while the API
//! server is unreachable, reports the exit once both are back: the task
//! ends as it really did (FAILED with its exit code), never LOST, so an
//! ad-hoc task is not run again.

mod common;

use std::sync::Arc;

use anyhow::{Result, anyhow};
use common::eventually;
use corral_api::{Task, TaskPhase};
use corral_apiserver::testing::{Relay, TestServer};
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::checkpoint::Checkpoints;
use corral_node_agent::runtime::ContainerRuntime;
use corral_node_agent::runtime::process::Process;
use kube::api::{Api, PostParams};
use serde_json::json;

fn config(checkpoints: &Checkpoints) -> Result<AgentConfig> {
    Ok(AgentConfig {
        checkpoints: Some(checkpoints.clone()),
        ..common::quick_config(
            "n1",
            corral_node_agent::flags::resources("cpus=4,memory=8Gi,disk=10Gi")?,
            40,
        )
    })
}

fn runtimes(
    sandboxes: &std::path::Path,
    checkpoints: &Checkpoints,
) -> Vec<Arc<dyn ContainerRuntime>> {
    vec![Arc::new(Process::keeping_ends(
        sandboxes,
        None,
        Some(checkpoints.clone()),
    ))]
}

fn phases(t: &Task) -> Vec<TaskPhase> {
    t.status
        .as_ref()
        .map(|s| s.task_events.iter().map(|e| e.status).collect())
        .unwrap_or_default()
}

#[test]
fn an_exit_kept_on_disk_is_reported_once_after_the_agent_restarts() -> Result<()> {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The first agent runs in a runtime of its own: dropping it kills the
    // agent and everything it was doing, as a SIGKILL would.
    let first_agent = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let (sandboxes, go) = (dir.path().join("sandboxes"), dir.path().join("go"));
    std::fs::create_dir_all(&sandboxes)?;
    let checkpoints = Checkpoints::open(dir.path().join("checkpoints"))?;

    let (ts, relay, tasks) = main.block_on(async {
        let ts = TestServer::start().await.map_err(|e| anyhow!(e))?;
        ts.roles(&["r"]).await.map_err(|e| anyhow!(e))?;
        common::node(&ts.client, "n1", 4).await?;
        let relay = Relay::start(&ts.url).await.map_err(|e| anyhow!(e))?;
        let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
        anyhow::Ok((ts, relay, tasks))
    })?;
    let (_stop_first, stop_rx) = tokio::sync::watch::channel(false);
    first_agent.block_on(async {
        let client = ts.admin_via(&relay.url).await.map_err(|e| anyhow!(e))?;
        tokio::spawn(agent::run(
            client,
            config(&checkpoints)?,
            runtimes(&sandboxes, &checkpoints),
            stop_rx,
        ));
        anyhow::Ok(())
    })?;

    main.block_on(async {
        // An ad-hoc task that exits 3 once told to.
        let script = format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exit 3",
            go.display()
        );
        let t: Task = serde_json::from_value(json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "once-0-0", "namespace": "default"},
            "spec": {"job": "once", "role": "r", "instanceId": 0,
                     "resources": {"cpus": 1, "memory": "64Mi"},
                     "container": {"image": "busybox", "command": ["sh", "-c", script]}}}))?;
        tasks.create(&PostParams::default(), &t).await?;
        let binding = json!({"kind": "Binding", "target": {"kind": "Node", "name": "n1"}});
        tasks
            .create_subresource::<_, Task>("binding", "once-0-0", &PostParams::default(), &binding)
            .await?;
        eventually("the task to run", || async {
            Ok(tasks
                .get("once-0-0")
                .await?
                .status
                .is_some_and(|s| s.phase() == TaskPhase::Running))
        })
        .await?;
        // The API server becomes unreachable, then the task exits: its end
        // is kept on the agent's disk.
        relay.cut(true);
        std::fs::write(&go, b"")?;
        eventually("the end to be kept on disk", || async {
            Ok(checkpoints.load().len() == 1)
        })
        .await?;
        anyhow::Ok(())
    })?;
    // The agent dies before it could report the end.
    first_agent.shutdown_background();

    main.block_on(async {
        assert_eq!(
            tasks.get("once-0-0").await?.status.map(|s| s.phase()),
            Some(TaskPhase::Running),
            "the end was never reported"
        );
        relay.cut(false);
        let client = ts.admin_via(&relay.url).await.map_err(|e| anyhow!(e))?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let agent = tokio::spawn(agent::run(
            client,
            config(&checkpoints)?,
            runtimes(&sandboxes, &checkpoints),
            stop_rx,
        ));
        eventually("the kept end to be reported", || async {
            Ok(tasks
                .get("once-0-0")
                .await?
                .status
                .is_some_and(|s| s.phase().is_terminal()))
        })
        .await?;
        let t = tasks.get("once-0-0").await?;
        let status = t.status.clone().unwrap_or_default();
        assert_eq!(status.phase(), TaskPhase::Failed, "{status:?}");
        assert_eq!(
            phases(&t)
                .iter()
                .filter(|p| p.is_terminal())
                .collect::<Vec<_>>(),
            vec![&TaskPhase::Failed],
            "one end, and no LOST: {:?}",
            phases(&t)
        );
        assert_eq!(status.exit_code, Some(3), "{status:?}");
        eventually("the kept end to be forgotten", || async {
            Ok(checkpoints.load().is_empty())
        })
        .await?;
        stop.send(true)?;
        tokio::time::timeout(std::time::Duration::from_secs(10), agent).await???;
        anyhow::Ok(())
    })
}
