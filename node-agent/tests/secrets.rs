//! Secrets in a task's environment (`valueFrom.secretKeyRef`), under RBAC:
//! the agent of the task's node reads them with its node credential as the
//! task starts — exactly the Secrets of tasks bound to it, nothing else —
//! and the task runs with the value, which appears in no object.

mod common;

use std::sync::Arc;

use anyhow::{Result, anyhow};
use common::eventually;
use corral_api::job::ContainerSpec;
use corral_api::{Task, TaskPhase};
use corral_apiserver::testing::TestServer;
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::runtime::ContainerRuntime;
use corral_node_agent::runtime::process::Process;
use corral_node_agent::secrets;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;

fn task(name: &str, env: serde_json::Value, command: &[&str]) -> Result<Task> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"job": "j", "role": "r", "instanceId": 0, "resources": {"cpus": 1, "memory": "64Mi"},
                 "container": {"image": "busybox", "command": command, "env": env}}}))?)
}

/// Creates `t` and binds it to `node` as the scheduler would.
async fn bound(admin: &kube::Client, t: &Task, node: &str) -> Result<()> {
    let tasks: Api<Task> = Api::namespaced(admin.clone(), "team-a");
    tasks.create(&PostParams::default(), t).await?;
    let binding = json!({"kind": "Binding", "target": {"kind": "Node", "name": node}});
    let name = t.metadata.name.clone().unwrap_or_default();
    tasks
        .create_subresource::<_, Task>("binding", &name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}

fn container(env: serde_json::Value) -> Result<ContainerSpec> {
    Ok(serde_json::from_value(
        json!({"image": "busybox", "command": ["true"], "env": env}),
    )?)
}

#[tokio::test]
async fn a_node_reads_the_secrets_of_its_tasks_and_runs_them_with_the_values() -> Result<()> {
    let store = Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let ts = TestServer::start_rbac(store, &[("n1-token", "system:node:n1", &["system:nodes"])])
        .await
        .map_err(|e| anyhow!(e))?;
    ts.roles(&["r"]).await.map_err(|e| anyhow!(e))?;
    let admin = ts.client.clone();
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-a"}}))?,
        )
        .await?;
    let secrets_api: Api<Secret> = Api::namespaced(admin.clone(), "team-a");
    for (name, data) in [
        ("db", json!({"password": "s3cret word"})),
        ("other", json!({"token": "not yours"})),
    ] {
        secrets_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))?,
            )
            .await?;
    }
    common::node(&admin, "n1", 4).await?;
    let node = ts.client_as("n1-token").await.map_err(|e| anyhow!(e))?;

    // Resolved with the node's credential, once a task bound there reads it.
    let env = json!([
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "db", "key": "absent", "optional": true}}},
        {"name": "PLAIN", "value": "v"},
    ]);
    let mut c = container(env.clone())?;
    let before = secrets::resolve(&node, "team-a", &mut c.clone()).await;
    assert!(
        before.as_ref().is_err_and(|e| e.contains("may not read")),
        "no task of n1 reads it yet: {before:?}"
    );
    bound(&admin, &task("reader-0-0", env, &["true"])?, "n1").await?;
    eventually("the node to read its task's secret", || {
        let (node, mut c) = (node.clone(), c.clone());
        async move { Ok(secrets::resolve(&node, "team-a", &mut c).await.is_ok()) }
    })
    .await?;
    secrets::resolve(&node, "team-a", &mut c)
        .await
        .map_err(|e| anyhow!(e))?;
    let values: Vec<(&str, &str)> = c
        .env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(values, [("PASSWORD", "s3cret word"), ("PLAIN", "v")]);
    assert!(c.env.iter().all(|e| e.value_from.is_none()));
    // Not a Secret no task of its reads, nor one of another namespace.
    let mut theirs = container(
        json!([{"name": "T", "valueFrom": {"secretKeyRef": {"name": "other", "key": "token"}}}]),
    )?;
    let refused = secrets::resolve(&node, "team-a", &mut theirs).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("may not read")),
        "{refused:?}"
    );
    // A key that is not there, not optional.
    let mut missing = container(
        json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "absent"}}}]),
    )?;
    let why = secrets::resolve(&node, "team-a", &mut missing).await;
    assert!(
        why.as_ref()
            .is_err_and(|e| e.contains("has no key \"absent\"")),
        "{why:?}"
    );

    // An agent with the process runtime runs a task with the value.
    let sandboxes = tempfile::tempdir()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = AgentConfig {
        log_endpoint: None,
        ..common::quick_config(
            "n1",
            corral_node_agent::flags::resources("cpus=4,memory=8Gi,disk=10Gi")?,
            40,
        )
    };
    let runtimes: Vec<Arc<dyn ContainerRuntime>> =
        vec![Arc::new(Process::new(sandboxes.path(), None))];
    let agent = tokio::spawn(agent::run(node.clone(), cfg, runtimes, stop_rx));
    let echo = json!([{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]);
    bound(
        &admin,
        &task("echo-0-0", echo, &["sh", "-c", "echo \"$PASSWORD\""])?,
        "n1",
    )
    .await?;
    let tasks: Api<Task> = Api::namespaced(admin.clone(), "team-a");
    eventually("the task to run with the secret and finish", || async {
        Ok(tasks
            .get("echo-0-0")
            .await?
            .status
            .is_some_and(|s| s.phase() == TaskPhase::Finished))
    })
    .await?;
    let out = std::fs::read_to_string(
        corral_node_agent::runtime::task_files_dir(sandboxes.path(), "team-a/echo-0-0")
            .join("stdout"),
    )?;
    assert_eq!(out, "s3cret word\n");
    let stored = serde_json::to_string(&tasks.get("echo-0-0").await?)?;
    assert!(!stored.contains("s3cret"), "the value is in no object");
    // A task whose Secret is missing fails to start, saying why.
    let absent =
        json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]);
    bound(&admin, &task("gone-0-0", absent, &["true"])?, "n1").await?;
    eventually("the task without its secret to fail", || async {
        Ok(tasks.get("gone-0-0").await?.status.is_some_and(|s| {
            s.phase() == TaskPhase::Failed
                && s.failure_reason == Some(corral_api::task::FailureReason::SecretUnavailable)
        }))
    })
    .await?;
    stop_tx.send(true)?;
    agent.await??;
    ts.shutdown().await;
    Ok(())
}
