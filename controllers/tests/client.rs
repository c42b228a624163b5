//! Corral's own clients speak HTTP/2 to its server: one process's
//! concurrent requests and watches share one TLS connection.

use anyhow::{Result, anyhow};
use corral_api::Task;
use futures::StreamExt;
use kube::api::{Api, ListParams, WatchParams};

/// The TLS connections the server accepted speaking `protocol`.
async fn connections(client: &kube::Client, protocol: &str) -> Result<u64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let needle = format!(r#"apiserver_tls_connections_total{{protocol="{protocol}"}} "#);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&needle)?.parse().ok())
        .unwrap_or(0))
}

#[tokio::test]
async fn one_connection_carries_every_request_and_watch() -> Result<()> {
    let ts = corral_apiserver::testing::TestServer::start()
        .await
        .map_err(|e| anyhow!(e))?;
    let kc = kube::config::Kubeconfig::from_yaml(&ts.pki.kubeconfig(&ts.url))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = corral_controllers::client::connect(config)?;
    let before = connections(&ts.client, "h2").await?;

    let tasks: Api<Task> = Api::all(client.clone());
    let mut watches = Vec::new();
    for _ in 0..3 {
        watches.push(tasks.watch(&WatchParams::default(), "0").await?.boxed());
    }
    let lp = ListParams::default();
    let lists = (0..32).map(|_| tasks.list(&lp));
    for list in futures::future::join_all(lists).await {
        list?;
    }
    // The watches are still open on it.
    corral_apiserver::testing::simulated_node(&client, "n1", 4)
        .await
        .map_err(|e| anyhow!(e))?;

    assert_eq!(
        connections(&ts.client, "h2").await? - before,
        1,
        "35 concurrent requests over one HTTP/2 connection"
    );
    drop(watches);
    Ok(())
}
