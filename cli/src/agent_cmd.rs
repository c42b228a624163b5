//! `corral agent`: registers this machine (or N simulated nodes) and runs
//! the tasks bound to it; `corral agent image import FILE.tar` loads an OCI
//! image into containerd without a registry.
//!
//! `args.rs` holds its flags and where their values come from;
//! `credentials.rs` its identity and its clients of the API server.

mod args;
mod credentials;

pub use args::*;
pub use credentials::*;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use corral_api::node::LogEndpoint;
use corral_api::node::RuntimeKind;
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::checkpoint::Checkpoints;
use corral_node_agent::flags;
use corral_node_agent::logs;
use corral_node_agent::runtime::cgroup::Cgroup;
use corral_node_agent::runtime::containerd::{self, Containerd, ContainerdConfig};
use corral_node_agent::runtime::process::Process;
use corral_node_agent::runtime::{ContainerRuntime, Simulated};

use crate::store_cmd::home_dir;

pub async fn run(args: AgentArgs) -> Result<()> {
    match args.command {
        Some(AgentCommand::Image(ImageCommand::Import { file, containerd })) => {
            import_image(&file, &containerd)
        }
        None => run_agent(args.run).await,
    }
}

/// Imports with containerd's own `ctr` (containerd 1.6 has no Transfer
/// service, and unpacking through the API means re-implementing what `ctr`
/// already does well).
fn import_image(file: &Path, c: &ContainerdArgs) -> Result<()> {
    anyhow::ensure!(file.is_file(), "{} is not a file", file.display());
    let status = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&c.containerd_address)
        .args(["-n", &c.containerd_namespace, "images", "import"])
        .args(["--snapshotter", &c.snapshotter])
        .arg(file)
        .status()
        .context("running ctr (it comes with containerd)")?;
    anyhow::ensure!(status.success(), "ctr images import failed: {status}");
    Ok(())
}

/// Imports every `*.tar` in `dir` (in name order). An archive that does not
/// import is reported and skipped: the agent still starts.
fn import_dir(dir: &Path, c: &ContainerdArgs) -> Result<()> {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading --image-dir {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "tar"))
        .collect();
    archives.sort();
    for archive in archives {
        match import_image(&archive, c) {
            Ok(()) => tracing::info!(archive = %archive.display(), "image imported"),
            Err(e) => {
                tracing::warn!(archive = %archive.display(), error = %e, "image import failed")
            }
        }
    }
    Ok(())
}

/// The machine's CPUs, memory, and the disk space of the filesystem that
/// holds the sandboxes, for `--resources` left unset.
fn detect_resources(sandboxes: &Path) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(1 << 20);
    let mut detected = format!("cpus={cpus},memory={mem_kib}Ki");
    if let Ok(fs) = nix::sys::statvfs::statvfs(sandboxes) {
        let bytes = fs.blocks_available().saturating_mul(fs.fragment_size());
        detected.push_str(&format!(",disk={}Mi", bytes >> 20));
    }
    detected
}

/// Where the agent of `node` keeps its tasks' sandboxes.
pub fn sandboxes(args: &RunArgs, home: &Path, node: &str) -> PathBuf {
    args.work_dir
        .clone()
        .unwrap_or_else(|| home.join("agent").join(node).join("sandboxes"))
}

