//! The long run (not a CI test): a real `corral server` (embedded store on
//! disk, controllers in-process under their own identities), one `corral
//! agent` standing in for N simulated nodes and a second, small one that
//! flaps, under churn for M minutes:
//! - services scaled between night and day sizes every few minutes, so the
//!   day peak needs the capacity a preemptible filler borrows and preempts it;
//! - an ad-hoc job every 10 s (each task runs 20 s), deleted two minutes on;
//! - cron jobs every minute;
//! - the flapping agent stopped (SIGSTOP) for three of its leases every
//!   three minutes, so its nodes are lost and come back.
//!
//! The churn is driven by a workload user (edit rights in one namespace);
//! the agents use the admin credential, the controllers their own.
//!
//! Reported: stuck tasks once the churn stops (tasks still in a transient
//! phase, and service instances not running, after a settling time; goal
//! 0); the RSS of the server (controllers included) and of the big agent,
//! after warm-up and at the end (goal: under 10 % growth); the store's
//! files on disk (goal: flat); p99 of the API's wait for a slot and of its
//! execution, per priority level, after warm-up.
//!
//! `CORRAL_SOAK_MINUTES` (default 30), `CORRAL_SOAK_NODES` (default 5000),
//! `CORRAL_SOAK_PERIOD_SECONDS` (day↔night, default 240),
//! `CORRAL_SOAK_WARM_UP_SECONDS` (600: two compaction intervals, so the
//! store has begun reusing what compaction frees) and
//! `CORRAL_SOAK_SETTLE_SECONDS` (300);
//! `CORRAL_BIN` names the binary (default: target/release, else debug).
//! Run: `cargo build -p corral-cli --release && cargo bench -p corral-e2e --bench soak`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corral_api::{Task, TaskPhase};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NAMESPACE: &str = "soak";
const SERVICES: usize = 10;
/// The flapping agent's lease; it is stopped for three of them.
const FLAP_LEASE: u64 = 10;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process, stopped by PID when dropped.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn signal(&self, sig: &str) -> Result<()> {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill {sig} {} failed", self.pid());
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.signal("-CONT");
        let _ = self.signal("-TERM");
        let _ = self.0.wait();
    }
}

fn corral_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("CORRAL_BIN") {
        return Ok(p.into());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("corral");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("no corral binary: cargo build -p corral-cli --release")
}

fn spawn(home: &Path, log: &str, args: &[&str]) -> Result<Proc> {
    let log = std::fs::File::create(home.join(log))?;
    let child = Command::new(corral_bin()?)
        .args(args)
        .env_remove("CORRAL_STORE")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(Proc(child))
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The store's files on disk, MiB.
fn store_mib(home: &Path) -> f64 {
    ["store.db", "store.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(home.join(f)).ok())
        .map(|m| m.len() as f64)
        .sum::<f64>()
        / (1024.0 * 1024.0)
}

async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Cumulative histogram buckets per priority level: (le, count).
type Buckets = BTreeMap<String, Vec<(f64, f64)>>;

/// The buckets of `metric` per priority level, from a scrape.
fn buckets(text: &str, metric: &str) -> Buckets {
    let mut out = Buckets::new();
    let prefix = format!("{metric}_bucket{{");
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let Some((labels, count)) = line[prefix.len()..].split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        let (Some(le), Some(level)) = (label("le"), label("priority_level")) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        out.entry(level)
            .or_default()
            .push((le, count.trim().parse().unwrap_or(0.0)));
    }
    out
}

/// The 99th percentile's bucket bound of what was observed between two
/// scrapes, per level, with the number of requests.
fn p99(before: &Buckets, after: &Buckets) -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    for (level, now) in after {
        let then = before.get(level);
        let delta: Vec<(f64, f64)> = now
            .iter()
            .map(|(le, c)| {
                let old = then
                    .and_then(|t| t.iter().find(|(l, _)| l == le))
                    .map_or(0.0, |(_, c)| *c);
                (*le, c - old)
            })
            .collect();
        let total = delta.last().map_or(0.0, |(_, c)| *c);
        if total <= 0.0 {
            continue;
        }
        let bound = delta
            .iter()
            .find(|(_, c)| *c >= 0.99 * total)
            .map_or(f64::INFINITY, |(le, _)| *le);
        out.insert(level.clone(), (bound, total));
    }
    out
}

