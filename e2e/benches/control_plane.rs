//! The whole control plane end to end: the API server (TLS, bearer token)
//! and every controller (`corral_controllers::run_all`: the allocation loop,
//! the job, cron, lost-task, node and role controllers) in this process, as
//! `corral server` runs them, over a store on disk; one agent standing in for
//! N simulated nodes in a process of its own (this binary, run again with
//! `CORRAL_BENCH_AGENT` naming a kubeconfig), as a node's agent is. Both use
//! the allocator the `corral` binary ships with.
//!
//! For each store (`CORRAL_BENCH_STORES`, default `embedded,etcd`: the
//! embedded store, and a real etcd with fsync), each in a process of its
//! own, in one run:
//! - baselines: raw `Store` creates of task-sized values from 16 and from
//!   64 writers, on the same store;
//! - registration of N nodes (Node, status and Lease each), counted from a
//!   watch;
//! - one Job of T instances that all fit: tasks/s to bound (ASSIGNED) and
//!   to RUNNING, counted from a watch of the tasks (no polling lists);
//!   store writes and reads per task (all of them, and writes to tasks
//!   alone) until all are bound and until all run; CPU µs per task of the
//!   server and controllers, of the agent and of etcd, each apart; the
//!   RSS at the end of the server and controllers' process (with the
//!   bench's own watch, which keeps no objects) and of the agent's;
//! - the scrape of the controllers' metrics (every node's and role's
//!   figures from the caches) and of the API server's `/metrics`, against a
//!   LIST of the nodes.
//!
//! `CORRAL_BENCH_NODES` (default 5000), `CORRAL_BENCH_TASKS` (default
//! 50000). Run: `cargo bench -p corral-e2e --bench control_plane`

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corral_api::{Job, Node, Task, TaskPhase};
use corral_apiserver::transport::pki::{Pki, Tokens};
use corral_apiserver::{Api as Server, Authn, Catalog};
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::runtime::{ContainerRuntime, Simulated};
use corral_store::{
    KeyValue, RangeRequest, RangeResponse, Store, StoreError, WatchStream, WriteOp, WriteOutcome,
};
use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;

/// How long one phase may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(900);

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the agent's process: the kubeconfig it connects with.
const AGENT_ENV: &str = "CORRAL_BENCH_AGENT";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A store that counts what is asked of it.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Store>,
    writes: AtomicU64,
    task_writes: AtomicU64,
    refused: AtomicU64,
    reads: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Counts {
    writes: u64,
    task_writes: u64,
    refused: u64,
    reads: u64,
    cpu: f64,
}

impl Counting {
    fn now(&self) -> Counts {
        Counts {
            writes: self.writes.load(Ordering::Relaxed),
            task_writes: self.task_writes.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            cpu: cpu_seconds(std::process::id()),
        }
    }
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.range(request).await
    }
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        if op.key().contains("/tasks/") {
            self.task_writes.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = self.inner.write(op).await;
        if matches!(outcome, Err(StoreError::Conflict { .. })) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }
    async fn watch(&self, prefix: &str, start: i64) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, start).await
    }
    async fn watch_current(&self, prefix: &str, start: i64) -> Result<WatchStream, StoreError> {
        self.inner.watch_current(prefix, start).await
    }
    async fn current_revision(&self) -> Result<i64, StoreError> {
        self.inner.current_revision().await
    }
    async fn request_progress(&self) -> Result<(), StoreError> {
        self.inner.request_progress().await
    }
    fn reports_progress(&self) -> bool {
        self.inner.reports_progress()
    }
    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

