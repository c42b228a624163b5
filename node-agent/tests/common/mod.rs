//! Helpers for these tests: the shared in-process server, simulated nodes,
//! and waiting on a condition with a timeout.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use corral_api::{Job, Task, TaskPhase};
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::task::JoinHandle;

/// The server under test and an admin client for it.
pub struct Harness {
    pub client: kube::Client,
    pub server: corral_apiserver::testing::TestServer,
}

/// The Corral Roles these tests' jobs and tasks name.
pub const ROLES: &[&str] = &["analytics", "web", "r", "prod", "batch"];

/// A server with [`ROLES`].
pub async fn start() -> Result<Harness> {
    let server = corral_apiserver::testing::TestServer::start()
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    server.roles(ROLES).await.map_err(|e| anyhow::anyhow!(e))?;
    Ok(Harness {
        client: server.client.clone(),
        server,
    })
}

pub async fn node(client: &kube::Client, name: &str, cpus: i64) -> Result<()> {
    corral_apiserver::testing::simulated_node(client, name, cpus)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

/// Waits for `check` to hold, with anyhow errors (see the shared helper).
pub async fn eventually<F, Fut>(what: &str, check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    corral_apiserver::testing::eventually(what, check).await
}

/// A node agent with a short lease and its own stop switch.
pub struct Agent {
    pub runtime: Simulated,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<Result<(), agent::AgentError>>,
}

/// An agent's config for `node` with test-speed timers: its lease renewed
/// every 300 ms and its tasks reconciled every 500 ms.
pub fn quick_config(
    node: &str,
    resources: corral_api::Resources,
    lease_seconds: i32,
) -> AgentConfig {
    AgentConfig {
        lease_seconds,
        renew_every: Duration::from_millis(300),
        reconcile_every: Duration::from_millis(500),
        ..AgentConfig::new(vec![node.to_owned()], resources)
    }
}

impl Agent {
    pub fn start(client: kube::Client, node: &str, fence: bool, runtime: Simulated) -> Self {
        Self::with_lease(client, node, fence, runtime, 2)
    }

    pub fn with_lease(
        client: kube::Client,
        node: &str,
        fence: bool,
        runtime: Simulated,
        lease_seconds: i32,
    ) -> Self {
        let cfg = AgentConfig {
            fence,
            ..quick_config(
                node,
                serde_json::from_value(json!({"cpus": 4, "memory": "8Gi"})).unwrap_or_default(),
                lease_seconds,
            )
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(runtime.clone())];
        let task = tokio::spawn(agent::run(client, cfg, runtimes, stop_rx));
        Self {
            runtime,
            stop,
            task,
        }
    }

    pub fn runs(&self) -> Vec<String> {
        let mut r = self.runtime.running();
        r.sort();
        r
    }

    pub async fn stop(self) -> Result<()> {
        self.stop.send(true)?;
        tokio::time::timeout(Duration::from_secs(10), self.task).await???;
        Ok(())
    }
}

/// The allocation, job and node controllers.
pub struct Controllers {
    stop: tokio::sync::watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
}

impl Controllers {
    pub fn start(client: &kube::Client) -> Self {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let loops = vec![
            tokio::spawn({
                let (c, s) = (client.clone(), rx.clone());
                async move {
                    let _ = corral_controllers::allocation::run(
                        c,
                        corral_core::sched::Policy::BinPack,
                        s,
                    )
                    .await;
                }
            }),
            tokio::spawn(corral_controllers::jobs::run(client.clone(), rx.clone())),
            tokio::spawn(corral_controllers::nodes::run(client.clone(), rx)),
        ];
        Self { stop, loops }
    }

    pub async fn stop(self) -> Result<()> {
        self.stop.send(true)?;
        for l in self.loops {
            tokio::time::timeout(Duration::from_secs(10), l).await??;
        }
        Ok(())
    }
}

pub async fn service(client: &kube::Client, name: &str, instances: u32) -> Result<()> {
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": instances,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"},
                 "partitionPolicy": {"reschedule": true, "delaySeconds": 0}}}))?;
    Api::<Job>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &job)
        .await?;
    Ok(())
}

pub fn phase(t: &Task) -> TaskPhase {
    t.status
        .as_ref()
        .map(|s| s.phase())
        .unwrap_or(TaskPhase::Pending)
}

pub async fn running_on(tasks: &Api<Task>, name: &str, node: &str) -> Result<bool> {
    Ok(tasks.get_opt(name).await?.is_some_and(|t| {
        phase(&t) == TaskPhase::Running && t.spec.node_name.as_deref() == Some(node)
    }))
}
