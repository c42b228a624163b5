//! `corral agent`: registers this machine (or N simulated nodes) and runs
//! the tasks bound to it.
//!
//! Every flag can also come from a `CORRAL_AGENT_<FLAG>` environment
//! variable; a flag on the command line wins over the environment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use corral_node_agent::agent::{self, AgentConfig};
use corral_node_agent::flags;
use corral_node_agent::runtime::{ContainerRuntime, Simulated};

use crate::store_cmd::home_dir;

/// `corral agent` options.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Kubeconfig of the Corral API server (default `$CORRAL_HOME/kubeconfig`).
    #[arg(long, env = "CORRAL_AGENT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// This node's name (with `--simulate-nodes`, the prefix of the simulated names).
    #[arg(long, env = "CORRAL_AGENT_NODE_NAME")]
    node_name: String,
    /// Runtimes to try, in order. Available today: `simulated`.
    #[arg(
        long,
        env = "CORRAL_AGENT_RUNTIMES",
        default_value = "simulated",
        value_delimiter = ','
    )]
    runtimes: Vec<String>,
    /// Resources offered: `cpus=4,memory=8Gi,disk=20Gi`.
    #[arg(long, env = "CORRAL_AGENT_RESOURCES")]
    resources: String,
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
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME")]
    home: Option<PathBuf>,
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let kubeconfig = match args.kubeconfig {
        Some(k) => k,
        None => home_dir(args.home)?.join("kubeconfig"),
    };
    let text = std::fs::read_to_string(&kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    let client = kube::Client::try_from(
        kube::config::Config::from_custom_kubeconfig(kc, &Default::default()).await?,
    )?;
    let mut runtimes: Vec<Arc<dyn ContainerRuntime>> = Vec::new();
    for r in &args.runtimes {
        match r.as_str() {
            "simulated" => runtimes.push(Arc::new(Simulated::default())),
            "containerd" | "process" => {
                bail!("the {r} runtime is not available in this version; use --runtimes simulated")
            }
            other => bail!("unknown runtime {other:?} (available: simulated)"),
        }
    }
    let nodes = match args.simulate_nodes {
        Some(n) if args.runtimes.iter().all(|r| r == "simulated") => {
            (0..n).map(|i| format!("{}-{i}", args.node_name)).collect()
        }
        Some(_) => bail!("--simulate-nodes needs --runtimes simulated"),
        None => vec![args.node_name.clone()],
    };
    let cfg = AgentConfig {
        nodes,
        resources: flags::resources(&args.resources)?,
        attributes: flags::attributes(&args.attributes)?,
        reserved: flags::reserved(&args.reserved)?,
        lease_seconds: args.lease_seconds,
        renew_every: Duration::from_secs(
            u64::try_from((args.lease_seconds / 4).max(1)).unwrap_or(10),
        ),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let handle = tokio::spawn(agent::run(client, cfg, runtimes, stop_rx));
    println!("corral agent running for node {}", args.node_name);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    handle.await??;
    Ok(())
}
