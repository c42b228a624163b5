//! The Node authorizer: what a node's credential (user `system:node:NAME`,
//! group `system:nodes`) may do, decided by what the node is rather than
//! by RBAC objects (Kubernetes' Node authorizer is the model).
//!
//! A node reads and writes its own Node and its status, and its own Lease
//! in `corral-node-lease`; lists and watches Tasks only with the field
//! selector `spec.nodeName=NAME`; reads a Task and writes its status only
//! while the watch cache has it bound there; reads a Secret only while a
//! task bound there reads it (`valueFrom.secretKeyRef`); lists the
//! EndpointSlices of a job (by the label `kubernetes.io/service-name=JOB`)
//! only while a task bound there looks that job up in the same namespace
//! (`valueFrom.endpointRef`), as kubelet reads Services for its pods'
//! environment, but narrower; records Events;
//! renews its own certificate (`nodecertificaterequests` for its name);
//! asks whether callers of its own endpoint may read what they ask for
//! (`subjectaccessreviews`).
//! Nothing else: it creates no Task, changes no Task spec, reads no other
//! Secret, no Job and no other node's objects. What a request's body says (the name of a Node or Lease
//! it creates, the node a written Task is bound to in the store, the object
//! an Event is about) is checked at admission by
//! [`crate::storage::admission::node_restriction`], against the stored object.
//!
//! Any other user gets no opinion here (the next authorizer decides).

use std::sync::Arc;

use crate::kinds::catalog::{Catalog, ResourceDesc};
use crate::storage::cache::WatchCache;
use serde_json::Value;

use crate::transport::auth::{Attributes, Authorizer, Rules, User, node_of};

/// The namespace of node Leases.
pub use corral_api::node::NODE_LEASE_NAMESPACE as LEASE_NAMESPACE;

/// Decides the requests of node credentials (see the module doc).
#[derive(Debug, Clone)]
pub struct NodeAuthorizer {
    cache: Option<WatchCache>,
    /// The Task kind, whose objects the cache is asked about.
    task_desc: Option<Arc<ResourceDesc>>,
    /// The tasks' index in the cache.
    tasks: Option<usize>,
}

impl NodeAuthorizer {
    /// An authorizer that looks tasks up in `cache` (without one, a node
    /// reads and writes no single task: it still lists its own).
    pub fn new(cache: Option<WatchCache>, registry: &Catalog) -> Arc<Self> {
        let task_desc = registry.find("corral.dev", "v1alpha1", "tasks");
        let tasks = cache
            .as_ref()
            .and_then(|c| c.index_of("tasks", "corral.dev"));
        Arc::new(NodeAuthorizer {
            cache,
            task_desc,
            tasks,
        })
    }

    /// True when a task the cache has bound to `node` in `ns` reads what
    /// `read` names.
    fn used_here(&self, ns: Option<&str>, node: &str, read: Reads<'_>) -> bool {
        let (Some(cache), Some(index), Some(ns)) = (&self.cache, self.tasks, ns) else {
            return false;
        };
        cache.snapshot(index, Some(ns), Some(node)).is_ok_and(|s| {
            s.items
                .iter()
                .any(|e| e.value().is_ok_and(|t| task_reads(&t, read)))
        })
    }

    /// True when the cache has task `ns/name` bound to `node`.
    fn bound_here(&self, ns: Option<&str>, name: Option<&str>, node: &str) -> bool {
        let (Some(ns), Some(name)) = (ns, name) else {
            return false;
        };
        crate::storage::admission::node_restriction::cached_task_node(
            self.cache.as_ref(),
            self.task_desc.as_deref(),
            ns,
            name,
        )
        .as_deref()
            == Some(node)
    }
}

/// What a task reads into its environment from other objects of its
/// namespace when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads<'a> {
    /// Secret `name` (`valueFrom.secretKeyRef`).
    Secret(&'a str),
    /// The endpoints of job `name` (`valueFrom.endpointRef`).
    Endpoints(&'a str),
}

/// True when task `task` (JSON) reads what `read` names into its
/// environment.
pub fn task_reads(task: &Value, read: Reads<'_>) -> bool {
    let (source, field, name) = match read {
        Reads::Secret(name) => ("secretKeyRef", "name", name),
        Reads::Endpoints(job) => ("endpointRef", "job", job),
    };
    task["spec"]["container"]["env"]
        .as_array()
        .is_some_and(|env| {
            env.iter()
                .any(|e| e["valueFrom"][source][field].as_str() == Some(name))
        })
}

/// The value `selector` requires `key` to have (`k=v` or `k==v` among its
/// comma-separated requirements), if it requires one.
pub fn selector_value<'a>(selector: Option<&'a str>, key: &str) -> Option<&'a str> {
    selector?.split(',').find_map(|req| {
        let req = req.trim();
        let (k, v) = match req.split_once("==") {
            Some(kv) => kv,
            None => match req.split_once('=') {
                Some((k, _)) if k.ends_with('!') => return None,
                Some(kv) => kv,
                None => return None,
            },
        };
        (k.trim() == key).then(|| v.trim())
    })
}

