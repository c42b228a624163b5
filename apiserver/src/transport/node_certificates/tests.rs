use super::*;
use crate::transport::auth::AuthMethod;

/// Lets `system:bootstrap:*` users ask for any node, nobody else anything.
#[derive(Debug)]
struct Bootstrappers;

impl Authorizer for Bootstrappers {
    fn allows(&self, user: &User, a: &Attributes) -> bool {
        user.name.starts_with("system:bootstrap:") && a.resource == PLURAL && a.verb == "create"
    }
}

fn csr(cn: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .serialize_request(&key)
        .expect("request")
        .pem()
        .expect("pem")
}

fn who(name: &str) -> User {
    User {
        name: name.into(),
        groups: Vec::new(),
        method: AuthMethod::Token,
    }
}

#[test]
fn a_bootstrap_token_gets_a_node_certificate_whatever_the_request_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::load_or_create(dir.path(), &[]).expect("pki");
    // The request asks to be an administrator; it gets the node it named.
    let body = json!({"kind": KIND, "spec": {"nodeName": "n1", "request": csr("corral-admin")}});
    let answer = answer(
        body,
        &who("system:bootstrap:fleet"),
        &Bootstrappers,
        Some(&pki),
        jiff::Timestamp::now(),
    )
    .expect("signed");
    let pem = answer["status"]["certificate"]
        .as_str()
        .expect("a certificate");
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("one")
        .expect("readable");
    let id = crate::transport::auth::cert_identity(der.as_ref()).expect("an identity");
    assert_eq!(id.common_name, "system:node:n1");
    assert_eq!(id.organizations, vec![NODES_GROUP.to_owned()]);
    // Anyone else is refused before anything is signed.
    let refused = super::answer(
        json!({"spec": {"nodeName": "n1", "request": csr("x")}}),
        &who("alice"),
        &Bootstrappers,
        Some(&pki),
        jiff::Timestamp::now(),
    )
    .expect_err("forbidden");
    assert_eq!(refused.code().as_u16(), 403);
    // A server without the CA key says so.
    let unavailable = super::answer(
        json!({"spec": {"nodeName": "n1", "request": csr("x")}}),
        &who("system:bootstrap:fleet"),
        &Bootstrappers,
        None,
        jiff::Timestamp::now(),
    )
    .expect_err("no signer");
    assert_eq!(unavailable.code().as_u16(), 503);
}

/// The request with its subject changed after it was signed.
fn tamper(pem: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = b64.decode(body).expect("base64");
    let at = der
        .windows(9)
        .position(|w| w == b"tamper-me")
        .expect("the subject");
    der[at + 8] = b'f';
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        b64.encode(der)
    )
}

#[test]
fn bad_requests_name_the_field() {
    let good = csr("x");
    let tampered = tamper(&csr("tamper-me"));
    let cases = [
        (json!({"spec": {"request": good}}), "spec.nodeName"),
        (
            json!({"spec": {"nodeName": "N_1", "request": good}}),
            "spec.nodeName",
        ),
        (json!({"spec": {"nodeName": "n1"}}), "spec.request"),
        (
            json!({"spec": {"nodeName": "n1", "request": "junk"}}),
            "spec.request",
        ),
        (
            json!({"spec": {"nodeName": "n1", "request": tampered}}),
            "spec.request",
        ),
        (
            json!({"spec": {"nodeName": "n1", "request": good, "expirationSeconds": 5}}),
            "spec.expirationSeconds",
        ),
    ];
    for (body, field) in cases {
        let err = read(&body).expect_err("invalid");
        assert_eq!(err.code().as_u16(), 422, "{body}");
        assert_eq!(
            err.status()["details"]["causes"][0]["field"],
            field,
            "{body}"
        );
    }
    assert_eq!(
        read(&json!({"kind": "Pod", "spec": {}}))
            .expect_err("wrong kind")
            .code()
            .as_u16(),
        400
    );
    let asked =
        read(&json!({"spec": {"nodeName": "n1", "request": csr("x"), "expirationSeconds": 3600}}))
            .expect("valid");
    assert_eq!((asked.node.as_str(), asked.seconds), ("n1", 3600));
}
