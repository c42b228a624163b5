//! `corral agent`: registers this machine (or N simulated nodes) and runs
//! the tasks bound to it; `corral agent image import FILE.tar` loads an OCI
//! image into containerd without a registry.
//!
//! Configuration, like a Mesos agent's, comes from four places; the first
//! that sets a flag wins:
//! 1. the command line (`--resources cpus=4,memory=8Gi`);
//! 2. the environment (`CORRAL_AGENT_RESOURCES`);
//! 3. a configuration directory with one file per flag, named after it
//!    (`/etc/corral/agent/resources`; `--config-dir` or
//!    `CORRAL_AGENT_CONFIG_DIR` chooses another);
//!
//! and any value of the form `file://PATH` is replaced by that file's
//! contents (trailing whitespace trimmed), wherever it came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use corral_api::node::LogEndpoint;
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::checkpoint::Checkpoints;
use corral_node_agent::flags;
use corral_node_agent::logs;
use corral_node_agent::runtime::cgroup::{self, Cgroup};
use corral_node_agent::runtime::containerd::{self, Containerd, ContainerdConfig};
use corral_node_agent::runtime::process::Process;
use corral_node_agent::runtime::{ContainerRuntime, Simulated};

use crate::store_cmd::home_dir;

/// The default configuration directory (the `/etc/mesos-slave` convention).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/corral/agent";

/// `corral agent` options.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Work with the images containerd holds.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import an OCI image-layout (or docker-archive) tarball into containerd.
    Import {
        /// The tarball.
        file: PathBuf,
        #[command(flatten)]
        containerd: ContainerdArgs,
    },
}

/// Where containerd is.
#[derive(Debug, Clone, Args)]
pub struct ContainerdArgs {
    /// containerd's socket.
    #[arg(long, env = "CONTAINERD_ADDRESS", default_value = containerd::DEFAULT_ADDRESS)]
    containerd_address: PathBuf,
    /// The containerd namespace Corral's images and containers live in.
    #[arg(long, env = "CORRAL_AGENT_CONTAINERD_NAMESPACE", default_value = containerd::DEFAULT_NAMESPACE)]
    containerd_namespace: String,
    /// The snapshotter images are unpacked into.
    #[arg(long, env = "CORRAL_AGENT_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    /// `missing`: pull an image that is not present from the registry its
    /// name names (`registry.example:5000/team/app:1`, or Docker Hub);
    /// `never`: images come only from `image import`.
    #[arg(long, env = "CORRAL_AGENT_PULL_IMAGES", default_value = "never", value_parser = ["never", "missing"])]
    pull_images: String,
    /// Registries (`host:port`, comma-separated) reached over plain HTTP.
    #[arg(long, env = "CORRAL_AGENT_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// The OCI runtime binary containerd's runc shim runs: `runc` (the
    /// default) or a compatible one such as `crun`, which starts containers
    /// faster (a name on containerd's PATH, or a path).
    #[arg(long, env = "CORRAL_AGENT_OCI_RUNTIME", default_value = "runc")]
    oci_runtime: String,
}

