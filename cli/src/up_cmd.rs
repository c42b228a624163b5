//! `corral up`: a whole cluster on one machine, in one process.
//!
//! Starts the API server (embedded store under `$CORRAL_HOME`, or etcd with
//! `--store etcd://…`), every controller, and one agent for this machine
//! offering containerd (when its socket answers) for tasks that name no
//! runtime, and host processes in cgroups for tasks that ask for them; with
//! no containerd, this one machine opts in to running every task as a host
//! process, as a development cluster does. Writes `$CORRAL_HOME/kubeconfig`, prints how to use
//! it, and on Ctrl-C or SIGTERM stops the agent (its tasks keep running and
//! are re-adopted on the next start), the controllers and the server, in that
//! order. All state is in the store, so the next `corral up` resumes the same
//! cluster. It records its pid in `$CORRAL_HOME/up.pid` while it runs, so
//! that `corral down` can stop it together with its tasks.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use corral_node_agent::runtime::containerd;

use crate::server_cmd::{self, ServerArgs};
use crate::store_cmd::home_dir;
use crate::{agent_cmd, down_cmd};

/// `corral up` options.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// `embedded` (under $CORRAL_HOME), `embedded:PATH`, or `etcd://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, env = "CORRAL_STORE", default_value = "embedded")]
    store: String,
    /// Address the API server serves on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME")]
    home: Option<PathBuf>,
    /// How the scheduler ranks nodes: `binpack` or `spread`.
    #[arg(long, default_value = "binpack", value_parser = ["binpack", "spread"])]
    placement: String,
    /// This machine's node name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Runtimes this machine offers; the first runs tasks that name none.
    /// When containerd's socket does not answer, it is left out and this
    /// one machine runs those tasks as host processes (as a development
    /// cluster should; `corral agent` never does so unless told).
    #[arg(long, default_value = "containerd,process")]
    runtimes: String,
    /// Resources this machine offers: `cpus=4,memory=8Gi,disk=20Gi` (default: detected).
    #[arg(long)]
    resources: Option<String>,
    /// Node attributes: `rack=r1,zone=a`.
    #[arg(long, default_value = "")]
    attributes: String,
    /// Static reservations: `cpus(analytics)=2,memory(analytics)=2Gi`.
    #[arg(long, default_value = "")]
    reserved: String,
    /// containerd's socket.
    #[arg(long, env = "CONTAINERD_ADDRESS", default_value = containerd::DEFAULT_ADDRESS)]
    containerd_address: PathBuf,
    /// The OCI runtime containerd runs containers with: `runc`, or the
    /// faster `crun` (see `corral agent --help`).
    #[arg(long, env = "CORRAL_AGENT_OCI_RUNTIME", default_value = "runc")]
    oci_runtime: String,
}

/// The agent's kubeconfig under `$CORRAL_HOME`: node `NAME`'s credential,
/// issued at every start.
const AGENT_KUBECONFIG: &str = "agent.kubeconfig";

