//! The HTTP server: TLS, the request pipeline, and graceful shutdown.
//!
//! Each request passes these layers, each in its own module, in order:
//! the request's information, read once (`request_info`: kind, namespace,
//! name, subresource, verb, long-running or not) → its audit record begun
//! (`auditing`) → its deadline (`deadline`: 504 past it; watches and logs
//! have none but end at shutdown) → health and version, answered to anyone
//! → authentication and impersonation (`authn`: 401) → the in-flight limits
//! (`inflight`: 429; counted once the caller is known, watches not counted)
//! → authorization (`authz`: 403) → the handler (`route`: the REST verbs in
//! `resource`, `scale` and `binding`, logs, reviews, discovery, OpenAPI,
//! metrics). Every request is counted in the metrics and, by the audit
//! policy, recorded in the audit log; every failure leaves as a `Status`.

use crate::transport::auth::CertIdentity;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::storage::registry::Api;
use crate::transport::auth::{AllowAuthenticated, Authn, Authorizer};
use crate::transport::metrics::{Metrics, RequestLabels};

mod auditing;
mod authn;
mod authz;
mod binding;
mod body;
mod deadline;
mod inflight;
mod query;
pub mod request_info;
mod resource;
mod respond;
mod route;
mod scale;

pub use inflight::{
    DEFAULT_WATCHES_PER_USER, InFlight, InFlightLimits, OpenStreams, PriorityLevel, QUEUE_WAIT,
    RequestClass, Slot,
};
pub use query::parse_go_duration;
use request_info::RequestInfo;
use respond::Body;

/// The longest a TLS handshake may take (Go's `net/http` default for
/// kube-apiserver).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a client may take to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request body accepted (etcd takes 1.5 MiB values).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, ends watches and followed logs (their clients see the
    /// stream end, as at a timeout, and reconnect), lets other in-flight
    /// requests finish, then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// What every request shares: how callers are checked (who they are, then
/// what they may do), the link to agents, the in-flight slots, the metrics
/// and the deadline.
#[derive(Debug, Clone)]
struct Shared {
    authn: Authn,
    authz: Arc<dyn Authorizer>,
    agents: Option<crate::transport::logs::AgentLink>,
    signer: Option<Arc<crate::transport::pki::Pki>>,
    audit: Option<Arc<crate::transport::audit::Auditor>>,
    inflight: InFlight,
    streams: OpenStreams,
    metrics: Metrics,
    request_timeout: Duration,
    /// Becomes true when the server starts shutting down.
    closing: tokio::sync::watch::Receiver<bool>,
    /// Objects decoded for plans, kept for the next.
    plans: Arc<crate::transport::plans::Decoded>,
    /// The last hour of the cluster's figures, for the UI.
    history: Arc<crate::transport::ui::history::History>,
}

/// What a server needs besides its API, listener and credentials checks.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The identity the server presents to agents to proxy task logs.
    pub agents: Option<crate::transport::logs::AgentLink>,
    /// The CA that signs node certificates on request (see
    /// [`crate::transport::node_certificates`]); without it, such requests get 503.
    pub signer: Option<Arc<crate::transport::pki::Pki>>,
    /// The audit policy and log (see [`crate::transport::audit`]); None audits nothing.
    pub audit: Option<Arc<crate::transport::audit::Auditor>>,
    /// The slots of requests in flight (see [`InFlightLimits`]).
    pub inflight: InFlight,
    /// The watches and followed logs each user may hold open (see [`OpenStreams`]).
    pub streams: OpenStreams,
    /// The series `/metrics` answers with.
    pub metrics: Metrics,
    /// The longest the server works on a request that is not long-running
    /// before answering 504 (kube-apiserver's `--request-timeout`); a
    /// request's `timeout` parameter can shorten it.
    pub request_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            agents: None,
            signer: None,
            audit: None,
            inflight: InFlight::default(),
            streams: OpenStreams::new(DEFAULT_WATCHES_PER_USER),
            metrics: Metrics::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// kube-apiserver's default `--request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `api` on `listener`, over TLS when `tls` is given; every
/// authenticated caller may do everything.
pub fn serve(
    api: Api,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    authn: Authn,
) -> std::io::Result<RunningServer> {
    serve_with_authorizer(api, listener, tls, authn, Arc::new(AllowAuthenticated))
}

/// Serves `api` with an explicit authorizer.
pub fn serve_with_authorizer(
    api: Api,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    authn: Authn,
    authz: Arc<dyn Authorizer>,
) -> std::io::Result<RunningServer> {
    serve_with_options(api, listener, tls, authn, authz, ServeOptions::default())
}