/// Options of a running agent.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Kubeconfig of the Corral API server (default `$CORRAL_HOME/kubeconfig`).
    #[arg(long, env = "CORRAL_AGENT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// A bootstrap kubeconfig (a token of group `system:bootstrappers`):
    /// when `--kubeconfig` holds no node credential, or one in the last
    /// fifth of its life, the agent asks the API server for its node's
    /// certificate with it and writes `--kubeconfig` (0600) to run with.
    #[arg(long, env = "CORRAL_AGENT_BOOTSTRAP_KUBECONFIG")]
    bootstrap_kubeconfig: Option<PathBuf>,
    /// This node's name (with `--simulate-nodes`, the prefix of the simulated names).
    #[arg(long, env = "CORRAL_AGENT_NODE_NAME")]
    node_name: Option<String>,
    /// Runtimes to try, in order: `containerd`, `process`, `simulated`.
    #[arg(
        long,
        env = "CORRAL_AGENT_RUNTIMES",
        default_value = "containerd,process",
        value_delimiter = ','
    )]
    runtimes: Vec<String>,
    /// Resources offered: `cpus=4,memory=8Gi,disk=20Gi` (default: detected).
    #[arg(long, env = "CORRAL_AGENT_RESOURCES")]
    resources: Option<String>,
    /// Attributes: `rack=r1,zone=a`.
    #[arg(long, env = "CORRAL_AGENT_ATTRIBUTES", default_value = "")]
    attributes: String,
    /// Static reservations: `cpus(analytics)=2,memory(analytics)=2Gi`.
    #[arg(long, env = "CORRAL_AGENT_RESERVED", default_value = "")]
    reserved: String,
    /// Stand in for N nodes `<node-name>-0 … <node-name>-(N-1)` (simulated runtime only).
    #[arg(long, env = "CORRAL_AGENT_SIMULATE_NODES")]
    simulate_nodes: Option<usize>,
    /// Lease duration in seconds (renewed every quarter of it).
    #[arg(long, env = "CORRAL_AGENT_LEASE_SECONDS", default_value_t = 40)]
    lease_seconds: i32,
    /// Fence every task, not only those of jobs with `fenced: true` (which
    /// are always fenced): once the lease has gone unrenewed for half its
    /// duration, kill it before the control plane could start a
    /// replacement; launch nothing until a renewal succeeds again. Without
    /// it, other tasks run on through any outage of the control plane.
    #[arg(long, env = "CORRAL_AGENT_FENCE")]
    fence: bool,
    /// Seconds between state reconciliations (errant copies killed, lost
    /// ones reported); also run whenever the agent (re)lists its tasks.
    #[arg(long, env = "CORRAL_AGENT_RECONCILE_SECONDS", default_value_t = 5)]
    reconcile_seconds: u64,
    /// Import every OCI or Docker archive (`*.tar`) in this directory into
    /// containerd at start, as `image import` does (images without a registry).
    #[arg(long, env = "CORRAL_AGENT_IMAGE_DIR")]
    image_dir: Option<PathBuf>,
    /// Where task sandboxes live (default `$CORRAL_HOME/agent/<node>/sandboxes`).
    #[arg(long, env = "CORRAL_AGENT_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// How long an ended task's sandbox and output stay after its last
    /// write (`30s`, `10m`, `24h`; `0s`: at once), shortened as the disk
    /// fills and cut to nothing once less than a tenth of it is free
    /// (Mesos' `--gc_delay`).
    #[arg(long, env = "CORRAL_AGENT_SANDBOX_GC_DELAY", default_value = "24h", value_parser = parse_delay)]
    sandbox_gc_delay: Duration,
    /// The size past which a task's stdout or stderr is rotated (`10Mi`;
    /// the kubelet's `containerLogMaxSize`).
    #[arg(long, env = "CORRAL_AGENT_LOG_MAX_SIZE", default_value = "10Mi", value_parser = parse_bytes)]
    log_max_size: u64,
    /// Files kept per stream, the live one included (the kubelet's
    /// `containerLogMaxFiles`; at least 2).
    #[arg(long, env = "CORRAL_AGENT_LOG_MAX_FILES", default_value_t = corral_node_agent::log_rotation::DEFAULT_MAX_FILES, value_parser = clap::value_parser!(u32).range(2..))]
    log_max_files: u32,
    /// Offer this fraction (0–1) of the CPU and memory that non-revocable
    /// tasks leave idle as revocable capacity, re-estimated at every usage
    /// sample (off by default).
    #[arg(long, env = "CORRAL_AGENT_OVERSUBSCRIBE")]
    oversubscribe: Option<f64>,
    /// Seconds between usage samples (and revocable estimates).
    #[arg(long, env = "CORRAL_AGENT_SAMPLE_SECONDS", default_value_t = 10)]
    sample_seconds: u64,
    /// Where task logs are served for the API server to proxy (`none`: not served).
    #[arg(long, env = "CORRAL_AGENT_LOG_LISTEN", default_value = "0.0.0.0:7450")]
    log_listen: String,
    /// The host or address the API server reaches this agent at (default:
    /// the listen address, or the host name when listening on all addresses).
    #[arg(long, env = "CORRAL_AGENT_ADVERTISE_ADDRESS")]
    advertise_address: Option<String>,
    /// The cgroup v1 mount root.
    #[arg(long, env = "CORRAL_AGENT_CGROUP_ROOT", default_value = cgroup::DEFAULT_ROOT)]
    cgroup_root: PathBuf,
    /// Directory with one file per flag (see the module docs for precedence).
    #[arg(long, env = "CORRAL_AGENT_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
    #[command(flatten)]
    containerd: ContainerdArgs,
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME")]
    home: Option<PathBuf>,
}

