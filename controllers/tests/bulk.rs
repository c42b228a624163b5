//! The controllers' bulk writes against the in-process server: a bulk
//! create stops after the request in which a task was refused; bindings
//! each get their result.

use anyhow::{Result, anyhow};
use corral_api::Task;
use corral_controllers::bulk::{self, CHUNK};
use kube::api::{Api, ListParams};
use serde_json::json;

fn task(name: &str, cpus: &str) -> Result<Task> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"job": "j", "role": "web", "instanceId": 0,
                 "resources": {"cpus": cpus, "memory": "1Gi"}, "container": {"image": "busybox"}}
    }))?)
}

#[tokio::test]
async fn a_refused_task_ends_a_bulk_create_after_its_request() -> Result<()> {
    let ts = corral_apiserver::testing::TestServer::start()
        .await
        .map_err(|e| anyhow!(e))?;
    ts.roles(&["web"]).await.map_err(|e| anyhow!(e))?;
    // Two requests' worth; the second task is invalid.
    let tasks = (0..CHUNK + 10)
        .map(|i| task(&format!("t{i}"), if i == 1 { "-1" } else { "1" }))
        .collect::<Result<Vec<_>>>()?;
    let results = bulk::create_tasks(&ts.client, "default", &tasks).await?;
    assert_eq!(results.len(), CHUNK, "no request after the refusal's");
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    assert!(results[1].as_ref().is_err_and(|e| e.code == 422));
    let stored = Api::<Task>::namespaced(ts.client.clone(), "default")
        .list(&ListParams::default())
        .await?;
    assert_eq!(stored.items.len(), CHUNK - 1);

    // Created again: every one is there already (409), which ends nothing.
    let valid: Vec<Task> = tasks
        .into_iter()
        .filter(|t| t.metadata.name.as_deref() != Some("t1"))
        .collect();
    let again = bulk::create_tasks(&ts.client, "default", &valid).await?;
    assert_eq!(again.len(), valid.len());
    assert_eq!(again.iter().filter(|r| r.is_ok()).count(), 10);

    // Bindings: one for a task that does not exist among good ones; each
    // has its result.
    let bindings: Vec<bulk::Binding> = ["t0", "nope", "t2"]
        .iter()
        .map(|t| bulk::Binding {
            task: (*t).into(),
            resource_version: None,
            node: "n1".into(),
            ports: Vec::new(),
            host_ip: None,
        })
        .collect();
    let bound = bulk::bind_tasks(&ts.client, "default", &bindings).await?;
    let codes: Vec<u16> = bound
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code, |()| 201))
        .collect();
    assert_eq!(codes, vec![201, 404, 201]);
    Ok(())
}