/// Serves `api` with an explicit authorizer and [`ServeOptions`].
pub fn serve_with_options(
    api: Api,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    authn: Authn,
    authz: Arc<dyn Authorizer>,
    options: ServeOptions,
) -> std::io::Result<RunningServer> {
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let shared = Shared {
        authn,
        authz,
        agents: options.agents,
        signer: options.signer,
        audit: options.audit,
        inflight: options.inflight,
        streams: options.streams,
        metrics: options.metrics,
        request_timeout: options.request_timeout,
        closing: stop.clone(),
        plans: Arc::default(),
        history: Arc::default(),
    };
    // The UI's history is sampled from the watch cache (none without one).
    if api.cache.is_some() {
        tokio::spawn(crate::transport::ui::history::run(
            api.clone(),
            shared.history.clone(),
            stop.clone(),
        ));
    }
    let local_addr = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // A client that opens a connection and then dawdles over its
        // request's head is cut off: it holds no slot, but a task and a socket.
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let api = api.clone();
                    let shared = shared.clone();
                    let acceptor = acceptor.clone();
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let _ = stream.set_nodelay(true);
                        match acceptor {
                            Some(acc) => {
                                let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acc.accept(stream)).await else { return };
                                shared.metrics.connection(tls.get_ref().1.alpn_protocol());
                                // Verified by rustls against the CA; its subject names the user.
                                let cert = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| crate::transport::auth::cert_identity(c.as_ref()))
                                    .map(Arc::new);
                                let svc = hyper::service::service_fn(move |req| handle(api.clone(), shared.clone(), cert.clone(), peer, req));
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc).into_owned();
                                let _ = watcher.watch(conn).await;
                            }
                            None => {
                                let svc = hyper::service::service_fn(move |req| handle(api.clone(), shared.clone(), None, peer, req));
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                                let _ = watcher.watch(conn).await;
                            }
                        }
                    });
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    });
    Ok(RunningServer {
        local_addr,
        shutdown,
        task,
    })
}

/// How a request fared at the in-flight limits: its priority level, how
/// long it waited, and whether (and when) it got a slot.
#[derive(Debug)]
struct Admitted {
    level: PriorityLevel,
    waited: Duration,
    at: std::time::Instant,
    slot: bool,
}

async fn handle(
    api: Api,
    shared: Shared,
    cert: Option<Arc<CertIdentity>>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = std::time::Instant::now();
    let apply = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
    let info = Arc::new(RequestInfo::new(
        &api.registry,
        req.method(),
        req.uri().path(),
        req.uri().query(),
        apply,
    ));
    let audit = auditing::begin(shared.audit.as_ref(), &mut req, peer);
    let labels = RequestLabels::of(&info);
    let class = RequestClass::of(&info);
    let metrics = shared.metrics.clone();
    let (timeout, closing) = (shared.request_timeout, shared.closing.clone());
    let admitted = Arc::new(std::sync::OnceLock::<Admitted>::new());
    let work = {
        let (info, audit, seen) = (info.clone(), audit.clone(), admitted.clone());
        async move {
            if let Some(r) = route::unauthenticated(&info) {
                return Ok(r);
            }
            let user = authn::authenticate(&shared, cert.as_deref(), &req, audit.as_ref())?;
            // The body has arrived before a slot is taken, so a slow upload
            // holds none; strangers get their 401 before it is even read.
            let req = body::buffered(req).await?;
            // Counted once the caller is known, at the caller's level, as
            // kube-apiserver counts. The slot is held until the answer is built.
            let level = PriorityLevel::of(&user.name, &user.groups);
            let asked = std::time::Instant::now();
            let slot = shared.inflight.admit(class, level, &user.name).await;
            let _ = seen.set(Admitted {
                level,
                waited: asked.elapsed(),
                at: std::time::Instant::now(),
                slot: slot.is_ok(),
            });
            let _slot = slot?;
            authz::authorize(&shared, &user, &info, audit.as_ref())?;
            body::audit_body(&req);
            // A stream (a watch, a followed log) counts against its user's
            // limit for as long as its body is being sent.
            let ticket = match class {
                RequestClass::LongRunning => shared.streams.open(level, &user.name)?,
                _ => None,
            };
            let response = route::handle(api, shared, user, req, info).await?;
            Ok(match ticket {
                Some(ticket) => response.map(|body| {
                    http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_frame(
                        body,
                        move |frame| {
                            let _held = &ticket;
                            frame
                        },
                    ))
                }),
                None => response,
            })
        }
    };
    let response = deadline::run(&info, timeout, closing, audit.as_ref(), work).await;
    let elapsed = started.elapsed();
    let timed = class != RequestClass::LongRunning;
    metrics.observe(
        labels,
        response.status().as_u16(),
        timed.then_some(elapsed.as_secs_f64()),
    );
    if let Some(a) = admitted.get() {
        metrics.observe_level(
            a.level.name(),
            a.waited.as_secs_f64(),
            (timed && a.slot).then(|| a.at.elapsed().as_secs_f64()),
        );
    }
    tracing::debug!(%peer, method = %info.method, path = %info.path, status = response.status().as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request");
    Ok(response)
}
