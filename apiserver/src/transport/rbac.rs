//! Kubernetes RBAC, evaluated: who may do what under Role, ClusterRole,
//! RoleBinding and ClusterRoleBinding objects (`rbac.authorization.k8s.io/v1`),
//! with kube-apiserver's semantics.
//!
//! Pure and fast: a [`Policy`] is built once from the objects (resolving
//! ClusterRole aggregation, indexing every grant by subject and namespace)
//! and then answers requests without allocating:
//! - a rule matches a request when its verbs, API groups and resources
//!   (`tasks`, `tasks/status`, `*/status`, `tasks/*`, `*`) match, and its
//!   `resourceNames`, when set, name the object (so they never match a list,
//!   a watch, a create or a deletecollection); `nonResourceURLs` match paths
//!   exactly or by a trailing `*`;
//! - a RoleBinding grants its Role, or a ClusterRole, in its namespace; a
//!   ClusterRoleBinding grants a ClusterRole everywhere;
//! - subjects are Users, Groups and ServiceAccounts
//!   (`system:serviceaccount:NS:NAME`); every authenticated user is also in
//!   `system:authenticated`.
//!
//! [`covers`] is the escalation check: a requester may create or bind a role
//! only when its own rules cover every rule the role grants (each broken down
//! to one verb, group, resource and name; a wildcard is covered only by a
//! wildcard), unless it holds `escalate` or `bind` on it.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::transport::auth::{
    Attributes, AuthMethod, Authorizer, NonResourceRule, ResourceRule, Rules, User,
};

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group whose members may do everything (bound to `cluster-admin`).
pub const MASTERS: &str = "system:masters";

/// Rule sets granted to subjects, in one scope (a namespace, or the cluster).
#[derive(Debug, Default, Clone)]
struct Grants {
    users: HashMap<String, Vec<Arc<[PolicyRule]>>>,
    groups: HashMap<String, Vec<Arc<[PolicyRule]>>>,
}

impl Grants {
    fn grant(&mut self, kind: &str, name: String, rules: &Arc<[PolicyRule]>) {
        let to = match kind {
            "Group" => &mut self.groups,
            // Users and ServiceAccounts (already spelled as a user name).
            _ => &mut self.users,
        };
        to.entry(name).or_default().push(rules.clone());
    }

    /// Every rule set granted to `user` (by name or by any of its groups).
    fn of<'a>(&'a self, user: &'a User) -> impl Iterator<Item = &'a [PolicyRule]> + 'a {
        let by_name = self.users.get(&user.name).into_iter().flatten();
        let by_group = groups_of(user).filter_map(|g| self.groups.get(g)).flatten();
        by_name.chain(by_group).map(|r| &**r)
    }
}

/// `user`'s groups, `system:authenticated` included when it authenticated.
fn groups_of(user: &User) -> impl Iterator<Item = &str> {
    let authenticated = (user.method != AuthMethod::Anonymous).then_some(AUTHENTICATED);
    user.groups.iter().map(String::as_str).chain(authenticated)
}

/// Everything the RBAC objects grant, indexed for requests.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    cluster: Grants,
    namespaced: HashMap<String, Grants>,
    /// Each ClusterRole's rules (aggregation resolved).
    cluster_roles: HashMap<String, Arc<[PolicyRule]>>,
    /// Each Role's rules, by namespace and name.
    roles: HashMap<(String, String), Arc<[PolicyRule]>>,
}

