//! The HTTP layer: TLS, authentication, routing to discovery, OpenAPI, the
//! REST verbs and `/metrics`, body limits, content negotiation, and graceful
//! shutdown.
//!
//! Layers, outermost first: TLS (client certificates optional) → the
//! request's deadline (504 past it; watches have none) → authentication
//! (bearer token or client certificate; 401 otherwise) → in-flight limits
//! (429 past them; watches not counted) → authorization (every
//! authenticated user may do everything, for now) → routing → handler. Every request is counted in
//! the metrics, and every error leaves as a `Status`.

use crate::auth::CertIdentity;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::auth::{AllowAuthenticated, Attributes, Authn, Authorizer, authorize};
use crate::discovery;
use crate::error::ApiError;
use crate::metrics::{Metrics, RequestLabels};
use crate::openapi;
use crate::patch::{PatchKind, parse_body};
use crate::registry::ResourceDesc;
use crate::rest::{Api, DeleteOptions};

mod binding;
mod inflight;
mod query;
mod route;
mod scale;

pub use inflight::{InFlight, InFlightLimits, RequestClass, Slot};
pub use query::parse_go_duration;

use crate::render::{Rendering, list_metadata, partial_metadata_list, render_object, rendering};
use crate::table::{IncludeObject, table};
use crate::watch::{self, WatchParams};
use query::{Query, list_query, watch_timeout, write_options};
use route::{attributes, resolve};

/// The largest request body accepted (etcd takes 1.5 MiB values).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

type Body = BoxBody<Bytes, Infallible>;

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
    agents: Option<crate::logs::AgentLink>,
    signer: Option<Arc<crate::pki::Pki>>,
    audit: Option<Arc<crate::audit::Auditor>>,
    inflight: InFlight,
    metrics: Metrics,
    request_timeout: Duration,
    /// Becomes true when the server starts shutting down.
    closing: tokio::sync::watch::Receiver<bool>,
}

/// What a server needs besides its API, listener and credentials checks.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The identity the server presents to agents to proxy task logs.
    pub agents: Option<crate::logs::AgentLink>,
    /// The CA that signs node certificates on request (see
    /// [`crate::node_certificates`]); without it, such requests get 503.
    pub signer: Option<Arc<crate::pki::Pki>>,
    /// The audit policy and log (see [`crate::audit`]); None audits nothing.
    pub audit: Option<Arc<crate::audit::Auditor>>,
    /// The slots of requests in flight (see [`InFlightLimits`]).
    pub inflight: InFlight,
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
        metrics: options.metrics,
        request_timeout: options.request_timeout,
        closing: stop.clone(),
    };
    let local_addr = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
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
                                let Ok(tls) = acc.accept(stream).await else { return };
                                // Verified by rustls against the CA; its subject names the user.
                                let cert = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| crate::auth::cert_identity(c.as_ref()))
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

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    // Encoding a `Value` cannot fail (its keys are strings).
    let body = serde_json::to_vec(v).unwrap_or_default();
    full(status, "application/json", body)
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code(), &e.status());
    if matches!(e, ApiError::TooManyRequests) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// Where a resource request points.
#[derive(Debug)]
struct Target {
    desc: Arc<ResourceDesc>,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<Subresource>,
}

/// The subresources served for resources (a Task's `log` is routed apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subresource {
    /// `status`: writes change only status.
    Status,
    /// `scale`: a Job's instances as an autoscaling/v1 Scale.
    Scale,
    /// `binding`: a Task bound to a node (POST of a Binding).
    Binding,
}

impl Subresource {
    fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
        }
    }
}

impl Target {
    fn status(&self) -> bool {
        self.sub == Some(Subresource::Status)
    }
}

