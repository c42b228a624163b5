//! API server benchmarks, each against a baseline measured in the same run,
//! over one embedded store on disk, through real TLS connections:
//!
//! 1. Create throughput: objects/s created through the API by 64 concurrent
//!    clients, against raw Store puts/s from 64 concurrent writers (goal ≥ 0.8×),
//!    and the same objects created in bulk (`TaskList`s of 500, 4 at once).
//! 2. LIST latency of 10k and 100k Tasks served from the watch cache (goal:
//!    100k < 1 s), against the same lists read straight from the store.
//! 3. Watch fan-out: 1,000 watchers, each watching its own `spec.nodeName`,
//!    while tasks are bound at full speed (goal: event p99 < 100 ms).
//! 4. Authorization: the CPU of one RBAC decision under a policy of 1,000
//!    bindings, as a share of one create's CPU measured in phase 1 (goal
//!    ≤ 5 %).
//!
//! The create phase also prints how many writes each store transaction held
//! (the store's group commit), for each side. Its ratio is bound by CPU: the
//! raw puts are paced by the store's one writer and its fsyncs, the API's
//! creates by the CPU that TLS, HTTP, JSON and the client share. Compare
//! with a run under `taskset -c 0` (one core) to see how it moves with cores.
//!
//! `CORRAL_BENCH_SCALE` (default 1.0) scales every count, for quick runs.
//! Run: `cargo bench -p corral-apiserver --bench api`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use corral_api::Task;
use corral_apiserver::Api as Server;
use corral_apiserver::storage::registry::ListQuery;
use corral_apiserver::testing::TestServer;
use corral_store::{CommitStatsSnapshot, Store};
use futures::StreamExt;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const CLIENTS: usize = 64;
/// Objects per bulk create, and bulk requests in flight at once.
const BULK: usize = 500;
const BULK_CLIENTS: usize = 4;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "api/authz.rs"]
mod authz;

/// `CORRAL_BENCH_PHASES` (default `create,list,watch,authz`) picks the phases to run.
fn phase(name: &str) -> bool {
    std::env::var("CORRAL_BENCH_PHASES")
        .map(|p| p.split(',').any(|x| x == name))
        .unwrap_or(true)
}

fn scale() -> f64 {
    std::env::var("CORRAL_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64) * scale()).max(1.0) as usize
}

fn task_json(ns: &str, name: &str, node: Option<&str>) -> serde_json::Value {
    let mut v = json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": ns, "uid": name, "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1},
        "spec": {"job": "bench", "role": "analytics", "instanceId": 0, "tier": "preemptible", "priority": 0,
                 "resources": {"cpus": "500m", "memory": "1Gi"}, "container": {"image": "docker.io/library/busybox:1.36"}}
    });
    if let Some(n) = node {
        v["spec"]["nodeName"] = json!(n);
    }
    v
}

