//! Pods admitted as the Tasks they become (`corral_api::pods`): a Pod is
//! created only when its task could be, by its creator.
//!
//! On create: the Pod is Pending, `restartPolicy` defaults to `Never` (a
//! Pod runs once), the task finalizer is added (the pod controller
//! releases it once the task has ended), a Pod naming no role is labelled
//! with its namespace's default, and the task the Pod maps onto is derived
//! and checked as that task's own create would be: its rules, a Role that
//! exists, the preferred tier only on a role with a Quota, and the RBAC
//! verb `use` on the role (and on `roles/privileged` for root) for the
//! Pod's creator. Each refusal names the Pod's field; a Pod naming its node
//! is refused (Corral's scheduler places its task). On update, a Pod's spec
//! does not change, except `nodeName`, set once to the node its task is
//! bound to (by the pod controller).

use corral_api::pods::{
    DEFAULT_ROLE_ANNOTATION, PRIORITY_LABEL, ROLE_LABEL, TASK_FINALIZER, TIER_LABEL,
};
use corral_api::validation::{FieldError, FieldErrorType};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{Api, WriteOptions};
use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::storage::objects::meta_str;

fn is_pod(desc: &ResourceDesc) -> bool {
    desc.group.is_empty() && desc.kind == "Pod"
}

fn invalid(obj: &Value, errors: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        kind: "Pod".into(),
        name: meta_str(obj, "name").unwrap_or_default().to_owned(),
        errors,
    }
}

/// The Pod's path for a task's field, in a refusal of the task.
fn pod_field(task_field: &str) -> String {
    match task_field {
        "spec.role" => format!("metadata.labels[{ROLE_LABEL}]"),
        "spec.tier" => format!("metadata.labels[{TIER_LABEL}]"),
        "spec.priority" => format!("metadata.labels[{PRIORITY_LABEL}]"),
        other => format!("spec.containers[0] ({other} of its task)"),
    }
}

impl Api {
    /// Admits Pod `body` over `old` (see the module doc); `status` says the
    /// write is of its status only.
    pub(super) async fn admit_pod(
        &self,
        desc: &ResourceDesc,
        body: &mut Value,
        old: Option<&Value>,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<(), ApiError> {
        if !is_pod(desc) || status {
            return Ok(());
        }
        if let Some(old) = old {
            let (was, now) = (&old["spec"]["nodeName"], &body["spec"]["nodeName"]);
            let without_node = |spec: &Value| {
                let mut spec = spec.clone();
                if let Some(o) = spec.as_object_mut() {
                    o.remove("nodeName");
                }
                spec
            };
            let node_kept = was == now || was.is_null() && self.task_bound_to(body, now).await?;
            if node_kept && without_node(&body["spec"]) == without_node(&old["spec"]) {
                return Ok(());
            }
            return Err(invalid(
                body,
                vec![FieldError {
                    type_: FieldErrorType::Forbidden,
                    field: "spec".into(),
                    value: None,
                    detail: "a Pod's spec does not change once it is created (its task runs it), except nodeName, set once to its task's node".into(),
                }],
            ));
        }
        if !body["spec"]["nodeName"].is_null() {
            return Err(invalid(
                body,
                vec![FieldError {
                    type_: FieldErrorType::Forbidden,
                    field: "spec.nodeName".into(),
                    value: None,
                    detail: "Corral's scheduler places a Pod's task: ask for nodes with nodeSelector (node attributes)".into(),
                }],
            ));
        }
        // As kube-apiserver makes a Pod: Pending until something runs it.
        body["status"] = json!({"phase": "Pending"});
        let spec = body["spec"].as_object_mut();
        if let Some(spec) = spec {
            spec.entry("restartPolicy")
                .or_insert_with(|| json!("Never"));
        }
        let meta = body["metadata"].as_object_mut();
        if let Some(meta) = meta {
            let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = finalizers.as_array_mut()
                && !list.iter().any(|f| f == TASK_FINALIZER)
            {
                list.push(json!(TASK_FINALIZER));
            }
        }
        let ns = meta_str(body, "namespace").unwrap_or_default().to_owned();
        let default_role = self.default_role(&ns).await?;
        // The role is written on the Pod, so its task is the same whoever
        // derives it later (the namespace's default may change).
        if let (Some(role), Some(meta)) = (&default_role, body["metadata"].as_object_mut()) {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.entry(ROLE_LABEL).or_insert_with(|| json!(role));
            }
        }
        let pod: Pod = serde_json::from_value(body.clone())
            .map_err(|e| ApiError::BadRequest(format!("decoding the Pod: {e}")))?;
        let task = corral_api::pods::task_for(&pod, default_role.as_deref())
            .map_err(|errors| invalid(body, errors))?;
        let task = serde_json::to_value(&task)
            .map_err(|e| ApiError::Internal(format!("encoding a Pod's task: {e}")))?;
        let tasks = self
            .registry
            .find("corral.dev", "v1alpha1", "tasks")
            .ok_or_else(|| ApiError::Internal("tasks are not registered".into()))?;
        // As its creator would create the task itself.
        let as_task = async {
            super::write::may_use_role(&tasks, &task, None, opts)?;
            super::write::may_be_privileged(&tasks, &task, None, opts)?;
            self.admit_role_and_tier(&tasks, &task, None, opts).await
        };
        as_task.await.map_err(|e| match e {
            ApiError::Invalid { errors, .. } => invalid(
                body,
                errors
                    .into_iter()
                    .map(|f| FieldError {
                        field: pod_field(&f.field),
                        ..f
                    })
                    .collect(),
            ),
            ApiError::Forbidden(message) => {
                ApiError::Forbidden(message.replacen("tasks.corral.dev", "pods", 1))
            }
            other => other,
        })
    }

    /// True when Pod `pod`'s task (the task of its name) is bound to node
    /// `node`: the only node its `spec.nodeName` may be set to.
    async fn task_bound_to(&self, pod: &Value, node: &Value) -> Result<bool, ApiError> {
        let (Some(ns), Some(name), Some(node)) = (
            meta_str(pod, "namespace"),
            meta_str(pod, "name"),
            node.as_str(),
        ) else {
            return Ok(false);
        };
        let Some(tasks) = self.registry.find("corral.dev", "v1alpha1", "tasks") else {
            return Ok(false);
        };
        Ok(self
            .cached_or_stored(&tasks, Some(ns), name)
            .await?
            .is_some_and(|t| t["spec"]["nodeName"].as_str() == Some(node)))
    }

    /// The role a namespace gives its Pods that name none.
    async fn default_role(&self, ns: &str) -> Result<Option<String>, ApiError> {
        let Some(namespaces) = self.registry.find("", "v1", "namespaces") else {
            return Ok(None);
        };
        Ok(self
            .cached_or_stored(&namespaces, None, ns)
            .await?
            .and_then(|n| {
                n["metadata"]["annotations"][DEFAULT_ROLE_ANNOTATION]
                    .as_str()
                    .map(str::to_owned)
            }))
    }
}
