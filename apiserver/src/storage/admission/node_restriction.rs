//! NodeRestriction: what a node's credential may write, judged by the
//! object written (Kubernetes' admission plugin of that name is the
//! model). The Node authorizer decided by the request; this decides by
//! the body and the stored object:
//!
//! - a Node only under its own name; a Lease only its own, in
//!   `corral-node-lease`;
//! - no Task created; a Task written only while the store has it bound to
//!   this node (the phase moves it may make are `task_transitions`');
//! - an Event only about its own Node, or about a Task bound to it.
//!
//! Other writers are not concerned.

use serde_json::Value;

use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::storage::cache::WatchCache;
use crate::storage::objects::meta_str;
use crate::storage::registry::WriteOptions;
use crate::transport::auth::node_of;
use crate::transport::node_authorizer::LEASE_NAMESPACE;

fn refuse(desc: &ResourceDesc, obj: &Value, user: &str, why: String) -> ApiError {
    let resource = if desc.group.is_empty() {
        desc.plural.to_owned()
    } else {
        format!("{}.{}", desc.plural, desc.group)
    };
    ApiError::Forbidden(format!(
        "{resource} \"{}\" is forbidden: User \"{user}\" {why}",
        meta_str(obj, "name").unwrap_or_default()
    ))
}

/// Checks a node's write of `next` over `old` (None for a create);
/// `task_node` answers which node a task (`namespace`, `name`) is bound to.
pub fn check(
    desc: &ResourceDesc,
    next: &Value,
    old: Option<&Value>,
    opts: &WriteOptions,
    task_node: impl Fn(&str, &str) -> Option<String>,
) -> Result<(), ApiError> {
    let Some(r) = &opts.requester else {
        return Ok(());
    };
    let Some(me) = node_of(&r.user) else {
        return Ok(());
    };
    let user = r.user.name.as_str();
    let name = meta_str(next, "name").unwrap_or_default();
    match (desc.group, desc.kind) {
        ("corral.dev", "Node") if name != me => Err(refuse(
            desc,
            next,
            user,
            format!("may write only its own Node ({me})"),
        )),
        ("coordination.k8s.io", "Lease")
            if name != me || meta_str(next, "namespace") != Some(LEASE_NAMESPACE) =>
        {
            Err(refuse(
                desc,
                next,
                user,
                format!("may write only its own Lease ({LEASE_NAMESPACE}/{me})"),
            ))
        }
        ("corral.dev", "Task") => match old {
            None => Err(refuse(
                desc,
                next,
                user,
                "is a node: it creates no task".into(),
            )),
            Some(o) if o["spec"]["nodeName"].as_str() != Some(me) => Err(refuse(
                desc,
                next,
                user,
                format!("may write only the tasks bound to node {me}"),
            )),
            Some(_) => Ok(()),
        },
        ("", "Event") => {
            let about = &next["involvedObject"];
            let mine = match (about["kind"].as_str(), about["name"].as_str()) {
                (Some("Node"), Some(n)) => n == me,
                (Some("Task"), Some(n)) => {
                    let ns = about["namespace"]
                        .as_str()
                        .or_else(|| meta_str(next, "namespace"))
                        .unwrap_or_default();
                    task_node(ns, n).as_deref() == Some(me)
                }
                _ => false,
            };
            if mine {
                Ok(())
            } else {
                Err(refuse(
                    desc,
                    next,
                    user,
                    format!("may record events only about node {me} and the tasks bound to it"),
                ))
            }
        }
        _ => Ok(()),
    }
}

/// Which node the watch cache has task `ns/name` bound to.
pub fn cached_task_node(
    cache: Option<&WatchCache>,
    task_desc: Option<&ResourceDesc>,
    ns: &str,
    name: &str,
) -> Option<String> {
    let key = task_desc?.key(Some(ns), name);
    cache?.get(&key)?.node.clone()
}
