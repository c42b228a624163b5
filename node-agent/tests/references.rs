//! A task's environment read from itself (`valueFrom.fieldRef`) and from
//! another job's endpoints (`valueFrom.endpointRef`), under RBAC: the agent
//! of the task's node fills them in as the task starts, reading only the
//! EndpointSlices of jobs its own tasks look up; a task whose job has no
//! ready instance waits in STARTING, and one killed while it waits never
//! runs.

mod common;

use std::sync::Arc;

use anyhow::{Result, anyhow};
use common::eventually;
use corral_api::{Task, TaskPhase};
use corral_apiserver::testing::TestServer;
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::runtime::ContainerRuntime;
use corral_node_agent::runtime::process::Process;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const NS: &str = "team-a";

fn task(name: &str, env: serde_json::Value, command: &[&str]) -> Result<Task> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"job": "worker", "role": "r", "instanceId": 0, "resources": {"cpus": 1, "memory": "64Mi"},
                 "container": {"image": "busybox", "command": command, "env": env}}}))?)
}

/// Creates `t` and binds it to `node` at `host_ip`, as the scheduler would.
async fn bound(admin: &kube::Client, t: &Task, node: &str, host_ip: &str) -> Result<()> {
    let tasks: Api<Task> = Api::namespaced(admin.clone(), NS);
    tasks.create(&PostParams::default(), t).await?;
    let binding =
        json!({"kind": "Binding", "target": {"kind": "Node", "name": node}, "hostIP": host_ip});
    let name = t.metadata.name.clone().unwrap_or_default();
    tasks
        .create_subresource::<_, Task>("binding", &name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// The slice Corral's discovery controller keeps for job `master`, with one
/// instance at 10.1.2.3 serving port `spark` on 31077.
fn master_slice(manager: &str, ready: bool) -> Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("master-{manager}"), "labels": {
            "kubernetes.io/service-name": "master",
            "endpointslice.kubernetes.io/managed-by": manager}},
        "addressType": "IPv4",
        "ports": [{"name": "spark", "port": 31077, "protocol": "TCP"}],
        "endpoints": [{"addresses": [if manager == corral_api::discovery::ENDPOINTS_MANAGER { "10.1.2.3" } else { "6.6.6.6" }],
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "targetRef": {"kind": "Task", "name": "master-0-0", "namespace": NS}}]
    }))?)
}

async fn phase(tasks: &Api<Task>, name: &str) -> Result<TaskPhase> {
    Ok(tasks
        .get(name)
        .await?
        .status
        .map_or(TaskPhase::Pending, |s| s.phase()))
}

#[tokio::test]
async fn a_task_waits_for_the_job_it_looks_up_and_starts_with_its_address() -> Result<()> {
    let store = Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let ts = TestServer::start_rbac(store, &[("n1-token", "system:node:n1", &["system:nodes"])])
        .await
        .map_err(|e| anyhow!(e))?;
    ts.roles(&["r"]).await.map_err(|e| anyhow!(e))?;
    let admin = ts.client.clone();
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;
    common::node(&admin, "n1", 4).await?;
    let node = ts.client_as("n1-token").await.map_err(|e| anyhow!(e))?;
    let slices_as_node: Api<EndpointSlice> = Api::namespaced(node.clone(), NS);
    let by_job =
        |job: &str| ListParams::default().labels(&format!("kubernetes.io/service-name={job}"));
    assert!(
        slices_as_node.list(&by_job("master")).await.is_err(),
        "no task of n1 looks master up yet"
    );

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

    let env = json!([
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "MASTER", "valueFrom": {"endpointRef": {"job": "master", "port": "spark"}}},
    ]);
    let echo = ["sh", "-c", "echo \"$NAME on $HOST joins $MASTER\""];
    bound(
        &admin,
        &task("worker-0-0", env.clone(), &echo)?,
        "n1",
        "10.9.9.9",
    )
    .await?;
    bound(&admin, &task("worker-1-0", env, &echo)?, "n1", "10.9.9.9").await?;
    let tasks: Api<Task> = Api::namespaced(admin.clone(), NS);
    eventually("both workers to wait in STARTING", || async {
        Ok(phase(&tasks, "worker-0-0").await? == TaskPhase::Starting
            && phase(&tasks, "worker-1-0").await? == TaskPhase::Starting)
    })
    .await?;
    // The node may now read master's slices, and no other job's.
    slices_as_node.list(&by_job("master")).await?;
    assert!(slices_as_node.list(&by_job("web")).await.is_err());
    assert!(
        slices_as_node.list(&ListParams::default()).await.is_err(),
        "never every slice of the namespace"
    );

    // One is killed while it waits: it ends KILLED and never runs.
    tasks
        .patch_status(
            "worker-1-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "KILLING"}})),
        )
        .await?;
    eventually("the waiting worker to end killed", || async {
        Ok(phase(&tasks, "worker-1-0").await? == TaskPhase::Killed)
    })
    .await?;

    // A slice someone else wrote, or a master not ready yet, is not used.
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), NS);
    slices
        .create(&PostParams::default(), &master_slice("someone-else", true)?)
        .await?;
    let corral = corral_api::discovery::ENDPOINTS_MANAGER;
    slices
        .create(&PostParams::default(), &master_slice(corral, false)?)
        .await?;
    assert_eq!(phase(&tasks, "worker-0-0").await?, TaskPhase::Starting);
    slices
        .replace(&format!("master-{corral}"), &PostParams::default(), &{
            let mut s = master_slice(corral, true)?;
            s.metadata.resource_version = slices
                .get(&format!("master-{corral}"))
                .await?
                .metadata
                .resource_version;
            s
        })
        .await?;
    eventually(
        "the worker to run with its master's address and finish",
        || async { Ok(phase(&tasks, "worker-0-0").await? == TaskPhase::Finished) },
    )
    .await?;
    let out = std::fs::read_to_string(
        corral_node_agent::runtime::task_files_dir(sandboxes.path(), &format!("{NS}/worker-0-0"))
            .join("stdout"),
    )?;
    assert_eq!(out, "worker-0-0 on 10.9.9.9 joins 10.1.2.3:31077\n");
    let never =
        corral_node_agent::runtime::task_files_dir(sandboxes.path(), &format!("{NS}/worker-1-0"))
            .join("stdout");
    assert!(
        std::fs::read_to_string(&never)
            .unwrap_or_default()
            .is_empty(),
        "the killed worker never ran"
    );
    stop_tx.send(true)?;
    agent.await??;
    ts.shutdown().await;
    Ok(())
}
