//! `corral server`: the API server over the embedded store or etcd, and the
//! controllers (allocation with preemption, jobs, cron, lost tasks, node
//! liveness), which
//! talk to it as clients.
//!
//! Serves TLS on `--listen` (default `127.0.0.1:6443`) with certificates and an
//! admin token generated under `$CORRAL_HOME/pki`, writes the admin kubeconfig
//! to `$CORRAL_HOME/kubeconfig`, and on SIGTERM or Ctrl-C stops accepting,
//! lets in-flight requests finish and exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use corral_apiserver::transport::pki::{Pki, Tokens};
use corral_apiserver::{Api, Authn, Catalog};

use crate::store_cmd::{home_dir, open_store};

/// `corral server` options.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// `embedded` (under $CORRAL_HOME), `embedded:PATH`, or `etcd://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, env = "CORRAL_STORE", default_value = "embedded")]
    pub(crate) store: String,
    #[command(flatten)]
    pub(crate) etcd_tls: crate::store_cmd::EtcdTlsArgs,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub(crate) listen: SocketAddr,
    /// Corral's state directory (default `~/.corral`).
    #[arg(long, env = "CORRAL_HOME")]
    pub(crate) home: Option<PathBuf>,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san")]
    pub(crate) tls_sans: Vec<String>,
    /// A token file (`token,user,uid,"groups"` lines) besides the generated admin token.
    #[arg(long)]
    pub(crate) token_file: Option<PathBuf>,
    /// Serve the API only: do not run the controllers in this process.
    #[arg(long)]
    pub(crate) no_controllers: bool,
    /// Run the controllers only while this server holds their lease (for
    /// several servers over one etcd: one runs them, the others stand by).
    #[arg(long, env = "CORRAL_LEADER_ELECT")]
    pub(crate) leader_elect: bool,
    /// How the scheduler ranks nodes: `binpack` or `spread`.
    #[arg(long, default_value = "binpack", value_parser = ["binpack", "spread"])]
    pub(crate) placement: String,
    /// The share of nodes that may stop renewing their leases at once before
    /// the node controller stops declaring their tasks lost (the disruption
    /// brake; at least two nodes; 1 or more: never).
    #[arg(long, default_value_t = corral_core::liveness::DEFAULT_DISRUPTION_THRESHOLD, value_parser = share)]
    pub(crate) node_disruption_threshold: f64,
    /// Reads in flight at once; past it, reads get 429 and retry (0: no limit).
    #[arg(long, default_value_t = 400)]
    pub(crate) max_requests_inflight: usize,
    /// Writes in flight at once; past it, writes get 429 and retry (0: no limit).
    #[arg(long, default_value_t = 200)]
    pub(crate) max_mutating_requests_inflight: usize,
    /// Watches and followed logs one user may hold open at once; past it,
    /// 429 (0: no limit; nodes, Corral's controllers and `system:masters`
    /// are not limited).
    #[arg(long, default_value_t = corral_apiserver::transport::server::DEFAULT_WATCHES_PER_USER)]
    pub(crate) max_watches_per_user: usize,
    /// The longest a request (other than a watch or followed logs) is worked
    /// on before it is answered 504, as a Go duration (`60s`, `1m0s`).
    #[arg(long, default_value = "1m0s", value_parser = request_timeout)]
    pub(crate) request_timeout: std::time::Duration,
    /// How often the store is compacted, keeping one interval of history
    /// for watches to resume from, as a Go duration (`0` never compacts;
    /// the embedded store honours it too).
    #[arg(long, default_value = "5m0s", value_parser = go_duration)]
    pub(crate) etcd_compaction_interval: std::time::Duration,
    /// How long an Event is kept after its last write, as a Go duration.
    #[arg(long, default_value = "1h0m0s", value_parser = positive_duration)]
    pub(crate) event_ttl: std::time::Duration,
    /// `RBAC` (node credentials are confined to their node's objects; for
    /// everyone else the rbac.authorization.k8s.io objects decide;
    /// `system:masters` may do everything) or `AlwaysAllow` (every
    /// authenticated caller may).
    #[arg(long, default_value = "RBAC", value_parser = ["RBAC", "AlwaysAllow"])]
    pub(crate) authorization_mode: String,
    #[command(flatten)]
    pub(crate) audit: AuditArgs,
}

/// The audit log (kube-apiserver's flags).
#[derive(Debug, Default, Args)]
pub struct AuditArgs {
    /// An audit.k8s.io/v1 Policy (YAML): which requests are recorded, at
    /// which level. Auditing is on with this and `--audit-log-path`.
    #[arg(long, requires = "audit_log_path")]
    pub(crate) audit_policy_file: Option<PathBuf>,
    /// Where audit events go, as JSON lines (`-`: standard output).
    #[arg(long, requires = "audit_policy_file")]
    pub(crate) audit_log_path: Option<PathBuf>,
    /// Megabytes an audit log file grows to before it is rotated (0: never).
    #[arg(long, default_value_t = 100)]
    pub(crate) audit_log_maxsize: u64,
    /// Rotated audit log files kept (0: all).
    #[arg(long, default_value_t = 0)]
    pub(crate) audit_log_maxbackup: usize,
}