/// The agent's flags that take a value, as they appear on the command line.
const VALUE_FLAGS: &[&str] = &[
    "kubeconfig",
    "bootstrap-kubeconfig",
    "node-name",
    "runtimes",
    "resources",
    "attributes",
    "reserved",
    "simulate-nodes",
    "lease-seconds",
    "oversubscribe",
    "sample-seconds",
    "reconcile-seconds",
    "image-dir",
    "log-listen",
    "advertise-address",
    "work-dir",
    "sandbox-gc-delay",
    "log-max-size",
    "log-max-files",
    "cgroup-root",
    "containerd-address",
    "containerd-namespace",
    "snapshotter",
    "pull-images",
    "insecure-registries",
    "oci-runtime",
];

fn env_name(flag: &str) -> String {
    match flag {
        "containerd-address" => "CONTAINERD_ADDRESS".to_owned(),
        f => format!("CORRAL_AGENT_{}", f.replace('-', "_").to_uppercase()),
    }
}

fn read_file_value(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {path}"))?
        .trim_end()
        .to_owned())
}

/// Rewrites the arguments after `corral agent` so that clap sees one value
/// per flag with the documented precedence: `file://` values are read;
/// flags set only in the environment or the configuration directory are
/// added as arguments.
pub fn resolve_args(
    args: Vec<OsString>,
    env: &BTreeMap<String, String>,
    config_dir: Option<&Path>,
) -> Result<Vec<OsString>> {
    let mut out = Vec::with_capacity(args.len());
    let mut given = std::collections::BTreeSet::new();
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        let Some(name) = s.strip_prefix("--") else {
            out.push(a);
            continue;
        };
        let (flag, inline) = match name.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (name.to_owned(), None),
        };
        if !VALUE_FLAGS.contains(&flag.as_str()) {
            out.push(a);
            continue;
        }
        given.insert(flag.clone());
        let value = match inline {
            Some(v) => v,
            None => match it.next() {
                Some(v) => v.to_string_lossy().into_owned(),
                None => {
                    out.push(a);
                    continue;
                }
            },
        };
        let value = match value.strip_prefix("file://") {
            Some(p) => read_file_value(p)?,
            None => value,
        };
        out.push(format!("--{flag}={value}").into());
    }
    // A subcommand (`image import`) takes no agent flags from elsewhere.
    if out
        .first()
        .is_some_and(|a| !a.to_string_lossy().starts_with('-'))
    {
        return Ok(out);
    }
    for flag in VALUE_FLAGS {
        if given.contains(*flag) {
            continue;
        }
        let from_env = env.get(&env_name(flag)).cloned();
        let from_dir = || {
            let dir = config_dir?;
            [flag.to_string(), flag.replace('-', "_")]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file())
        };
        let value = match (from_env, from_dir()) {
            (Some(v), _) => match v.strip_prefix("file://") {
                Some(p) => read_file_value(p)?,
                None => continue, // clap reads the environment itself
            },
            (None, Some(path)) => {
                let v = read_file_value(&path.to_string_lossy())?;
                match v.strip_prefix("file://") {
                    Some(p) => read_file_value(p)?,
                    None => v,
                }
            }
            (None, None) => continue,
        };
        out.push(format!("--{flag}={value}").into());
    }
    Ok(out)
}

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
/// does not answer and other runtimes are named.
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

