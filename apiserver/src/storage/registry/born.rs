//! The status a new Task is created with, written in the create itself (as
//! Kubernetes gives a new Pod its phase), so no second write records it:
//! PENDING with its first task event, THROTTLED when its job controller
//! created it held back (`corral_core::jobs::initial_status`), or ASSIGNED
//! when it is created already bound (which takes `create` on
//! `tasks/binding`, see [`crate::storage::admission::task_transitions`]):
//! the same status a binding writes.
//!
//! Whatever status the creator sent is dropped first, as for every kind
//! with a status subresource.

use serde_json::{Value, json};

use super::WriteOptions;
use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;

/// The actor of the first task event when the server writes for itself.
const SERVER: &str = "corral-apiserver";

/// Gives Task `body` (being created) its first status; other kinds are left
/// alone.
pub fn give_initial_status(
    desc: &ResourceDesc,
    body: &mut Value,
    opts: &WriteOptions,
    now: jiff::Timestamp,
) -> Result<(), ApiError> {
    if desc.group != "corral.dev" || desc.kind != "Task" {
        return Ok(());
    }
    let actor = opts
        .requester
        .as_ref()
        .map_or(SERVER, |r| r.user.name.as_str());
    let instance = body["spec"]["instanceId"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(0);
    let hold_until =
        body["metadata"]["annotations"][corral_core::jobs::THROTTLED_UNTIL_ANNOTATION].as_str();
    let status = corral_core::jobs::initial_status(instance, hold_until, now, actor);
    body["status"] = serde_json::to_value(&status)
        .map_err(|e| ApiError::Internal(format!("encoding a task status: {e}")))?;
    if let Some(node) = body["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
    {
        body["spec"]["nodeName"] = Value::Null;
        // No binder assigns its ports: it may name fixed ones only.
        let ports: Vec<corral_api::ports::PortSpec> =
            serde_json::from_value(body["spec"]["ports"].clone()).unwrap_or_default();
        let ports = ports
            .into_iter()
            .map(|p| {
                p.port
                    .map(|port| corral_api::ports::TaskPort { name: p.name, port })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::Invalid {
                kind: "Task.corral.dev".into(),
                name: crate::storage::objects::meta_str(body, "name")
                    .unwrap_or_default()
                    .to_owned(),
                errors: vec![corral_api::validation::FieldError {
                    type_: corral_api::validation::FieldErrorType::Forbidden,
                    field: "spec.ports".into(),
                    value: None,
                    detail: "a task created bound has no binder to assign its ports: each needs a fixed port".into(),
                }],
            })?;
        let binding = super::binding::Binding {
            node: node.clone(),
            ports,
            ..Default::default()
        };
        *body = super::binding::bound(body, &binding, now).map_err(|why| ApiError::Invalid {
            kind: "Task.corral.dev".into(),
            name: crate::storage::objects::meta_str(body, "name")
                .unwrap_or_default()
                .to_owned(),
            errors: vec![corral_api::validation::FieldError {
                type_: corral_api::validation::FieldErrorType::Invalid,
                field: "spec.nodeName".into(),
                value: Some(json!(node).to_string()),
                detail: why,
            }],
        })?;
    }
    Ok(())
}
