//! `corral controllers`: every controller, in a process of its own, against
//! an API server (`corral server --no-controllers`, or several of them over
//! one etcd). With leader election (on by default) any number may run: one
//! leads, the others stand by and take over within a lease (15 s) of the
//! leader's end, at once when it shuts down cleanly.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::agent_cmd::client_from;
use crate::agent_cmd::kubeconfig_ca;
use crate::server_cmd::{identity, settings_of, share, spawn_controllers, wait_for_signal};
use crate::store_cmd::home_dir;

/// `corral controllers` options.
#[derive(Debug, Args)]
pub struct ControllersArgs {
    /// Kubeconfig of the Corral API server (default `$CORRAL_HOME/kubeconfig`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME")]
    home: Option<PathBuf>,
    /// How the scheduler ranks nodes: `binpack` or `spread`.
    #[arg(long, default_value = "binpack", value_parser = ["binpack", "spread"])]
    placement: String,
    /// The share of nodes that may stop renewing their leases at once before
    /// the node controller stops declaring their tasks lost (the disruption
    /// brake; at least two nodes; 1 or more: never).
    #[arg(long, default_value_t = corral_core::liveness::DEFAULT_DISRUPTION_THRESHOLD, value_parser = share)]
    node_disruption_threshold: f64,
    /// Run without leader election: only when no other controllers run.
    #[arg(long)]
    no_leader_elect: bool,
    /// Where the controllers' metrics are served over HTTPS (`GET /metrics`,
    /// to client certificates from Corral's CA that RBAC lets `get` the path
    /// `/metrics`), or `none`.
    #[arg(long, default_value = "127.0.0.1:10257")]
    metrics_listen: String,
}

pub async fn run(args: ControllersArgs) -> Result<()> {
    let home = home_dir(args.home)?;
    let kubeconfig = match args.kubeconfig {
        Some(k) => k,
        None => home.join("kubeconfig"),
    };
    let client = client_from(&kubeconfig).await?;
    let metrics = corral_controllers::metrics::Metrics::new();
    let _endpoint = if args.metrics_listen == "none" {
        None
    } else {
        let listen: std::net::SocketAddr = args.metrics_listen.parse().with_context(|| {
            format!(
                "--metrics-listen {:?} is not an address",
                args.metrics_listen
            )
        })?;
        let ca = kubeconfig_ca(&home, Some(&kubeconfig))?;
        let endpoint =
            corral_controllers::metrics::serve(listen, &ca, client.clone(), metrics.clone())
                .await?;
        outln!(
            "corral controllers serving metrics on {}/metrics",
            endpoint.url
        );
        Some(endpoint)
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let elect = !args.no_leader_elect;
    let handle = spawn_controllers(
        corral_controllers::Clients::one(client),
        settings_of(&args.placement, args.node_disruption_threshold),
        metrics,
        elect,
        stop_rx,
    );
    if elect {
        outln!(
            "corral controllers {} campaigning for the lease {}/{}",
            identity(),
            corral_controllers::leader::LEASE_NAMESPACE,
            corral_controllers::leader::LEASE_NAME
        );
    } else {
        outln!("corral controllers running (no leader election)");
    }
    wait_for_signal().await?;
    let _ = stop.send(true);
    handle.await?;
    Ok(())
}
