//! Authentication and authorization, as separate layers.
//!
//! Authentication turns a request into a [`User`]: a bearer token from the
//! token file (compared in constant time), or a TLS client certificate
//! signed by Corral's CA (verified by rustls during the handshake), whose
//! subject names the user (CN) and groups (O), as in Kubernetes. Anything
//! else is 401. Authorization then asks
//! an [`Authorizer`] whether that user may perform the request (403 if not);
//! today's [`AllowAuthenticated`] lets every authenticated user do everything,
//! and per-role authorization plugs in here later.

use std::fmt;
use std::sync::Arc;

use crate::error::ApiError;
use crate::transport::pki::Tokens;

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
    /// Its groups (`system:masters`).
    pub groups: Vec<String>,
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

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject's common name: the user.
    pub common_name: String,
    /// The subject's organizations: the groups.
    pub organizations: Vec<String>,
}

/// Reads the user and groups from a certificate (DER), as Kubernetes does:
/// CN is the user, each O a group. None when unreadable or without a CN.
pub fn cert_identity(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .find_map(|a| a.as_str().ok())?
        .to_owned();
    let organizations = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_owned)
        .collect();
    (!common_name.is_empty()).then_some(CertIdentity {
        common_name,
        organizations,
    })
}

impl Authn {
    /// Authenticates a request from its `Authorization` header and the
    /// client certificate the TLS handshake verified, if any.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        client_cert: Option<&CertIdentity>,
    ) -> Result<User, ApiError> {
        let Authn::Required(tokens) = self else {
            return Ok(User {
                name: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
                method: AuthMethod::Anonymous,
            });
        };
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some((name, groups)) = token.and_then(|t| tokens.user(t)) {
            return Ok(User {
                name: name.to_owned(),
                groups: with_authenticated(groups.to_vec()),
                method: AuthMethod::Token,
            });
        }
        if let Some(id) = client_cert {
            return Ok(User {
                name: id.common_name.clone(),
                groups: with_authenticated(id.organizations.clone()),
                method: AuthMethod::ClientCertificate,
            });
        }
        Err(ApiError::Unauthorized)
    }
}

/// What a request wants to do, for authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
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
    /// A list's or watch's `fieldSelector`, as sent (the Node authorizer
    /// lets a node list only the tasks bound to it).
    pub field_selector: Option<String>,
    /// A list's or watch's `labelSelector`, as sent (the Node authorizer
    /// lets a node list the EndpointSlices of one job its tasks look up).
    pub label_selector: Option<String>,
}

/// The group every authenticated caller is in (Kubernetes' name).
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// `groups` with [`AUTHENTICATED_GROUP`] added, as kube-apiserver adds it.
pub fn with_authenticated(mut groups: Vec<String>) -> Vec<String> {
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    groups
}

/// The group every node's credential carries (Kubernetes' name).
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node's user name: `system:node:NAME`.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The node a user is, when it holds a node's credential: user
/// `system:node:NAME` in group `system:nodes`.
pub fn node_of(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// What a user may do with resources: `verbs` on `resources` of
/// `api_groups` (`*` stands for any), as in a Kubernetes RBAC rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRule {
    /// Verbs (`get`, `create`, … or `*`).
    pub verbs: Vec<String>,
    /// API groups (`""` is the core group).
    pub api_groups: Vec<String>,
    /// Resources (`jobs`, `jobs/status`, … or `*`).
    pub resources: Vec<String>,
    /// The objects the rule is limited to (empty: any).
    pub resource_names: Vec<String>,
}

/// What a user may do with paths that are not resources (`/version`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonResourceRule {
    /// Verbs (`get`, or `*`).
    pub verbs: Vec<String>,
    /// Paths; a trailing `*` matches any rest.
    pub urls: Vec<String>,
}

/// Every rule that applies to a user in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Rules on resources.
    pub resources: Vec<ResourceRule>,
    /// Rules on other paths.
    pub non_resources: Vec<NonResourceRule>,
}

/// Decides whether a user may perform a request.
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// True when `user` may do `attrs`.
    fn allows(&self, user: &User, attrs: &Attributes) -> bool;

    /// True when `user` may `verb` the path `path`, which names no resource
    /// (discovery, OpenAPI, `/metrics`).
    fn allows_path(&self, _user: &User, _verb: &str, _path: &str) -> bool {
        false
    }

    /// Every rule that applies to `user` in `namespace`, for `kubectl auth
    /// can-i --list`; `None` when this authorizer cannot list its rules
    /// (the review then says it is incomplete).
    fn rules(&self, _user: &User, _namespace: &str) -> Option<Rules> {
        None
    }

    /// The RBAC policy this authorizer decides by, when it is RBAC (the
    /// escalation check on RBAC writes needs it; without one, whoever may
    /// write an RBAC object may write any).
    fn policy(&self) -> Option<std::sync::Arc<crate::transport::rbac::Policy>> {
        None
    }
}

/// Authorizers asked in order: a request is allowed when any allows it
/// (kube-apiserver's `--authorization-mode=Node,RBAC`).
#[derive(Debug)]
pub struct Chain(pub Vec<Arc<dyn Authorizer>>);