/// User plus system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) close with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Process `pid`'s resident and peak memory, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// Raw creates/s of `body` into `store` from `writers` writers, `n` in all.
async fn raw_creates(
    store: &Arc<dyn Store>,
    tag: &str,
    writers: usize,
    n: usize,
    body: &[u8],
) -> Result<f64> {
    let per = n.div_ceil(writers);
    let start = Instant::now();
    let all = (0..writers).map(|w| {
        let (store, body) = (store.clone(), body.to_vec());
        async move {
            for i in 0..per {
                store
                    .create(&format!("/bench/raw-{tag}/{w}/{i}"), body.clone())
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(all).await {
        r?;
    }
    Ok((per * writers) as f64 / start.elapsed().as_secs_f64())
}

/// Waits until `done` holds for the objects a watch of `api` has seen,
/// calling `seen` with each object as it comes.
async fn watch_until<K, F>(api: Api<K>, mut seen: F) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: FnMut(&K) -> bool,
{
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let deadline = tokio::time::sleep(PATIENCE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => bail!("gave up after {PATIENCE:?}"),
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                    if seen(&o) {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => eprintln!("  (watch error, resumed: {e})"),
                None => bail!("the watch ended"),
            }
        }
    }
}

/// One store's run; `etcd_pid` is etcd's process, when the store is etcd.
async fn run(name: &str, store: Arc<dyn Store>, etcd_pid: Option<u32>) -> Result<()> {
    let (nodes_n, tasks_n) = (
        env("CORRAL_BENCH_NODES", 5000),
        env("CORRAL_BENCH_TASKS", 50_000),
    );
    println!("{name}: {nodes_n} simulated nodes in one agent, a job of {tasks_n} instances");
    let sample = serde_json::to_vec(&json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "bench-0-0", "namespace": "default", "labels": {"corral.dev/job": "bench"}},
        "spec": {"job": "bench", "role": "bench", "instanceId": 0, "resources": {"cpus": "100m", "memory": "64Mi"},
                 "container": {"image": "busybox"}}}))?;
    let raw_n = tasks_n.clamp(2000, 20_000);
    let raw16 = raw_creates(&store, "16", 16, raw_n, &sample).await?;
    let raw64 = raw_creates(&store, "64", 64, raw_n, &sample).await?;
    println!(
        "  baseline: raw Store creates/s, task-sized: {raw16:.0} (16 writers), {raw64:.0} (64 writers)"
    );

    let counting = Arc::new(Counting {
        inner: store,
        writes: AtomicU64::new(0),
        task_writes: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        reads: AtomicU64::new(0),
    });
    let dir = tempfile::tempdir()?;
    let server = Server::new(counting.clone(), Catalog::standard());
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
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    // The controllers and the bench's own watches each have a client (and a
    // connection) of their own, as separate processes would.
    let client = corral_controllers::client::connect(config.clone())?;
    let observer = kube::Client::try_from(config)?;

    // Registration, counted from a watch of Nodes.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let kubeconfig = dir.path().join("agent.kubeconfig");
    // It holds the admin token: 0600, as every file with a secret.
    corral_apiserver::transport::pki::write_private(
        &kubeconfig,
        pki.kubeconfig(&format!("https://{}", running.local_addr))
            .as_bytes(),
    )?;
    let start = Instant::now();
    let mut agent = Agent::start(&kubeconfig, nodes_n)?;
    let mut ready = HashSet::new();
    watch_until(Api::<Node>::all(observer.clone()), |n: &Node| {
        if n.status.as_ref().is_some_and(|s| !s.conditions.is_empty()) {
            ready.insert(n.metadata.name.clone().unwrap_or_default());
        }
        ready.len() == nodes_n
    })
    .await
    .context("registration")?;
    let registration = start.elapsed().as_secs_f64();
    println!(
        "  registration: {nodes_n} nodes in {registration:.1} s ({:.0} nodes/s)",
        nodes_n as f64 / registration
    );

    // Every controller, then one job; its tasks counted from a watch.
    let metrics = corral_controllers::metrics::Metrics::new();
    let controllers = tokio::spawn(corral_controllers::run_all(
        corral_controllers::Clients::one(client.clone()),
        corral_controllers::Settings {
            policy: corral_core::sched::Policy::Spread,
            ..Default::default()
        },
        metrics.clone(),
        stop_rx.clone(),
    ));
    let role: corral_api::Role = serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "bench"}, "spec": {"weight": 1}}),
    )?;
    Api::<corral_api::Role>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let job: Job = serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"role": "bench", "environment": "prod", "kind": "service", "instances": tasks_n,
                 "resources": {"cpus": "100m", "memory": "64Mi"}, "container": {"image": "busybox"}}}),
    )?;
    let (mut bound, mut run_set) = (HashSet::new(), HashSet::new());
    let (mut at_bound, mut counts_bound) = (None, None);
    let etcd_cpu0 = etcd_pid.map(cpu_seconds);
    let agent_cpu0 = cpu_seconds(agent.pid());
    let before = counting.now();
    let start = Instant::now();
    let tasks: Api<Task> = Api::namespaced(observer.clone(), "default");
    let watching = watch_until(tasks, |t: &Task| {
        let name = t.metadata.name.clone().unwrap_or_default();
        if t.spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
            bound.insert(name.clone());
        }
        if t.status.as_ref().map(|s| s.phase()) == Some(TaskPhase::Running) {
            run_set.insert(name);
        }
        if at_bound.is_none() && bound.len() >= tasks_n {
            at_bound = Some(start.elapsed().as_secs_f64());
            counts_bound = Some(counting.now());
        }
        run_set.len() >= tasks_n
    });
    let create = async {
        Api::<Job>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &job)
            .await
            .map_err(anyhow::Error::from)
    };
    let (watched, created) = tokio::join!(watching, create);
    created?;
    watched.context("the job's tasks")?;
    let all_running = start.elapsed().as_secs_f64();
    let after = counting.now();
    let at_bound = at_bound.context("never all bound")?;
    let counts_bound = counts_bound.context("never all bound")?;
    let per = |n: u64| n as f64 / tasks_n as f64;
    println!(
        "  bound: {tasks_n} in {at_bound:.1} s = {:.0} tasks/s ({:.3}× raw 64-writer creates/s); store writes per task {:.2} (to tasks {:.2}, refused {:.2}), store reads per task {:.2}",
        tasks_n as f64 / at_bound,
        tasks_n as f64 / at_bound / raw64,
        per(counts_bound.writes - before.writes),
        per(counts_bound.task_writes - before.task_writes),
        per(counts_bound.refused - before.refused),
        per(counts_bound.reads - before.reads),
    );
    println!(
        "  RUNNING: {tasks_n} in {all_running:.1} s = {:.0} tasks/s; store writes per task {:.2} (to tasks {:.2}, refused {:.2}), store reads per task {:.2}",
        tasks_n as f64 / all_running,
        per(after.writes - before.writes),
        per(after.task_writes - before.task_writes),
        per(after.refused - before.refused),
        per(after.reads - before.reads),
    );
    let cpu_us = (after.cpu - before.cpu) * 1e6 / tasks_n as f64;
    let agent_us = (cpu_seconds(agent.pid()) - agent_cpu0) * 1e6 / tasks_n as f64;
    let etcd_us = etcd_pid
        .zip(etcd_cpu0)
        .map(|(pid, c0)| (cpu_seconds(pid) - c0) * 1e6 / tasks_n as f64);
    let (rss, peak) = rss_mib(std::process::id());
    let (agent_rss, _) = rss_mib(agent.pid());
    println!(
        "  CPU per task to RUNNING: {cpu_us:.0} µs in the server and controllers, {agent_us:.0} µs in the agent{}, {:.0} µs in all",
        etcd_us.map_or(String::new(), |e| format!(", {e:.0} µs in etcd")),
        cpu_us + agent_us + etcd_us.unwrap_or(0.0),
    );
    println!(
        "  RSS at the end: server and controllers {rss:.0} MiB (peak {peak:.0} MiB), the agent {agent_rss:.0} MiB"
    );
    scrapes(&client, &metrics, nodes_n).await?;
    stop_tx.send(true)?;
    agent.stop()?;
    let _ = controllers.await;
    running.shutdown().await;
    Ok(())
}

