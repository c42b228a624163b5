//! The UI's first loads and the `/metrics` scrape at scale (not a CI test):
//! a real `corral server` (controllers in-process, so its `/metrics`
//! carries the cluster's figures) and one `corral agent` standing in for N
//! simulated nodes, running a Job of T instances; then, in the same run:
//! - the UI's first load of the cluster, jobs and nodes pages in headless
//!   Chromium (`e2e/ui/first-load.mjs`, a fresh browser context each
//!   round), goal under 1 s at 5,000 nodes and 50,000 tasks;
//! - `GET /metrics`, goal under 100 ms;
//! - baselines: the first page of Nodes (what the nodes page asks for) and a
//!   LIST of every Node, over the same HTTPS.
//!
//! `CORRAL_BENCH_NODES` (default 5000), `CORRAL_BENCH_TASKS` (default 50000),
//! `CORRAL_BIN` (default target/debug/corral). Needs what the UI test needs
//! (scripts/install-deps.sh, scripts/install-tools.sh).
//! Run: `cargo build -p corral-cli --release && CORRAL_BIN=$PWD/target/release/corral cargo bench -p corral-e2e --bench ui`

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use corral_e2e::{Agent, Corral, Kubectl, Server, wait_every, workspace};
use serde_json::Value;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median time of 5 GETs of `path` with `token` (curl's total, from
/// connecting to the last byte), in ms, and the size of the answer.
fn get_ms(url: &str, token: &str, path: &str) -> Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--fail", "-o", "/dev/null"])
            .args(["-w", "%{time_total} %{size_download}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{url}{path}"))
            .output()?;
        ensure!(out.status.success(), "GET {path}: {out:?}");
        let text = String::from_utf8(out.stdout)?;
        let (total, bytes) = text.split_once(' ').context("curl's figures")?;
        times.push(total.parse::<f64>()? * 1e3);
        size = bytes.trim().parse()?;
    }
    Ok((median(times), size))
}

fn main() -> Result<()> {
    let (nodes_n, tasks_n) = (
        env("CORRAL_BENCH_NODES", 5000),
        env("CORRAL_BENCH_TASKS", 50_000),
    );
    let server = Server::start()?;
    let k = Kubectl::new(&server)?;
    let c = Corral::new(&server);
    let _agent = Agent::simulated(&server, "sim", nodes_n, "cpus=16,memory=64Gi")?;
    let started = Instant::now();
    wait_every(
        "the nodes",
        Duration::from_secs(1800),
        Duration::from_secs(2),
        || {
            Ok(k.run(&["get", "nodes.corral.dev", "-o", "name"])?
                .ok()?
                .lines()
                .count()
                >= nodes_n)
        },
    )?;
    println!(
        "{nodes_n} nodes registered in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    c.run_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: corral.dev/v1alpha1\nkind: Role\nmetadata: {{name: bench}}\nspec: {{weight: 1}}\n---\n\
             apiVersion: corral.dev/v1alpha1\nkind: Job\nmetadata: {{name: bench, namespace: default}}\n\
             spec: {{role: bench, environment: prod, kind: service, instances: {tasks_n}, resources: {{cpus: 100m, memory: 64Mi}}, container: {{image: busybox}}}}\n"
        ),
    )?
    .ok()?;
    let started = Instant::now();
    wait_every(
        "every task to run",
        Duration::from_secs(3600),
        Duration::from_secs(2),
        || {
            let job: Value =
                serde_json::from_str(&c.run(&["get", "job", "bench", "-o", "json"])?.ok()?)?;
            Ok(job["status"]["tasks"]["RUNNING"].as_u64().unwrap_or(0) as usize >= tasks_n)
        },
    )?;
    println!(
        "{tasks_n} tasks running in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let (token, url) = k.token_and_url()?;
    let (token, url) = (token.as_str(), url.as_str());

    let (metrics_ms, metrics_bytes) = get_ms(url, token, "/metrics")?;
    let (page_ms, _) = get_ms(url, token, "/apis/corral.dev/v1alpha1/nodes?limit=100")?;
    let (all_ms, all_bytes) = get_ms(url, token, "/apis/corral.dev/v1alpha1/nodes")?;
    let (history_ms, _) = get_ms(url, token, "/ui/api/history")?;
    println!(
        "GET /metrics: {metrics_ms:.1} ms ({} KiB; {:.2}× a LIST of every Node); /ui/api/history {history_ms:.1} ms; first page of Nodes {page_ms:.1} ms; LIST of every Node {all_ms:.1} ms ({} KiB) — medians of 5",
        metrics_bytes / 1024,
        metrics_ms / all_ms,
        all_bytes / 1024
    );

    let out = Command::new("node")
        .arg(workspace().join("e2e/ui/first-load.mjs"))
        .env("CORRAL_URL", url)
        .env("CORRAL_TOKEN", token)
        .env("ROUNDS", "5")
        .output()
        .context("running node")?;
    if !out.status.success() {
        bail!(
            "first-load.mjs: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let times: Value = serde_json::from_slice(&out.stdout)?;
    for page in ["cluster", "jobs", "nodes"] {
        let all: Vec<f64> = times[page]
            .as_array()
            .context("times")?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        println!(
            "UI first load of the {page} page: median {:.0} ms (rounds: {all:?}) at {nodes_n} nodes, {tasks_n} tasks",
            median(all.clone())
        );
    }
    Ok(())
}
