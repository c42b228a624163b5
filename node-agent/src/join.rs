//! Joining a fleet: an agent with a bootstrap kubeconfig (a token only good
//! for asking for node certificates) obtains its own node credential, and
//! renews it when it nears its end, without ever holding more.
//!
//! The agent makes its key here, sends the API server a certificate request
//! signed with it (a `NodeCertificateRequest`), and writes the kubeconfig
//! it then runs with (0600): the bootstrap kubeconfig's cluster, and the
//! certificate the server signed for user `system:node:NAME`. The key never
//! leaves the machine.

use std::path::Path;

use base64::Engine;
use kube::config::{AuthInfo, Kubeconfig, NamedAuthInfo};
use serde_json::{Value, json};

/// Why a node credential could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// A kubeconfig could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The key or the request could not be made.
    #[error("making the certificate request: {0}")]
    Request(#[from] rcgen::Error),
    /// The API server refused or failed.
    #[error("asking the API server for a node certificate: {0}")]
    Api(#[from] kube::Error),
    /// The answer held no certificate.
    #[error("the API server answered without a certificate")]
    NoCertificate,
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> JoinError {
    JoinError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The client certificate a kubeconfig holds: whom it names and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The user (the subject's common name): `system:node:NAME` for a node.
    pub user: String,
    /// When it stops being valid.
    pub not_after: jiff::Timestamp,
    /// How long it was valid for.
    pub lifetime: jiff::SignedDuration,
}

/// The client certificate in kubeconfig `path`; None when there is no
/// such file or it holds no readable certificate (a token, say).
pub fn held(path: &Path) -> Option<Held> {
    let text = std::fs::read_to_string(path).ok()?;
    let kc = Kubeconfig::from_yaml(&text).ok()?;
    let data = kc
        .auth_infos
        .first()?
        .auth_info
        .as_ref()?
        .client_certificate_data
        .clone()?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let user = cert
        .subject()
        .iter_common_name()
        .find_map(|a| a.as_str().ok())?
        .to_owned();
    let validity = cert.validity();
    let not_after = jiff::Timestamp::from_second(validity.not_after.timestamp()).ok()?;
    let not_before = jiff::Timestamp::from_second(validity.not_before.timestamp()).ok()?;
    Some(Held {
        user,
        not_after,
        lifetime: not_after.duration_since(not_before),
    })
}

/// When a credential is renewed: at the start of the last fifth of its life.
pub fn renewal_at(held: &Held) -> jiff::Timestamp {
    held.not_after - held.lifetime / 5
}

/// Whether the agent of node `node` should obtain a certificate into the
/// kubeconfig at `path`: `Ok(true)` when there is none yet or node's own
/// is in the last fifth of its life, `Ok(false)` when it has life left, and
/// an error when the file holds anything else (an administrator's
/// kubeconfig, another node's): that is never overwritten.
pub fn needs_certificate(path: &Path, node: &str, now: jiff::Timestamp) -> Result<bool, JoinError> {
    if !path.exists() {
        return Ok(true);
    }
    match held(path) {
        Some(h) if h.user == format!("system:node:{node}") => Ok(now >= renewal_at(&h)),
        _ => Err(file_error(
            path,
            format!(
                "holds another credential than node {node}'s; give the agent a kubeconfig path of its own"
            ),
        )),
    }
}

/// Asks the API server (through `client`, which holds the bootstrap
/// credential or the node's current one) for node `node`'s certificate
/// over a new key; returns `(certificate PEM, key PEM)`.
pub async fn request_certificate(
    client: &kube::Client,
    node: &str,
) -> Result<(String, String), JoinError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let csr = params.serialize_request(&key)?.pem()?;
    let body = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "NodeCertificateRequest",
        "spec": {"nodeName": node, "request": csr}});
    let bytes = serde_json::to_vec(&body).map_err(|e| JoinError::File {
        path: "request".into(),
        message: e.to_string(),
    })?;
    let req = http::Request::post("/apis/corral.dev/v1alpha1/nodecertificaterequests")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .map_err(|e| JoinError::File {
            path: "request".into(),
            message: e.to_string(),
        })?;
    let answer: Value = client.request(req).await?;
    let cert = answer["status"]["certificate"]
        .as_str()
        .filter(|c| c.contains("BEGIN CERTIFICATE"))
        .ok_or(JoinError::NoCertificate)?;
    Ok((cert.to_owned(), key.serialize_pem()))
}

