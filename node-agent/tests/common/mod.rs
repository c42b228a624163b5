//! A harness for the agent tests: the API server in-process over
//! the embedded store, a kube client, simulated nodes, and waiting on conditions.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use corral_api::Node;
use corral_apiserver::pki::{Pki, Tokens};
use corral_apiserver::{Api as Server, Authn, Registry};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

pub struct Harness {
    pub client: kube::Client,
    _server: corral_apiserver::RunningServer,
    _dir: tempfile::TempDir,
}

pub async fn start() -> Result<Harness> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::load_or_create(&dir.path().join("pki"), &[])?;
    let api = Server::new(
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        Registry::standard(),
    );
    corral_apiserver::rest::ensure_default_namespaces(&api).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = corral_apiserver::serve(
        api,
        listener,
        Some(pki.server_config()?),
        Authn::Required(Arc::new(Tokens::load(&pki.token_file)?)),
    )?;
    let kc = kube::config::Kubeconfig::from_yaml(
        &pki.kubeconfig(&format!("https://{}", server.local_addr)),
    )?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?,
    )?;
    Ok(Harness {
        client,
        _server: server,
        _dir: dir,
    })
}

pub async fn node(client: &kube::Client, name: &str, cpus: i64) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let n: Node = serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node", "metadata": {"name": name}, "spec": {"attributes": {"rack": "r1"}}}),
    )?;
    nodes.create(&PostParams::default(), &n).await?;
    let status = json!({"status": {"allocatable": {"cpus": cpus, "memory": "8Gi"}, "total": {"cpus": cpus, "memory": "8Gi"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
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
