//! The agent's command line: its flags, and where each value comes from.
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
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use corral_node_agent::runtime::{cgroup, containerd};

/// The default configuration directory (the `/etc/mesos-slave` convention).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/corral/agent";

/// `corral agent` options.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub(crate) command: Option<AgentCommand>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentCommand {
    /// Work with the images containerd holds.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
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
    pub(crate) containerd_address: PathBuf,
    /// The containerd namespace Corral's images and containers live in.
    #[arg(long, env = "CORRAL_AGENT_CONTAINERD_NAMESPACE", default_value = containerd::DEFAULT_NAMESPACE)]
    pub(crate) containerd_namespace: String,
    /// The snapshotter images are unpacked into.
    #[arg(long, env = "CORRAL_AGENT_SNAPSHOTTER", default_value = "overlayfs")]
    pub(crate) snapshotter: String,
    /// `missing`: pull an image that is not present from the registry its
    /// name names (`registry.example:5000/team/app:1`, or Docker Hub);
    /// `never`: images come only from `image import`.
    #[arg(long, env = "CORRAL_AGENT_PULL_IMAGES", default_value = "never", value_parser = ["never", "missing"])]
    pub(crate) pull_images: String,
    /// Registries (`host:port`, comma-separated) reached over plain HTTP.
    #[arg(long, env = "CORRAL_AGENT_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub(crate) insecure_registries: Vec<String>,
    /// The OCI runtime binary containerd's runc shim runs: `runc` (the
    /// default) or a compatible one such as `crun`, which starts containers
    /// faster (a name on containerd's PATH, or a path).
    #[arg(long, env = "CORRAL_AGENT_OCI_RUNTIME", default_value = "runc")]
    pub(crate) oci_runtime: String,
    /// The host id a container's user namespace maps its ids 0–65535 to
    /// (tasks that are not root get one where the kernel allows it); 0: no
    /// user namespaces.
    #[arg(long, env = "CORRAL_AGENT_USERNS_BASE", default_value_t = containerd::DEFAULT_USERNS_BASE)]
    pub(crate) userns_base: u32,
}

