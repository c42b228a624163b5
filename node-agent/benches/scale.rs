//! Scale benchmark: the whole control plane in one process, with one agent
//! standing in for thousands of simulated nodes.
//!
//! In one run, over one embedded store on disk (TLS between every client and
//! the API server):
//! - baseline: raw Store writes/s of task-sized objects from 64 writers;
//! - registration of N simulated nodes (Node + status + Lease each);
//! - end-to-end binding: T tasks created through the API, bound by the
//!   allocation loop and run by the simulated agent; tasks/s until all RUN;
//! - responsiveness while leases are renewed: latency of `GET /version` and
//!   of a LIST of all nodes from the watch cache.
//!
//! `CORRAL_BENCH_NODES` (default 5000) and `CORRAL_BENCH_TASKS` (default 5000).
//! Run: `cargo bench -p corral-node-agent --bench scale`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use corral_api::{Task, TaskPhase};
use corral_apiserver::transport::pki::{Pki, Tokens};
use corral_apiserver::{Api as Server, Authn, Catalog};
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use corral_store::Store;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn task(i: usize) -> Result<Task> {
    Ok(serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": format!("t{i:06}"), "namespace": "default"},
        "spec": {"job": "bench", "role": "analytics", "instanceId": 0, "resources": {"cpus": "500m", "memory": "512Mi"},
                 "container": {"image": "busybox"}}}),
    )?)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rlimit::increase_nofile_limit(65_536);
    let (nodes_n, tasks_n) = (
        env("CORRAL_BENCH_NODES", 5000),
        env("CORRAL_BENCH_TASKS", 5000),
    );
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(corral_store::embedded::EmbeddedStore::open(
        dir.path().join("bench.db"),
    )?);
    let server = Server::new(store.clone(), Catalog::standard());
    corral_apiserver::storage::registry::ensure_default_namespaces(&server).await?;
    let pki = Pki::load_or_create(&dir.path().join("pki"), &[])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = corral_apiserver::serve(
        server,
        listener,
        Some(pki.server_config()?),
        Authn::Required(Arc::new(Tokens::load(&pki.token_file)?)),
    )?;
    let kc = kube::config::Kubeconfig::from_yaml(
        &pki.kubeconfig(&format!("https://{}", running.local_addr)),
    )?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?,
    )?;

    // Baseline: raw store writes of task-sized values, 64 writers.
    let body = serde_json::to_vec(&task(0)?)?;
    let start = Instant::now();
    let per = tasks_n.div_ceil(64);
    let writers = (0..64).map(|w| {
        let (store, body) = (store.clone(), body.clone());
        async move {
            for i in 0..per {
                store
                    .create(&format!("/bench/raw/{w}/{i}"), body.clone())
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(writers).await {
        r?;
    }
    let raw = (per * 64) as f64 / start.elapsed().as_secs_f64();

    // Registration of the simulated nodes.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = AgentConfig::new(
        (0..nodes_n).map(|i| format!("sim-{i}")).collect(),
        corral_node_agent::flags::resources("cpus=4,memory=16Gi")?,
    );
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(Simulated::default())];
    let start = Instant::now();
    let agent_task = tokio::spawn(agent::run(client.clone(), cfg, runtimes, stop_rx.clone()));
    let nodes: Api<corral_api::Node> = Api::all(client.clone());
    loop {
        let n = nodes
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|n| n.status.as_ref().is_some_and(|s| !s.conditions.is_empty()))
            .count();
        if n == nodes_n {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "registration stalled at {n}/{nodes_n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let registration = start.elapsed().as_secs_f64();

    // End to end: create, bind, run.
    let alloc = tokio::spawn(corral_controllers::allocation::run(
        client.clone(),
        corral_core::sched::Policy::Spread,
        stop_rx.clone(),
    ));
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    let creators = (0..64).map(|w| {
        let tasks = tasks.clone();
        async move {
            for i in (w * per)..((w + 1) * per).min(tasks_n) {
                tasks.create(&PostParams::default(), &task(i)?).await?;
            }
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(creators).await {
        r?;
    }
    let created = start.elapsed().as_secs_f64();
    // Meanwhile, and until everything runs: responsiveness samples.
    let mut version_ms = Vec::new();
    let mut list_ms = Vec::new();
    loop {
        let t0 = Instant::now();
        client.apiserver_version().await?;
        version_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        let t0 = Instant::now();
        let _ = nodes.list(&ListParams::default().limit(500)).await?;
        list_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        let running_n = tasks
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|t| t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Running))
            .count();
        if running_n == tasks_n {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "only {running_n}/{tasks_n} running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_running = start.elapsed().as_secs_f64();
    println!(
        "scale: {nodes_n} simulated nodes in one agent, {tasks_n} tasks, embedded store on disk, TLS"
    );
    println!("  raw Store writes/s (64 writers, task-sized): {raw:.0}");
    println!(
        "  node registration: {nodes_n} nodes in {registration:.1} s ({:.0} nodes/s)",
        nodes_n as f64 / registration
    );
    println!(
        "  end to end: {tasks_n} tasks created in {created:.1} s, all RUNNING after {all_running:.1} s: {:.0} tasks/s ({:.2}× raw store writes/s)",
        tasks_n as f64 / all_running,
        tasks_n as f64 / all_running / raw
    );
    println!(
        "  responsiveness under load: GET /version p50 {:.1} ms p99 {:.1} ms; LIST 500 nodes p50 {:.1} ms p99 {:.1} ms ({} samples)",
        pct(&mut version_ms.clone(), 0.5),
        pct(&mut version_ms, 0.99),
        pct(&mut list_ms.clone(), 0.5),
        pct(&mut list_ms, 0.99),
        list_ms.len()
    );
    stop_tx.send(true)?;
    let _ = agent_task.await;
    let _ = alloc.await;
    running.shutdown().await;
    Ok(())
}
