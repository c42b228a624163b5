//! What a request is, read once from its method, path and query (kube-
//! apiserver's RequestInfo): the resource it names — kind, namespace,
//! name, subresource — or the kind answered without being stored, or a
//! path that is no resource; its Kubernetes verb; whether it runs long.
//! The in-flight limits, the metrics, authorization and the audit log all
//! read this, and the handler routes by it.

use std::sync::Arc;

use http::Method;

use super::query::Query;
use crate::kinds::catalog::{Catalog, ResourceDesc};
use crate::transport::auth::Attributes;

/// The subresources served for resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `status`: writes change only status.
    Status,
    /// `scale`: a Job's instances as an autoscaling/v1 Scale.
    Scale,
    /// `binding`: a Task bound to a node (POST of a Binding).
    Binding,
    /// `log`: a Task's output, proxied from its agent.
    Log,
    /// `eviction`: a Task evicted within its job's disruption budget
    /// (POST of an Eviction).
    Eviction,
}

impl Subresource {
    /// Its name in paths, RBAC rules and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::Eviction => "eviction",
        }
    }
}

/// A request for a served resource.
#[derive(Debug, Clone)]
pub struct ResourceTarget {
    /// The kind.
    pub desc: Arc<ResourceDesc>,
    /// Its namespace, for namespaced requests.
    pub namespace: Option<String>,
    /// The object, for single-object requests.
    pub name: Option<String>,
    /// The subresource asked for.
    pub sub: Option<Subresource>,
}

impl ResourceTarget {
    /// True for the `status` subresource.
    pub fn status(&self) -> bool {
        self.sub == Some(Subresource::Status)
    }

    /// True for many tasks' status reports in one request
    /// (`namespaces/NS/taskstatuses`), which are authorized item by item.
    pub fn bulk_status(&self) -> bool {
        self.status() && self.name.is_none()
    }
}

/// What a request's path names.
#[derive(Debug, Clone)]
pub enum Target {
    /// A served resource.
    Resource(ResourceTarget),
    /// A kind answered and never stored (the access reviews, node
    /// certificate requests): `POST /apis/GROUP/VERSION/PLURAL`.
    Virtual {
        /// The API group.
        group: String,
        /// The version.
        version: String,
        /// The plural.
        plural: String,
    },
    /// A resource path of a served API version naming a resource it does
    /// not serve (`/api/v1/namespaces/NS/services`): answered 404 to any
    /// authenticated caller, as kube-apiserver answers what it does not
    /// serve, before authorization (discovery lists what is served anyway),
    /// so that a client deleting what it may have made (Spark deletes its
    /// services at stop) learns there is none rather than a refusal.
    Unserved,
    /// Any other path (discovery, OpenAPI, `/metrics`, health, or nothing
    /// served).
    NonResource,
}

/// A request, read once (see the module doc).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The HTTP method.
    pub method: Method,
    /// The path without its trailing `/` (`/` for the root).
    pub path: String,
    /// The query's parameters, decoded once.
    params: Query,
    /// `?watch=true` (or `1`).
    pub watch: bool,
    /// The body is a server-side apply patch.
    pub apply: bool,
    /// What the path names.
    pub target: Target,
}

/// Names a resource request: `/api/v1/…` or `/apis/GROUP/VERSION/…`.
/// True when `segs` name a resource (or one in a namespace) of an API
/// version `registry` serves, under a plural it does not serve.
fn unserved(registry: &Catalog, segs: &[&str]) -> bool {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return false,
    };
    let plural = match rest {
        ["namespaces", _, plural, ..] => *plural,
        [plural, ..] if *plural != "namespaces" => *plural,
        _ => return false,
    };
    let served_version = registry
        .served()
        .any(|r| r.group == group && r.version == version);
    served_version && registry.find(group, version, plural).is_none()
}