/// True when `selector` requires `field` to equal `value` (`f=v` or
/// `f==v` among its comma-separated requirements).
pub fn selector_requires(selector: Option<&str>, field: &str, value: &str) -> bool {
    selector.is_some_and(|s| {
        s.split(',')
            .any(|req| selector_value(Some(req), field) == Some(value))
    })
}

fn one_of(verb: &str, verbs: &[&str]) -> bool {
    verbs.contains(&verb)
}

/// What node `node` may do, by the request alone: `bound` says whether
/// the named task is bound to it, `reads` whether a task bound to it reads
/// what it is given (in the request's namespace).
pub fn node_allows(
    node: &str,
    a: &Attributes,
    bound: impl FnOnce() -> bool,
    reads: impl FnOnce(Reads<'_>) -> bool,
) -> bool {
    let own = a.name.as_deref() == Some(node);
    let verb = a.verb.as_str();
    match (
        a.group.as_str(),
        a.resource.as_str(),
        a.subresource.as_deref(),
    ) {
        ("corral.dev", "nodes", None) => match verb {
            "get" | "update" | "patch" => own,
            // Applying its Node creates it; a POST names it in the body,
            // which admission checks.
            "create" => a.name.is_none() || own,
            "list" | "watch" => {
                selector_requires(a.field_selector.as_deref(), "metadata.name", node)
            }
            _ => false,
        },
        ("corral.dev", "nodes", Some("status")) => own && one_of(verb, &["get", "update", "patch"]),
        ("coordination.k8s.io", "leases", None) => {
            a.namespace.as_deref() == Some(LEASE_NAMESPACE)
                && match verb {
                    "get" | "update" | "patch" => own,
                    "create" => a.name.is_none() || own,
                    _ => false,
                }
        }
        ("corral.dev", "tasks", None) => match verb {
            "list" | "watch" => {
                selector_requires(a.field_selector.as_deref(), "spec.nodeName", node)
            }
            "get" => bound(),
            _ => false,
        },
        ("corral.dev", "tasks", Some("status")) => {
            one_of(verb, &["get", "update", "patch"]) && bound()
        }
        ("" | "events.k8s.io", "events", None) => one_of(verb, &["create", "update", "patch"]),
        // The Secrets its tasks read, one by one.
        ("", "secrets", None) => {
            verb == "get" && a.name.as_deref().is_some_and(|n| reads(Reads::Secret(n)))
        }
        // The endpoints of the jobs its tasks look up, job by job.
        ("discovery.k8s.io", "endpointslices", None) => {
            verb == "list"
                && selector_value(
                    a.label_selector.as_deref(),
                    corral_api::discovery::SERVICE_NAME_LABEL,
                )
                .is_some_and(|job| reads(Reads::Endpoints(job)))
        }
        // Renewing its own certificate.
        ("corral.dev", crate::transport::node_certificates::PLURAL, None) => {
            verb == "create" && own
        }
        // Asking whether a caller of its own endpoint (logs, metrics) may
        // have what it asks for, as kubelet delegates authorization.
        ("authorization.k8s.io", "subjectaccessreviews", None) => verb == "create",
        _ => false,
    }
}

impl Authorizer for NodeAuthorizer {
    fn allows(&self, user: &User, attrs: &Attributes) -> bool {
        let Some(node) = node_of(user) else {
            return false;
        };
        let (ns, name) = (attrs.namespace.as_deref(), attrs.name.as_deref());
        node_allows(
            node,
            attrs,
            || self.bound_here(ns, name, node),
            |read| self.used_here(ns, node, read),
        )
    }

    fn rules(&self, user: &User, _namespace: &str) -> Option<Rules> {
        // A node's rights depend on which tasks are bound to it: not a
        // list of rules (`kubectl auth can-i --list` says it is incomplete).
        match node_of(user) {
            Some(_) => None,
            None => Some(Rules::default()),
        }
    }
}

#[cfg(test)]
mod tests;