/// The agent's options from a command line (as `corral up` builds one).
pub fn run_args_from<I, T>(args: I) -> Result<RunArgs>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    #[derive(clap::Parser)]
    struct Only {
        #[command(flatten)]
        run: RunArgs,
    }
    use clap::Parser as _;
    Ok(Only::try_parse_from(args)?.run)
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
        Some(logs::serve(listen, advertise, &ca, sandboxes.clone()).await?)
    };
    let cfg = AgentConfig {
        nodes,
        resources: flags::resources(&resources)?,
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
        "corral agent running for node {node_name} (runtimes: {}; sandboxes in {})",
        names.join(", "),
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

/// Obtains node `node`'s credential into `kubeconfig` with the bootstrap
/// kubeconfig, unless it already holds one with life left in it.
async fn join(kubeconfig: &Path, bootstrap: &Path, node: &str) -> Result<()> {
    use corral_node_agent::join;
    if !join::needs_certificate(kubeconfig, node, jiff::Timestamp::now())? {
        return Ok(());
    }
    let text = std::fs::read_to_string(bootstrap)
        .with_context(|| format!("reading {}", bootstrap.display()))?;
    let bootstrap_kc = kube::config::Kubeconfig::from_yaml(&text)
        .with_context(|| format!("reading {}", bootstrap.display()))?;
    // A node renews with its own credential while it is valid (its
    // bootstrap token may have been revoked since it joined).
    let still_valid = join::held(kubeconfig)
        .is_some_and(|h| h.not_after > jiff::Timestamp::now() + jiff::SignedDuration::from_mins(1));
    let client = if still_valid {
        client_from(kubeconfig).await?
    } else {
        client_from(bootstrap).await?
    };
    let (cert, key) = match join::request_certificate(&client, node).await {
        Ok(issued) => issued,
        // Renewing can wait while the credential lasts.
        Err(e) if still_valid => {
            tracing::warn!(error = %e, "renewing this node's credential failed; trying again later");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    join::write_kubeconfig(
        kubeconfig,
        &join::node_kubeconfig(&bootstrap_kc, node, &cert, &key),
    )?;
    tracing::info!(node, kubeconfig = %kubeconfig.display(), "obtained this node's credential");
    Ok(())
}

/// Who the API server says the agent's credential is: its user name, or
/// None where the server does not answer SelfSubjectReview.
async fn whoami(client: &kube::Client) -> Result<Option<String>> {
    let body = serde_json::to_vec(
        &serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )?;
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)?;
    match client.request::<serde_json::Value>(req).await {
        Ok(review) => Ok(review["status"]["userInfo"]["username"]
            .as_str()
            .map(str::to_owned)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e).context("asking the API server who this agent's credential is"),
    }
}

/// The node this agent runs: the one its credential names (a node's
/// credential, user `system:node:NAME`, serves that node only), else
/// `--node-name`.
fn node_name_of(args: &RunArgs, user: Option<String>) -> Result<String> {
    let credential_node = user
        .as_deref()
        .and_then(|u| u.strip_prefix(corral_apiserver::transport::auth::NODE_USER_PREFIX))
        .map(str::to_owned);
    match (credential_node, &args.node_name) {
        (Some(_), _) if args.simulate_nodes.is_some() => {
            bail!("--simulate-nodes needs a credential for many nodes; this one is a single node's")
        }
        (Some(mine), Some(asked)) if &mine != asked => {
            bail!("--node-name {asked} does not match the credential, which is node {mine}'s")
        }
        (Some(mine), _) => Ok(mine),
        (None, Some(asked)) => Ok(asked.clone()),
        (None, None) => bail!(
            "--node-name is required (or CORRAL_AGENT_NODE_NAME), unless the kubeconfig holds a node credential (corral credentials node NAME)"
        ),
    }
}

/// The CA certificate (PEM) of the kubeconfig's cluster: the agent's log
/// endpoint accepts clients with certificates it signed.
fn kubeconfig_ca(home: &Path, kubeconfig: Option<&Path>) -> Result<Vec<u8>> {
    use base64::Engine;
    let path = kubeconfig.map_or_else(|| home.join("kubeconfig"), Path::to_owned);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .with_context(|| format!("{} names no cluster", path.display()))?;
    if let Some(data) = cluster.certificate_authority_data {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| {
                format!(
                    "{}: certificate-authority-data is not base64",
                    path.display()
                )
            });
    }
    if let Some(file) = cluster.certificate_authority {
        return std::fs::read(&file).with_context(|| format!("reading {file}"));
    }
    bail!(
        "{} has no certificate authority; the log endpoint needs one (or pass --log-listen none)",
        path.display()
    )
}

/// A size flag: a quantity of bytes (`10Mi`, `1G`, `4096`).
fn parse_bytes(s: &str) -> Result<u64, String> {
    corral_api::Quantity::from_text(s)
        .units_ceil()
        .ok()
        .and_then(|b| u64::try_from(b).ok())
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{s:?} is not a size such as 10Mi"))
}

/// A duration flag: a number and `ms`, `s`, `m` or `h`.
fn parse_delay(s: &str) -> Result<Duration, String> {
    corral_node_agent::runtime::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration such as 30s, 10m or 24h"))
}

/// A client for the API server a kubeconfig file names.
pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    Ok(kube::Client::try_from(config_from(kubeconfig).await?)?)
}

