//! Control-plane outages kill and replace nothing, and lose nothing: agents
//! (simulated nodes, real `corral agent` and `corral server` processes over
//! a real etcd) keep their tasks through a frozen etcd and through a server
//! that is killed and restarted, each lasting several leases; afterwards
//! the same task objects run, with no new attempt and no LOST or
//! PARTITIONED event. A server killed with SIGKILL under 16 writers keeps
//! every create it acknowledged, and kube-rs watchers that were following
//! along resume from their resourceVersion after the restart: they see
//! every stored object exactly once and never have to relist.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corral_e2e::{Agent, Kubectl, Server, wait_for};
use serde_json::Value;

/// The agents' lease: short, so that an outage outlasts several.
const LEASE_SECONDS: &str = "3";
/// How long each outage lasts: three leases.
const OUTAGE: Duration = Duration::from_secs(9);

const JOB: &str = "apiVersion: corral.dev/v1alpha1
kind: Job
metadata: {name: web, namespace: default}
spec:
  role: web
  environment: prod
  kind: service
  instances: 3
  resources: {cpus: 1, memory: 256Mi}
  container: {image: busybox}
  partitionPolicy: {reschedule: true, delaySeconds: 0}
";

/// Each task: name → (uid, phase, the phases of its events).
type Tasks = BTreeMap<String, (String, String, Vec<String>)>;