/// Options of a running agent.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Kubeconfig of the Corral API server (default `$CORRAL_HOME/kubeconfig`).
    #[arg(long, env = "CORRAL_AGENT_KUBECONFIG")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// A bootstrap kubeconfig (a token of group `system:bootstrappers`):
    /// when `--kubeconfig` holds no node credential, or one in the last
    /// fifth of its life, the agent asks the API server for its node's
    /// certificate with it and writes `--kubeconfig` (0600) to run with.
    #[arg(long, env = "CORRAL_AGENT_BOOTSTRAP_KUBECONFIG")]
    pub(crate) bootstrap_kubeconfig: Option<PathBuf>,
    /// This node's name (with `--simulate-nodes`, the prefix of the simulated names).
    #[arg(long, env = "CORRAL_AGENT_NODE_NAME")]
    pub(crate) node_name: Option<String>,
    /// Runtimes to offer: `containerd`, `process` (tasks as host processes:
    /// offered only when named here), `simulated`. The first runs the tasks
    /// that name no runtime; the others run only tasks that ask for them.
    #[arg(
        long,
        env = "CORRAL_AGENT_RUNTIMES",
        default_value = "containerd",
        value_delimiter = ','
    )]
    pub(crate) runtimes: Vec<String>,
    /// Resources offered: `cpus=4,memory=8Gi,disk=20Gi`, and the host
    /// ports tasks are assigned, `ports=[31000-32000]` (default: detected;
    /// ports 31000-32000).
    #[arg(long, env = "CORRAL_AGENT_RESOURCES")]
    pub(crate) resources: Option<String>,
    /// Attributes: `rack=r1,zone=a`.
    #[arg(long, env = "CORRAL_AGENT_ATTRIBUTES", default_value = "")]
    pub(crate) attributes: String,
    /// Static reservations: `cpus(analytics)=2,memory(analytics)=2Gi`.
    #[arg(long, env = "CORRAL_AGENT_RESERVED", default_value = "")]
    pub(crate) reserved: String,
    /// Stand in for N nodes `<node-name>-0 … <node-name>-(N-1)` (simulated runtime only).
    #[arg(long, env = "CORRAL_AGENT_SIMULATE_NODES")]
    pub(crate) simulate_nodes: Option<usize>,
    /// Lease duration in seconds (renewed every quarter of it).
    #[arg(long, env = "CORRAL_AGENT_LEASE_SECONDS", default_value_t = 40)]
    pub(crate) lease_seconds: i32,
    /// Fence every task, not only those of jobs with `fenced: true` (which
    /// are always fenced): once the lease has gone unrenewed for half its
    /// duration, kill it before the control plane could start a
    /// replacement; launch nothing until a renewal succeeds again. Without
    /// it, other tasks run on through any outage of the control plane.
    #[arg(long, env = "CORRAL_AGENT_FENCE")]
    pub(crate) fence: bool,
    /// Seconds between state reconciliations (errant copies killed, lost
    /// ones reported); also run whenever the agent (re)lists its tasks.
    #[arg(long, env = "CORRAL_AGENT_RECONCILE_SECONDS", default_value_t = 5)]
    pub(crate) reconcile_seconds: u64,
    /// Import every OCI or Docker archive (`*.tar`) in this directory into
    /// containerd at start, as `image import` does (images without a registry).
    #[arg(long, env = "CORRAL_AGENT_IMAGE_DIR")]
    pub(crate) image_dir: Option<PathBuf>,
    /// Where task sandboxes live (default `$CORRAL_HOME/agent/<node>/sandboxes`).
    #[arg(long, env = "CORRAL_AGENT_WORK_DIR")]
    pub(crate) work_dir: Option<PathBuf>,
    /// How long an ended task's sandbox and output stay after its last
    /// write (`30s`, `10m`, `24h`; `0s`: at once), shortened as the disk
    /// fills and cut to nothing once less than a tenth of it is free
    /// (Mesos' `--gc_delay`).
    #[arg(long, env = "CORRAL_AGENT_SANDBOX_GC_DELAY", default_value = "24h", value_parser = parse_delay)]
    pub(crate) sandbox_gc_delay: Duration,
    /// The size past which a task's stdout or stderr is rotated (`10Mi`;
    /// the kubelet's `containerLogMaxSize`).
    #[arg(long, env = "CORRAL_AGENT_LOG_MAX_SIZE", default_value = "10Mi", value_parser = parse_bytes)]
    pub(crate) log_max_size: u64,
    /// Files kept per stream, the live one included (the kubelet's
    /// `containerLogMaxFiles`; at least 2).
    #[arg(long, env = "CORRAL_AGENT_LOG_MAX_FILES", default_value_t = corral_node_agent::log_rotation::DEFAULT_MAX_FILES, value_parser = clap::value_parser!(u32).range(2..))]
    pub(crate) log_max_files: u32,
    /// Offer this fraction (0–1) of the CPU and memory that non-revocable
    /// tasks leave idle as revocable capacity, re-estimated at every usage
    /// sample (off by default).
    #[arg(long, env = "CORRAL_AGENT_OVERSUBSCRIBE")]
    pub(crate) oversubscribe: Option<f64>,
    /// Seconds between usage samples (and revocable estimates).
    #[arg(long, env = "CORRAL_AGENT_SAMPLE_SECONDS", default_value_t = 10)]
    pub(crate) sample_seconds: u64,
    /// Where task logs are served for the API server to proxy (`none`: not served).
    #[arg(long, env = "CORRAL_AGENT_LOG_LISTEN", default_value = "0.0.0.0:7450")]
    pub(crate) log_listen: String,
    /// The host or address the API server reaches this agent at (default:
    /// the listen address, or the host name when listening on all addresses).
    #[arg(long, env = "CORRAL_AGENT_ADVERTISE_ADDRESS")]
    pub(crate) advertise_address: Option<String>,
    /// The cgroup v1 mount root.
    #[arg(long, env = "CORRAL_AGENT_CGROUP_ROOT", default_value = cgroup::DEFAULT_ROOT)]
    pub(crate) cgroup_root: PathBuf,
    /// Directory with one file per flag (see the module docs for precedence).
    #[arg(long, env = "CORRAL_AGENT_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub(crate) config_dir: PathBuf,
    #[command(flatten)]
    pub(crate) containerd: ContainerdArgs,
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME")]
    pub(crate) home: Option<PathBuf>,
}

/// The agent's flags that take a value, as they appear on the command line.
pub(super) const VALUE_FLAGS: &[&str] = &[
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
    "userns-base",
];

pub(super) fn env_name(flag: &str) -> String {
    match flag {
        "containerd-address" => "CONTAINERD_ADDRESS".to_owned(),
        f => format!("CORRAL_AGENT_{}", f.replace('-', "_").to_uppercase()),
    }
}

pub(super) fn read_file_value(path: &str) -> Result<String> {
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

/// A size flag: a quantity of bytes (`10Mi`, `1G`, `4096`).
pub(super) fn parse_bytes(s: &str) -> Result<u64, String> {
    corral_api::Quantity::from_text(s)
        .units_ceil()
        .ok()
        .and_then(|b| u64::try_from(b).ok())
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{s:?} is not a size such as 10Mi"))
}

/// A duration flag: a number and `ms`, `s`, `m` or `h`.
pub(super) fn parse_delay(s: &str) -> Result<Duration, String> {
    corral_node_agent::runtime::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration such as 30s, 10m or 24h"))
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
