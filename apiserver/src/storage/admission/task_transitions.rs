//! The server's guard on Task writes: a task's phase moves only where
//! `core::lifecycle` moves it, and only at the hand of whoever reports
//! such moves; a task reaches a node only through its `binding`
//! subresource.
//!
//! - A change of `status.phase` that no event of the state machine makes
//!   (RUNNING → STARTING, FINISHED → anything, PENDING → RUNNING) is a 422
//!   on `status.phase`, whoever writes it.
//! - A move only the agent reports (STARTING, RUNNING, FINISHED, FAILED,
//!   KILLED after a kill) is taken from the node the task is bound to, or
//!   from `system:masters`; anyone else is refused (403), even when RBAC
//!   lets them write `tasks/status`.
//! - A node makes no other move: kills, preemptions, timeouts and node
//!   loss are the controllers' (403).
//! - `spec.nodeName` is set by a binding only (422 on a plain write); a
//!   Task created already bound needs `create` on `tasks/binding`.
//! - `status.ports` and `status.hostIP` are written by the binding only
//!   (422): no report or patch moves a task's ports from under it.
//!
//! The server's own writes (no requester) are not checked here. Judges the
//! object the write replaces at the version the write is conditional on
//! (read from the store, or from the watch cache when it holds exactly the
//! version a request names), so a decision is as fresh as the write.

use corral_api::TaskPhase;
use corral_api::validation::{FieldError, FieldErrorType};
use corral_core::lifecycle::{self, Reporter};
use serde_json::Value;

use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::storage::objects::meta_str;
use crate::storage::registry::WriteOptions;
use crate::transport::auth::{Attributes, node_of};

fn phase_of(task: &Value) -> Result<TaskPhase, ApiError> {
    match task["status"]["phase"].as_str() {
        None | Some("") => Ok(TaskPhase::Pending),
        Some(p) => serde_json::from_value(Value::String(p.to_owned()))
            .map_err(|_| ApiError::BadRequest(format!("unknown task phase {p:?}"))),
    }
}

fn node_name(task: &Value) -> Option<&str> {
    task["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

fn invalid(
    task: &Value,
    type_: FieldErrorType,
    field: &str,
    value: &str,
    detail: String,
) -> ApiError {
    ApiError::Invalid {
        kind: "Task.corral.dev".into(),
        name: meta_str(task, "name").unwrap_or_default().to_owned(),
        errors: vec![FieldError {
            type_,
            field: field.to_owned(),
            value: Some(format!("{value:?}")),
            detail,
        }],
    }
}

fn forbidden(task: &Value, user: &str, why: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "tasks.corral.dev \"{}\" is forbidden: User \"{user}\" {why}",
        meta_str(task, "name").unwrap_or_default()
    ))
}

/// Checks a write of Task `next` over `old` (None for a create); see the
/// module doc.
pub fn check(
    desc: &ResourceDesc,
    next: &Value,
    old: Option<&Value>,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    if desc.group != "corral.dev" || desc.kind != "Task" {
        return Ok(());
    }
    let Some(r) = &opts.requester else {
        return Ok(());
    };
    let user = &r.user;
    let Some(old) = old else {
        // A task created bound skips the scheduler: only a binder may.
        if let Some(node) = node_name(next) {
            let may_bind = r.authz.allows(
                user,
                &Attributes {
                    verb: "create".into(),
                    group: desc.group.into(),
                    resource: desc.plural.into(),
                    subresource: Some("binding".into()),
                    namespace: meta_str(next, "namespace").map(str::to_owned),
                    name: meta_str(next, "name").map(str::to_owned),
                    field_selector: None,
                    label_selector: None,
                },
            );
            if !may_bind {
                return Err(forbidden(
                    next,
                    &user.name,
                    &format!(
                        "cannot create a task bound to node {node}: that takes create on tasks/binding"
                    ),
                ));
            }
        }
        return Ok(());
    };
    if !opts.binding
        && node_name(old).is_none()
        && let Some(node) = node_name(next)
    {
        return Err(invalid(
            next,
            FieldErrorType::Forbidden,
            "spec.nodeName",
            node,
            "a task is bound to a node through its binding subresource".into(),
        ));
    }
    if !opts.binding {
        for field in ["ports", "hostIP"] {
            if old["status"][field] != next["status"][field] {
                return Err(invalid(
                    next,
                    FieldErrorType::Forbidden,
                    &format!("status.{field}"),
                    &next["status"][field].to_string(),
                    "a task's ports and address are written by its binding only".into(),
                ));
            }
        }
    }
    let node = node_of(user);
    if let Some(me) = node
        && node_name(old) != Some(me)
    {
        return Err(forbidden(
            next,
            &user.name,
            &format!("cannot write the task: it is not bound to node {me}"),
        ));
    }
    let (from, to) = (phase_of(old)?, phase_of(next)?);
    if from == to {
        return Ok(());
    }
    let movers = lifecycle::movers(from, to);
    if movers.is_empty() {
        return Err(invalid(
            next,
            FieldErrorType::Invalid,
            "status.phase",
            &to.to_string(),
            format!("a task does not move from {from} to {to}"),
        ));
    }
    let agents_only = movers == [Reporter::Agent];
    match node {
        Some(me) if !movers.contains(&Reporter::Agent) => Err(forbidden(
            next,
            &user.name,
            &format!(
                "cannot move the task from {from} to {to}: node {me} reports only what its copy of the task does"
            ),
        )),
        Some(_) => Ok(()),
        None if agents_only
            && !user
                .groups
                .iter()
                .any(|g| g == crate::transport::rbac::MASTERS) =>
        {
            Err(forbidden(
                next,
                &user.name,
                &format!(
                    "cannot move the task from {from} to {to}: only the node it is bound to reports that"
                ),
            ))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
