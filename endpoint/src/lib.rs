//! A component's own HTTPS endpoint — an agent's task logs and metrics, the
//! standalone controllers' metrics — secured as kubelet secures its own:
//! - The component makes itself a certificate at start ([`Endpoint`] gives
//!   its SHA-256, which an agent advertises in its Node so the API server
//!   can pin it).
//! - Callers present a client certificate signed by Corral's CA (the one in
//!   the component's kubeconfig); anything else fails the TLS handshake.
//!   The certificate's CN is the user, each O a group ([`Caller`]).
//! - The handler authorizes each request by asking the API server
//!   ([`Authorizer`]: a SubjectAccessReview for what the request reads),
//!   so RBAC decides here as it does for the API: the API server's own
//!   identity (`system:masters`) reads logs to proxy them, a monitoring
//!   identity (group `system:monitoring`) reads `/metrics`, a tenant with a
//!   certificate reads neither.

mod authz;

pub use authz::{Access, Authorizer};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Digest;

/// A response body.
pub type Body = BoxBody<Bytes, Infallible>;

/// The longest a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Making the certificate or the TLS configuration failed.
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// Binding the listen address failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Who made a request: its client certificate's CN and Os.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The user (CN).
    pub user: String,
    /// The groups (each O).
    pub groups: Vec<String>,
}

/// Reads the caller from a verified certificate (DER); None without a CN.
pub fn caller_of(der: &[u8]) -> Option<Caller> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .find_map(|a| a.as_str().ok())?
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_owned)
        .collect();
    (!user.is_empty()).then_some(Caller { user, groups })
}

/// A plain-text answer.
pub fn text(code: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A running endpoint; dropping it stops the listener.
#[derive(Debug)]
pub struct Endpoint {
    /// `https://HOST:PORT`.
    pub url: String,
    /// SHA-256 of its certificate (DER), lower-case hex.
    pub certificate_sha256: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `[host]` for an IPv6 address, `host` otherwise.
fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Listens on `listen` (advertised as `advertise_host`, or the bound IP),
/// accepting clients whose certificates `ca_pem` signed, and answers each
/// request with `handler` (given the caller).
pub async fn serve<H, F>(
    listen: SocketAddr,
    advertise_host: Option<String>,
    ca_pem: &[u8],
    handler: H,
) -> Result<Endpoint, EndpointError>
where
    H: Fn(Request<Incoming>, Caller) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let tls = |e: &dyn std::fmt::Display| EndpointError::Tls(e.to_string());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| EndpointError::Listen {
            addr: listen,
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| EndpointError::Listen {
            addr: listen,
            source,
        })?;
    let host = advertise_host.unwrap_or_else(|| local.ip().to_string());
    let key = rcgen::KeyPair::generate().map_err(|e| tls(&e))?;
    let params = rcgen::CertificateParams::new(vec![host.clone()]).map_err(|e| tls(&e))?;
    let cert = params.self_signed(&key).map_err(|e| tls(&e))?;
    let fingerprint = hex(&sha2::Sha256::digest(cert.der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let key_der =
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| tls(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], key_der)
        .map_err(|e| tls(&e))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                // No, or a foreign, client certificate; or a handshake that dawdles.
                let Ok(Ok(tls)) =
                    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                else {
                    return;
                };
                let caller = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| caller_of(c));
                let svc = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    let caller = caller.clone();
                    async move {
                        Ok::<_, Infallible>(match caller {
                            Some(caller) => handler(req, caller).await,
                            None => text(
                                StatusCode::UNAUTHORIZED,
                                "the client certificate names no user",
                            ),
                        })
                    }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    Ok(Endpoint {
        url: format!("https://{}:{}", bracket(&host), local.port()),
        certificate_sha256: fingerprint,
        task,
    })
}