/// Each task of the job.
fn tasks(k: &Kubectl) -> Result<Tasks> {
    let out = k
        .run(&["get", "tasks", "-n", "default", "-o", "json"])?
        .ok()?;
    let list: Value = serde_json::from_str(&out)?;
    let mut all = BTreeMap::new();
    for t in list["items"].as_array().context("items")? {
        let name = t["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let uid = t["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        let phase = t["status"]["phase"].as_str().unwrap_or_default().to_owned();
        let events = t["status"]["taskEvents"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|e| e["status"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        all.insert(name, (uid, phase, events));
    }
    Ok(all)
}

fn all_running(k: &Kubectl) -> Result<bool> {
    let t = tasks(k)?;
    Ok(t.len() == 3 && t.values().all(|(_, phase, _)| phase == "RUNNING"))
}

fn nodes_ready(k: &Kubectl) -> Result<bool> {
    let out = k
        .run(&[
            "get",
            "nodes.corral.dev",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ])?
        .ok()?;
    let statuses: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    Ok(statuses.len() == 3 && statuses.iter().all(|s| *s == "True"))
}

/// After an outage: the nodes come back Ready, and for a few controller
/// ticks more the tasks stay exactly as they were before it.
fn nothing_changed(
    k: &Kubectl,
    before: &BTreeMap<String, (String, String, Vec<String>)>,
) -> Result<()> {
    wait_for(
        "the nodes to be Ready again",
        Duration::from_secs(60),
        || nodes_ready(k),
    )?;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let now = tasks(k)?;
        if &now != before {
            bail!("the tasks changed through the outage:\nbefore {before:?}\nafter {now:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

fn setup(server: &Server) -> Result<(Kubectl, Agent)> {
    let k = Kubectl::new(server)?;
    k.corral_role("web")?;
    let agent = Agent::start(
        server,
        "agent",
        &[
            "--node-name",
            "sim",
            "--runtimes",
            "simulated",
            "--simulate-nodes",
            "3",
            "--resources",
            "cpus=1,memory=1Gi",
            "--lease-seconds",
            LEASE_SECONDS,
        ],
    )?;
    wait_for("three Ready nodes", Duration::from_secs(60), || {
        nodes_ready(&k)
    })?;
    k.run_stdin(&["apply", "-f", "-"], JOB)?.ok()?;
    wait_for(
        "the three instances to run",
        Duration::from_secs(60),
        || all_running(&k),
    )?;
    Ok((k, agent))
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {sig} {pid}");
    Ok(())
}

/// A real etcd (no fsync), and the `--store` that names it.
fn etcd() -> Result<(corral_store::testing::EtcdServer, String)> {
    let etcd =
        corral_store::testing::EtcdServer::start_with(corral_store::testing::Durability::NoFsync)?;
    let store = format!("etcd://{}", etcd.endpoint().trim_start_matches("http://"));
    Ok((etcd, store))
}

#[test]
fn a_frozen_etcd_kills_and_replaces_nothing() -> Result<()> {
    let (etcd, store) = etcd()?;
    let home = tempfile::tempdir()?;
    let server = Server::start_in(home.path(), &["--store", &store])?;
    let (k, _agent) = setup(&server)?;
    let before = tasks(&k)?;
    // etcd stops answering (a frozen machine, a disk that hangs) for three leases.
    signal(etcd.pid(), "-STOP")?;
    std::thread::sleep(OUTAGE);
    signal(etcd.pid(), "-CONT")?;
    nothing_changed(&k, &before)?;
    Ok(())
}

#[test]
fn a_killed_and_restarted_server_kills_and_replaces_nothing() -> Result<()> {
    let (_etcd, store) = etcd()?;
    let home = tempfile::tempdir()?;
    // A fixed address, so that the agents find the server again.
    let listen = corral_e2e::free_address()?;
    let server = Server::start_at(home.path(), &listen, &["--store", &store])?;
    let (k, _agent) = setup(&server)?;
    let before = tasks(&k)?;
    // The only control plane dies (SIGKILL) and stays down for three leases.
    server.crash()?;
    std::thread::sleep(OUTAGE);
    let _server = Server::start_at(home.path(), &listen, &["--store", &store])?;
    nothing_changed(&k, &before)?;
    Ok(())
}

/// What the watchers of a test saw: ConfigMap names with how often each
/// was added, and how often the watcher had to (re)list.
#[derive(Debug, Default)]
struct Seen {
    runtime: BTreeMap<String, usize>,
    runtime_lists: usize,
    resumed: BTreeMap<String, usize>,
    expired: usize,
}

type SharedSeen = std::sync::Arc<std::sync::Mutex<Seen>>;

fn seen(s: &SharedSeen) -> Result<std::sync::MutexGuard<'_, Seen>> {
    s.lock().map_err(|_| anyhow::anyhow!("lock"))
}

/// kube-runtime's watcher, as controllers use it: it resumes by itself.
fn follow_with_watcher(
    cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap>,
    record: SharedSeen,
) -> tokio::task::JoinHandle<Result<()>> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    tokio::spawn(async move {
        let stream = watcher(cms, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let mut s = seen(&record)?;
            match ev {
                Ok(watcher::Event::Init) => s.runtime_lists += 1,
                Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                    *s.runtime
                        .entry(cm.metadata.name.unwrap_or_default())
                        .or_default() += 1;
                }
                _ => {}
            }
        }
        Ok(())
    })
}

/// A plain watch that the client itself resumes from the last
/// resourceVersion it saw, as client-go's reflector does.
fn follow_by_resuming(
    cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap>,
    mut version: String,
    record: SharedSeen,
) -> tokio::task::JoinHandle<Result<()>> {
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    tokio::spawn(async move {
        loop {
            let Ok(stream) = cms.watch(&WatchParams::default(), &version).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(WatchEvent::Added(cm)) => {
                        version = cm.metadata.resource_version.clone().unwrap_or_default();
                        *seen(&record)?
                            .resumed
                            .entry(cm.metadata.name.unwrap_or_default())
                            .or_default() += 1;
                    }
                    Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                    Ok(WatchEvent::Error(e)) if e.code == 410 => seen(&record)?.expired += 1,
                    _ => {}
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_load_loses_no_acknowledged_write() -> Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, ListParams, PostParams};
    let home = tempfile::tempdir()?;
    let listen = corral_e2e::free_address()?;
    let server = Server::start_at(home.path(), &listen, &[])?;
    let client = |kubeconfig: &std::path::Path| {
        let kubeconfig = kubeconfig.to_owned();
        async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
            let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            config.default_retry = false;
            anyhow::Ok(kube::Client::try_from(config)?)
        }
    };
    let cms: Api<ConfigMap> = Api::namespaced(client(&server.kubeconfig).await?, "default");
    // Two watchers follow the namespace through the crash; both connect
    // again to the same address (and trust the same CA) afterwards.
    let record = SharedSeen::default();
    let start = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let watchers = [
        follow_with_watcher(cms.clone(), record.clone()),
        follow_by_resuming(cms.clone(), start, record.clone()),
    ];
    // 16 writers create ConfigMaps until the server dies under them.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (cms, acked) = (cms.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    let cm: ConfigMap = serde_json::from_value(
                        serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}}),
                    )?;
                    match cms.create(&PostParams::default(), &cm).await {
                        Ok(_) => acked
                            .lock()
                            .map_err(|_| anyhow::anyhow!("lock"))?
                            .push(name),
                        Err(_) => return anyhow::Ok(()),
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let count = || acked.lock().map(|a| a.len()).unwrap_or(0);
    while count() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.crash()?;
    for w in writers {
        w.await??;
    }
    let acknowledged = acked.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let seen_before = seen(&record)?.runtime.len();
    let server = Server::start_at(home.path(), &listen, &[])?;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server.kubeconfig).await?, "default");
    // Writes after the restart reach the resumed watchers too.
    for i in 0..20 {
        let cm: ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": format!("after-{i}")}, "data": {"k": "v"}}),
        )?;
        cms.create(&PostParams::default(), &cm).await?;
    }
    let stored: std::collections::BTreeSet<String> = cms
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    eprintln!(
        "{} creates acknowledged before the SIGKILL, {} stored after the restart; \
         the watchers had seen {seen_before} before it",
        acknowledged.len(),
        stored.len() - 20,
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // Both watchers catch up with every stored object.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let s = seen(&record)?;
            let caught_up = |m: &BTreeMap<String, usize>| stored.iter().all(|n| m.contains_key(n));
            if caught_up(&s.runtime) && caught_up(&s.resumed) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the watchers did not catch up: kube-runtime's saw {} and the resuming one {} of {} ({} answered 410)",
                    s.runtime.len(),
                    s.resumed.len(),
                    stored.len(),
                    s.expired
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in watchers {
        w.abort();
    }
    let s = seen(&record)?;
    assert_eq!(s.expired, 0, "no resume was refused with 410");
    assert_eq!(s.runtime_lists, 1, "kube-runtime's watcher never relisted");
    for (who, m) in [("kube-runtime", &s.runtime), ("resuming", &s.resumed)] {
        let twice: Vec<_> = m.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            twice.is_empty(),
            "{who} saw these more than once: {twice:?}"
        );
        let unknown: Vec<_> = m.keys().filter(|n| !stored.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{who} saw objects never stored: {unknown:?}"
        );
    }
    Ok(())
}