async fn scrape(admin: &kube::Client) -> Result<String> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    Ok(admin.request_text(req).await?)
}

fn role_and_quota() -> Vec<Value> {
    vec![
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "web"}, "spec": {"weight": 3}}),
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "batch"}, "spec": {"weight": 1}}),
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Quota", "metadata": {"name": "web"},
               "spec": {"role": "web", "guarantee": {"cpus": 100000, "memory": "400Ti"},
                        "limit": {"cpus": 100000, "memory": "400Ti"}, "lendUnused": true}}),
    ]
}

fn job(name: &str, role: &str, kind: &str, instances: u64, extra: Value) -> Result<Value> {
    let mut job = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"role": role, "environment": "prod", "kind": kind, "instances": instances,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"}}});
    merge(&mut job, extra);
    Ok(job)
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Tasks stuck after the churn: in a transient phase, plus service
/// instances that do not run.
async fn stuck(tasks: &Api<Task>, services: &[(String, u64)]) -> Result<(usize, String)> {
    let list = tasks.list(&ListParams::default()).await?;
    let mut by_phase: BTreeMap<String, usize> = BTreeMap::new();
    let mut running: BTreeMap<String, u64> = BTreeMap::new();
    let mut transient = 0;
    for t in &list.items {
        let phase = t
            .status
            .as_ref()
            .map(|s| s.phase())
            .unwrap_or(TaskPhase::Pending);
        *by_phase.entry(format!("{phase:?}")).or_default() += 1;
        match phase {
            TaskPhase::Assigned
            | TaskPhase::Starting
            | TaskPhase::Killing
            | TaskPhase::Preempting
            | TaskPhase::Restarting
            | TaskPhase::Draining
            | TaskPhase::Partitioned => transient += 1,
            TaskPhase::Running => *running.entry(t.spec.job.clone()).or_default() += 1,
            _ => {}
        }
    }
    let short: u64 = services
        .iter()
        .map(|(job, want)| want.saturating_sub(running.get(job).copied().unwrap_or(0)))
        .sum();
    Ok((transient + short as usize, format!("{by_phase:?}")))
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rlimit::increase_nofile_limit(65_536);
    let minutes = env("CORRAL_SOAK_MINUTES", 30);
    let nodes = env("CORRAL_SOAK_NODES", 5000);
    // Capacity: 4 CPUs a node. Night: services at a tenth of it, the filler
    // at two fifths; day: services at seven tenths, so the filler gives way.
    let capacity = nodes * 4;
    let (night, day) = (
        capacity / 10 / SERVICES as u64,
        capacity * 7 / 10 / SERVICES as u64,
    );
    let filler = capacity * 2 / 5;
    let period = Duration::from_secs(env("CORRAL_SOAK_PERIOD_SECONDS", 240));
    let warm_up = Duration::from_secs(env("CORRAL_SOAK_WARM_UP_SECONDS", 600));
    let settle = Duration::from_secs(env("CORRAL_SOAK_SETTLE_SECONDS", 300));
    println!(
        "soak: {minutes} min, {nodes} simulated nodes (+100 flapping), {SERVICES} services of {night}↔{day}, filler {filler}"
    );

    let home = tempfile::tempdir()?;
    let home = home.path();
    let listen = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    );
    let server = spawn(
        home,
        "server.log",
        &[
            "server",
            "--listen",
            &listen,
            "--home",
            &home.display().to_string(),
        ],
    )?;
    let kubeconfig = home.join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        if Instant::now() > deadline {
            bail!("the server wrote no kubeconfig");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = client(&kubeconfig).await?;
    let home_s = home.display().to_string();
    let kc_s = kubeconfig.display().to_string();
    let agent_args = |name: &str, n: u64, lease: Option<u64>| {
        let mut a = vec![
            "agent".to_owned(),
            "--kubeconfig".into(),
            kc_s.clone(),
            "--home".into(),
            home_s.clone(),
            "--config-dir".into(),
            format!("{home_s}/no-agent-config-{name}"),
            "--node-name".into(),
            name.into(),
            "--runtimes".into(),
            "simulated".into(),
            "--simulate-nodes".into(),
            n.to_string(),
            "--resources".into(),
            "cpus=4,memory=16Gi".into(),
        ];
        if let Some(l) = lease {
            a.extend(["--lease-seconds".into(), l.to_string()]);
        }
        a
    };
    let args = agent_args("sim", nodes, None);
    let agent = spawn(
        home,
        "agent.log",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let args = agent_args("flap", 100, Some(FLAP_LEASE));
    let flapper = spawn(
        home,
        "flap.log",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;

    // The churn's driver: a workload user who may edit one namespace.
    let status = Command::new(corral_bin()?)
        .args([
            "credentials",
            "user",
            "soak-driver",
            "--group",
            "soak-team",
            "--home",
            &home_s,
            "--out",
        ])
        .arg(home.join("driver.kubeconfig"))
        .args(["--server", &format!("https://{listen}")])
        .status()?;
    if !status.success() {
        bail!("corral credentials user failed");
    }
    let apply = |v: Value| {
        let admin = admin.clone();
        async move {
            let ar = kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                v["apiVersion"]
                    .as_str()
                    .unwrap_or("v1")
                    .split_once('/')
                    .map_or("", |(g, _)| g),
                v["apiVersion"]
                    .as_str()
                    .unwrap_or("v1")
                    .rsplit('/')
                    .next()
                    .unwrap_or("v1"),
                v["kind"].as_str().unwrap_or_default(),
            ));
            let obj: kube::api::DynamicObject = serde_json::from_value(v.clone())?;
            let api: Api<kube::api::DynamicObject> = match v["metadata"]["namespace"].as_str() {
                Some(ns) => Api::namespaced_with(admin, ns, &ar),
                None => Api::all_with(admin, &ar),
            };
            api.create(&PostParams::default(), &obj).await?;
            anyhow::Ok(())
        }
    };
    apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        .await?;
    apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "soak-team-edit", "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "soak-team"}]})).await?;
    apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "use-soak-roles", "namespace": NAMESPACE},
        "rules": [{"apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["web", "batch"], "verbs": ["use"]}]})).await?;
    apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "use-soak-roles", "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "use-soak-roles"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "soak-team"}]})).await?;
    for v in role_and_quota() {
        apply(v).await?;
    }
    let driver = client(&home.join("driver.kubeconfig")).await?;
    let jobs: Api<kube::api::DynamicObject> = Api::namespaced_with(
        driver.clone(),
        NAMESPACE,
        &kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "corral.dev",
            "v1alpha1",
            "Job",
        )),
    );
    let tasks: Api<Task> = Api::namespaced(driver.clone(), NAMESPACE);
    let create = |v: Value| {
        let jobs = jobs.clone();
        async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(v)?;
            jobs.create(&PostParams::default(), &obj).await?;
            anyhow::Ok(())
        }
    };
    let mut services: Vec<(String, u64)> = Vec::new();
    for s in 0..SERVICES {
        let name = format!("svc-{s}");
        create(job(
            &name,
            "web",
            "service",
            night,
            json!({"spec": {"tier": "preferred", "priority": 10,
            "partitionPolicy": {"reschedule": true, "delaySeconds": 0}}}),
        )?)
        .await?;
        services.push((name, night));
    }
    create(job(
        "filler",
        "batch",
        "service",
        filler,
        json!({"spec": {"tier": "preemptible",
        "partitionPolicy": {"reschedule": true, "delaySeconds": 0}}}),
    )?)
    .await?;
    services.push(("filler".into(), filler));
    for c in 0..5 {
        create(job(
            &format!("cron-{c}"),
            "batch",
            "cron",
            20,
            json!({
            "metadata": {"annotations": {"corral.dev/simulate-duration": "30s"}},
            "spec": {"tier": "preemptible", "cron": {"schedule": "* * * * *", "historyLimit": 3}}}),
        )?)
        .await?;
    }

    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let mut next_adhoc = start;
    let mut next_swing = start + period;
    let mut next_flap = start + Duration::from_secs(180);
    let mut next_sample = start;
    let mut is_day = false;
    let mut adhoc: std::collections::VecDeque<(Instant, String)> = Default::default();
    let mut n_adhoc = 0;
    let (mut warm, mut warm_metrics) = (None, None);
    let mut errors = 0u64;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_swing {
            is_day = !is_day;
            let size = if is_day { day } else { night };
            for (name, want) in services.iter_mut().filter(|(n, _)| n.starts_with("svc-")) {
                let patch = json!({"spec": {"instances": size}});
                if jobs
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    *want = size;
                } else {
                    errors += 1;
                }
            }
            next_swing = now + period;
        }
        if now >= next_adhoc {
            let name = format!("adhoc-{n_adhoc}");
            n_adhoc += 1;
            let created = create(job(
                &name,
                "batch",
                "adhoc",
                50,
                json!({
                "metadata": {"annotations": {"corral.dev/simulate-duration": "20s"}},
                "spec": {"tier": "preemptible", "maxTaskFailures": -1}}),
            )?)
            .await;
            match created {
                Ok(()) => adhoc.push_back((now, name)),
                Err(_) => errors += 1,
            }
            while adhoc
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(120))
            {
                if let Some((_, name)) = adhoc.pop_front()
                    && jobs
                        .delete(&name, &DeleteParams::background())
                        .await
                        .is_err()
                {
                    errors += 1;
                }
            }
            next_adhoc = now + Duration::from_secs(10);
        }
        if now >= next_flap {
            flapper.signal("-STOP")?;
            tokio::time::sleep(Duration::from_secs(3 * FLAP_LEASE)).await;
            flapper.signal("-CONT")?;
            next_flap = Instant::now() + Duration::from_secs(180);
        }
        if now >= next_sample {
            let (s, a) = (rss_mib(server.pid()), rss_mib(agent.pid()));
            let store = store_mib(home);
            println!(
                "  {:>5.1} min: server RSS {s:.0} MiB, agent RSS {a:.0} MiB, store {store:.1} MiB, {} ({errors} driver errors)",
                now.duration_since(start).as_secs_f64() / 60.0,
                if is_day { "day" } else { "night" },
            );
            if warm.is_none() && now.duration_since(start) >= warm_up {
                warm = Some((s, a, store));
                warm_metrics = Some(scrape(&admin).await?);
            }
            next_sample = now + Duration::from_secs(30);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let end_metrics = scrape(&admin).await?;
    let end_sample = (rss_mib(server.pid()), rss_mib(agent.pid()), store_mib(home));

    // The churn stops at night sizes; everything must settle.
    for (name, want) in services.iter_mut().filter(|(n, _)| n.starts_with("svc-")) {
        let patch = json!({"spec": {"instances": night}});
        jobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        *want = night;
    }
    let settle_end = Instant::now() + settle;
    let (left, phases) = loop {
        let (left, phases) =
            match tokio::time::timeout(Duration::from_secs(120), stuck(&tasks, &services)).await {
                Ok(r) => r?,
                Err(_) => (
                    usize::MAX,
                    "listing the tasks took over 2 minutes".to_owned(),
                ),
            };
        println!("  settling: {left} stuck; {phases}");
        if left == 0 || Instant::now() > settle_end {
            break (left, phases);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    println!("stuck tasks after {settle:?} of settling: {left} (goal 0); tasks by phase: {phases}");
    let Some((ws, wa, wstore)) = warm else {
        bail!("the run was shorter than its warm-up ({warm_up:?})");
    };
    let (es, ea, estore) = end_sample;
    let growth = |a: f64, b: f64| (b - a) / a * 100.0;
    println!(
        "RSS after warm-up → end: server {ws:.0} → {es:.0} MiB ({:+.1} %), agent {wa:.0} → {ea:.0} MiB ({:+.1} %) (goal < 10 %)",
        growth(ws, es),
        growth(wa, ea)
    );
    println!(
        "store on disk after warm-up → end: {wstore:.1} → {estore:.1} MiB ({:+.1} %)",
        growth(wstore, estore)
    );
    let warm_metrics = warm_metrics.context("no scrape after warm-up")?;
    for (what, metric) in [
        (
            "wait for a slot",
            "apiserver_flowcontrol_request_wait_duration_seconds",
        ),
        (
            "execution",
            "apiserver_flowcontrol_request_execution_seconds",
        ),
    ] {
        for (level, (bound, n)) in p99(
            &buckets(&warm_metrics, metric),
            &buckets(&end_metrics, metric),
        ) {
            println!("API {what}, level {level}: p99 ≤ {bound} s over {n:.0} requests");
        }
    }
    println!("driver errors during the churn: {errors}; ad-hoc jobs created: {n_adhoc}");
    drop((flapper, agent, server));
    Ok(())
}
