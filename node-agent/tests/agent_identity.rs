//! A node's identity, end to end under RBAC: an agent joins with a
//! bootstrap token (it obtains node `sim-0`'s certificate over its own key),
//! runs and reports a task with that credential alone, and the credential
//! reaches nothing that is not node `sim-0`'s: no other node's Node, Lease
//! or tasks, no job or task of its own making, no binding, and no phase
//! move that is not its copy's to report.

mod common;

use std::sync::Arc;

use anyhow::{Result, anyhow};
use common::eventually;
use corral_api::{Job, Node, Task, TaskPhase};
use corral_apiserver::testing::TestServer;
use corral_node_agent::agent::{self, AgentConfig, LEASE_NAMESPACE};
use corral_node_agent::join;
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The HTTP code of a refused call.
fn code<T: std::fmt::Debug>(r: kube::Result<T>) -> u16 {
    match r {
        Err(kube::Error::Api(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A client for `ts` holding node `node`'s certificate, obtained with the
/// bootstrap token the way `corral agent --bootstrap-kubeconfig` obtains it.
async fn joined(ts: &TestServer, bootstrap: &kube::Client, node: &str) -> Result<kube::Client> {
    let (cert, key) = join::request_certificate(bootstrap, node).await?;
    let admin = kube::config::Kubeconfig::from_yaml(&ts.pki.kubeconfig(&ts.url))?;
    let kc = join::node_kubeconfig(&admin, node, &cert, &key);
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test]
async fn a_joined_node_runs_its_tasks_and_reaches_nothing_else() -> Result<()> {
    let store = Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let ts = TestServer::start_rbac(
        store,
        &[(
            "boot-token",
            "system:bootstrap:fleet",
            &["system:bootstrappers"],
        )],
    )
    .await
    .map_err(|e| anyhow!(e))?;
    ts.roles(&["web"]).await.map_err(|e| anyhow!(e))?;
    let bootstrap = ts.client_as("boot-token").await.map_err(|e| anyhow!(e))?;
    let node = joined(&ts, &bootstrap, "sim-0").await?;
    // The bootstrap token does nothing else.
    assert_eq!(
        code(
            Api::<Task>::all(bootstrap.clone())
                .list(&ListParams::default())
                .await
        ),
        403
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = AgentConfig {
        log_endpoint: None,
        ..common::quick_config(
            "sim-0",
            corral_node_agent::flags::resources("cpus=4,memory=8Gi")?,
            40,
        )
    };
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(Simulated::default())];
    let agent = tokio::spawn(agent::run(node.clone(), cfg, runtimes, stop_rx.clone()));
    // The controllers run as the administrator, as `corral server` runs them.
    let alloc = tokio::spawn(corral_controllers::allocation::run(
        ts.client.clone(),
        corral_core::sched::Policy::BinPack,
        stop_rx.clone(),
    ));
    let jobs_loop = tokio::spawn(corral_controllers::jobs::run(ts.client.clone(), stop_rx));

    let nodes: Api<Node> = Api::all(ts.client.clone());
    eventually("the agent to register its node", || async {
        Ok(nodes
            .get_opt("sim-0")
            .await?
            .is_some_and(|n| n.status.is_some()))
    })
    .await?;
    let job: Job =
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": 1,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"}}}))?;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    jobs.create(&PostParams::default(), &job).await?;
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    eventually("the agent to run the task and report it", || async {
        Ok(tasks
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|t| t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Running)))
    })
    .await?;
    stop_tx.send(true)?;
    alloc.await?;
    jobs_loop.await?;
    agent.await??;

    // Another node's task, bound by the administrator through the binding
    // subresource (as the scheduler binds).
    common::node(&ts.client, "sim-1", 4).await?;
    let other: Task = serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "other-0-0", "namespace": "default"},
        "spec": {"job": "other", "role": "web", "instanceId": 0, "resources": {"cpus": 1, "memory": "64Mi"}, "container": {"image": "x"}}}),
    )?;
    tasks.create(&PostParams::default(), &other).await?;
    let binding = json!({"kind": "Binding", "target": {"kind": "Node", "name": "sim-1"}});
    let bound: Task = tasks
        .create_subresource("binding", "other-0-0", &PostParams::default(), &binding)
        .await?;
    assert_eq!(bound.spec.node_name.as_deref(), Some("sim-1"));
    let mine = tasks
        .list(&ListParams::default().fields("spec.nodeName=sim-0"))
        .await?
        .items
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("sim-0's task"))?;
    let mine_name = mine.metadata.name.clone().unwrap_or_default();

    let as_node: Api<Task> = Api::namespaced(node.clone(), "default");
    let status = |phase: &str| Patch::Merge(json!({"status": {"phase": phase}}));
    let pp = PatchParams::default();
    // Its own: read, listed by its node, reported on.
    as_node.get(&mine_name).await?;
    as_node
        .list(&ListParams::default().fields("spec.nodeName=sim-0"))
        .await?;
    // Not its own, nor another node's objects, nor anything it could make.
    let refusals: Vec<(&str, u16)> = vec![
        (
            "list every task",
            code(as_node.list(&ListParams::default()).await),
        ),
        (
            "list sim-1's tasks",
            code(
                as_node
                    .list(&ListParams::default().fields("spec.nodeName=sim-1"))
                    .await,
            ),
        ),
        ("read sim-1's task", code(as_node.get("other-0-0").await)),
        (
            "report on sim-1's task",
            code(
                as_node
                    .patch_status("other-0-0", &pp, &status("RUNNING"))
                    .await,
            ),
        ),
        (
            "kill its own task",
            code(
                as_node
                    .patch_status(&mine_name, &pp, &status("KILLING"))
                    .await,
            ),
        ),
        (
            "move its task backwards",
            code(
                as_node
                    .patch_status(&mine_name, &pp, &status("STARTING"))
                    .await,
            ),
        ),
        (
            "create a task",
            code(as_node.create(&PostParams::default(), &other).await),
        ),
        (
            "bind a task",
            code(
                as_node
                    .create_subresource::<_, Task>(
                        "binding",
                        "other-0-0",
                        &PostParams::default(),
                        &binding,
                    )
                    .await,
            ),
        ),
        (
            "create a job",
            code(
                Api::<Job>::namespaced(node.clone(), "default")
                    .create(&PostParams::default(), &job)
                    .await,
            ),
        ),
        (
            "write sim-1's Node",
            code(
                Api::<Node>::all(node.clone())
                    .patch_status(
                        "sim-1",
                        &pp,
                        &Patch::Merge(json!({"status": {"conditions": []}})),
                    )
                    .await,
            ),
        ),
        (
            "renew sim-1's Lease",
            code(
                Api::<Lease>::namespaced(node.clone(), LEASE_NAMESPACE)
                    .patch(
                        "sim-1",
                        &pp,
                        &Patch::Merge(json!({"spec": {"holderIdentity": "sim-0"}})),
                    )
                    .await,
            ),
        ),
        (
            "get a node certificate for sim-1",
            code(
                join::request_certificate(&node, "sim-1")
                    .await
                    .map_err(|e| match e {
                        join::JoinError::Api(e) => e,
                        other => kube::Error::Service(other.to_string().into()),
                    }),
            ),
        ),
    ];
    let want = |what: &str| {
        if what == "move its task backwards" {
            422
        } else {
            403
        }
    };
    for (what, got) in &refusals {
        assert_eq!(*got, want(what), "node sim-0 may not {what}");
    }
    // It renews its own certificate with its own credential.
    join::request_certificate(&node, "sim-0").await?;
    // The phase it reports is its copy's.
    as_node
        .patch_status(&mine_name, &pp, &status("FINISHED"))
        .await?;
    ts.shutdown().await;
    Ok(())
}
