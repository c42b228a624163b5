//! Task logs through the API server's `log` subresource, proxied from an
//! agent's log endpoint, in-process: whole, tailed, followed as the task
//! writes, stderr; and the endpoint's security: a client without a
//! certificate from Corral's CA is refused, one with a certificate is
//! authorized by the API server (a tenant reads no log there, a monitoring
//! identity reads the agent's metrics and nothing else), and a node
//! advertising another certificate is not trusted.

use std::io::Write as _;

use anyhow::{Context, Result};
use corral_apiserver::testing::{TestServer, eventually, simulated_node};
use corral_node_agent::logs;
use futures::AsyncReadExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

async fn get(client: &kube::Client, url: &str) -> Result<String, kube::Error> {
    client
        .request_text(http::Request::get(url).body(Vec::new()).expect("request"))
        .await
}

const URL: &str = "/apis/corral.dev/v1alpha1/namespaces/default/tasks/talk-0-0/log";

#[tokio::test]
async fn task_logs_are_proxied_from_the_agent_and_only_to_corrals_ca() -> Result<()> {
    // RBAC decides, as in `corral server`: the agent asks it who may read.
    let store = std::sync::Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let server = TestServer::start_rbac(store, &[])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    server
        .roles(&["r"])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = server.client.clone();
    let sandboxes = tempfile::tempdir()?;
    let dirs = corral_node_agent::runtime::prepare_sandbox(sandboxes.path(), "default/talk-0-0")?;
    let output = dirs.files.clone();
    std::fs::write(output.join("stdout"), "one\ntwo\nthree\n")?;
    std::fs::write(output.join("stderr"), "oops\n")?;
    // What a task can write is its sandbox: a link there named like its
    // output, to a host file, is never what `corral logs` serves.
    std::fs::write(sandboxes.path().join("host-secret"), "the agent's key")?;
    std::os::unix::fs::symlink(
        sandboxes.path().join("host-secret"),
        dirs.sandbox.join("stdout"),
    )?;
    let metrics = corral_node_agent::metrics::AgentMetrics::new();
    let endpoint = logs::serve(
        "127.0.0.1:0".parse()?,
        None,
        server.pki.ca_pem.as_bytes(),
        sandboxes.path().to_owned(),
        std::sync::Arc::new(corral_endpoint::Authorizer::new(client.clone())),
        metrics.clone(),
    )
    .await?;

    simulated_node(&client, "n1", 4)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let nodes: Api<corral_api::Node> = Api::all(client.clone());
    let advertise = |sha: &str| json!({"status": {"logEndpoint": {"url": endpoint.url, "certificateSha256": sha}}});
    nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(advertise(&endpoint.certificate_sha256)),
        )
        .await?;
    let tasks: Api<corral_api::Task> = Api::namespaced(client.clone(), "default");
    let task: corral_api::Task = serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "talk-0-0", "namespace": "default"},
        "spec": {"job": "talk", "role": "r", "instanceId": 0, "resources": {"cpus": 1, "memory": "64Mi"},
                 "container": {"image": "x"}, "nodeName": "n1"}}))?;
    tasks.create(&PostParams::default(), &task).await?;

    // Whole, tailed, stderr.
    assert_eq!(get(&client, URL).await?, "one\ntwo\nthree\n");
    // Even a link where the output should be (only the agent writes there,
    // but should one appear) is not followed.
    let other = corral_node_agent::runtime::prepare_sandbox(sandboxes.path(), "default/leak-0-0")?;
    std::fs::remove_file(other.files.join("stdout"))?;
    std::os::unix::fs::symlink(
        sandboxes.path().join("host-secret"),
        other.files.join("stdout"),
    )?;
    let leak: corral_api::Task = serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "leak-0-0", "namespace": "default"},
        "spec": {"job": "leak", "role": "r", "instanceId": 0, "resources": {"cpus": 1, "memory": "64Mi"},
                 "container": {"image": "x"}, "nodeName": "n1"}}))?;
    tasks.create(&PostParams::default(), &leak).await?;
    match get(
        &client,
        "/apis/corral.dev/v1alpha1/namespaces/default/tasks/leak-0-0/log",
    )
    .await
    {
        Ok(body) => assert!(
            !body.contains("agent's key"),
            "served through a link: {body}"
        ),
        Err(e) => assert!(!e.to_string().contains("agent's key"), "{e}"),
    }
    assert_eq!(
        get(&client, &format!("{URL}?tailLines=1")).await?,
        "three\n"
    );
    assert_eq!(
        get(&client, &format!("{URL}?stream=stderr")).await?,
        "oops\n"
    );

    // Followed: what the task writes next arrives on the open response.
    {
        let body = client
            .request_stream(
                http::Request::get(format!("{URL}?follow=true&tailLines=0")).body(Vec::new())?,
            )
            .await?;
        let mut body = std::pin::pin!(body);
        std::fs::OpenOptions::new()
            .append(true)
            .open(output.join("stdout"))?
            .write_all(b"four\n")?;
        let mut got = vec![0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), body.read(&mut got))
            .await
            .context("no followed output within 10 s")??;
        assert_eq!(&got[..n], b"four\n");
    } // Closing the response ends the follow, at the server and the agent.

    // A task that is nowhere yet has no log: a clear 400, not a hang.
    let pending: corral_api::Task = serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "later-0-0", "namespace": "default"},
        "spec": {"job": "later", "role": "r", "instanceId": 0, "resources": {"cpus": 1, "memory": "64Mi"},
                 "container": {"image": "x"}}}))?;
    tasks.create(&PostParams::default(), &pending).await?;
    match get(
        &client,
        "/apis/corral.dev/v1alpha1/namespaces/default/tasks/later-0-0/log",
    )
    .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 400);
            assert!(s.message.contains("not on a node yet"), "{}", s.message);
        }
        other => panic!("expected 400, got {other:?}"),
    }

    // Without a client certificate from Corral's CA, the agent refuses.
    let refused = corral_apiserver::transport::logs::fetch(
        &endpoint.url,
        &endpoint.certificate_sha256,
        None,
        "/logs/default/talk-0-0",
    )
    .await;
    let refused = match refused {
        Err(e) => e,
        // TLS 1.3 may report the missing certificate only on the first read.
        Ok(resp) => {
            use http_body_util::BodyExt;
            match resp.into_body().collect().await {
                Err(e) => e.to_string(),
                Ok(b) => panic!("served without a client certificate: {:?}", b.to_bytes()),
            }
        }
    };
    assert!(!refused.is_empty());

    // A certificate from Corral's CA is authorized by the API server: a
    // tenant's reads no log here; a monitoring identity reads the metrics
    // and no log.
    let as_user = |user: &str, groups: &[&str]| -> Result<_> {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        let (cert, key) = server.pki.issue_client(
            user,
            &groups,
            jiff::Timestamp::now(),
            jiff::SignedDuration::from_hours(1),
        )?;
        corral_apiserver::transport::logs::AgentLink::from_pem(&cert, &key)
            .map_err(|e| anyhow::anyhow!(e))
    };
    let answer = |link: corral_apiserver::transport::logs::AgentLink, path: &'static str| {
        let (url, sha) = (endpoint.url.clone(), endpoint.certificate_sha256.clone());
        async move {
            use http_body_util::BodyExt;
            let resp = corral_apiserver::transport::logs::fetch(&url, &sha, Some(&link), path)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let code = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((code, String::from_utf8_lossy(&body).into_owned()))
        }
    };
    let tenant = as_user("alice", &[])?;
    let (code, body) = answer(tenant.clone(), "/logs/default/talk-0-0").await?;
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("one"), "{body}");
    assert_eq!(answer(tenant, "/metrics").await?.0, 403);
    let monitoring = as_user("prometheus", &["system:monitoring"])?;
    let (code, body) = answer(monitoring.clone(), "/metrics").await?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("# TYPE corral_agent_tasks gauge"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(answer(monitoring, "/logs/default/talk-0-0").await?.0, 403);

    // A node advertising another certificate is not trusted.
    nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(advertise(&"0".repeat(64))),
        )
        .await?;
    eventually("the pinned certificate to be refused", || async {
        match get(&client, URL).await {
            Err(kube::Error::Api(s)) if s.code == 502 => {
                anyhow::ensure!(
                    s.message.contains("not the one its node advertises"),
                    "{}",
                    s.message
                );
                Ok(true)
            }
            _ => Ok(false),
        }
    })
    .await?;
    server.shutdown().await;
    Ok(())
}
