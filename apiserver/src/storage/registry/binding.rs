//! The `binding` subresource of Tasks (Kubernetes' `pods/binding` is the
//! model): one write that binds a PENDING task to a node — `spec.nodeName`,
//! the ASSIGNED phase with its task event, and the `Scheduled` condition —
//! conditional on the version it read (and on the version the request
//! names, if it names one). A task already bound, or in a phase that cannot
//! be bound, is a 409 and nothing is written. Whoever may `create` on
//! `tasks/binding` binds (the scheduler); a plain write of the Task cannot
//! set `spec.nodeName` (see [`crate::storage::admission::task_transitions`]).
//!
//! The body is a `Binding` (`corral.dev/v1alpha1`) naming the node as its
//! target: `{"kind": "Binding", "metadata": {"name": TASK}, "target":
//! {"kind": "Node", "name": NODE}}`. The answer is the bound Task. A task
//! that names host ports is bound with the ports its binder assigned on the
//! node, one per name in the task's order, its fixed ones as fixed
//! (`"ports": [{"name": "http", "port": 31000}]`), and optionally the node's
//! address (`"hostIP"`): both land in the task's status in the same write.

use corral_api::ports::{MAX_PORTS, PortSpec, TaskPort};
use corral_api::task::{TaskReason, TaskStatus};
use corral_api::validation::{FieldError, FieldErrorType};
use corral_api::{ConditionStatus, TaskPhase};
use corral_core::lifecycle;
use serde_json::{Value, json};

use super::{Api, WriteOptions, Written, meta_str, parse_rv};
use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;

/// The actor task events name for bindings that say nothing else.
const ACTOR: &str = "scheduler";

/// True for the kinds with a `binding` subresource: Corral's Task.
pub fn is_bindable(desc: &ResourceDesc) -> bool {
    desc.group == "corral.dev" && desc.kind == "Task"
}

/// What a Binding asks, once read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// The node.
    pub node: String,
    /// The task's version the binder decided on, if it named one.
    pub precondition: Option<i64>,
    /// The host ports assigned to the task on the node, in its order.
    pub ports: Vec<TaskPort>,
    /// The node's address, if the binder knows it.
    pub host_ip: Option<String>,
}

fn invalid(
    task: &str,
    type_: FieldErrorType,
    field: &str,
    value: Option<&str>,
    detail: &str,
) -> ApiError {
    ApiError::Invalid {
        kind: "Binding.corral.dev".into(),
        name: task.to_owned(),
        errors: vec![FieldError {
            type_,
            field: field.to_owned(),
            value: value.map(|v| format!("{v:?}")),
            detail: detail.to_owned(),
        }],
    }
}

impl Binding {
    /// Reads a Binding body for task `task` (400 for a body naming another
    /// task, 422 for a missing or wrong target).
    pub fn parse(task: &str, body: &Value) -> Result<Binding, ApiError> {
        if let Some(n) = meta_str(body, "name").filter(|n| !n.is_empty() && *n != task) {
            return Err(ApiError::BadRequest(format!(
                "the name of the binding ({n}) does not match the task on the URL ({task})"
            )));
        }
        match body["kind"].as_str() {
            None | Some("Binding") => {}
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "the binding subresource takes a Binding, not a {other}"
                )));
            }
        }
        let target = &body["target"];
        match target["kind"].as_str() {
            None | Some("Node") | Some("") => {}
            Some(k) => {
                return Err(invalid(
                    task,
                    FieldErrorType::NotSupported,
                    "target.kind",
                    Some(k),
                    "supported values: \"Node\"",
                ));
            }
        }
        let node = target["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                invalid(
                    task,
                    FieldErrorType::Required,
                    "target.name",
                    None,
                    "the node to bind to",
                )
            })?;
        if !corral_api::validation::is_dns1123_subdomain(node) {
            return Err(invalid(
                task,
                FieldErrorType::Invalid,
                "target.name",
                Some(node),
                "a node's name is a DNS-1123 subdomain",
            ));
        }
        let precondition = meta_str(body, "resourceVersion")
            .map(parse_rv)
            .transpose()?;
        let ports: Vec<TaskPort> = match body.get("ports") {
            None | Some(Value::Null) => Vec::new(),
            Some(p) => serde_json::from_value(p.clone()).map_err(|e| {
                invalid(
                    task,
                    FieldErrorType::Invalid,
                    "ports",
                    None,
                    &format!("a list of {{name, port}}: {e}"),
                )
            })?,
        };
        if ports.len() > MAX_PORTS {
            return Err(invalid(
                task,
                FieldErrorType::TooMany,
                "ports",
                None,
                &format!("a task names at most {MAX_PORTS} ports"),
            ));
        }
        let host_ip = match &body["hostIP"] {
            Value::Null => None,
            Value::String(a) if !a.is_empty() && a.len() <= 253 => Some(a.clone()),
            other => {
                return Err(invalid(
                    task,
                    FieldErrorType::Invalid,
                    "hostIP",
                    Some(&other.to_string()),
                    "the node's address: a host name or IP address of at most 253 characters",
                ));
            }
        };
        Ok(Binding {
            node: node.to_owned(),
            precondition,
            ports,
            host_ip,
        })
    }
}