/// CPU time (user + system, every thread) this process has used so far.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Writes tasks straight into the store (fast loading for the list phases).
async fn load(store: &dyn Store, ns: &str, n: usize) -> Result<()> {
    let per = n.div_ceil(CLIENTS);
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        let ns = ns.to_owned();
        tasks.push(async move {
            for i in (w * per)..((w + 1) * per).min(n) {
                let name = format!("t{i:06}");
                let v = task_json(&ns, &name, None);
                store
                    .create(
                        &format!("/registry/corral.dev/tasks/{ns}/{name}"),
                        serde_json::to_vec(&v)?,
                    )
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    for r in futures::future::join_all(tasks).await {
        r?;
    }
    Ok(())
}

/// A server over `store` (TLS on loopback, an admin kube-rs client) with
/// `namespaces` created.
async fn serve(store: Arc<dyn Store>, namespaces: &[&str]) -> Result<TestServer> {
    let ts = TestServer::start_over(store)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ts.client.clone());
    for ns in namespaces {
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    }
    // The Corral Role the tasks name (a task may name only one that exists).
    ts.roles(&["analytics"])
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(ts)
}

/// Create throughput over one store: API creates against raw Store puts,
/// in interleaved rounds.
/// `stats` reads the store's group-commit counters, to show how the writes of
/// each side were coalesced into transactions.
/// Returns the API side's CPU per create, in µs.
async fn create_phase(
    label: &str,
    store: Arc<dyn Store>,
    stats: &dyn Fn() -> CommitStatsSnapshot,
    client: &kube::Client,
) -> Result<f64> {
    let n = scaled(4000);
    let mut raw_rates = Vec::new();
    let mut api_rates = Vec::new();
    let mut bulk_rates = Vec::new();
    let (mut raw_cpu, mut api_cpu, mut bulk_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut raw_batches, mut api_batches) = (Batches::default(), Batches::default());
    for round in 0..3 {
        let per = n / CLIENTS;
        let start = Instant::now();
        let cpu = cpu_seconds();
        let before = stats();
        let writers = (0..CLIENTS).map(|w| {
            let store = store.clone();
            async move {
                for i in 0..per {
                    let v = task_json("raw", &format!("r{round}-{w}-{i}"), None);
                    store
                        .create(
                            &format!("/bench/raw/{round}/{w}/{i}"),
                            serde_json::to_vec(&v)?,
                        )
                        .await?;
                }
                anyhow::Ok(())
            }
        });
        for r in futures::future::join_all(writers).await {
            r?;
        }
        raw_rates.push((per * CLIENTS) as f64 / start.elapsed().as_secs_f64());
        raw_cpu.push((cpu_seconds() - cpu) * 1e6 / (per * CLIENTS) as f64);
        raw_batches.add(before, stats());

        let start = Instant::now();
        let cpu = cpu_seconds();
        let before = stats();
        // A client holds typed objects: each create fills in a copy of one.
        let template: Task = serde_json::from_value(task_json("create", "template", None))?;
        let creators = (0..CLIENTS).map(|w| {
            let tasks: Api<Task> = Api::namespaced(client.clone(), "create");
            let template = &template;
            async move {
                for i in 0..per {
                    let mut t = template.clone();
                    t.metadata.name = Some(format!("c{round}-{w}-{i}"));
                    t.metadata.uid = t.metadata.name.clone();
                    tasks.create(&PostParams::default(), &t).await?;
                }
                anyhow::Ok(())
            }
        });
        for r in futures::future::join_all(creators).await {
            r?;
        }
        api_rates.push((per * CLIENTS) as f64 / start.elapsed().as_secs_f64());
        api_cpu.push((cpu_seconds() - cpu) * 1e6 / (per * CLIENTS) as f64);
        api_batches.add(before, stats());

        // The same objects in bulk: TaskLists of 500 from a few clients.
        let start = Instant::now();
        let cpu = cpu_seconds();
        let names: Vec<String> = (0..per * CLIENTS)
            .map(|i| format!("b{round}-{i}"))
            .collect();
        let lists = names.chunks(BULK).map(|chunk| {
            let items: Vec<serde_json::Value> = chunk
                .iter()
                .map(|name| task_json("create", name, None))
                .collect();
            let body =
                json!({"apiVersion": "corral.dev/v1alpha1", "kind": "TaskList", "items": items});
            async move {
                let req = http::Request::post("/apis/corral.dev/v1alpha1/namespaces/create/tasks")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(&body)?)?;
                let answer: serde_json::Value = client.request(req).await?;
                let created = answer["items"]
                    .as_array()
                    .map_or(0, |i| i.iter().filter(|s| s["code"] == 201).count());
                anyhow::ensure!(
                    created == chunk.len(),
                    "{created} of {} created",
                    chunk.len()
                );
                anyhow::Ok(())
            }
        });
        let results: Vec<Result<()>> = futures::stream::iter(lists)
            .buffer_unordered(BULK_CLIENTS)
            .collect()
            .await;
        for r in results {
            r?;
        }
        bulk_rates.push(names.len() as f64 / start.elapsed().as_secs_f64());
        bulk_cpu.push((cpu_seconds() - cpu) * 1e6 / names.len() as f64);
    }
    let (raw, api) = (median(raw_rates), median(api_rates));
    println!(
        "create throughput over {label} ({n} objects/round, {CLIENTS} concurrent clients, median of 3):"
    );
    let (raw_us, api_us) = (median(raw_cpu), median(api_cpu));
    println!("  raw Store puts/s      {raw:>10.0}   CPU {raw_us:>6.1} µs/object (this process)");
    println!(
        "  API creates/s (TLS)   {api:>10.0}   CPU {api_us:>6.1} µs/object (client included)   ratio {:.2}× (goal ≥ 0.80×)",
        api / raw
    );
    let (bulk, bulk_us) = (median(bulk_rates), median(bulk_cpu));
    println!(
        "  API bulk creates/s    {bulk:>10.0}   CPU {bulk_us:>6.1} µs/object (client included)   ratio {:.2}× ({BULK} a request, {BULK_CLIENTS} at once)",
        bulk / raw
    );
    println!(
        "  writes per store transaction: raw {:.1}, API {:.1}",
        raw_batches.mean(),
        api_batches.mean()
    );
    Ok(api_us)
}

/// Store transactions and the writes they held, summed over rounds.
#[derive(Default)]
struct Batches {
    transactions: u64,
    writes: u64,
}

impl Batches {
    fn add(&mut self, before: CommitStatsSnapshot, after: CommitStatsSnapshot) {
        self.transactions += after.batches - before.batches;
        self.writes += after.writes - before.writes;
    }

    fn mean(&self) -> f64 {
        self.writes as f64 / self.transactions.max(1) as f64
    }
}

/// `CORRAL_BENCH_STORES` (default `embedded,etcd`) picks the stores the
/// create phase runs over; the list and watch phases use the embedded store.
fn create_over(store: &str) -> bool {
    std::env::var("CORRAL_BENCH_STORES")
        .map(|p| p.split(',').any(|x| x == store))
        .unwrap_or(true)
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rlimit::increase_nofile_limit(65_536);
    let dir = tempfile::tempdir()?;
    let embedded = corral_store::embedded::EmbeddedStore::open(dir.path().join("bench.db"))?;
    let store: Arc<dyn Store> = Arc::new(embedded.clone());
    let ts = serve(store.clone(), &["create", "list10k", "list100k", "fan"]).await?;
    let (server, client) = (ts.api.clone(), ts.client.clone());

    // 1. Create throughput, API vs raw store, over each store.
    let mut create_us = None;
    if phase("create") {
        if create_over("embedded") {
            let stats = || embedded.commit_stats();
            create_us =
                Some(create_phase("the embedded store", store.clone(), &stats, &client).await?);
        }
        if create_over("etcd") {
            // A real single-member etcd with fsync on, as in production.
            let etcd = corral_store::testing::EtcdServer::start()?;
            let etcd_store =
                corral_store::etcd::EtcdStore::connect(&[etcd.endpoint().to_owned()]).await?;
            let stats = || etcd_store.commit_stats();
            let shared: Arc<dyn Store> = Arc::new(etcd_store.clone());
            let over_etcd = serve(shared.clone(), &["create"]).await?;
            create_phase(
                "etcd (one member, fsync on)",
                shared,
                &stats,
                &over_etcd.client,
            )
            .await?;
            over_etcd.shutdown().await;
        }
    }

    // 2. LIST latency from the cache vs straight from the store.
    let desc = server
        .registry
        .find("corral.dev", "v1alpha1", "tasks")
        .context("tasks")?;
    let lists = if phase("list") {
        vec![("list10k", scaled(10_000)), ("list100k", scaled(100_000))]
    } else {
        Vec::new()
    };
    for (ns, count) in lists {
        load(store.as_ref(), ns, count).await?;
        let rev = store.current_revision().await?;
        anyhow::ensure!(
            server
                .cache
                .as_ref()
                .context("cache")?
                .wait_for(rev, Duration::from_secs(60))
                .await,
            "cache lagging"
        );
        let mut via_api = Vec::new();
        let mut bytes = 0;
        for _ in 0..3 {
            let req =
                http::Request::get(format!("/apis/corral.dev/v1alpha1/namespaces/{ns}/tasks"))
                    .body(Vec::new())?;
            let start = Instant::now();
            let body = client.request_text(req).await?;
            via_api.push(start.elapsed().as_secs_f64());
            bytes = body.len();
        }
        let mut from_store = Vec::new();
        let uncached = Server::uncached(store.clone(), server.registry.clone());
        for _ in 0..3 {
            let start = Instant::now();
            let page = uncached
                .list(&desc, Some(ns), &ListQuery::default())
                .await?;
            anyhow::ensure!(
                page.items.len() == count,
                "listed {} of {count}",
                page.items.len()
            );
            from_store.push(start.elapsed().as_secs_f64());
        }
        let (a, s) = (median(via_api), median(from_store));
        println!(
            "LIST {count} tasks ({:.1} MB): through the API from the cache {:.3} s; store read alone (no HTTP) {:.3} s; ratio {:.2}×",
            bytes as f64 / 1e6,
            a,
            s,
            s / a
        );
    }

    // 3. Watch fan-out: one watcher per node, tasks bound at full speed.
    if !phase("watch") {
        ts.shutdown().await;
        if phase("authz") {
            authz::run(create_us)?;
        }
        return Ok(());
    }
    let watchers = scaled(1000);
    let binds = scaled(5000);
    load(store.as_ref(), "fan", binds).await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let rv = store.current_revision().await?.to_string();
    let mut handles = Vec::new();
    let established = Arc::new(tokio::sync::Semaphore::new(0));
    for w in 0..watchers {
        let tasks: Api<Task> = Api::namespaced(client.clone(), "fan");
        let sent = sent.clone();
        let latencies = latencies.clone();
        let rv = rv.clone();
        let established = established.clone();
        let expected = (0..binds).filter(|i| i % watchers == w).count();
        handles.push(tokio::spawn(async move {
            let wp = WatchParams::default()
                .fields(&format!("spec.nodeName=node-{w}"))
                .timeout(290);
            let mut stream = tasks.watch(&wp, &rv).await?.boxed();
            established.add_permits(1);
            let mut seen = 0;
            while seen < expected {
                let Some(ev) = tokio::time::timeout(Duration::from_secs(60), stream.next())
                    .await
                    .context("watcher stalled")?
                else {
                    break;
                };
                if let WatchEvent::Added(t) | WatchEvent::Modified(t) = ev? {
                    let now = Instant::now();
                    let name = t.metadata.name.unwrap_or_default();
                    let at = sent
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .get(&name)
                        .copied();
                    if let Some(at) = at {
                        latencies
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .push(now.duration_since(at).as_secs_f64() * 1000.0);
                        seen += 1;
                    }
                }
            }
            anyhow::Ok(seen)
        }));
    }
    // The watch requests are answered once registered; wait for all of them.
    let _ = established.acquire_many(u32::try_from(watchers)?).await?;
    let per = binds.div_ceil(CLIENTS);
    let start = Instant::now();
    let binders = (0..CLIENTS).map(|w| {
        let tasks: Api<Task> = Api::namespaced(client.clone(), "fan");
        let sent = sent.clone();
        async move {
            for i in (w * per)..((w + 1) * per).min(binds) {
                let name = format!("t{i:06}");
                sent.lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(name.clone(), Instant::now());
                let binding = json!({"kind": "Binding", "metadata": {"name": name},
                                     "target": {"kind": "Node", "name": format!("node-{}", i % watchers)}});
                tasks
                    .create_subresource::<_, Task>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(binders).await {
        r?;
    }
    let bind_secs = start.elapsed().as_secs_f64();
    let mut delivered = 0;
    for h in handles {
        delivered += h.await??;
    }
    let mut lat = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "watch fan-out: {watchers} watchers (one per node), {binds} bindings at {:.0}/s; {delivered} events delivered; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 < 100 ms)",
        binds as f64 / bind_secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    ts.shutdown().await;
    if phase("authz") {
        authz::run(create_us)?;
    }
    Ok(())
}
