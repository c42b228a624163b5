//! Start-up benchmark with a real containerd (started by
//! `scripts/containerd.sh` in a temporary directory, with the busybox test
//! image), in one run:
//! - baseline: the containerd runtime alone — container create + task start
//!   through containerd-client, from the call to the container running;
//! - the agent: a task written ASSIGNED through the API server, picked up by
//!   `corral agent`'s loop, started by the same runtime and reported
//!   RUNNING; ASSIGNED → RUNNING from the task's own events;
//! - overhead: the agent's median minus the baseline's (goal ≤ 10 ms);
//! - isolation: the baseline (tasks as nobody in a user namespace, with
//!   the seccomp filter)
//!   against starts as root and unconfined, interleaved (goal ≤ 5 ms);
//! - 100 tasks at once on one agent, tasks/s until all RUN (goal ≥ 40/s),
//!   against 100 parallel starts of the runtime alone.
//!
//! Everything is measured with runc, then again with crun when it is
//! installed (`corral agent --oci-runtime crun`).
//!
//! Needs root, containerd and runc (`scripts/install-deps.sh`).
//! `CORRAL_BENCH_SEQUENTIAL` (default 20) and `CORRAL_BENCH_PARALLEL` (100).
//! Run: `cargo bench -p corral-node-agent --bench containerd`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corral_api::{Task, TaskPhase};
use corral_apiserver::testing::TestServer;
use corral_core::lifecycle;
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::runtime::containerd::{Containerd, ContainerdConfig};
use corral_node_agent::runtime::{ContainerRuntime, Launch, RuntimeEvent};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const IMAGE: &str = "docker.io/library/testbox:latest";
const NAMESPACE: &str = "corral-bench";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * 0.99).round() as usize]
}

/// A private containerd, stopped on drop.
struct Daemon {
    dir: tempfile::TempDir,
    script: PathBuf,
}

impl Daemon {
    fn start() -> Result<(Self, PathBuf)> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/containerd.sh");
        let dir = tempfile::Builder::new().prefix("ctb").tempdir_in("/tmp")?;
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.path())
            .env("CORRAL_CONTAINERD_NAMESPACE", NAMESPACE)
            .output()?;
        if !String::from_utf8_lossy(&out.stdout).contains("ready") {
            bail!(
                "containerd.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let sock = dir.path().join("state/containerd.sock");
        Ok((Daemon { dir, script }, sock))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// How a benchmarked container is confined.
#[derive(Debug, Clone, Copy)]
enum Isolation {
    /// Corral's default: nobody, the seccomp filter.
    Default,
    /// Privileged: root, no seccomp filter.
    Unconfined,
}

fn launch_with(key: &str, isolation: Isolation) -> Result<Launch> {
    let mut container =
        json!({"image": IMAGE, "command": ["sleep", "600"], "killGracePeriodSeconds": 0});
    if let Isolation::Unconfined = isolation {
        container["user"] = json!("root");
        container["seccompProfile"] = json!("Unconfined");
    }
    Ok(Launch {
        key: key.to_owned(),
        container: serde_json::from_value(container)?,
        resources: serde_json::from_value(json!({"cpus": "100m", "memory": "16Mi"}))?,
        annotations: BTreeMap::new(),
        uid: None,
    })
}

async fn runtime(sock: &Path, sandboxes: &Path, oci_runtime: Option<&str>) -> Result<Containerd> {
    Ok(Containerd::connect(ContainerdConfig {
        namespace: NAMESPACE.to_owned(),
        oci_runtime: oci_runtime.map(str::to_owned),
        ..ContainerdConfig::new(
            sock.to_owned(),
            sandboxes.to_owned(),
            PathBuf::from("/sys/fs/cgroup"),
        )
    })
    .await?)
}

/// Starts `keys` at once on the runtime alone; each one's seconds to RUNNING.
async fn raw_starts(rt: &Containerd, keys: &[String]) -> Result<Vec<f64>> {
    raw_starts_with(rt, keys, Isolation::Default).await
}

/// The same, confined as `isolation` says.
async fn raw_starts_with(
    rt: &Containerd,
    keys: &[String],
    isolation: Isolation,
) -> Result<Vec<f64>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let t0 = Instant::now();
    for k in keys {
        let (rt, tx, l) = (rt.clone(), tx.clone(), launch_with(k, isolation)?);
        tokio::spawn(async move { rt.start(l, tx).await });
    }
    let mut done = BTreeMap::new();
    while done.len() < keys.len() {
        let (key, ev) = rx.recv().await.context("runtime events ended")?;
        match ev {
            RuntimeEvent::Running => {
                done.insert(key, t0.elapsed().as_secs_f64());
            }
            RuntimeEvent::Exited { code, failure } => bail!("{key} exited {code}: {failure:?}"),
            _ => {}
        }
    }
    for k in keys {
        rt.kill(k, Duration::ZERO).await?;
    }
    Ok(done.into_values().collect())
}

fn task(name: &str, node: &str) -> Result<Task> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"job": "bench", "role": "bench", "instanceId": 0,
                 "resources": {"cpus": "100m", "memory": "16Mi"},
                 "container": {"image": IMAGE, "command": ["sleep", "600"], "killGracePeriodSeconds": 0},
                 "nodeName": node}}))?)
}