async fn handle(
    api: Api,
    shared: Shared,
    cert: Option<Arc<CertIdentity>>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let audit = shared.audit.clone().map(|auditor| {
        let record = crate::audit::Record::new(
            auditor,
            // The path and query, as kube-apiserver records it (HTTP/2
            // requests carry the scheme and authority too).
            req.uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned()),
            req.method(),
            peer.ip(),
            req.headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        req.extensions_mut().insert(record.clone());
        record
    });
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let query = Query::parse(req.uri().query());
    let watch = query.flag("watch");
    let class = RequestClass::of(&method, &path, watch);
    let apply = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
    let labels = RequestLabels::of(
        &api.registry,
        &method,
        path.trim_end_matches('/'),
        watch,
        apply,
    );
    let metrics = shared.metrics.clone();
    let response = if class == RequestClass::LongRunning {
        // Watches and followed logs run as long as their clients want, or
        // until the server shuts down.
        let closing = shared.closing.clone();
        match route(api, shared, cert.as_deref(), req, class).await {
            Ok(r) => {
                let r = until_closing(r, closing);
                match &audit {
                    Some(record) => audited_stream(r, record.clone()),
                    None => r,
                }
            }
            Err(e) => audited_error(&e, audit.as_ref()),
        }
    } else {
        // Anything else is answered by its deadline: it runs on its own
        // task, which keeps its in-flight slot until it ends (a request
        // stuck on the store keeps counting against the limit), and a panic
        // there is a 500, never a dropped connection.
        match query::deadline(&query, shared.request_timeout) {
            Err(e) => error_response(&e),
            Ok(limit) => {
                let work =
                    tokio::spawn(
                        async move { route(api, shared, cert.as_deref(), req, class).await },
                    );
                match tokio::time::timeout(limit, work).await {
                    Ok(Ok(Ok(r))) => match &audit {
                        Some(record) => audited(r, record).await,
                        None => r,
                    },
                    Ok(Ok(Err(e))) => audited_error(&e, audit.as_ref()),
                    Ok(Err(failed)) => {
                        tracing::error!(%method, %path, error = %failed, "a request's handler failed");
                        audited_error(
                            &ApiError::Internal("the request's handler failed".into()),
                            audit.as_ref(),
                        )
                    }
                    Err(_) => audited_error(&ApiError::Timeout, audit.as_ref()),
                }
            }
        }
    };
    let elapsed = started.elapsed();
    metrics.observe(
        labels,
        response.status().as_u16(),
        (class != RequestClass::LongRunning).then_some(elapsed.as_secs_f64()),
    );
    tracing::debug!(%peer, %method, %path, status = response.status().as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request");
    Ok(response)
}

/// The error's response, recorded in the audit log when auditing.
fn audited_error(e: &ApiError, audit: Option<&crate::audit::Record>) -> Response<Body> {
    if let Some(record) = audit {
        record.response_complete(e.code().as_u16(), Some(&e.status()), Some(&e.status()));
    }
    error_response(e)
}

/// A complete response, recorded in the audit log (with its body when the
/// level keeps it: such bodies are whole in memory already).
async fn audited(response: Response<Body>, record: &crate::audit::Record) -> Response<Body> {
    let code = response.status().as_u16();
    if !record.wants_response() {
        record.response_complete(code, None, None);
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    let object = serde_json::from_slice::<Value>(&bytes).ok();
    record.response_complete(code, None, object.as_ref());
    Response::from_parts(parts, BodyExt::boxed(http_body_util::Full::new(bytes)))
}

/// A long-running response: `ResponseStarted` now, `ResponseComplete` when
/// its body ends (or its client goes away).
fn audited_stream(response: Response<Body>, record: crate::audit::Record) -> Response<Body> {
    let code = response.status().as_u16();
    record.response_started(code);
    struct Completes(crate::audit::Record, u16);
    impl Drop for Completes {
        fn drop(&mut self) {
            self.0.response_complete(self.1, None, None);
        }
    }
    let guard = Completes(record, code);
    response.map(|body| {
        BodyExt::boxed(StreamBody::new(http_body_util::BodyStream::new(body).map(
            move |frame| {
                let _ = &guard;
                frame
            },
        )))
    })
}

/// A long-running response whose body ends cleanly (as a watch does at its
/// timeout) once the server starts shutting down, so shutdown does not wait
/// on streams that never end by themselves, and their clients reconnect
/// (in an HA control plane, to another server) at once.
fn until_closing(
    response: Response<Body>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> Response<Body> {
    response.map(|body| {
        let closed = async move {
            // A server whose handle was dropped without a shutdown serves on.
            if closing.wait_for(|closing| *closing).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        BodyExt::boxed(StreamBody::new(
            http_body_util::BodyStream::new(body).take_until(closed),
        ))
    })
}

async fn route(
    api: Api,
    sec: Shared,
    cert: Option<&CertIdentity>,
    req: Request<Incoming>,
    class: RequestClass,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return Ok(full(StatusCode::OK, "text/plain", "ok")),
        "/version" => return Ok(json_response(StatusCode::OK, &discovery::version())),
        _ => {}
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let audit = req.extensions().get::<crate::audit::Record>().cloned();
    let authenticated = sec.authn.authenticate(authorization, cert)?;
    if let Some(a) = &audit {
        a.user(&authenticated, &authenticated);
    }
    let user = crate::impersonation::effective_user(
        req.headers(),
        authenticated.clone(),
        sec.authz.as_ref(),
    )?;
    if let Some(a) = &audit {
        a.user(&authenticated, &user);
    }
    // Counted once the caller is known, as kube-apiserver counts: strangers
    // get their 401 and take no slot. The slot is held until the answer is
    // built.
    let _slot = sec.inflight.admit(class)?;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get_only = |m: &Method| {
        if *m == Method::GET {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed)
        }
    };
    match segs.as_slice() {
        ["metrics"] => {
            get_only(req.method())?;
            let objects = api
                .cache
                .as_ref()
                .map(|c| {
                    let counts = c.object_counts();
                    api.registry
                        .all()
                        .iter()
                        .zip(counts)
                        .map(|(d, n)| (d.group_resource(), i64::try_from(n).unwrap_or(i64::MAX)))
                        .collect()
                })
                .unwrap_or_default();
            let watchers = api.cache.as_ref().map_or(0, |c| c.watcher_count());
            let text = sec
                .metrics
                .encode(&crate::metrics::Snapshot {
                    inflight: sec.inflight.taken(),
                    objects,
                    watchers: i64::try_from(watchers).unwrap_or(i64::MAX),
                })
                .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
            return Ok(full(StatusCode::OK, crate::metrics::CONTENT_TYPE, text));
        }
        ["api"] => {
            get_only(req.method())?;
            return Ok(if discovery::wants_aggregated(&accept) {
                json_response(StatusCode::OK, &discovery::aggregated(&api.registry, true))
                    .with_content_type(discovery::AGGREGATED_CONTENT_TYPE)
            } else {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("127.0.0.1")
                    .to_owned();
                json_response(StatusCode::OK, &discovery::api_versions(&host))
            });
        }
        ["apis"] => {
            get_only(req.method())?;
            return Ok(if discovery::wants_aggregated(&accept) {
                json_response(StatusCode::OK, &discovery::aggregated(&api.registry, false))
                    .with_content_type(discovery::AGGREGATED_CONTENT_TYPE)
            } else {
                json_response(StatusCode::OK, &discovery::api_group_list(&api.registry))
            });
        }
        ["api", v] => {
            get_only(req.method())?;
            return discovery::resource_list(&api.registry, "", v)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or(ApiError::PathNotFound);
        }
        ["apis", g] => {
            get_only(req.method())?;
            return discovery::api_group(&api.registry, g)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or(ApiError::PathNotFound);
        }
        ["apis", g, v] => {
            get_only(req.method())?;
            return discovery::resource_list(&api.registry, g, v)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or(ApiError::PathNotFound);
        }
        ["openapi", "v2"] => {
            get_only(req.method())?;
            return Ok(if accept.contains("protobuf") {
                full(
                    StatusCode::OK,
                    crate::openapi_v2::PROTOBUF_MEDIA_TYPE,
                    crate::openapi_v2::protobuf_document(&api.registry),
                )
            } else {
                json_response(
                    StatusCode::OK,
                    &crate::openapi_v2::json_document(&api.registry),
                )
            });
        }
        ["openapi", "v3"] => {
            get_only(req.method())?;
            return Ok(json_response(
                StatusCode::OK,
                &openapi::index(&api.registry),
            ));
        }
        ["openapi", "v3", rest @ ..] => {
            get_only(req.method())?;
            let key = rest.join("/");
            let doc = openapi::document(&api.registry, &key).ok_or(ApiError::PathNotFound)?;
            let mut r = json_response(StatusCode::OK, &doc);
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", openapi::hash(&doc))) {
                r.headers_mut().insert(header::ETAG, etag);
            }
            return Ok(r);
        }
        [
            "apis",
            "corral.dev",
            "v1alpha1",
            "namespaces",
            ns,
            "tasks",
            name,
            "log",
        ] => {
            get_only(req.method())?;
            let attrs = Attributes {
                verb: "get".to_owned(),
                group: "corral.dev".to_owned(),
                resource: "tasks".to_owned(),
                subresource: Some("log".to_owned()),
                namespace: Some((*ns).to_owned()),
                name: Some((*name).to_owned()),
                field_selector: None,
            };
            authorize_audited(sec.authz.as_ref(), &user, &attrs, audit.as_ref())?;
            let Some(link) = &sec.agents else {
                return Err(ApiError::Unavailable(
                    "this server has no client certificate to reach agents with".into(),
                ));
            };
            return crate::logs::proxy(&api, link, ns, name, req.uri().query()).await;
        }
        _ => {}
    }
    if segs.as_slice()
        == [
            "apis",
            crate::node_certificates::GROUP,
            crate::node_certificates::VERSION,
            crate::node_certificates::PLURAL,
        ]
    {
        if req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed);
        }
        if let Some(a) = &audit {
            a.attributes(&Attributes {
                verb: "create".into(),
                group: crate::node_certificates::GROUP.into(),
                resource: crate::node_certificates::PLURAL.into(),
                ..Attributes::default()
            });
        }
        let (parts, body) = read_body(req).await?;
        let answer = crate::node_certificates::answer(
            decode_object(&parts, &body)?,
            &user,
            sec.authz.as_ref(),
            sec.signer.as_deref(),
            jiff::Timestamp::now(),
        )?;
        return Ok(json_response(StatusCode::CREATED, &answer));
    }
    if let ["apis", g, v, plural] = segs.as_slice()
        && let Some(review) = crate::reviews::find(g, v, plural)
    {
        if req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed);
        }
        if let Some(a) = &audit {
            a.attributes(&Attributes {
                verb: "create".into(),
                group: (*g).to_owned(),
                resource: (*plural).to_owned(),
                ..Attributes::default()
            });
        }
        let (parts, body) = read_body(req).await?;
        let answer = crate::reviews::answer(
            review,
            decode_object(&parts, &body)?,
            &user,
            sec.authz.as_ref(),
        )?;
        return Ok(json_response(StatusCode::CREATED, &answer));
    }
    let target = resolve(&api, &segs)?;
    authorize_audited(
        sec.authz.as_ref(),
        &user,
        &attributes(&target, req.method(), req.uri().query()),
        audit.as_ref(),
    )?;
    let requester = crate::rest::Requester {
        user,
        authz: sec.authz.clone(),
    };
    resource(api, target, req, &accept, requester).await
}