impl Authorizer for Chain {
    fn allows(&self, user: &User, attrs: &Attributes) -> bool {
        self.0.iter().any(|a| a.allows(user, attrs))
    }

    fn allows_path(&self, user: &User, verb: &str, path: &str) -> bool {
        self.0.iter().any(|a| a.allows_path(user, verb, path))
    }

    fn rules(&self, user: &User, namespace: &str) -> Option<Rules> {
        let mut all = Rules::default();
        for a in &self.0 {
            let mut r = a.rules(user, namespace)?;
            all.resources.append(&mut r.resources);
            all.non_resources.append(&mut r.non_resources);
        }
        Some(all)
    }

    fn policy(&self) -> Option<std::sync::Arc<crate::transport::rbac::Policy>> {
        self.0.iter().find_map(|a| a.policy())
    }
}

/// Every authenticated user may do everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn allows(&self, _user: &User, _attrs: &Attributes) -> bool {
        true
    }

    fn allows_path(&self, _user: &User, _verb: &str, _path: &str) -> bool {
        true
    }

    fn rules(&self, _user: &User, _namespace: &str) -> Option<Rules> {
        let any = || vec!["*".to_owned()];
        Some(Rules {
            resources: vec![ResourceRule {
                verbs: any(),
                api_groups: any(),
                resources: any(),
                resource_names: Vec::new(),
            }],
            non_resources: vec![NonResourceRule {
                verbs: any(),
                urls: any(),
            }],
        })
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

/// Lets every caller read and nobody write: for tests of the layer.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ReadOnly;

#[cfg(test)]
impl Authorizer for ReadOnly {
    fn allows(&self, _: &User, a: &Attributes) -> bool {
        matches!(a.verb.as_str(), "get" | "list" | "watch")
    }

    fn allows_path(&self, _: &User, verb: &str, _: &str) -> bool {
        verb == "get"
    }

    fn rules(&self, _: &User, _: &str) -> Option<Rules> {
        Some(Rules {
            resources: vec![ResourceRule {
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                resource_names: Vec::new(),
            }],
            non_resources: vec![NonResourceRule {
                verbs: vec!["get".into()],
                urls: vec!["*".into()],
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_certificates_authenticate_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "secret,alice,1,\"devs,ops\"\nother,bob,2\n").expect("write");
        let authn = Authn::Required(Arc::new(Tokens::load(&path).expect("load")));
        let alice = authn
            .authenticate(Some("Bearer secret"), None)
            .expect("token");
        assert_eq!(
            (alice.name.as_str(), alice.groups.clone()),
            (
                "alice",
                vec![
                    "devs".to_owned(),
                    "ops".to_owned(),
                    AUTHENTICATED_GROUP.to_owned()
                ]
            )
        );
        let bob = authn
            .authenticate(Some("Bearer other"), None)
            .expect("token");
        assert_eq!(
            (bob.name.as_str(), bob.groups.clone()),
            ("bob", vec![AUTHENTICATED_GROUP.to_owned()])
        );
        let id = CertIdentity {
            common_name: "carol".into(),
            organizations: vec!["system:masters".into()],
        };
        let carol = authn.authenticate(None, Some(&id)).expect("cert");
        assert_eq!(
            (carol.name.as_str(), carol.method, carol.groups),
            (
                "carol",
                AuthMethod::ClientCertificate,
                vec!["system:masters".to_owned(), AUTHENTICATED_GROUP.to_owned()]
            )
        );
        for wrong in [
            "Bearer wrong",
            "Bearer secre",
            "Bearer secrets",
            "Basic secret",
        ] {
            assert!(
                matches!(
                    authn.authenticate(Some(wrong), None),
                    Err(ApiError::Unauthorized)
                ),
                "{wrong}"
            );
        }
        assert!(matches!(
            authn.authenticate(None, None),
            Err(ApiError::Unauthorized)
        ));
    }

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki =
            crate::transport::pki::Pki::load_or_create(&dir.path().join("pki"), &[]).expect("pki");
        let der = rustls_pemfile::certs(&mut pki.admin_cert_pem.as_bytes())
            .next()
            .expect("a certificate")
            .expect("readable");
        assert_eq!(
            cert_identity(der.as_ref()),
            Some(CertIdentity {
                common_name: "corral-admin".into(),
                organizations: vec!["system:masters".into()],
            })
        );
        assert_eq!(cert_identity(b"not a certificate"), None);
    }

    #[test]
    fn a_refusal_is_a_forbidden_status_naming_the_request() {
        let user = User {
            name: "bob".into(),
            groups: Vec::new(),
            method: AuthMethod::Token,
        };
        let attrs = Attributes {
            verb: "create".into(),
            group: "corral.dev".into(),
            resource: "tasks".into(),
            subresource: None,
            namespace: Some("default".into()),
            name: None,
            field_selector: None,
            label_selector: None,
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
                    verb: "list".into(),
                    ..attrs
                }
            )
            .is_ok()
        );
    }
}
