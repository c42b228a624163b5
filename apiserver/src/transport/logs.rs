//! The `log` subresource of Tasks, proxied from the task's agent:
//! `GET /apis/corral.dev/v1alpha1/namespaces/NS/tasks/NAME/log?follow=true&stream=stderr&tailLines=N`.
//!
//! The server finds the task's node, reads the node's `status.logEndpoint`
//! (URL and certificate fingerprint, advertised by the agent), connects over
//! TLS pinning that fingerprint, authenticates with the admin client
//! certificate (signed by Corral's CA, which the agent trusts), and streams
//! the agent's answer through: with `follow`, until the caller goes away.
//! Callers are authenticated and authorized here first like any request
//! (verb `get`, subresource `log`). An agent that cannot be reached or
//! trusted is a 502 (clients do not retry it as they retry a 503).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::Digest;

use crate::error::ApiError;
use crate::storage::registry::Api;

type Body = BoxBody<Bytes, Infallible>;

/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's identity towards agents: a client certificate from
/// Corral's CA.
#[derive(Clone)]
pub struct AgentLink {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for AgentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLink").finish_non_exhaustive()
    }
}

impl AgentLink {
    /// From a PEM certificate (chain) and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| e.to_string())?
            .ok_or("no private key")?;
        Ok(AgentLink {
            certs,
            key: Arc::new(key),
        })
    }
}

/// Accepts exactly the certificate whose SHA-256 the agent advertised.
#[derive(Debug)]
struct Pinned {
    sha256: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got: String = sha2::Sha256::digest(end_entity.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the agent's certificate is not the one its node advertises".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The query forwarded to the agent: `follow`, `tailLines`, and the stream
/// (`stream=stderr`, or kubectl's `container=stderr` for a task; a Pod's
/// `container` names its one container, so only `stream` picks it there).
pub fn agent_query(query: Option<&str>, of_pod: bool) -> String {
    let mut out = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        match k {
            "follow" | "tailLines" => out.push(format!("{k}={v}")),
            "stream" => out.push(format!("stream={v}")),
            "container" if !of_pod => out.push(format!("stream={v}")),
            _ => {}
        }
    }
    out.join("&")
}

/// A TLS client configuration that accepts only the certificate whose
/// SHA-256 is `sha256`, presenting `link`'s certificate when given.
pub fn pinned_client_config(
    sha256: &str,
    link: Option<&AgentLink>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            sha256: sha256.to_owned(),
            provider,
        }));
    match link {
        Some(l) => builder
            .with_client_auth_cert(l.certs.clone(), l.key.clone_key())
            .map_err(|e| e.to_string()),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// GETs `path_and_query` from the agent endpoint at `url` (pinned to
/// `sha256`), as `link` when given.
pub async fn fetch(
    url: &str,
    sha256: &str,
    link: Option<&AgentLink>,
    path_and_query: &str,
) -> Result<Response<hyper::body::Incoming>, String> {
    let authority = url
        .strip_prefix("https://")
        .ok_or("its log endpoint is not an https URL")?
        .trim_end_matches('/')
        .to_owned();
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let config = pinned_client_config(sha256, link)?;
    let server_name = ServerName::try_from(host).map_err(|_| "its host name is invalid")?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&authority))
        .await
        .map_err(|_| "timed out connecting")?
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path_and_query)
        .header(http::header::HOST, authority.as_str())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// Streams the log of task `ns/name` (or of the Pod of that name, which
/// its task runs) from its agent.
pub async fn proxy(
    api: &Api,
    link: &AgentLink,
    (ns, name, of_pod): (&str, &str, bool),
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let tasks = api
        .registry
        .find("corral.dev", "v1alpha1", "tasks")
        .ok_or(ApiError::PathNotFound)?;
    let nodes = api
        .registry
        .find("corral.dev", "v1alpha1", "nodes")
        .ok_or(ApiError::PathNotFound)?;
    let task = match api.get(&tasks, Some(ns), name).await {
        // As kubelet answers for a container not started yet.
        Err(ApiError::NotFound { .. }) if of_pod => {
            return Err(ApiError::BadRequest(format!(
                "pod {ns}/{name} is waiting to start: its task is not made yet"
            )));
        }
        other => other?,
    };
    let node_name = task["spec"]["nodeName"].as_str().ok_or_else(|| {
        ApiError::BadRequest(format!(
            "task {ns}/{name} is not on a node yet, so it has no log"
        ))
    })?;
    let node = api.get(&nodes, None, node_name).await?;
    let endpoint = &node["status"]["logEndpoint"];
    let (Some(url), Some(sha256)) = (
        endpoint["url"].as_str(),
        endpoint["certificateSha256"].as_str(),
    ) else {
        return Err(ApiError::BadRequest(format!(
            "node {node_name} does not serve task logs (its agent runs without a log endpoint)"
        )));
    };
    let unavailable = |what: &str| {
        ApiError::AgentUnreachable(format!("reaching the agent of node {node_name}: {what}"))
    };
    let resp = fetch(
        url,
        sha256,
        Some(link),
        &format!("/logs/{ns}/{name}?{}", agent_query(query, of_pod)),
    )
    .await
    .map_err(|e| unavailable(&e))?;
    let status = resp.status();
    if status != StatusCode::OK {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        return Err(match status {
            StatusCode::NOT_FOUND => ApiError::BadRequest(body),
            StatusCode::BAD_REQUEST => ApiError::BadRequest(body),
            _ => unavailable(&format!("{status}: {body}")),
        });
    }
    // The agent's frames, passed on until it or the caller ends.
    let frames = http_body_util::BodyStream::new(resp.into_body())
        .take_while(|f| std::future::ready(f.is_ok()))
        .filter_map(|f| std::future::ready(f.ok().map(Ok::<_, Infallible>)));
    let mut r = Response::new(BoxBody::new(StreamBody::new(frames)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_log_options_reach_the_agent() {
        assert_eq!(
            agent_query(
                Some("follow=true&container=stderr&tailLines=3&pretty=1"),
                false
            ),
            "follow=true&stream=stderr&tailLines=3"
        );
        assert_eq!(agent_query(None, false), "");
        assert_eq!(
            agent_query(Some("container=main&stream=stderr"), true),
            "stream=stderr",
            "a Pod's container is its only one"
        );
        assert_eq!(agent_query(Some("container=main"), true), "");
    }
}
