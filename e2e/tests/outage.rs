//! Control-plane outages kill and replace nothing, and lose nothing: agents
//! (simulated nodes, real `corral agent` and `corral server` processes over
//! a real etcd) keep their tasks through a frozen etcd and through a server
//! that is killed and restarted, each lasting several leases; afterwards
//! the same task objects run, with no new attempt and no LOST or
//! PARTITIONED event. A server killed with SIGKILL under 16 writers keeps
//! every create it acknowledged.

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
    let listen = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_load_loses_no_acknowledged_write() -> Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, ListParams, PostParams};
    let home = tempfile::tempdir()?;
    let listen = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    );
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
    let server = Server::start_at(home.path(), &listen, &[])?;
    let cms: Api<ConfigMap> = Api::namespaced(client(&server.kubeconfig).await?, "default");
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
        "{} creates acknowledged before the SIGKILL, {} stored after the restart",
        acknowledged.len(),
        stored.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    Ok(())
}