/// Authorizes `attrs`, telling the audit record what was asked and decided.
fn authorize_audited(
    authz: &dyn Authorizer,
    user: &crate::auth::User,
    attrs: &Attributes,
    audit: Option<&crate::audit::Record>,
) -> Result<(), ApiError> {
    let decided = authorize(authz, user, attrs);
    if let Some(a) = audit {
        a.attributes(attrs);
        a.decision(decided.is_ok());
    }
    decided
}

trait WithContentType {
    fn with_content_type(self, ct: &str) -> Self;
}

impl WithContentType for Response<Body> {
    fn with_content_type(mut self, ct: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(ct) {
            self.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        self
    }
}

async fn read_body(req: Request<Incoming>) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let collected = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::BadRequest(format!("reading the request body: {e}"))
            }
        })?;
    let bytes = collected.to_bytes();
    if let Some(record) = parts.extensions.get::<crate::audit::Record>() {
        record.request_body(&bytes);
    }
    Ok((parts, bytes))
}

fn content_type(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned()
}

/// Decodes an object body (JSON or YAML).
fn decode_object(parts: &http::request::Parts, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(parts);
    let media = ct.split(';').next().unwrap_or_default().trim().to_owned();
    let v: Value = match media.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("error decoding the request body as JSON: {e}"))
        })?,
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode_object(body)?,
        "application/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::BadRequest("the request body is not UTF-8".into()))?;
            serde_saphyr::from_str(text).map_err(|e| {
                ApiError::BadRequest(format!("error decoding the request body as YAML: {e}"))
            })?
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
            )));
        }
    };
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    Ok(v)
}

fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn list_response(
    desc: &ResourceDesc,
    page: crate::rest::ListPage,
    render: Rendering,
) -> Response<Body> {
    let rv = page.revision.to_string();
    match render {
        Rendering::Table(include) => {
            let values: Vec<Value> = page.items.iter().map(|e| e.value.clone()).collect();
            return json_response(
                StatusCode::OK,
                &table(desc, &values, &rv, page.continue_token.as_deref(), include),
            );
        }
        Rendering::Metadata(v) => {
            let items = page.items.iter().map(|e| e.value.clone());
            return json_response(
                StatusCode::OK,
                &partial_metadata_list(items, &rv, page.continue_token.as_deref(), v),
            );
        }
        Rendering::Object => {}
    }
    let metadata = list_metadata(&rv, page.continue_token.as_deref());
    // Items are spliced in from their cached encodings, not re-serialized.
    let head = serde_json::json!({"kind": format!("{}List", desc.kind), "apiVersion": desc.api_version(), "metadata": metadata});
    let mut body = head.to_string();
    body.pop();
    let mut out = Vec::with_capacity(
        body.len() + page.items.iter().map(|e| e.json.len() + 1).sum::<usize>() + 16,
    );
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b",\"items\":[");
    for (i, e) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&e.json);
    }
    out.extend_from_slice(b"]}");
    full(StatusCode::OK, "application/json", out)
}