/// The median of `f`'s time over 5 runs, in ms, and its last answer.
async fn median_ms<T, F: std::future::Future<Output = Result<T>>>(
    mut f: impl FnMut() -> F,
) -> Result<(f64, T)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let t = Instant::now();
        last = Some(f().await?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[2], last.context("no run")?))
}

/// The scrapes at the end of the run: the controllers' metrics (the cluster's
/// figures read from their caches: every node and task) and the API server's
/// `/metrics` over HTTPS; baseline: a LIST of the Nodes from the API
/// server's cache, in the same run.
async fn scrapes(
    client: &kube::Client,
    metrics: &corral_controllers::metrics::Metrics,
    nodes_n: usize,
) -> Result<()> {
    let (controllers_ms, text) =
        median_ms(|| async { metrics.scrape().map_err(anyhow::Error::from) }).await?;
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    let (server_ms, _) = median_ms(|| async {
        let req = http::Request::get("/metrics").body(Vec::new())?;
        Ok(client.request_text(req).await?)
    })
    .await?;
    let (list_ms, _) = median_ms(|| async {
        Ok(Api::<Node>::all(client.clone())
            .list(&Default::default())
            .await?)
    })
    .await?;
    println!(
        "  /metrics at {nodes_n} nodes: the controllers' {controllers_ms:.1} ms ({series} series, {:.2}× a LIST of the nodes), the API server's {server_ms:.1} ms; LIST of the nodes {list_ms:.1} ms (medians of 5)",
        controllers_ms / list_ms
    );
    Ok(())
}

