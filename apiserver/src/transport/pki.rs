//! TLS material and credentials under `$CORRAL_HOME/pki`: a CA (its key
//! kept, 0600, to issue node and user credentials), a serving certificate
//! for the listen hosts, an admin client certificate, and a static token
//! file (`tokens.csv`: `token,user,uid,"group,…"`, kube-apiserver's
//! format). Generated once, reused on every start. A directory made
//! elsewhere (a Helm chart's Secret) may come without `ca.key`: the server
//! then serves, but issues no certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why the TLS material could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// The material is not usable by TLS.
    #[error("loading TLS material: {0}")]
    Tls(String),
}

/// The PEM files and the admin token.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate.
    pub ca_pem: String,
    /// The CA's key: it signs node and user certificates (None for a CA
    /// made elsewhere without handing over its key).
    ca_key_pem: Option<String>,
    /// The serving certificate.
    pub server_cert_pem: String,
    /// Its key.
    pub server_key_pem: String,
    /// The admin client certificate (CN `corral-admin`, O `system:masters`).
    pub admin_cert_pem: String,
    /// Its key.
    pub admin_key_pem: String,
    /// The admin bearer token.
    pub admin_token: String,
    /// Where the token file is.
    pub token_file: PathBuf,
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    if private {
        write_private(path, contents.as_bytes()).map_err(io)
    } else {
        std::fs::write(path, contents).map_err(io)
    }
}