/// Creates the task bound to the node, ASSIGNED (by the API server, or
/// written so as the scheduler would).
async fn assign(tasks: &Api<Task>, name: &str, node: &str) -> Result<()> {
    let created = tasks
        .create(&PostParams::default(), &task(name, node)?)
        .await?;
    let mut status = created.status.clone().unwrap_or_default();
    // A task created with its node is ASSIGNED by the API server already.
    if status.phase() == TaskPhase::Assigned {
        return Ok(());
    }
    lifecycle::apply(
        &mut status,
        &lifecycle::Event::Assigned { node: node.into() },
        jiff::Timestamp::now(),
        "bench",
    )?;
    tasks
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    Ok(())
}

/// Seconds from ASSIGNED to RUNNING, from the task's events.
fn assigned_to_running(t: &Task) -> Option<f64> {
    let evs = &t.status.as_ref()?.task_events;
    let at = |p| evs.iter().find(|e| e.status == p).map(|e| e.timestamp.0);
    let (a, r) = (at(TaskPhase::Assigned)?, at(TaskPhase::Running)?);
    (r - a).total(jiff::Unit::Second).ok()
}

/// Follows the tasks on a watch until all of `names` are RUNNING; returns them.
async fn wait_running(tasks: &Api<Task>, names: &[String]) -> Result<Vec<Task>> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let mut running: BTreeMap<String, Task> = BTreeMap::new();
    let mut events =
        std::pin::pin!(watcher(tasks.clone(), watcher::Config::default()).applied_objects());
    let all = async {
        while let Some(t) = events.next().await {
            let t = t?;
            let name = t.metadata.name.clone().unwrap_or_default();
            if !names.contains(&name) {
                continue;
            }
            match t.status.as_ref().map(|s| s.phase()) {
                Some(TaskPhase::Running) => {
                    running.insert(name, t);
                }
                Some(TaskPhase::Failed) => bail!("{name} failed: {:?}", t.status),
                _ => {}
            }
            if running.len() == names.len() {
                return Ok(());
            }
        }
        bail!("the task watch ended")
    };
    tokio::time::timeout(Duration::from_secs(300), all)
        .await
        .context("tasks did not all run in time")??;
    Ok(running.into_values().collect())
}

/// One OCI runtime's figures.
struct Figures {
    raw: Vec<f64>,
    /// Starts as root without the seccomp filter, interleaved with `raw`.
    unconfined: Vec<f64>,
    via_agent: Vec<f64>,
    raw_rate: f64,
    agent_rate: f64,
}