/// The kubeconfig the agent runs with: `bootstrap`'s cluster and context,
/// authenticating with the certificate and key instead of its token.
pub fn node_kubeconfig(bootstrap: &Kubeconfig, node: &str, cert: &str, key: &str) -> Kubeconfig {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = format!("system:node:{node}");
    let mut kc = bootstrap.clone();
    kc.auth_infos = vec![NamedAuthInfo {
        name: user.clone(),
        auth_info: Some(AuthInfo {
            client_certificate_data: Some(b64(cert)),
            client_key_data: Some(b64(key).into()),
            ..AuthInfo::default()
        }),
        other: Default::default(),
    }];
    for c in &mut kc.contexts {
        if let Some(ctx) = c.context.as_mut() {
            ctx.user = Some(user.clone());
        }
    }
    kc
}

/// Writes `kc` to `path`, readable by its owner only (it holds a key).
pub fn write_kubeconfig(path: &Path, kc: &Kubeconfig) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // JSON is YAML: every kubeconfig reader takes it.
    let text = serde_json::to_vec_pretty(kc).map_err(|e| file_error(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    }
    // Written aside and renamed: a crash never leaves half a credential.
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| file_error(&tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| file_error(&tmp, e))?;
    f.write_all(&text).map_err(|e| file_error(&tmp, e))?;
    f.sync_all().map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_renewed_in_the_last_fifth_of_its_life()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("kubeconfig");
        let now = jiff::Timestamp::now();
        assert!(needs_certificate(&path, "n1", now)?, "no file");
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        params.not_before = time_of(now)?;
        params.not_after = time_of(now + jiff::SignedDuration::from_hours(100))?;
        let cert = params.self_signed(&key)?;
        let bootstrap = Kubeconfig::from_yaml(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\nusers:\n- name: b\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: b\ncurrent-context: c\n",
        )?;
        let kc = node_kubeconfig(&bootstrap, "n1", &cert.pem(), &key.serialize_pem());
        write_kubeconfig(&path, &kc)?;
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o600
        );
        let read = Kubeconfig::from_yaml(&std::fs::read_to_string(&path)?)?;
        assert_eq!(
            read.contexts[0]
                .context
                .as_ref()
                .and_then(|c| c.user.clone())
                .as_deref(),
            Some("system:node:n1")
        );
        assert!(
            read.auth_infos[0]
                .auth_info
                .as_ref()
                .is_some_and(|a| a.token.is_none())
        );
        assert!(!needs_certificate(&path, "n1", now)?);
        let later = |h| now + jiff::SignedDuration::from_hours(h);
        assert!(!needs_certificate(&path, "n1", later(79))?);
        assert!(needs_certificate(&path, "n1", later(81))?);
        let h = held(&path).expect("a certificate");
        assert_eq!(h.user, "system:node:n1");
        // Certificates keep whole seconds.
        let at = renewal_at(&h).duration_since(later(80)).as_secs_f64();
        assert!(at.abs() < 1.0, "{at}");
        // Another node's credential, or the administrator's, is left alone.
        assert!(needs_certificate(&path, "n2", now).is_err());
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    token: t\n",
        )?;
        assert!(needs_certificate(&path, "n1", now).is_err());
        Ok(())
    }

    fn time_of(t: jiff::Timestamp) -> Result<time::OffsetDateTime, Box<dyn std::error::Error>> {
        Ok(time::OffsetDateTime::from_unix_timestamp(t.as_second())?)
    }
}