/// Checks that `assigned` gives the task whose spec is `spec` exactly its
/// ports: one per name in its order, fixed ones as fixed, none 0.
fn check_ports(spec: &Value, assigned: &[TaskPort]) -> Result<(), String> {
    let wanted: Vec<PortSpec> = match spec.get("ports") {
        None | Some(Value::Null) => Vec::new(),
        Some(p) => serde_json::from_value(p.clone())
            .map_err(|e| format!("the task's ports are unreadable: {e}"))?,
    };
    let names = |w: &[PortSpec]| w.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    if wanted.len() != assigned.len() || wanted.iter().zip(assigned).any(|(w, a)| w.name != a.name)
    {
        return Err(format!(
            "the binding assigns ports {:?}; the task needs {:?}, in that order",
            assigned.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
            names(&wanted)
        ));
    }
    for (w, a) in wanted.iter().zip(assigned) {
        if a.port == 0 || w.port.is_some_and(|f| f != a.port) {
            return Err(format!(
                "port {} is {} on the task; the binding gives {}",
                w.name,
                w.port
                    .map_or("assigned".to_owned(), |f| format!("fixed at {f}")),
                a.port
            ));
        }
    }
    Ok(())
}

/// The task `current` bound as `binding` says at `now`, or why it cannot be.
pub fn bound(current: &Value, binding: &Binding, now: jiff::Timestamp) -> Result<Value, String> {
    let node = binding.node.as_str();
    if let Some(on) = current["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        return Err(format!("the task is already bound to node {on}"));
    }
    check_ports(&current["spec"], &binding.ports)?;
    let mut status: TaskStatus = match current.get("status") {
        Some(s) if !s.is_null() => serde_json::from_value(s.clone())
            .map_err(|e| format!("the task's status is unreadable: {e}"))?,
        _ => TaskStatus::default(),
    };
    status.ports = binding.ports.clone();
    status.host_ip = binding.host_ip.clone();
    // The creator's PENDING step may not have landed yet: history starts
    // at PENDING, dated at the task's creation.
    if status.task_events.is_empty() && status.phase() == TaskPhase::Pending {
        let created = current["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or(now);
        status.task_events =
            lifecycle::created("pending since its creation".into(), created, ACTOR).task_events;
    }
    lifecycle::apply(
        &mut status,
        &lifecycle::Event::Assigned {
            node: node.to_owned(),
        },
        now,
        ACTOR,
    )
    .map_err(|e| format!("a {} task cannot be bound ({e})", status.phase()))?;
    status.set_scheduled(
        ConditionStatus::True,
        TaskReason::Assigned,
        format!("assigned to {node}"),
        now,
    );
    let mut next = current.clone();
    next["spec"]["nodeName"] = json!(node);
    next["status"] =
        serde_json::to_value(&status).map_err(|e| format!("encoding the status: {e}"))?;
    Ok(next)
}

impl Api {
    /// Binds task `name` as `body` (a Binding) asks: see the module doc.
    pub async fn bind(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        body: &Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !is_bindable(desc) {
            return Err(ApiError::PathNotFound);
        }
        let binding = Binding::parse(name, body)?;
        let resource = desc.group_resource();
        let opts = WriteOptions {
            binding: true,
            ..opts.clone()
        };
        let task = name.to_owned();
        self.modify(
            desc,
            ns,
            name,
            binding.precondition,
            &opts,
            move |current| {
                bound(current, &binding, jiff::Timestamp::now()).map_err(|message| {
                    ApiError::Conflict {
                        resource: resource.clone(),
                        name: task.clone(),
                        message,
                    }
                })
            },
            false,
            "Update",
        )
        .await
    }
}

#[cfg(test)]
mod tests;