/// The runtimes `args` name, in order; containerd is skipped when its socket
/// does not answer and other runtimes are named (tasks that would have run
/// with it then wait for a node that has it: no other runtime stands in).
pub async fn build_runtimes(
    args: &RunArgs,
    sandboxes: &Path,
    checkpoints: Option<&Checkpoints>,
) -> Result<Vec<Arc<dyn ContainerRuntime>>> {
    let mut runtimes: Vec<Arc<dyn ContainerRuntime>> = Vec::new();
    let cgroups = Cgroup::available(&args.cgroup_root).then(|| args.cgroup_root.clone());
    for r in &args.runtimes {
        match r.as_str() {
            "simulated" => runtimes.push(Arc::new(Simulated::default())),
            "process" => {
                if cgroups.is_none() {
                    tracing::warn!(root = %args.cgroup_root.display(), "no cgroup v1 cpu/memory/pids controllers: the process runtime runs tasks without limits");
                }
                runtimes.push(Arc::new(Process::keeping_ends(
                    sandboxes,
                    cgroups.clone(),
                    checkpoints.cloned(),
                )));
            }
            "containerd" => {
                let cfg = ContainerdConfig {
                    address: args.containerd.containerd_address.clone(),
                    namespace: args.containerd.containerd_namespace.clone(),
                    snapshotter: args.containerd.snapshotter.clone(),
                    sandboxes: sandboxes.to_owned(),
                    cgroup_root: args.cgroup_root.clone(),
                    pull: args.containerd.pull_images == "missing",
                    insecure_registries: args.containerd.insecure_registries.clone(),
                    oci_runtime: Some(args.containerd.oci_runtime.clone()).filter(|r| r != "runc"),
                    userns_base: Some(args.containerd.userns_base)
                        .filter(|b| *b != 0 && containerd::user_namespaces_allowed()),
                    checkpoints: checkpoints.cloned(),
                };
                match Containerd::connect(cfg).await {
                    Ok(c) => {
                        if let Some(dir) = &args.image_dir {
                            import_dir(dir, &args.containerd)?;
                        }
                        runtimes.push(Arc::new(c))
                    }
                    Err(e) if args.runtimes.len() > 1 => {
                        eprintln!("containerd is not available ({e}); using the other runtimes");
                    }
                    Err(e) => bail!("containerd is not available: {e}"),
                }
            }
            other => bail!("unknown runtime {other:?} (available: containerd, process, simulated)"),
        }
    }
    anyhow::ensure!(!runtimes.is_empty(), "no runtime could be set up");
    Ok(runtimes)
}

async fn run_agent(args: RunArgs) -> Result<()> {
    let mut first = true;
    loop {
        let agent = start_agent(args.clone(), None).await?;
        if std::mem::take(&mut first) {
            outln!("{}", agent.summary);
        }
        tokio::select! {
            signal = crate::server_cmd::wait_for_signal() => {
                signal?;
                return agent.stop().await;
            }
            () = renewal_due(&args) => {
                // A client keeps the certificate it was made with: the agent
                // starts again with the new one (its tasks keep running and
                // are re-adopted).
                tracing::info!("renewing this node's credential: restarting the agent");
                agent.stop().await?;
            }
        }
    }
}

/// Resolves when the node credential an agent joined with enters the last
/// fifth of its life; never without `--bootstrap-kubeconfig`.
async fn renewal_due(args: &RunArgs) {
    let held = args.bootstrap_kubeconfig.as_ref().and_then(|_| {
        let home = home_dir(args.home.clone()).ok()?;
        let kubeconfig = args
            .kubeconfig
            .clone()
            .unwrap_or_else(|| home.join("kubeconfig"));
        corral_node_agent::join::held(&kubeconfig)
    });
    let Some(held) = held else {
        return std::future::pending().await;
    };
    // The agent joined (or renewed) as it started: a renewal that is due
    // already failed then, and is tried again no sooner than this.
    const RETRY: std::time::Duration = std::time::Duration::from_secs(600);
    let wait = corral_node_agent::join::renewal_at(&held).duration_since(jiff::Timestamp::now());
    let wait = std::time::Duration::try_from(wait).unwrap_or_default();
    tokio::time::sleep(wait.max(RETRY)).await;
}

/// A started agent.
#[derive(Debug)]
pub struct StartedAgent {
    /// `corral agent running for node …`, for people.
    pub summary: String,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
    _logs: Option<logs::LogServer>,
}

impl StartedAgent {
    /// Stops it; running tasks keep running, and the next start re-adopts them.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.handle.await??;
        Ok(())
    }
}