/// Node `node`'s credential for the agent, written 0600 under `home`.
fn issue_agent_credential(home: &std::path::Path, node: &str, url: &str) -> Result<PathBuf> {
    let pki = corral_apiserver::transport::pki::Pki::load(&home.join("pki"))?;
    let user = format!(
        "{}{node}",
        corral_apiserver::transport::auth::NODE_USER_PREFIX
    );
    let groups = [corral_apiserver::transport::auth::NODES_GROUP.to_owned()];
    let (cert, key) = pki.issue_client(
        &user,
        &groups,
        jiff::Timestamp::now(),
        jiff::SignedDuration::from_hours(24 * 365),
    )?;
    let path = home.join(AGENT_KUBECONFIG);
    corral_apiserver::transport::pki::write_private(
        &path,
        pki.client_kubeconfig(url, &user, &cert, &key).as_bytes(),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A `$CORRAL_HOME/pki` made before the CA key was kept cannot issue the
/// agent its node credential: it is moved aside (kept, not deleted) for
/// the server to make a new one. On this machine only the kubeconfigs it
/// wrote used it, and the server writes those again.
fn retire_keyless_pki(home: &std::path::Path) -> Result<()> {
    let pki = home.join("pki");
    if !pki.join("ca.crt").exists() || pki.join("ca.key").exists() {
        return Ok(());
    }
    let aside = home.join(format!(
        "pki.keyless-{}",
        jiff::Timestamp::now().as_second()
    ));
    std::fs::rename(&pki, &aside).with_context(|| format!("moving {} aside", pki.display()))?;
    outln!(
        "{} had no CA key (made by an earlier release): kept as {}; making a new CA",
        pki.display(),
        aside.display()
    );
    Ok(())
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
        .to_lowercase()
}

/// The runtimes of `--runtimes` this machine can offer: containerd only
/// when its socket answers.
fn runtimes_here(args: &UpArgs) -> String {
    let named: Vec<&str> = args.runtimes.split(',').map(str::trim).collect();
    if !named.contains(&"containerd")
        || std::os::unix::net::UnixStream::connect(&args.containerd_address).is_ok()
    {
        return args.runtimes.clone();
    }
    let rest: Vec<&str> = named.into_iter().filter(|r| *r != "containerd").collect();
    if rest.is_empty() {
        // Nothing else to offer: the agent says containerd is missing.
        return args.runtimes.clone();
    }
    outln!(
        "containerd does not answer at {}: this machine runs tasks as host processes ({})",
        args.containerd_address.display(),
        rest.join(",")
    );
    rest.join(",")
}

/// The agent's command line for this machine.
fn agent_argv(args: &UpArgs, home: &std::path::Path, node: &str) -> Vec<String> {
    let mut argv = vec![
        "agent".to_owned(),
        format!("--home={}", home.display()),
        format!("--node-name={node}"),
        format!("--runtimes={}", runtimes_here(args)),
        format!("--attributes={}", args.attributes),
        format!("--reserved={}", args.reserved),
        format!("--containerd-address={}", args.containerd_address.display()),
        format!("--oci-runtime={}", args.oci_runtime),
        format!("--kubeconfig={}", home.join(AGENT_KUBECONFIG).display()),
        // Logs stay on this machine: the API server proxies them from loopback.
        "--log-listen=127.0.0.1:0".to_owned(),
    ];
    if let Some(r) = &args.resources {
        argv.push(format!("--resources={r}"));
    }
    argv
}

pub async fn run(args: UpArgs) -> Result<()> {
    let home = home_dir(args.home.clone())?;
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let node = args.node_name.clone().unwrap_or_else(hostname);
    retire_keyless_pki(&home)?;
    let run_args = agent_cmd::run_args_from(agent_argv(&args, &home, &node))?;
    let server = server_cmd::start(ServerArgs {
        store: args.store.clone(),
        etcd_tls: Default::default(),
        listen: args.listen,
        home: Some(home.clone()),
        tls_sans: Vec::new(),
        token_file: None,
        no_controllers: false,
        leader_elect: false,
        placement: args.placement.clone(),
        node_disruption_threshold: corral_core::liveness::DEFAULT_DISRUPTION_THRESHOLD,
        max_requests_inflight: corral_apiserver::InFlightLimits::default().readonly,
        max_mutating_requests_inflight: corral_apiserver::InFlightLimits::default().mutating,
        max_watches_per_user: corral_apiserver::transport::server::DEFAULT_WATCHES_PER_USER,
        request_timeout: corral_apiserver::transport::server::DEFAULT_REQUEST_TIMEOUT,
        etcd_compaction_interval: corral_apiserver::storage::lifecycle::DEFAULT_COMPACTION_INTERVAL,
        event_ttl: corral_apiserver::storage::lifecycle::DEFAULT_EVENT_TTL,
        authorization_mode: "RBAC".to_owned(),
        audit: server_cmd::AuditArgs::default(),
    })
    .await?;
    // The agent holds its node's credential, not the administrator's.
    let agent = match issue_agent_credential(&home, &node, &server.url) {
        Ok(kubeconfig) => match agent_cmd::client_from(&kubeconfig).await {
            Ok(client) => agent_cmd::start_agent(run_args, Some(client)).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let agent = match agent {
        Ok(a) => a,
        Err(e) => {
            server.shutdown().await;
            return Err(e);
        }
    };
    let _pid = down_cmd::PidFile::write(&home)?;
    let kubeconfig = server.kubeconfig.display().to_string();
    outln!("Corral is up: API server {}", server.url);
    outln!("{}", agent.summary);
    outln!();
    outln!("Use it with corral or kubectl:");
    outln!("  export KUBECONFIG={kubeconfig}");
    outln!("  corral apply -f examples/");
    outln!("  corral get jobs -A");
    outln!("  corral get tasks -A -w");
    outln!("  corral top nodes");
    outln!("  kubectl get corral -A");
    outln!();
    outln!(
        "Press Ctrl-C to stop; the cluster is kept in {} for the next `corral up`,",
        home.display()
    );
    outln!("and its tasks keep running for it to re-adopt. `corral down` stops them too.");
    server_cmd::wait_for_signal().await?;
    outln!("stopping the agent (its tasks keep running), the controllers and the API server");
    let stopped = agent.stop().await;
    server.shutdown().await;
    stopped?;
    outln!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        up: UpArgs,
    }

    #[test]
    fn the_agent_gets_this_machines_flags() -> Result<()> {
        let cli = Cli::try_parse_from([
            "up",
            "--node-name=box",
            "--resources=cpus=2,memory=1Gi",
            "--attributes=rack=r1",
            "--runtimes=process",
            "--oci-runtime=crun",
        ])?;
        let argv = agent_argv(&cli.up, std::path::Path::new("/h"), "box");
        assert!(argv.contains(&"--node-name=box".to_owned()));
        assert!(argv.contains(&"--oci-runtime=crun".to_owned()));
        assert!(argv.contains(&"--resources=cpus=2,memory=1Gi".to_owned()));
        assert!(argv.contains(&"--home=/h".to_owned()));
        agent_cmd::run_args_from(argv)?;
        Ok(())
    }

    #[test]
    fn a_pki_without_its_ca_key_is_moved_aside_and_nothing_else() -> Result<()> {
        let home = tempfile::tempdir()?;
        retire_keyless_pki(home.path())?;
        let pki = home.path().join("pki");
        std::fs::create_dir_all(&pki)?;
        std::fs::write(pki.join("ca.crt"), "old")?;
        std::fs::write(pki.join("ca.key"), "key")?;
        retire_keyless_pki(home.path())?;
        assert!(pki.join("ca.crt").exists(), "a CA with its key stays");
        std::fs::remove_file(pki.join("ca.key"))?;
        retire_keyless_pki(home.path())?;
        assert!(!pki.exists());
        let kept: Vec<_> = std::fs::read_dir(home.path())?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("pki.keyless-"))
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            std::fs::read_to_string(kept[0].path().join("ca.crt"))?,
            "old"
        );
        Ok(())
    }

    #[test]
    fn the_host_name_is_a_usable_node_name() {
        let h = hostname();
        assert!(!h.is_empty());
        assert_eq!(h, h.to_lowercase());
    }
}