/// The same, without kube's retries of 429, 503 and 504: for lease
/// renewals, whose every outcome the agent must see as it comes.
async fn client_without_retries(kubeconfig: &Path) -> Result<kube::Client> {
    let mut config = config_from(kubeconfig).await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

async fn config_from(kubeconfig: &Path) -> Result<kube::Config> {
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    Ok(kube::config::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_command_line_beats_the_environment_which_beats_the_config_dir() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("resources"), "cpus=1\n")?;
        std::fs::write(dir.path().join("attributes"), "rack=dir\n")?;
        std::fs::write(dir.path().join("node_name"), "from-dir\n")?;
        let secret = dir.path().join("reserved.txt");
        std::fs::write(&secret, "cpus(a)=1\n")?;
        let env = BTreeMap::from([
            ("CORRAL_AGENT_ATTRIBUTES".to_owned(), "rack=env".to_owned()),
            (
                "CORRAL_AGENT_RESERVED".to_owned(),
                format!("file://{}", secret.display()),
            ),
        ]);
        let out = resolve_args(
            os(&["--resources", "cpus=4", "--lease-seconds=9"]),
            &env,
            Some(dir.path()),
        )?;
        let out: Vec<String> = out
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert!(out.contains(&"--resources=cpus=4".to_owned()), "{out:?}");
        assert!(out.contains(&"--lease-seconds=9".to_owned()));
        assert!(
            !out.iter().any(|a| a.starts_with("--attributes")),
            "the environment value is left to clap: {out:?}"
        );
        assert!(out.contains(&"--reserved=cpus(a)=1".to_owned()), "{out:?}");
        assert!(
            out.contains(&"--node-name=from-dir".to_owned()),
            "underscore file names work too: {out:?}"
        );
        Ok(())
    }

    #[test]
    fn file_values_on_the_command_line_are_read() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("res");
        std::fs::write(&f, "cpus=2,memory=1Gi\n")?;
        let out = resolve_args(
            os(&[&format!("--resources=file://{}", f.display())]),
            &BTreeMap::new(),
            None,
        )?;
        assert_eq!(out, os(&["--resources=cpus=2,memory=1Gi"]));
        assert!(
            resolve_args(
                os(&["--resources", "file:///nonexistent/x"]),
                &BTreeMap::new(),
                None
            )
            .is_err()
        );
        Ok(())
    }

    #[test]
    fn a_subcommand_takes_no_flags_from_elsewhere() -> Result<()> {
        let env = BTreeMap::from([("CORRAL_AGENT_NODE_NAME".to_owned(), "n".to_owned())]);
        let out = resolve_args(os(&["image", "import", "x.tar"]), &env, None)?;
        assert_eq!(out, os(&["image", "import", "x.tar"]));
        Ok(())
    }
}
