//! Helpers for these tests: the shared in-process server, simulated nodes,
//! and waiting on a condition with a timeout.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Result, bail};

/// The server under test and an admin client for it.
pub struct Harness {
    pub client: kube::Client,
    _server: corral_apiserver::testing::TestServer,
}

pub async fn start() -> Result<Harness> {
    let server = corral_apiserver::testing::TestServer::start()
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Harness {
        client: server.client.clone(),
        _server: server,
    })
}

pub async fn node(client: &kube::Client, name: &str, cpus: i64) -> Result<()> {
    corral_apiserver::testing::simulated_node(client, name, cpus)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