async fn resource(
    api: Api,
    t: Target,
    req: Request<Incoming>,
    accept: &str,
    requester: crate::rest::Requester,
) -> Result<Response<Body>, ApiError> {
    match t.sub {
        Some(Subresource::Scale) => return scale::request(api, t, req).await,
        Some(Subresource::Binding) => return binding::request(api, t, req, requester).await,
        Some(Subresource::Status) | None => {}
    }
    let q = Query::parse(req.uri().query());
    let desc = t.desc.clone();
    let ns = t.namespace.as_deref();
    let include = IncludeObject::parse(q.get("includeObject"));
    // The form of what a read sends (writes answer with the object).
    let render = if req.method() == Method::GET {
        rendering(accept, include)?
    } else {
        Rendering::Object
    };
    match (req.method().clone(), t.name.as_deref()) {
        (Method::GET, None) if q.flag("watch") => {
            let lq = list_query(&q, &desc)?;
            let params = WatchParams {
                resource_version: q.get("resourceVersion").map(str::to_owned),
                bookmarks: q.flag("allowWatchBookmarks"),
                timeout: watch_timeout(&q)?,
                send_initial: q.optional_bool("sendInitialEvents")?,
                labels: lq.labels,
                fields: lq.fields,
                render,
            };
            let rx = watch::start(api, desc, t.namespace.clone(), params).await?;
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        (Method::GET, None) => {
            let lq = list_query(&q, &desc)?;
            let page = api.list(&desc, ns, &lq).await?;
            Ok(list_response(&desc, page, render))
        }
        (Method::GET, Some(name)) => {
            let obj = api.get(&desc, ns, name).await?;
            Ok(json_response(
                StatusCode::OK,
                &render_object(&desc, obj, render),
            ))
        }
        (Method::POST, None) => {
            let mut opts = write_options(&q, req.method(), req.headers())?;
            opts.requester = Some(requester.clone());
            let (parts, body) = read_body(req).await?;
            let obj = decode_object(&parts, &body)?;
            let w = api.create(&desc, ns, obj, &opts).await?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &w.object),
                &w.warnings,
            ))
        }
        (Method::PUT, Some(name)) => {
            let mut opts = write_options(&q, req.method(), req.headers())?;
            opts.requester = Some(requester.clone());
            let (parts, body) = read_body(req).await?;
            let obj = decode_object(&parts, &body)?;
            let w = api.update(&desc, ns, name, obj, t.status(), &opts).await?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &w.object),
                &w.warnings,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let mut opts = write_options(&q, req.method(), req.headers())?;
            opts.requester = Some(requester.clone());
            let (parts, body) = read_body(req).await?;
            let kind = PatchKind::from_content_type(&content_type(&parts), &desc)?;
            let patch = parse_body(kind, &body)?;
            let w = api
                .patch(&desc, ns, name, kind, patch, t.status(), &opts)
                .await?;
            let code = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_warnings(json_response(code, &w.object), &w.warnings))
        }
        (Method::DELETE, name) => {
            let (parts, body) = read_body(req).await?;
            let body = if body.is_empty() {
                None
            } else if content_type(&parts).starts_with(crate::protobuf::MEDIA_TYPE) {
                Some(crate::protobuf::decode_delete_options(&body)?)
            } else {
                Some(serde_json::from_slice::<Value>(&body).map_err(|e| {
                    ApiError::BadRequest(format!("error decoding DeleteOptions: {e}"))
                })?)
            };
            let opts = DeleteOptions::from_request(
                q.get("propagationPolicy"),
                q.optional_bool("orphanDependents")?,
                q.get("dryRun") == Some("All"),
                body.as_ref(),
            )?;
            match name {
                Some(name) => {
                    let obj = api.delete(&desc, ns, name, &opts).await?;
                    Ok(json_response(StatusCode::OK, &obj))
                }
                None => {
                    let lq = list_query(&q, &desc)?;
                    let page = api.delete_collection(&desc, ns, &lq, &opts).await?;
                    Ok(list_response(&desc, page, Rendering::Object))
                }
            }
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}