/// The agent's process: this binary run again with [`AGENT_ENV`] set.
struct Agent(std::process::Child);

impl Agent {
    /// Starts the agent for `nodes` simulated nodes, connecting with the
    /// kubeconfig at `kubeconfig`; it runs until its standard input closes.
    fn start(kubeconfig: &std::path::Path, nodes: usize) -> Result<Agent> {
        let child = std::process::Command::new(std::env::current_exe()?)
            .env(AGENT_ENV, kubeconfig)
            .env("CORRAL_BENCH_NODES", nodes.to_string())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("starting the agent's process")?;
        Ok(Agent(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Closes its standard input and waits for it to end.
    fn stop(&mut self) -> Result<()> {
        drop(self.0.stdin.take());
        let status = self.0.wait()?;
        if !status.success() {
            bail!("the agent's process ended with {status}");
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The agent's process: N simulated nodes until standard input closes.
async fn agent_main(kubeconfig: &str) -> Result<()> {
    let nodes_n = env("CORRAL_BENCH_NODES", 5000);
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = corral_controllers::client::connect(config)?;
    let cfg = AgentConfig::new(
        (0..nodes_n).map(|i| format!("sim-{i}")).collect(),
        corral_node_agent::flags::resources("cpus=64,memory=256Gi")?,
    );
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![Arc::new(Simulated::default())];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(agent::run(client, cfg, runtimes, stop_rx));
    // Standard input closes when the bench is done (or gone).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await?;
    stop_tx.send(true)?;
    agent.await??;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rlimit::increase_nofile_limit(65_536);
    if let Ok(kubeconfig) = std::env::var(AGENT_ENV) {
        return agent_main(&kubeconfig).await;
    }
    let stores = std::env::var("CORRAL_BENCH_STORES").unwrap_or_else(|_| "embedded,etcd".into());
    let stores: Vec<&str> = stores.split(',').map(str::trim).collect();
    if stores.len() > 1 {
        // Each store in a process of its own, so that one's memory is not
        // counted in the next one's figures.
        for name in stores {
            let status = std::process::Command::new(std::env::current_exe()?)
                .args(std::env::args().skip(1))
                .env("CORRAL_BENCH_STORES", name)
                .status()?;
            if !status.success() {
                bail!("the run over {name} ended with {status}");
            }
        }
        return Ok(());
    }
    for name in stores {
        match name {
            "embedded" => {
                let dir = tempfile::tempdir()?;
                let store: Arc<dyn Store> = Arc::new(corral_store::embedded::EmbeddedStore::open(
                    dir.path().join("bench.db"),
                )?);
                run("embedded store on disk", store, None).await?;
            }
            "etcd" => {
                let etcd = corral_store::testing::EtcdServer::start_with(
                    corral_store::testing::Durability::Fsync,
                )?;
                let store: Arc<dyn Store> = Arc::new(
                    corral_store::etcd::EtcdStore::connect(&[etcd.endpoint().to_owned()]).await?,
                );
                run("etcd with fsync", store, Some(etcd.pid())).await?;
            }
            other => bail!("unknown store {other:?} in CORRAL_BENCH_STORES"),
        }
    }
    Ok(())
}
