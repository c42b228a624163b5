//! Authentication and authorization, as separate layers.
//!
//! Authentication turns a request into a [`User`]: a bearer token from the
//! token file, or a TLS client certificate signed by Corral's CA (verified by
//! rustls during the handshake). Anything else is 401. Authorization then asks
//! an [`Authorizer`] whether that user may perform the request (403 if not);
//! today's [`AllowAuthenticated`] lets every authenticated user do everything,
//! and per-role authorization plugs in here later.

use std::fmt;
use std::sync::Arc;

use crate::error::ApiError;
use crate::pki::Tokens;

/// Who may call the server.
#[derive(Debug, Clone)]
pub enum Authn {
    /// Nobody is checked (plain HTTP for local tests only).
    None,
    /// Bearer tokens from a token file, or a client certificate signed by the CA.
    Required(Arc<Tokens>),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name (`corral-admin`).
    pub name: String,
    /// How it authenticated.
    pub method: AuthMethod,
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A bearer token.
    Token,
    /// A client certificate signed by Corral's CA.
    ClientCertificate,
    /// Authentication is off.
    Anonymous,
}

impl Authn {
    /// Authenticates a request from its `Authorization` header and whether the
    /// TLS handshake verified a client certificate.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        has_client_cert: bool,
    ) -> Result<User, ApiError> {
        let Authn::Required(tokens) = self else {
            return Ok(User {
                name: "system:anonymous".into(),
                method: AuthMethod::Anonymous,
            });
        };
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(name) = token.and_then(|t| tokens.user(t)) {
            return Ok(User {
                name: name.to_owned(),
                method: AuthMethod::Token,
            });
        }
        if has_client_cert {
            return Ok(User {
                name: "client-certificate".into(),
                method: AuthMethod::ClientCertificate,
            });
        }
        Err(ApiError::Unauthorized)
    }
}

/// What a request wants to do, for authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'static str,
    /// API group ("" for core).
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// `status`, when the request is for the subresource.
    pub subresource: Option<String>,
    /// Namespace, for namespaced requests.
    pub namespace: Option<String>,
    /// Object name, for single-object requests.
    pub name: Option<String>,
}

/// Decides whether a user may perform a request.
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// True when `user` may do `attrs`.
    fn allows(&self, user: &User, attrs: &Attributes) -> bool;
}

/// Every authenticated user may do everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn allows(&self, _user: &User, _attrs: &Attributes) -> bool {
        true
    }
}

/// Checks `attrs` with `authz`, answering 403 in kube-apiserver's words.
pub fn authorize(authz: &dyn Authorizer, user: &User, attrs: &Attributes) -> Result<(), ApiError> {
    if authz.allows(user, attrs) {
        return Ok(());
    }
    let group = if attrs.group.is_empty() {
        String::new()
    } else {
        attrs.group.clone()
    };
    let mut message = format!(
        "{} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{group}\"",
        if attrs.group.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}.{}", attrs.resource, attrs.group)
        },
        user.name,
        attrs.verb,
        attrs.resource,
    );
    if let Some(ns) = &attrs.namespace {
        message.push_str(&format!(" in the namespace \"{ns}\""));
    } else {
        message.push_str(" at the cluster scope");
    }
    Err(ApiError::Forbidden(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct ReadOnly;
    impl Authorizer for ReadOnly {
        fn allows(&self, _: &User, a: &Attributes) -> bool {
            matches!(a.verb, "get" | "list" | "watch")
        }
    }

    #[test]
    fn tokens_and_certificates_authenticate_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "secret,alice,1,\"g\"\n").expect("write");
        let authn = Authn::Required(Arc::new(Tokens::load(&path).expect("load")));
        assert_eq!(
            authn
                .authenticate(Some("Bearer secret"), false)
                .expect("token")
                .name,
            "alice"
        );
        assert_eq!(
            authn.authenticate(None, true).expect("cert").method,
            AuthMethod::ClientCertificate
        );
        assert!(matches!(
            authn.authenticate(Some("Bearer wrong"), false),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            authn.authenticate(None, false),
            Err(ApiError::Unauthorized)
        ));
    }

    #[test]
    fn a_refusal_is_a_forbidden_status_naming_the_request() {
        let user = User {
            name: "bob".into(),
            method: AuthMethod::Token,
        };
        let attrs = Attributes {
            verb: "create",
            group: "corral.dev".into(),
            resource: "tasks".into(),
            subresource: None,
            namespace: Some("default".into()),
            name: None,
        };
        let err = authorize(&ReadOnly, &user, &attrs).expect_err("forbidden");
        assert_eq!(err.code(), http::StatusCode::FORBIDDEN);
        assert_eq!(
            err.message(),
            "tasks.corral.dev is forbidden: User \"bob\" cannot create resource \"tasks\" in API group \"corral.dev\" in the namespace \"default\""
        );
        assert!(
            authorize(
                &ReadOnly,
                &user,
                &Attributes {
                    verb: "list",
                    ..attrs
                }
            )
            .is_ok()
        );
    }
}
