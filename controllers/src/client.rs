//! Corral's own clients of its API server (the controllers, the agent, the
//! command line): HTTP/2 where the server offers it (ALPN `h2`, as Corral's
//! server does), so every request and watch of a process shares one TLS
//! connection instead of opening one per concurrent request; HTTP/1.1
//! otherwise. Everything else is what `kube::Client::try_from(config)`
//! gives: the server's address and CA, bearer token or client
//! certificate, extra headers, and retries of 429, 503 and 504 when the
//! config asks for them. A kubeconfig naming a proxy is refused, as
//! kube-rs refuses it without its proxy features.
//!
//! A dead connection is noticed by HTTP/2 pings rather than by a read
//! timeout, which on a shared connection would cut every watch on it.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::{BoxError, ServiceBuilder};

/// What one stream may have in flight unacknowledged (a LIST of tens of
/// thousands of tasks should not wait on window updates).
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// What the whole connection may have in flight unacknowledged.
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// How often an idle connection is pinged, and how long a ping may take.
const KEEP_ALIVE: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A client for `config` (see the module doc).
pub fn connect(config: kube::Config) -> Result<kube::Client, kube::Error> {
    if let Some(proxy) = &config.proxy_url {
        return Err(kube::Error::Service(
            format!(
                "proxy-url {proxy} is not supported: Corral's clients reach the server directly"
            )
            .into(),
        ));
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => {
            let name = rustls_name(name)?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let https = builder.enable_all_versions().wrap_connector(http);
    let transport = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_initial_stream_window_size(STREAM_WINDOW)
        .http2_initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(transport);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// The TLS server name `name` asks for.
fn rustls_name(name: &str) -> Result<rustls_pki_types::ServerName<'static>, kube::Error> {
    rustls_pki_types::ServerName::try_from(name.to_owned()).map_err(|e| {
        kube::Error::Service(format!("the TLS server name {name:?} is invalid: {e}").into())
    })
}