impl AuditArgs {
    /// The auditor the flags ask for, if any.
    fn auditor(&self) -> Result<Option<Arc<corral_apiserver::transport::audit::Auditor>>> {
        let (Some(policy), Some(path)) = (&self.audit_policy_file, &self.audit_log_path) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(policy)
            .with_context(|| format!("reading {}", policy.display()))?;
        let policy = corral_apiserver::transport::audit::Policy::from_yaml(&text)
            .with_context(|| format!("reading {}", policy.display()))?;
        let log = corral_apiserver::transport::audit::AuditLog::open(
            path,
            self.audit_log_maxsize,
            self.audit_log_maxbackup,
        )?;
        Ok(Some(corral_apiserver::transport::audit::Auditor::new(
            policy, log,
        )))
    }
}

fn request_timeout(text: &str) -> Result<std::time::Duration, String> {
    positive_duration(text)
}

fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    corral_apiserver::transport::server::parse_go_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration such as 60s or 1m30s"))
}

fn go_duration(text: &str) -> Result<std::time::Duration, String> {
    corral_apiserver::transport::server::parse_go_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as 0, 60s or 5m0s"))
}

/// A started API server with its controllers.
pub struct StartedServer {
    /// `https://ADDR` it serves on.
    pub url: String,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    /// The store's upkeep and, unless `--no-controllers`, the controllers.
    controllers: Vec<tokio::task::JoinHandle<()>>,
    server: corral_apiserver::RunningServer,
}

/// The controllers' settings named on the command line.
pub fn settings_of(
    placement: &str,
    node_disruption_threshold: f64,
) -> corral_controllers::Settings {
    let policy = if placement == "spread" {
        corral_core::sched::Policy::Spread
    } else {
        corral_core::sched::Policy::BinPack
    };
    corral_controllers::Settings {
        policy,
        nodes: corral_controllers::nodes::Settings {
            disruption_threshold: node_disruption_threshold,
        },
    }
}

/// A share: a finite number, 0 or more.
pub fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a share (a number, 0 or more, such as 0.55)"
        )),
    }
}

/// This process's name among leader-election candidates.
pub fn identity() -> String {
    format!("{}-{}", crate::up_cmd::hostname(), std::process::id())
}

/// Runs every controller until `stop`; with `elect`, only while this
/// process holds the controllers' lease.
pub fn spawn_controllers(
    clients: corral_controllers::Clients,
    settings: corral_controllers::Settings,
    metrics: corral_controllers::metrics::Metrics,
    elect: bool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    if !elect {
        return tokio::spawn(corral_controllers::run_all(
            clients, settings, metrics, stop,
        ));
    }
    let election = corral_controllers::leader::Election::new(identity());
    tokio::spawn(corral_controllers::leader::run_elected(
        clients.controllers.clone(),
        election,
        stop,
        move |s| corral_controllers::run_all(clients.clone(), settings, metrics.clone(), s),
    ))
}

/// A client for this server acting as `user`, with a client certificate
/// the CA signs at each start (kept in memory only).
async fn component_client(pki: &Pki, url: &str, user: &str) -> Result<kube::Client> {
    let (cert, key) = pki.issue_client(
        user,
        &[],
        jiff::Timestamp::now(),
        jiff::SignedDuration::from_hours(24 * 365),
    )?;
    let kc = kube::config::Kubeconfig::from_yaml(&pki.client_kubeconfig(url, user, &cert, &key))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(corral_controllers::client::connect(config)?)
}

impl std::fmt::Debug for StartedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