/// Measures the runtime alone and through an agent of its own, with
/// `oci_runtime` (`None`: runc) under containerd's runc shim.
async fn measure(
    sock: &Path,
    work: &Path,
    server: &TestServer,
    oci_runtime: Option<&str>,
    (seq_n, par_n): (usize, usize),
) -> Result<Figures> {
    let label = oci_runtime.unwrap_or("runc");
    let connect = |dir: &str| {
        let sandboxes = work.join(format!("{label}-{dir}"));
        async move { runtime(sock, &sandboxes, oci_runtime).await }
    };
    // Baseline: the runtime alone, one at a time, then all at once.
    let rt = connect("raw").await?;
    let (mut raw, mut unconfined) = (Vec::new(), Vec::new());
    // Interleaved with privileged starts: what the isolation costs.
    for i in 0..seq_n {
        raw.extend(raw_starts(&rt, &[format!("bench/{label}-raw-{i}")]).await?);
        let key = format!("bench/{label}-unconfined-{i}");
        unconfined.extend(raw_starts_with(&rt, &[key], Isolation::Unconfined).await?);
    }
    let keys: Vec<String> = (0..par_n)
        .map(|i| format!("bench/{label}-rawpar-{i}"))
        .collect();
    // Until the last one runs (the kills that follow are not counted).
    let last = raw_starts(&rt, &keys)
        .await?
        .into_iter()
        .fold(0.0, f64::max);
    let raw_rate = par_n as f64 / last;

    // The agent: tasks through the API server, the agent loop, the same runtime.
    let node = format!("bench-{label}");
    let agent_rt = Arc::new(connect("agent").await?);
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![agent_rt.clone()];
    let cfg = AgentConfig::new(
        vec![node.clone()],
        serde_json::from_value(json!({"cpus": 64, "memory": "64Gi"}))?,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(agent::run(server.client.clone(), cfg, runtimes, stop_rx));
    let tasks: Api<Task> = Api::namespaced(server.client.clone(), "default");
    let mut via_agent = Vec::new();
    for i in 0..seq_n {
        let name = format!("{label}-seq-{i}");
        assign(&tasks, &name, &node).await?;
        let t = wait_running(&tasks, std::slice::from_ref(&name)).await?;
        via_agent.push(assigned_to_running(&t[0]).context("events")?);
    }
    let names: Vec<String> = (0..par_n).map(|i| format!("{label}-par-{i}")).collect();
    let t0 = Instant::now();
    futures::future::try_join_all(names.iter().map(|n| assign(&tasks, n, &node))).await?;
    wait_running(&tasks, &names).await?;
    let agent_rate = par_n as f64 / t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
    // Stop what the agent ran, so the next runtime starts on an idle machine.
    let seq_names = (0..seq_n).map(|i| format!("{label}-seq-{i}"));
    for n in names.into_iter().chain(seq_names) {
        agent_rt
            .kill(&format!("default/{n}"), Duration::ZERO)
            .await?;
    }
    Ok(Figures {
        raw,
        unconfined,
        via_agent,
        raw_rate,
        agent_rate,
    })
}

fn report(label: &str, f: &mut Figures, (seq_n, par_n): (usize, usize)) {
    let (raw_med, raw_p99) = (median(&mut f.raw) * 1e3, p99(&mut f.raw) * 1e3);
    let (ag_med, ag_p99) = (median(&mut f.via_agent) * 1e3, p99(&mut f.via_agent) * 1e3);
    let (un_med, un_p99) = (
        median(&mut f.unconfined) * 1e3,
        p99(&mut f.unconfined) * 1e3,
    );
    println!("OCI runtime {label}: containerd start, {seq_n} one at a time (ms):");
    println!("  runtime alone, root and unconfined   median {un_med:7.1}   p99 {un_p99:7.1}");
    println!("  runtime alone (baseline)   median {raw_med:7.1}   p99 {raw_p99:7.1}");
    println!(
        "  isolation (nobody in a user namespace, seccomp filter, user lookup) costs {:+.1} ms a start (median; goal <= 5 ms)",
        raw_med - un_med
    );
    println!(
        "  agent ASSIGNED -> RUNNING  median {ag_med:7.1}   p99 {ag_p99:7.1}   ({:.2}x)",
        ag_med / raw_med
    );
    println!(
        "  agent overhead (median)    {:7.1} ms   (goal <= 10 ms)",
        ag_med - raw_med
    );
    println!("OCI runtime {label}: {par_n} at once:");
    println!("  runtime alone (baseline)   {:7.1} tasks/s", f.raw_rate);
    println!(
        "  through the agent          {:7.1} tasks/s   ({:.2}x; goal >= 40/s)",
        f.agent_rate,
        f.agent_rate / f.raw_rate
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let counts = (
        env("CORRAL_BENCH_SEQUENTIAL", 20),
        env("CORRAL_BENCH_PARALLEL", 100),
    );
    let (_daemon, sock) = Daemon::start()?;
    let work = tempfile::tempdir()?;
    let server = TestServer::start()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The benchmark's tasks run on a Role of their own.
    server
        .roles(&["bench"])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut runtimes = vec![None];
    if which("crun") {
        runtimes.push(Some("crun"));
    } else {
        println!("crun is not installed: measuring runc only");
    }
    for oci in runtimes {
        let mut f = measure(&sock, work.path(), &server, oci, counts).await?;
        report(oci.unwrap_or("runc"), &mut f, counts);
    }
    server.shutdown().await;
    Ok(())
}

/// Whether `name` is on the PATH.
fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}