fn resource(registry: &Catalog, segs: &[&str]) -> Option<ResourceTarget> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let find = |plural: &str| registry.find(group, version, plural);
    let t = |desc: Arc<ResourceDesc>, ns: Option<&str>, name: Option<&str>, sub| ResourceTarget {
        desc,
        namespace: ns.map(str::to_owned),
        name: name.map(str::to_owned),
        sub,
    };
    use Subresource::*;
    match rest {
        // Many tasks bound in one request (Kubernetes' `bindings`, in bulk):
        // authorized as the binding of each.
        ["namespaces", ns, "bindings"] if group == "corral.dev" => {
            let desc = find("tasks")?;
            Some(t(desc, Some(ns), None, Some(Binding)))
        }
        // Many tasks' status reports in one request: authorized item by
        // item, as each report would be alone.
        ["namespaces", ns, "taskstatuses"] if group == "corral.dev" => {
            let desc = find("tasks")?;
            Some(t(desc, Some(ns), None, Some(Status)))
        }
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|d| d.namespaced) => {
            let desc = find(plural)?;
            let ns = Some(*ns);
            match tail {
                [] => Some(t(desc, ns, None, None)),
                [name] => Some(t(desc, ns, Some(name), None)),
                [name, "status"] if desc.status_subresource => {
                    Some(t(desc, ns, Some(name), Some(Status)))
                }
                [name, "scale"] if desc.scale.is_some() => {
                    Some(t(desc, ns, Some(name), Some(Scale)))
                }
                [name, "binding"] if crate::storage::registry::binding::is_bindable(&desc) => {
                    Some(t(desc, ns, Some(name), Some(Binding)))
                }
                [name, "eviction"] if crate::storage::registry::eviction::is_evictable(&desc) => {
                    Some(t(desc, ns, Some(name), Some(Eviction)))
                }
                // A Pod's log is its task's (the task has the Pod's name).
                [name, "log"]
                    if (desc.group == "corral.dev" && desc.kind == "Task")
                        || (desc.group.is_empty() && desc.kind == "Pod") =>
                {
                    Some(t(desc, ns, Some(name), Some(Log)))
                }
                _ => None,
            }
        }
        [plural, tail @ ..] => {
            let desc = find(plural)?;
            match tail {
                [] => Some(t(desc, None, None, None)),
                [name] if !desc.namespaced => Some(t(desc, None, Some(name), None)),
                [name, "status"] if !desc.namespaced && desc.status_subresource => {
                    Some(t(desc, None, Some(name), Some(Status)))
                }
                [name, "scale"] if !desc.namespaced && desc.scale.is_some() => {
                    Some(t(desc, None, Some(name), Some(Scale)))
                }
                // A namespace's finalizers, written as an update of it.
                [name, "finalize"] if desc.kind == "Namespace" => {
                    Some(t(desc, None, Some(name), None))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// True for the kinds answered without being stored.
fn is_virtual(group: &str, version: &str, plural: &str) -> bool {
    crate::transport::reviews::find(group, version, plural).is_some()
        || crate::transport::plans::is_plan(group, version, plural)
        || (group == crate::transport::node_certificates::GROUP
            && version == crate::transport::node_certificates::VERSION
            && plural == crate::transport::node_certificates::PLURAL)
}

impl RequestInfo {
    /// Reads a request's `method`, `path` and `query` against the kinds
    /// `registry` serves; `apply` says whether its body is an apply patch.
    pub fn new(
        registry: &Catalog,
        method: &Method,
        path: &str,
        query: Option<&str>,
        apply: bool,
    ) -> Self {
        let trimmed = path.trim_end_matches('/');
        let path = if trimmed.is_empty() { "/" } else { trimmed };
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let target = match segs.as_slice() {
            ["apis", g, v, plural] if is_virtual(g, v, plural) => Target::Virtual {
                group: (*g).to_owned(),
                version: (*v).to_owned(),
                plural: (*plural).to_owned(),
            },
            _ => match resource(registry, &segs) {
                Some(t) => Target::Resource(t),
                None if unserved(registry, &segs) => Target::Unserved,
                None => Target::NonResource,
            },
        };
        let params = Query::parse(query);
        RequestInfo {
            method: method.clone(),
            path: path.to_owned(),
            watch: params.flag("watch"),
            params,
            apply,
            target,
        }
    }

    /// The query's parameters.
    pub(super) fn params(&self) -> &Query {
        &self.params
    }

    /// The path's segments (`["apis", "corral.dev", …]`).
    pub fn segments(&self) -> Vec<&str> {
        self.path.trim_start_matches('/').split('/').collect()
    }

    /// The Kubernetes verb: `get`, `list`, `watch`, `create`, `update`,
    /// `patch`, `delete`, `deletecollection`; for other paths, the HTTP
    /// method in lower case.
    pub fn verb(&self) -> String {
        match &self.target {
            Target::Resource(t) => match (&self.method, t.name.is_some()) {
                (&Method::GET, true) => "get",
                (&Method::GET, false) if self.watch => "watch",
                (&Method::GET, false) => "list",
                (&Method::POST, _) => "create",
                (&Method::PUT, _) => "update",
                (&Method::PATCH, _) => "patch",
                (&Method::DELETE, true) => "delete",
                (&Method::DELETE, false) => "deletecollection",
                _ => "unknown",
            }
            .to_owned(),
            Target::Virtual { .. } if self.method == Method::POST => "create".to_owned(),
            Target::Virtual { .. } | Target::Unserved | Target::NonResource => {
                self.method.as_str().to_lowercase()
            }
        }
    }

    /// Whether the request runs as long as its client wants: a watch, a
    /// task's log (followed or not: its length is the task's), health.
    pub fn long_running(&self) -> bool {
        if matches!(self.path.as_str(), "/healthz" | "/livez" | "/readyz") {
            return true;
        }
        self.method == Method::GET
            && match &self.target {
                Target::Resource(t) => self.watch || t.sub == Some(Subresource::Log),
                _ => false,
            }
    }

    /// The authorization attributes of a resource or virtual-kind request.
    pub fn attributes(&self) -> Option<Attributes> {
        let verb = self.verb();
        match &self.target {
            Target::Resource(t) => Some(Attributes {
                verb,
                group: t.desc.group.to_owned(),
                resource: t.desc.plural.to_owned(),
                subresource: t.sub.map(|s| s.name().to_owned()),
                namespace: t.namespace.clone(),
                name: t.name.clone(),
                field_selector: self.params.get("fieldSelector").map(str::to_owned),
                label_selector: self.params.get("labelSelector").map(str::to_owned),
            }),
            Target::Virtual { group, plural, .. } => Some(Attributes {
                verb,
                group: group.clone(),
                resource: plural.clone(),
                ..Attributes::default()
            }),
            Target::Unserved | Target::NonResource => None,
        }
    }
}

#[cfg(test)]
mod tests;
