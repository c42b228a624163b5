//! Escalation prevention on RBAC writes, as kube-apiserver enforces it:
//! - a Role or ClusterRole may be created or changed only by a requester
//!   who holds every permission it grants (in its namespace, or cluster-wide
//!   for a ClusterRole), or who may `escalate` it;
//! - a RoleBinding or ClusterRoleBinding may be created or changed only by a
//!   requester who holds every permission of the role it refers to (where
//!   the binding grants it), or who may `bind` that role. A binding to a role
//!   the policy does not know needs `bind`.
//!
//! `system:masters` may do both. Under an authorizer that is not RBAC there
//! is nothing to escalate to, and nothing is checked.

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use super::covers;
use crate::error::ApiError;
use crate::transport::auth::{Attributes, Authorizer, User};

const GROUP: &str = "rbac.authorization.k8s.io";

/// What an RBAC object written asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    /// A Role (in its namespace) or ClusterRole (None) granting `rules`.
    Role {
        /// `roles` or `clusterroles`.
        resource: &'static str,
        /// Its name.
        name: String,
        /// Its namespace.
        namespace: Option<String>,
        /// Its rules.
        rules: Vec<PolicyRule>,
    },
    /// A binding in `namespace` (None: cluster-wide) to `kind`/`name`.
    Binding {
        /// `Role` or `ClusterRole`.
        kind: String,
        /// The role's name.
        name: String,
        /// Where the binding grants it.
        namespace: Option<String>,
    },
}

/// The grant an RBAC object of kind `kind` makes, if it is one.
pub fn grant_of(kind: &str, obj: &Value) -> Option<Grant> {
    let namespace = obj["metadata"]["namespace"].as_str().map(str::to_owned);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match kind {
        "Role" | "ClusterRole" => Some(Grant::Role {
            resource: if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            },
            name,
            namespace: namespace.filter(|_| kind == "Role"),
            rules: serde_json::from_value(obj["rules"].clone()).unwrap_or_default(),
        }),
        "RoleBinding" | "ClusterRoleBinding" => Some(Grant::Binding {
            kind: obj["roleRef"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            name: obj["roleRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            namespace: namespace.filter(|_| kind == "RoleBinding"),
        }),
        _ => None,
    }
}

fn may(
    authz: &dyn Authorizer,
    user: &User,
    verb: &str,
    resource: &str,
    ns: Option<&str>,
    name: &str,
) -> bool {
    authz.allows(
        user,
        &Attributes {
            verb: verb.into(),
            group: GROUP.into(),
            resource: resource.into(),
            subresource: None,
            namespace: ns.map(str::to_owned),
            name: Some(name.to_owned()),
            field_selector: None,
            label_selector: None,
        },
    )
}

fn refused(user: &User, missing: &[PolicyRule]) -> ApiError {
    let shown: Vec<String> = missing
        .iter()
        .take(5)
        .map(|r| {
            let mut parts = vec![format!("verbs {:?}", r.verbs)];
            if let Some(g) = &r.api_groups {
                parts.push(format!("apiGroups {g:?}"));
            }
            if let Some(res) = &r.resources {
                parts.push(format!("resources {res:?}"));
            }
            if let Some(n) = &r.resource_names {
                parts.push(format!("resourceNames {n:?}"));
            }
            if let Some(u) = &r.non_resource_urls {
                parts.push(format!("nonResourceURLs {u:?}"));
            }
            format!("{{{}}}", parts.join(" "))
        })
        .collect();
    let more = missing.len().saturating_sub(shown.len());
    ApiError::Forbidden(format!(
        "user \"{}\" is attempting to grant RBAC permissions not currently held: {}{}",
        user.name,
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

/// Refuses `grant` when `user` would hand out more than it holds (see the
/// module doc).
pub fn check(authz: &dyn Authorizer, user: &User, grant: &Grant) -> Result<(), ApiError> {
    let Some(policy) = authz.policy() else {
        return Ok(());
    };
    let (rules, namespace) = match grant {
        Grant::Role {
            resource,
            name,
            namespace,
            rules,
        } => {
            if may(
                authz,
                user,
                "escalate",
                resource,
                namespace.as_deref(),
                name,
            ) {
                return Ok(());
            }
            (rules.as_slice(), namespace)
        }
        Grant::Binding {
            kind,
            name,
            namespace,
        } => {
            let resource = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if may(authz, user, "bind", resource, namespace.as_deref(), name) {
                return Ok(());
            }
            let Some(rules) = policy.role_rules(kind, namespace.as_deref(), name) else {
                return Err(ApiError::Forbidden(format!(
                    "user \"{}\" may not bind {kind} \"{name}\": it does not exist (yet), and binding it takes the bind verb on it",
                    user.name
                )));
            };
            (rules, namespace)
        }
    };
    let missing = covers(&policy.rules_of(user, namespace.as_deref()), rules);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(refused(user, &missing))
    }
}

#[cfg(test)]
mod tests;