/// Writes a file only its owner may read (0600), never readable by others
/// even for a moment, and never seen half written: the contents go to a
/// temporary file beside it, created with that mode, which then replaces
/// it. For keys, tokens and kubeconfigs (a client that finds the file finds
/// all of it).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(".writing");
    let temporary = path.with_file_name(temporary);
    if temporary.exists() {
        // Left by a write that was cut short.
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&temporary, path)
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Pki {
    /// Loads the material under `dir`, which `corral server` made; never
    /// makes any (for issuing credentials on the control-plane machine).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        for f in ["ca.crt", "tokens.csv"] {
            if !dir.join(f).exists() {
                return Err(PkiError::Io {
                    path: dir.join(f),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "missing: has `corral server` (or `corral up`) run with this home?",
                    ),
                });
            }
        }
        Self::load_or_create(dir, &[])
    }

    /// Loads the material under `dir`, generating what is missing. `hosts` are
    /// the names and addresses the serving certificate must cover.
    pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let files = [
            "ca.crt",
            "server.crt",
            "server.key",
            "admin.crt",
            "admin.key",
        ];
        if files.iter().any(|f| !dir.join(f).exists()) {
            Self::generate(dir, hosts)?;
        }
        let token_file = dir.join("tokens.csv");
        if !token_file.exists() {
            write(
                &token_file,
                &format!(
                    "{},corral-admin,corral-admin,\"system:masters\"\n",
                    random_token()
                ),
                true,
            )?;
        }
        let admin_token = read(&token_file)?
            .lines()
            .find_map(|l| {
                let mut f = l.split(',');
                let token = f.next()?;
                (f.next()? == "corral-admin").then(|| token.to_owned())
            })
            .ok_or_else(|| {
                PkiError::Tls(format!(
                    "{} has no corral-admin token",
                    token_file.display()
                ))
            })?;
        Ok(Pki {
            ca_pem: read(&dir.join("ca.crt"))?,
            ca_key_pem: match dir.join("ca.key") {
                k if k.exists() => Some(read(&k)?),
                _ => None,
            },
            server_cert_pem: read(&dir.join("server.crt"))?,
            server_key_pem: read(&dir.join("server.key"))?,
            admin_cert_pem: read(&dir.join("admin.crt"))?,
            admin_key_pem: read(&dir.join("admin.key"))?,
            admin_token,
            token_file,
        })
    }

    fn generate(dir: &Path, hosts: &[String]) -> Result<(), PkiError> {
        let ca_key = KeyPair::generate()?;
        let ca = ca_params()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for h in hosts {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(Vec::<String>::new())?;
        server.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        server
            .distinguished_name
            .push(DnType::CommonName, "corral-apiserver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "corral-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        write(&dir.join("ca.crt"), &ca_cert.pem(), false)?;
        write(&dir.join("server.crt"), &server_cert.pem(), false)?;
        write(&dir.join("server.key"), &server_key.serialize_pem(), true)?;
        write(&dir.join("admin.crt"), &admin_cert.pem(), false)?;
        write(&dir.join("admin.key"), &admin_key.serialize_pem(), true)?;
        Ok(())
    }

    /// A client certificate for `user` in `groups` (CN and O, as
    /// Kubernetes reads them), valid for `valid_for` from `now`, signed by the
    /// CA over `public_key` (PEM): the holder of the matching private key
    /// authenticates as that user. Returns the certificate (PEM).
    pub fn sign_client(
        &self,
        user: &str,
        groups: &[String],
        public_key: &impl rcgen::PublicKeyData,
        now: jiff::Timestamp,
        valid_for: jiff::SignedDuration,
    ) -> Result<String, PkiError> {
        let key = self.ca_key_pem.as_deref().ok_or_else(|| {
            PkiError::Tls(
                "this CA's key is not at hand (ca.key): it cannot sign certificates".into(),
            )
        })?;
        let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(key)?);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, g.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen_time(now - jiff::SignedDuration::from_mins(5))?;
        params.not_after = rcgen_time(now + valid_for)?;
        Ok(params.signed_by(public_key, &issuer)?.pem())
    }

    /// A new key and a client certificate for it (see [`Pki::sign_client`]):
    /// `(certificate PEM, key PEM)`.
    pub fn issue_client(
        &self,
        user: &str,
        groups: &[String],
        now: jiff::Timestamp,
        valid_for: jiff::SignedDuration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let cert = self.sign_client(user, groups, &key, now, valid_for)?;
        Ok((cert, key.serialize_pem()))
    }

    /// A kubeconfig for `server` that authenticates as `user` with a client
    /// certificate and key (PEM).
    pub fn client_kubeconfig(&self, server: &str, user: &str, cert: &str, key: &str) -> String {
        client_kubeconfig(server, &self.ca_pem, user, cert, key)
    }

    /// A rustls server configuration: HTTP/2 and HTTP/1.1 over ALPN, client
    /// certificates signed by the CA accepted (but not required).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = rustls_pemfile::certs(&mut self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut self.server_key_pem.as_bytes())
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .ok_or_else(|| PkiError::Tls("no private key in server.key".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots
                .add(c.map_err(|e| PkiError::Tls(e.to_string()))?)
                .map_err(|e| PkiError::Tls(e.to_string()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// An admin kubeconfig for `server` (`https://127.0.0.1:6443`), using the token.
    pub fn kubeconfig(&self, server: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: corral\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: corral-admin\n  user:\n    token: {token}\ncontexts:\n- name: corral\n  context:\n    cluster: corral\n    user: corral-admin\n    namespace: default\ncurrent-context: corral\n",
            ca = b64(&self.ca_pem),
            token = self.admin_token,
        )
    }
}

impl Pki {
    /// An admin kubeconfig for `server` that authenticates with the admin
    /// client certificate instead of the token.
    pub fn kubeconfig_with_client_cert(&self, server: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: corral\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: corral-admin-cert\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: corral\n  context:\n    cluster: corral\n    user: corral-admin-cert\n    namespace: default\ncurrent-context: corral\n",
            ca = b64(&self.ca_pem),
            cert = b64(&self.admin_cert_pem),
            key = b64(&kubeconfig_key(&self.admin_key_pem)),
        )
    }
}

/// The CA's certificate parameters: the same at every start, so that an
/// issuer rebuilt from the kept key names the CA as its certificate does.
fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "corral-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
}

fn rcgen_time(t: jiff::Timestamp) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| PkiError::Tls(format!("a certificate date out of range: {e}")))
}

/// A kubeconfig for `server`, trusting `ca_pem`, that authenticates as
/// `user` with a client certificate and key (PEM).
pub fn client_kubeconfig(server: &str, ca_pem: &str, user: &str, cert: &str, key: &str) -> String {
    let key = kubeconfig_key(key);
    let key = key.as_str();
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let entry: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-.:_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: corral\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: \"{entry}\"\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: corral\n  context:\n    cluster: corral\n    user: \"{entry}\"\n    namespace: default\ncurrent-context: corral\n",
        ca = b64(ca_pem),
        cert = b64(cert),
        key = b64(key),
    )
}

/// Bearer tokens read from a token file.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<TokenEntry>);

/// One line of a token file.
#[derive(Debug, Clone)]
struct TokenEntry {
    token: String,
    user: String,
    groups: Vec<String>,
}