/// Registers the node(s) and starts running tasks; `client` replaces the
/// one the kubeconfig would give.
pub async fn start_agent(args: RunArgs, client: Option<kube::Client>) -> Result<StartedAgent> {
    let home = home_dir(args.home.clone())?;
    let (client, renewals) = match client {
        Some(c) => (c.clone(), c),
        None => {
            let kubeconfig = args
                .kubeconfig
                .clone()
                .unwrap_or_else(|| home.join("kubeconfig"));
            if let Some(bootstrap) = &args.bootstrap_kubeconfig {
                let Some(node) = &args.node_name else {
                    bail!("--bootstrap-kubeconfig needs --node-name: the node to join as");
                };
                join(&kubeconfig, bootstrap, node).await?;
            }
            (
                client_from(&kubeconfig).await?,
                client_without_retries(&kubeconfig).await?,
            )
        }
    };
    let node_name = node_name_of(&args, whoami(&client).await?)?;
    let sandboxes = sandboxes(&args, &home, &node_name);
    std::fs::create_dir_all(&sandboxes)
        .with_context(|| format!("creating {}", sandboxes.display()))?;
    // Task ends not yet reported survive a restart of the agent.
    let checkpoints = Checkpoints::open(home.join("agent").join(&node_name).join("checkpoints"))
        .context("preparing the checkpoint directory")?;
    let runtimes = build_runtimes(&args, &sandboxes, Some(&checkpoints)).await?;
    let nodes = match args.simulate_nodes {
        Some(n) if args.runtimes.iter().all(|r| r == "simulated") => {
            (0..n).map(|i| format!("{node_name}-{i}")).collect()
        }
        Some(_) => bail!("--simulate-nodes needs --runtimes simulated"),
        None => vec![node_name.clone()],
    };
    let resources = args
        .resources
        .clone()
        .unwrap_or_else(|| detect_resources(&sandboxes));
    let metrics = corral_node_agent::metrics::AgentMetrics::new();
    let log_server = if args.log_listen == "none" || args.simulate_nodes.is_some() {
        None
    } else {
        let listen: std::net::SocketAddr = args
            .log_listen
            .parse()
            .with_context(|| format!("--log-listen {:?} is not an address", args.log_listen))?;
        let advertise = args
            .advertise_address
            .clone()
            .or_else(|| listen.ip().is_unspecified().then(crate::up_cmd::hostname));
        let ca = kubeconfig_ca(&home, args.kubeconfig.as_deref())?;
        // Who may read a log or the metrics here, the API server decides.
        let authorizer = Arc::new(corral_endpoint::Authorizer::new(client.clone()));
        Some(
            logs::serve(
                listen,
                advertise,
                &ca,
                sandboxes.clone(),
                authorizer,
                metrics.clone(),
            )
            .await?,
        )
    };
    let offer = flags::offer(&resources)?;
    // Where tasks' ports are reached: as told, else the address logs are
    // served on, else the host name.
    let address = args
        .advertise_address
        .clone()
        .or_else(|| {
            let listen = args.log_listen.parse::<std::net::SocketAddr>().ok()?;
            (!listen.ip().is_unspecified()).then(|| listen.ip().to_string())
        })
        .unwrap_or_else(crate::up_cmd::hostname);
    let cfg = AgentConfig {
        nodes,
        resources: offer.resources,
        ports: offer
            .ports
            .unwrap_or_else(|| vec![corral_api::ports::DEFAULT_RANGE]),
        address: Some(address),
        attributes: flags::attributes(&args.attributes)?,
        reserved: flags::reserved(&args.reserved)?,
        lease_seconds: args.lease_seconds,
        renew_every: Duration::from_secs(
            u64::try_from((args.lease_seconds / 4).max(1)).unwrap_or(10),
        ),
        log_endpoint: log_server.as_ref().map(|l| LogEndpoint {
            url: l.url.clone(),
            certificate_sha256: l.certificate_sha256.clone(),
        }),
        sample_every: Duration::from_secs(args.sample_seconds.max(1)),
        oversubscribe: args.oversubscribe,
        reconcile_every: Duration::from_secs(args.reconcile_seconds.max(1)),
        fence: args.fence,
        checkpoints: Some(checkpoints),
        sandbox_gc: Some(corral_node_agent::sandbox_gc::SandboxGc {
            root: sandboxes.clone(),
            delay: args.sandbox_gc_delay,
        }),
        log_rotation: Some(corral_node_agent::log_rotation::LogRotation {
            root: sandboxes.clone(),
            max_bytes: args.log_max_size,
            max_files: args.log_max_files,
        }),
        default_runtime: args
            .runtimes
            .first()
            .and_then(|r| RuntimeKind::from_name(r)),
        metrics,
    };
    if let Some(f) = args.oversubscribe
        && !(0.0..=1.0).contains(&f)
    {
        bail!("--oversubscribe takes a fraction between 0 and 1, not {f}");
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let names: Vec<&str> = runtimes
        .iter()
        .map(|r| corral_node_agent::runtime::kind_name(r.kind()))
        .collect();
    let summary = format!(
        "corral agent running for node {node_name} (runtimes: {}; tasks that name none run with {}; sandboxes in {})",
        names.join(", "),
        args.runtimes.first().map_or("the first", String::as_str),
        sandboxes.display()
    );
    let handle = tokio::spawn(agent::run_renewing_with(
        client, renewals, cfg, runtimes, stop_rx,
    ));
    Ok(StartedAgent {
        summary,
        stop,
        handle,
        _logs: log_server,
    })
}