/// True when `labels` satisfy `selector` (matchLabels and matchExpressions).
fn selects(selector: &LabelSelector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// Each ClusterRole's rules, an aggregated one's being the union of the
/// rules of every ClusterRole its selectors match (to a fixpoint, so an
/// aggregated role may itself be aggregated, as `admin` gathers `edit`).
fn cluster_role_rules(roles: &[ClusterRole]) -> HashMap<String, Vec<PolicyRule>> {
    let mut rules: HashMap<String, Vec<PolicyRule>> = roles
        .iter()
        .filter_map(|r| {
            Some((
                r.metadata.name.clone()?,
                r.rules.clone().unwrap_or_default(),
            ))
        })
        .collect();
    for _ in 0..8 {
        let mut changed = false;
        for role in roles {
            let (Some(name), Some(agg)) = (&role.metadata.name, &role.aggregation_rule) else {
                continue;
            };
            let selectors = agg.cluster_role_selectors.as_deref().unwrap_or_default();
            let mut gathered = role.rules.clone().unwrap_or_default();
            for other in roles {
                let labels = other.metadata.labels.clone().unwrap_or_default();
                if other.metadata.name.as_ref() == Some(name)
                    || !selectors.iter().any(|s| selects(s, &labels))
                {
                    continue;
                }
                let theirs = other
                    .metadata
                    .name
                    .as_ref()
                    .and_then(|n| rules.get(n))
                    .cloned()
                    .unwrap_or_default();
                for r in theirs {
                    if !gathered.contains(&r) {
                        gathered.push(r);
                    }
                }
            }
            if rules.get(name) != Some(&gathered) {
                rules.insert(name.clone(), gathered);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    rules
}

/// A subject's kind and the name it is granted under.
fn subject_name(kind: &str, name: &str, namespace: Option<&str>) -> Option<(String, String)> {
    match kind {
        "User" | "Group" => Some((kind.to_owned(), name.to_owned())),
        "ServiceAccount" => Some((
            "User".to_owned(),
            format!("system:serviceaccount:{}:{name}", namespace?),
        )),
        _ => None,
    }
}

impl Policy {
    /// The policy the objects define.
    pub fn new(
        cluster_roles: &[ClusterRole],
        roles: &[Role],
        cluster_bindings: &[ClusterRoleBinding],
        bindings: &[RoleBinding],
    ) -> Self {
        let cluster_rules: HashMap<String, Arc<[PolicyRule]>> = cluster_role_rules(cluster_roles)
            .into_iter()
            .map(|(k, v)| (k, Arc::from(v)))
            .collect();
        let role_rules: HashMap<(String, String), Arc<[PolicyRule]>> = roles
            .iter()
            .filter_map(|r| {
                Some((
                    (r.metadata.namespace.clone()?, r.metadata.name.clone()?),
                    Arc::from(r.rules.clone().unwrap_or_default()),
                ))
            })
            .collect();
        let mut policy = Policy {
            cluster_roles: cluster_rules.clone(),
            roles: role_rules.clone(),
            ..Policy::default()
        };
        for b in cluster_bindings {
            let Some(rules) = (b.role_ref.kind == "ClusterRole")
                .then(|| cluster_rules.get(&b.role_ref.name))
                .flatten()
            else {
                continue;
            };
            for s in b.subjects.iter().flatten() {
                if let Some((kind, name)) = subject_name(&s.kind, &s.name, s.namespace.as_deref()) {
                    policy.cluster.grant(&kind, name, rules);
                }
            }
        }
        for b in bindings {
            let Some(ns) = b.metadata.namespace.clone() else {
                continue;
            };
            let rules = match b.role_ref.kind.as_str() {
                "ClusterRole" => cluster_rules.get(&b.role_ref.name),
                "Role" => role_rules.get(&(ns.clone(), b.role_ref.name.clone())),
                _ => None,
            };
            let Some(rules) = rules else {
                continue;
            };
            let grants = policy.namespaced.entry(ns.clone()).or_default();
            for s in b.subjects.iter().flatten() {
                let sa_ns = s.namespace.as_deref().or(Some(&ns));
                if let Some((kind, name)) = subject_name(&s.kind, &s.name, sa_ns) {
                    grants.grant(&kind, name, rules);
                }
            }
        }
        policy
    }

    /// Every rule set that applies to `user` in `namespace` (cluster-wide
    /// grants included).
    fn rule_sets<'a>(
        &'a self,
        user: &'a User,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a [PolicyRule]> + 'a {
        let local = namespace
            .and_then(|ns| self.namespaced.get(ns))
            .into_iter()
            .flat_map(|g| g.of(user));
        self.cluster.of(user).chain(local)
    }

    /// The rules of the role a binding in `namespace` refers to (`Role` or
    /// `ClusterRole`), if it exists.
    pub fn role_rules(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<&[PolicyRule]> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name).map(|r| &**r),
            "Role" => self
                .roles
                .get(&(namespace?.to_owned(), name.to_owned()))
                .map(|r| &**r),
            _ => None,
        }
    }

    /// True when `user` may `verb` the non-resource `path` (`/version`).
    pub fn allows_path(&self, user: &User, verb: &str, path: &str) -> bool {
        self.cluster
            .of(user)
            .flatten()
            .any(|r| verb_matches(r, verb) && url_matches(r, path))
    }

    /// Every rule `user` holds in `namespace` (cluster-wide ones included).
    pub fn rules_of(&self, user: &User, namespace: Option<&str>) -> Vec<PolicyRule> {
        let mut out: Vec<PolicyRule> = Vec::new();
        for r in self.rule_sets(user, namespace).flatten() {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }
}

fn has(list: Option<&Vec<String>>, want: &str) -> bool {
    list.is_some_and(|l| l.iter().any(|v| v == "*" || v == want))
}

fn verb_matches(r: &PolicyRule, verb: &str) -> bool {
    r.verbs.iter().any(|v| v == "*" || v == verb)
}

/// kube-apiserver's ResourceMatches: `*`, the resource (with its
/// subresource), `*/sub` for any resource's subresource, `res/*` for any
/// subresource of one resource.
fn resource_matches(r: &PolicyRule, resource: &str, subresource: Option<&str>) -> bool {
    r.resources.iter().flatten().any(|rr| {
        if rr == "*" {
            return true;
        }
        match subresource {
            None => rr == resource,
            Some(sub) => match rr.split_once('/') {
                Some((res, s)) => (res == resource || res == "*") && (s == sub || s == "*"),
                None => false,
            },
        }
    })
}

fn url_matches(r: &PolicyRule, path: &str) -> bool {
    r.non_resource_urls.iter().flatten().any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// True when rule `r` allows the resource request `a`.
pub fn rule_allows(r: &PolicyRule, a: &Attributes) -> bool {
    verb_matches(r, &a.verb)
        && has(r.api_groups.as_ref(), &a.group)
        && resource_matches(r, &a.resource, a.subresource.as_deref())
        && match r.resource_names.as_deref() {
            None | Some([]) => true,
            Some(names) => a.name.as_ref().is_some_and(|n| names.contains(n)),
        }
}

impl Authorizer for Policy {
    fn allows(&self, user: &User, attrs: &Attributes) -> bool {
        self.rule_sets(user, attrs.namespace.as_deref())
            .flatten()
            .any(|r| rule_allows(r, attrs))
    }

    fn rules(&self, user: &User, namespace: &str) -> Option<Rules> {
        let mut out = Rules::default();
        for r in self.rules_of(user, Some(namespace)) {
            if r.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
                out.non_resources.push(NonResourceRule {
                    verbs: r.verbs.clone(),
                    urls: r.non_resource_urls.clone().unwrap_or_default(),
                });
            }
            if r.resources.as_ref().is_some_and(|u| !u.is_empty()) {
                out.resources.push(ResourceRule {
                    verbs: r.verbs.clone(),
                    api_groups: r.api_groups.clone().unwrap_or_default(),
                    resources: r.resources.clone().unwrap_or_default(),
                    resource_names: r.resource_names.clone().unwrap_or_default(),
                });
            }
        }
        Some(out)
    }
}

/// One permission: one verb on one group's resource (optionally one name),
/// or one verb on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom<'a> {
    Resource {
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        name: Option<&'a str>,
    },
    Path {
        verb: &'a str,
        url: &'a str,
    },
}

fn atoms(r: &PolicyRule) -> Vec<Atom<'_>> {
    let mut out = Vec::new();
    let names: Vec<Option<&str>> = match r.resource_names.as_deref() {
        None | Some([]) => vec![None],
        Some(n) => n.iter().map(|n| Some(n.as_str())).collect(),
    };
    for verb in &r.verbs {
        for group in r.api_groups.iter().flatten() {
            for resource in r.resources.iter().flatten() {
                for name in &names {
                    out.push(Atom::Resource {
                        verb,
                        group,
                        resource,
                        name: *name,
                    });
                }
            }
        }
        for url in r.non_resource_urls.iter().flatten() {
            out.push(Atom::Path { verb, url });
        }
    }
    out
}

/// True when `have` grants `atom`: a wildcard in the atom is covered only by
/// a wildcard.
fn grants(have: &PolicyRule, atom: &Atom<'_>) -> bool {
    match atom {
        Atom::Resource {
            verb,
            group,
            resource,
            name,
        } => {
            let (resource, sub) = match resource.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (*resource, None),
            };
            let name_ok = match (have.resource_names.as_deref(), name) {
                (None | Some([]), _) => true,
                (Some(names), Some(n)) => names.iter().any(|h| h == n),
                (Some(_), None) => false,
            };
            verb_matches(have, verb)
                && has(have.api_groups.as_ref(), group)
                && resource_matches(have, resource, sub)
                && name_ok
        }
        Atom::Path { verb, url } => verb_matches(have, verb) && url_matches(have, url),
    }
}

/// The escalation check: the parts of `want` that `have` does not grant
/// (empty when `have` covers it all), each as a rule of one verb, group,
/// resource and name, or one verb and path.
pub fn covers(have: &[PolicyRule], want: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for r in want {
        for atom in atoms(r) {
            if have.iter().any(|h| grants(h, &atom)) {
                continue;
            }
            let one = |v: &str| Some(vec![v.to_owned()]);
            missing.push(match atom {
                Atom::Resource {
                    verb,
                    group,
                    resource,
                    name,
                } => PolicyRule {
                    verbs: vec![verb.to_owned()],
                    api_groups: one(group),
                    resources: one(resource),
                    resource_names: name.and_then(one),
                    non_resource_urls: None,
                },
                Atom::Path { verb, url } => PolicyRule {
                    verbs: vec![verb.to_owned()],
                    non_resource_urls: one(url),
                    ..PolicyRule::default()
                },
            });
        }
    }
    missing
}

pub mod bootstrap;
pub mod escalation;
mod live;

pub use live::{RbacAuthorizer, node_and_rbac};

#[cfg(test)]
pub(crate) mod tests;