impl Tokens {
    /// Reads kube-apiserver's `token,user,uid,"group1,group2"` lines (the
    /// uid and groups optional; blank lines and `#` comments skipped).
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        let text = read(path)?;
        Ok(Tokens(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(|l| {
                    let mut f = l.splitn(4, ',');
                    let (token, user) = (f.next()?.to_owned(), f.next()?.to_owned());
                    let _uid = f.next();
                    let groups = f
                        .next()
                        .map(|g| {
                            g.trim()
                                .trim_matches('"')
                                .split(',')
                                .map(str::trim)
                                .filter(|g| !g.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(TokenEntry {
                        token,
                        user,
                        groups,
                    })
                })
                .collect(),
        ))
    }

    /// Adds another file's tokens (an earlier line wins a repeated token).
    pub fn extend(&mut self, other: Tokens) {
        self.0.extend(other.0);
    }

    /// The user (and groups) a bearer token belongs to. Every entry is
    /// compared in constant time, so response times say nothing about how
    /// much of a guess was right.
    pub fn user(&self, token: &str) -> Option<(&str, &[String])> {
        use subtle::ConstantTimeEq;
        let mut found = None;
        for e in &self.0 {
            if bool::from(e.token.as_bytes().ct_eq(token.as_bytes())) && found.is_none() {
                found = Some((e.user.as_str(), e.groups.as_slice()));
            }
        }
        found
    }
}

/// A client key as kubeconfigs carry it: an elliptic-curve key in SEC1 form
/// (`EC PRIVATE KEY`, its curve named), as Kubernetes' own tools write one,
/// rather than the PKCS#8 (`PRIVATE KEY`) our keys are made in. Java's
/// Kubernetes client (fabric8, in Spark's driver) reads a PKCS#8 key as RSA
/// and fails; every client reads SEC1. Anything else is returned as it is.
pub fn kubeconfig_key(pem: &str) -> String {
    sec1_of_pkcs8(pem).unwrap_or_else(|| pem.to_owned())
}

fn sec1_of_pkcs8(pem: &str) -> Option<String> {
    use yasna::Tag;
    use yasna::models::ObjectIdentifier;
    let body: String = pem
        .lines()
        .skip_while(|l| l.trim() != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| l.trim() != "-----END PRIVATE KEY-----")
        .collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let ec_public_key = ObjectIdentifier::from_slice(&[1, 2, 840, 10045, 2, 1]);
    // PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING }
    let (curve, inner) = yasna::parse_der(&der, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            let (alg, curve) = r.next().read_sequence(|r| {
                let alg = r.next().read_oid()?;
                let curve = r.next().read_oid()?;
                Ok((alg, curve))
            })?;
            let inner = r.next().read_bytes()?;
            Ok((alg == ec_public_key).then_some((curve, inner)))
        })
    })
    .ok()??;
    // ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING,
    //   [0] parameters OPTIONAL, [1] publicKey BIT STRING OPTIONAL }
    let (secret, public) = yasna::parse_der(&inner, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            let secret = r.next().read_bytes()?;
            r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_oid()))?;
            let public =
                r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_bitvec_bytes()))?;
            Ok((secret, public))
        })
    })
    .ok()?;
    let sec1 = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(1);
            w.next().write_bytes(&secret);
            w.next()
                .write_tagged(Tag::context(0), |w| w.write_oid(&curve));
            if let Some((bytes, bits)) = &public {
                w.next()
                    .write_tagged(Tag::context(1), |w| w.write_bitvec_bytes(bytes, *bits));
            }
        })
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(sec1);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    Some(format!(
        "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
        lines.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_keys_are_sec1_with_their_curve_and_still_sign() {
        let key = KeyPair::generate().expect("a key");
        let pkcs8 = key.serialize_pem();
        assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
        let sec1 = kubeconfig_key(&pkcs8);
        assert!(
            sec1.starts_with("-----BEGIN EC PRIVATE KEY-----\n"),
            "{sec1}"
        );
        let read = rustls_pemfile::private_key(&mut sec1.as_bytes())
            .expect("readable")
            .expect("a key");
        assert!(matches!(read, rustls::pki_types::PrivateKeyDer::Sec1(_)));
        // The same key: rustls signs with it under the certificate made for
        // the PKCS#8 form.
        let mut params = CertificateParams::new(vec!["client".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "client");
        let cert = params.self_signed(&key).expect("a certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_client_auth_cert(vec![cert.der().clone()], read)
            .expect("rustls takes the SEC1 key with its certificate");
        // Named curve P-256 inside, as OpenSSL and Java's parsers need.
        assert!(sec1.lines().count() > 2);
        // Anything that is not a PKCS#8 EC key is left alone.
        assert_eq!(kubeconfig_key("not a key"), "not a key");
        let rsa_like = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(kubeconfig_key(rsa_like), rsa_like);
    }
}
