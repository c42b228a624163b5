//! Node certificates on request: how an agent joins a fleet without ever
//! holding the administrator's credential, and renews what it was given
//! (the job Kubernetes' kubelet TLS bootstrap does with a bootstrap token
//! and CertificateSigningRequests, in one synchronous step).
//!
//! `POST /apis/corral.dev/v1alpha1/nodecertificaterequests` takes a
//! `NodeCertificateRequest` naming a node (`spec.nodeName`) and carrying a
//! PKCS#10 request (`spec.request`, PEM) signed with the agent's own key,
//! which never leaves the node. The server checks the request's signature,
//! then answers 201 with the object and `status.certificate`: a client
//! certificate for user `system:node:NAME` in group `system:nodes` over
//! that key, signed by the cluster's CA — whatever subject the request
//! asked for. Nothing is stored.
//!
//! Who may ask: `create` on `nodecertificaterequests` with the node as the
//! resource name. The bootstrap policy grants it to group
//! `system:bootstrappers` (the holders of a bootstrap token, for any node:
//! a bootstrap token is as powerful as Kubernetes' auto-approved ones), and
//! the Node authorizer lets a node renew its own.

use corral_api::validation::{FieldError, FieldErrorType};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::transport::auth::{
    Attributes, Authorizer, NODE_USER_PREFIX, NODES_GROUP, User, authorize,
};
use crate::transport::pki::Pki;

/// The API group.
pub const GROUP: &str = "corral.dev";
/// The version.
pub const VERSION: &str = "v1alpha1";
/// The plural the requests are posted to.
pub const PLURAL: &str = "nodecertificaterequests";
/// The kind.
pub const KIND: &str = "NodeCertificateRequest";
/// How long a certificate is valid unless the request asks for less.
pub const DEFAULT_SECONDS: i64 = 365 * 24 * 3600;
/// The shortest validity a request may ask for.
pub const MIN_SECONDS: i64 = 600;

fn invalid(type_: FieldErrorType, field: &str, value: Option<String>, detail: &str) -> ApiError {
    ApiError::Invalid {
        kind: format!("{KIND}.{GROUP}"),
        name: String::new(),
        errors: vec![FieldError {
            type_,
            field: field.to_owned(),
            value,
            detail: detail.to_owned(),
        }],
    }
}

/// What a request asks, once read and checked (before authorization).
#[derive(Debug)]
pub struct Asked {
    /// The node.
    pub node: String,
    /// The agent's signed request.
    pub request: rcgen::CertificateSigningRequestParams,
    /// For how long.
    pub seconds: i64,
}

/// Reads a NodeCertificateRequest body (422 with the field's path for
/// what is missing or wrong, the request's signature included).
pub fn read(body: &Value) -> Result<Asked, ApiError> {
    match (body["apiVersion"].as_str(), body["kind"].as_str()) {
        (None | Some("corral.dev/v1alpha1"), None | Some(KIND)) => {}
        (v, k) => {
            return Err(ApiError::BadRequest(format!(
                "expected a {KIND} of corral.dev/v1alpha1, not {} {}",
                v.unwrap_or_default(),
                k.unwrap_or_default()
            )));
        }
    }
    let spec = &body["spec"];
    let node = spec["nodeName"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(invalid(
            FieldErrorType::Required,
            "spec.nodeName",
            None,
            "the node the certificate is for",
        ));
    }
    if !corral_api::validation::is_dns1123_subdomain(node) {
        return Err(invalid(
            FieldErrorType::Invalid,
            "spec.nodeName",
            Some(format!("{node:?}")),
            "a node's name is a DNS-1123 subdomain",
        ));
    }
    let pem = spec["request"].as_str().unwrap_or_default();
    if pem.is_empty() {
        return Err(invalid(
            FieldErrorType::Required,
            "spec.request",
            None,
            "a PEM certificate request signed with the node's key",
        ));
    }
    let request = rcgen::CertificateSigningRequestParams::from_pem(pem).map_err(|e| {
        invalid(
            FieldErrorType::Invalid,
            "spec.request",
            None,
            &format!("not a PEM certificate request with a valid signature: {e}"),
        )
    })?;
    let seconds = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_SECONDS,
        v => match v.as_i64() {
            Some(s) if s >= MIN_SECONDS => s.min(DEFAULT_SECONDS),
            _ => {
                return Err(invalid(
                    FieldErrorType::Invalid,
                    "spec.expirationSeconds",
                    Some(v.to_string()),
                    &format!("at least {MIN_SECONDS}"),
                ));
            }
        },
    };
    Ok(Asked {
        node: node.to_owned(),
        request,
        seconds,
    })
}

/// Answers a request by `user`: authorized, then signed by `signer`.
pub fn answer(
    body: Value,
    user: &User,
    authz: &dyn Authorizer,
    signer: Option<&Pki>,
    now: jiff::Timestamp,
) -> Result<Value, ApiError> {
    let asked = read(&body)?;
    authorize(
        authz,
        user,
        &Attributes {
            verb: "create".into(),
            group: GROUP.into(),
            resource: PLURAL.into(),
            name: Some(asked.node.clone()),
            ..Attributes::default()
        },
    )?;
    let signer = signer.ok_or_else(|| {
        ApiError::Unavailable("this server has no CA key to sign node certificates with".into())
    })?;
    let certificate = signer
        .sign_client(
            &format!("{NODE_USER_PREFIX}{}", asked.node),
            &[NODES_GROUP.to_owned()],
            &asked.request.public_key,
            now,
            jiff::SignedDuration::from_secs(asked.seconds),
        )
        .map_err(|e| ApiError::Internal(format!("signing a node certificate: {e}")))?;
    let mut out = body;
    out["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    out["kind"] = json!(KIND);
    out["status"] = json!({"certificate": certificate});
    Ok(out)
}

#[cfg(test)]
mod tests;