pub async fn run(args: ServerArgs) -> Result<()> {
    let server = start(args).await?;
    outln!("Corral API server listening on {}", server.url);
    outln!(
        "  kubectl --kubeconfig {} get corral",
        server.kubeconfig.display()
    );
    wait_for_signal().await?;
    outln!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// Opens the store, starts serving, writes the kubeconfig and starts the
/// controllers.
pub async fn start(args: ServerArgs) -> Result<StartedServer> {
    let home = home_dir(args.home)?;
    let store = open_store(&args.store, &home, &args.etcd_tls).await?;
    let api = Api::new(store, Catalog::standard());
    corral_apiserver::storage::registry::ensure_default_namespaces(&api)
        .await
        .context("creating the default namespace")?;
    corral_apiserver::transport::rbac::bootstrap::reconcile(&api)
        .await
        .context("reconciling the bootstrap RBAC policy")?;
    let authz: Arc<dyn corral_apiserver::Authorizer> = match args.authorization_mode.as_str() {
        "AlwaysAllow" => Arc::new(corral_apiserver::AllowAuthenticated),
        // Node,RBAC: node credentials are confined to their node's objects;
        // everyone else gets what the RBAC objects grant.
        _ => corral_apiserver::transport::rbac::node_and_rbac(&api).await?,
    };

    let mut hosts = args.tls_sans.clone();
    hosts.push(args.listen.ip().to_string());
    let pki = Pki::load_or_create(&home.join("pki"), &hosts).context("preparing TLS material")?;
    // The generated admin token, and those of `--token-file` besides.
    let mut tokens = Tokens::load(&pki.token_file).context("reading the token file")?;
    if let Some(extra) = &args.token_file
        && extra != &pki.token_file
    {
        tokens.extend(
            Tokens::load(extra)
                .with_context(|| format!("reading the token file {}", extra.display()))?,
        );
    }
    let tls = pki.server_config()?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Task logs are proxied from agents, which trust client certificates from our CA.
    let agents = corral_apiserver::transport::logs::AgentLink::from_pem(
        &pki.admin_cert_pem,
        &pki.admin_key_pem,
    )
    .map_err(|e| anyhow::anyhow!("reading the admin certificate: {e}"))?;
    let store = api.store.clone();
    let controller_metrics = corral_controllers::metrics::Metrics::new();
    let server = corral_apiserver::serve_with_options(
        api,
        listener,
        Some(tls),
        Authn::Required(Arc::new(tokens)),
        authz,
        corral_apiserver::ServeOptions {
            agents: Some(agents),
            // Agents joining with a bootstrap token get node certificates.
            signer: Some(Arc::new(pki.clone())),
            audit: args.audit.auditor()?,
            inflight: corral_apiserver::InFlight::new(corral_apiserver::InFlightLimits {
                readonly: args.max_requests_inflight,
                mutating: args.max_mutating_requests_inflight,
            }),
            streams: corral_apiserver::transport::server::OpenStreams::new(
                args.max_watches_per_user,
            ),
            // The controllers' series, when they run here, in the same scrape.
            metrics: {
                let m = corral_apiserver::transport::metrics::Metrics::new();
                if args.no_controllers {
                    m
                } else {
                    let c = controller_metrics.clone();
                    m.with_extra(Arc::new(move |out: &mut String| c.encode(out)))
                }
            },
            request_timeout: args.request_timeout,
        },
    )?;
    let url = format!("https://{addr}");
    let kubeconfig = home.join("kubeconfig");
    // It holds the admin token: readable by its owner only.
    corral_apiserver::transport::pki::write_private(&kubeconfig, pki.kubeconfig(&url).as_bytes())
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    tracing::info!(%url, kubeconfig = %kubeconfig.display(), "serving");

    // The controllers talk to this server like any client (never to the store).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The store's upkeep runs in every server (a compaction another server
    // already made is skipped), with or without the controllers.
    let mut controllers = vec![tokio::spawn(corral_apiserver::storage::lifecycle::run(
        store,
        corral_apiserver::storage::lifecycle::Lifecycle {
            compaction_interval: Some(args.etcd_compaction_interval).filter(|d| !d.is_zero()),
            event_ttl: args.event_ttl,
        },
        stop_rx.clone(),
    ))];
    if !args.no_controllers {
        // Each as its own identity, with only what it uses (the bootstrap
        // policy's system:corral-scheduler and -controller-manager).
        use corral_apiserver::transport::rbac::bootstrap::{CONTROLLER_MANAGER, SCHEDULER};
        let clients = match (
            component_client(&pki, &url, SCHEDULER).await,
            component_client(&pki, &url, CONTROLLER_MANAGER).await,
        ) {
            (Ok(scheduler), Ok(controllers)) => corral_controllers::Clients {
                scheduler,
                controllers,
            },
            // A PKI handed over without its CA key (an earlier chart's)
            // signs nothing: the controllers keep the administrator's
            // credential until ca.key is added.
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "the controllers run as the administrator: their own certificates cannot be signed");
                let kc = kube::config::Kubeconfig::from_yaml(&pki.kubeconfig(&url))?;
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                corral_controllers::Clients::one(corral_controllers::client::connect(config)?)
            }
        };
        controllers.push(spawn_controllers(
            clients,
            settings_of(&args.placement, args.node_disruption_threshold),
            controller_metrics,
            args.leader_elect,
            stop_rx,
        ));
    }

    Ok(StartedServer {
        url,
        kubeconfig,
        stop: stop_tx,
        controllers,
        server,
    })
}

impl StartedServer {
    /// Stops the controllers, then the server (in-flight requests finish).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for c in self.controllers {
            if let Err(e) = c.await {
                tracing::warn!(error = %e, "the controllers panicked");
            }
        }
        self.server.shutdown().await;
    }
}
