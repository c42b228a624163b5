//! Helpers for these tests: the shared in-process server, its Corral Roles,
//! simulated nodes,
//! and waiting on a condition with a timeout.

#![allow(dead_code)]

use anyhow::Result;

/// The server under test and an admin client for it.
pub struct Harness {
    pub client: kube::Client,
    server: corral_apiserver::testing::TestServer,
}

impl Harness {
    /// Creates the Corral Roles `names` (weight 1) the test's tasks name.
    pub async fn roles(&self, names: &[&str]) -> Result<()> {
        self.server
            .roles(names)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }
}

pub async fn start() -> Result<Harness> {
    let server = corral_apiserver::testing::TestServer::start()
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
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

/// Registers node `name` (16 CPUs, Ready) offering host ports
/// `begin..=end` at `address`, as an agent would.
pub async fn node_offering_ports(
    client: &kube::Client,
    name: &str,
    (begin, end): (u16, u16),
    address: &str,
) -> Result<()> {
    use kube::api::{Api, Patch, PatchParams, PostParams};
    let nodes: Api<corral_api::Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {}}))?,
        )
        .await?;
    let status = serde_json::json!({"status": {"allocatable": {"cpus": 16, "memory": "16Gi"}, "total": {"cpus": 16, "memory": "16Gi"},
        "portRanges": [{"begin": begin, "end": end}], "addresses": [{"type": "InternalIP", "address": address}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

/// Runs what is assigned and ends what is killed (whatever kill: a
/// request, a restart, a preemption, a drain), as an agent would report.
pub fn stand_in_agent(client: kube::Client) -> tokio::task::JoinHandle<()> {
    use corral_api::{Task, TaskPhase};
    use corral_core::lifecycle::{self, Event};
    use futures::StreamExt;
    use kube::api::{Api, Patch, PatchParams};
    use kube::runtime::{WatchStreamExt, watcher};
    tokio::spawn(async move {
        let api: Api<Task> = Api::namespaced(client, "default");
        let mut tasks = watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(t)) = tasks.next().await {
            let Some(status) = t.status.clone() else {
                continue;
            };
            let events: &[Event] = match status.phase() {
                TaskPhase::Assigned => &[Event::AgentStarting, Event::AgentRunning],
                p if p.is_being_killed() => &[Event::AgentKilled],
                _ => continue,
            };
            let mut next = status;
            for e in events {
                let _ = lifecycle::apply(&mut next, e, jiff::Timestamp::now(), "agent");
            }
            // Conditional: a newer version is what this watch sees next.
            let patch = serde_json::json!({"metadata": {"resourceVersion": t.metadata.resource_version}, "status": next});
            let _ = api
                .patch_status(
                    t.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await;
        }
    })
}
