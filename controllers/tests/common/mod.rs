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
