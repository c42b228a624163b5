//! The web UI's server side under RBAC: the page is served to anyone with
//! its Content-Security-Policy; `/ui/api/history` needs a caller and answers
//! each only what they may read (the cluster's figures to those who may list
//! Nodes, a role's to those who may get it).

use std::sync::Arc;

use anyhow::{Result, anyhow};
use corral_apiserver::testing::{TestServer, simulated_node};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const USERS: &[(&str, &str, &[&str])] = &[("alice-token", "alice", &["team-a"])];

async fn history(client: &kube::Client) -> Result<Value, kube::Error> {
    let req = http::Request::get("/ui/api/history")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(req).await?;
    Ok(serde_json::from_str(&text).expect("json"))
}

#[tokio::test]
async fn the_ui_history_answers_each_user_what_they_may_read() -> Result<()> {
    let store = Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let ts = TestServer::start_rbac(store, USERS)
        .await
        .map_err(|e| anyhow!(e))?;
    ts.roles(&["web", "ops"]).await.map_err(|e| anyhow!(e))?;
    simulated_node(&ts.client, "n1", 8)
        .await
        .map_err(|e| anyhow!(e))?;
    let tasks: Api<corral_api::Task> = Api::namespaced(ts.client.clone(), "default");
    for (name, role) in [("w-0-0", "web"), ("o-0-0", "ops")] {
        let t: corral_api::Task = serde_json::from_value(json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"job": name, "role": role, "instanceId": 0, "resources": {"cpus": 2, "memory": "1Gi"},
                     "container": {"image": "x"}, "nodeName": "n1"}}))?;
        tasks.create(&PostParams::default(), &t).await?;
    }
    // alice may get the Role `web`, nothing else cluster-wide.
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "web-reader"},
        "rules": [{"apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["web"], "verbs": ["get"]}]}))?;
    Api::<ClusterRole>::all(ts.client.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "web-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "web-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}))?;
    Api::<ClusterRoleBinding>::all(ts.client.clone())
        .create(&PostParams::default(), &binding)
        .await?;

    // The admin: the whole cluster, as of a few seconds ago at most.
    corral_apiserver::testing::eventually("a sample with the node", || async {
        let h = history(&ts.client).await?;
        anyhow::Ok(
            h["samples"]
                .as_array()
                .and_then(|s| s.last())
                .is_some_and(|l| l["nodes"] == 1),
        )
    })
    .await?;
    let admin = history(&ts.client).await?;
    let last = admin["samples"]
        .as_array()
        .and_then(|s| s.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["allocatable"]["cpus"], 8.0, "{admin}");
    assert_eq!(last["allocated"]["cpus"], 4.0, "{admin}");
    assert_eq!(last["nodes"], 1);
    assert_eq!(last["roles"]["web"]["cpus"], 2.0);
    assert_eq!(last["roles"]["ops"]["cpus"], 2.0);
    assert_eq!(admin["nodeAllocated"]["n1"]["cpus"], 4.0);

    // alice: her role's figures only (the policy is built from the cache;
    // her binding may take a moment to count).
    let alice = ts.client_as("alice-token").await.map_err(|e| anyhow!(e))?;
    corral_apiserver::testing::eventually("alice to see web's figures", || async {
        let h = history(&alice).await?;
        let last = h["samples"]
            .as_array()
            .and_then(|s| s.last())
            .cloned()
            .unwrap_or_default();
        assert!(
            last["allocatable"].as_object().is_none_or(|o| o.is_empty()),
            "{h}"
        );
        assert!(last["roles"].get("ops").is_none(), "{h}");
        assert!(
            h["nodeAllocated"].as_object().is_none_or(|o| o.is_empty()),
            "{h}"
        );
        anyhow::Ok(last["roles"]["web"]["cpus"] == 2.0)
    })
    .await?;

    // A stranger gets 401; the page itself is anyone's, with its policy.
    let stranger = ts.client_as("not-a-token").await.map_err(|e| anyhow!(e))?;
    match history(&stranger).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let page = stranger
        .request_text(http::Request::get("/ui/").body(Vec::new())?)
        .await?;
    assert!(
        page.contains(r#"<script type="module" src="/ui/app.js">"#),
        "{page}"
    );
    ts.shutdown().await;
    Ok(())
}
