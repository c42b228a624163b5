//! `corral down`: stops `corral up` together with every task it started on
//! this machine (Ctrl-C on `corral up` leaves its tasks running on purpose,
//! for the next `corral up` to re-adopt).
//!
//! 1. The running `corral up` for `$CORRAL_HOME`, found by the pid it
//!    records in `$CORRAL_HOME/up.pid` (checked to still be a `corral up`, so
//!    a reused pid is left alone), gets SIGTERM and is waited for.
//! 2. The runtimes `corral up` gives its agent (containerd when its socket
//!    answers, processes) re-adopt what survived and kill every task: SIGTERM,
//!    the grace period, SIGKILL.
//!
//! The cluster's state stays in `$CORRAL_HOME`: the next `corral up` resumes
//! it and replaces the tasks that were running (they are found LOST).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use corral_node_agent::runtime::containerd;

use crate::agent_cmd;
use crate::store_cmd::home_dir;

/// The file where `corral up` records its pid.
pub const PID_FILE: &str = "up.pid";
/// How long `corral up` may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `corral down` options (the same as `corral up`'s where they overlap).
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME")]
    home: Option<PathBuf>,
    /// The node name `corral up` ran as (default: every node that ran here).
    #[arg(long)]
    node_name: Option<String>,
    /// The runtimes `corral up` was given.
    #[arg(long, default_value = "containerd,process")]
    runtimes: String,
    /// containerd's socket.
    #[arg(long, env = "CONTAINERD_ADDRESS", default_value = containerd::DEFAULT_ADDRESS)]
    containerd_address: PathBuf,
    /// Seconds each task gets between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10)]
    grace_seconds: u64,
}

/// Records this process as the `corral up` of `home`; the file goes when
/// the guard is dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes `home/up.pid`.
    pub fn write(home: &Path) -> Result<Self> {
        let path = home.join(PID_FILE);
        std::fs::write(&path, std::process::id().to_string())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The pid of the `corral up` running for `home`, if any.
fn running_up(home: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(home.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_up =
        args.first().is_some_and(|a| a.ends_with(b"corral")) && args.iter().any(|a| *a == b"up");
    is_up.then_some(pid)
}

/// Sends SIGTERM to `pid` and waits until it is gone.
async fn stop_process(pid: i32) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    kill(Pid::from_raw(pid), Signal::SIGTERM).with_context(|| format!("signalling {pid}"))?;
    let start = Instant::now();
    // Not our child: nothing to wait on but its /proc entry.
    let gone = || corral_node_agent::runtime::process::is_zombie(pid);
    while !gone() {
        if start.elapsed() > STOP_TIMEOUT {
            bail!("corral up (pid {pid}) did not stop within {STOP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub async fn run(args: DownArgs) -> Result<()> {
    let home = home_dir(args.home.clone())?;
    match running_up(&home) {
        Some(pid) => {
            stop_process(pid).await?;
            outln!("stopped corral up (pid {pid})");
        }
        None => outln!("no corral up is running for {}", home.display()),
    }
    // The node `corral up` ran as: the one named, else every node that ever
    // ran here (`corral up --node-name` may have named it otherwise).
    let nodes: Vec<String> = match &args.node_name {
        Some(n) => vec![n.clone()],
        None => std::fs::read_dir(home.join("agent"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("sandboxes").is_dir())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    };
    if nodes.is_empty() {
        outln!("no tasks were ever started here");
        return Ok(());
    }
    let grace = Duration::from_secs(args.grace_seconds);
    let mut stopped = 0;
    for node in nodes {
        let run_args = agent_cmd::run_args_from([
            "agent".to_owned(),
            format!("--home={}", home.display()),
            format!("--node-name={node}"),
            format!("--runtimes={}", args.runtimes),
            format!("--containerd-address={}", args.containerd_address.display()),
        ])?;
        let sandboxes = agent_cmd::sandboxes(&run_args, &home, &node);
        let runtimes = agent_cmd::build_runtimes(&run_args, &sandboxes, None).await?;
        let out = corral_node_agent::runtime::stop_all(&runtimes, grace).await?;
        for key in &out.stopped {
            outln!("task {key} stopped");
        }
        if !out.stuck.is_empty() {
            bail!("tasks still running: {}", out.stuck.join(", "));
        }
        stopped += out.stopped.len();
    }
    outln!(
        "stopped {stopped} task(s); the cluster is kept in {} for the next `corral up`",
        home.display()
    );
    Ok(())
}
