//! core/v1 Pods as Corral Tasks: what Kubernetes-native batch tools (Spark's
//! Kubernetes backend, Airflow's KubernetesPodOperator) create is run as one
//! Task per Pod, owned by it.
//!
//! A Pod is accepted only when it maps onto a Task whole: one container,
//! run once (`restartPolicy: Never`, the default here), with cpu and memory
//! requests or limits, under a Corral role (the label
//! [`ROLE_LABEL`], else its namespace's annotation [`DEFAULT_ROLE_ANNOTATION`]).
//! Tier and priority come from the labels [`TIER_LABEL`] and
//! [`PRIORITY_LABEL`], the runtime from the annotation
//! [`RUNTIME_ANNOTATION`], the user from `runAsUser`/`runAsGroup`, node
//! labels asked for by `nodeSelector` from node attributes. `fieldRef`
//! variables are the task's: a Pod's IP is its node's (tasks share their
//! node's network). Volumes other than `emptyDir` and `configMap` are
//! refused; those two are not mounted (a task writes to its sandbox,
//! `$CORRAL_SANDBOX`), which the README says.
//!
//! What cannot be mapped is a field error on the Pod's own path, so a
//! client learns at create time, with a 422, what to change.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::common::Tier;
use crate::job::{
    AttributeConstraint, ConstraintOperator, Constraints, ContainerSpec, EnvVar, EnvVarSource,
    ObjectFieldSelector, SecretKeySelector, TaskField,
};
use crate::node::RuntimeKind;
use crate::quantity::Quantity;
use crate::resources::{CPUS, DISK, MEMORY, Resources};
use crate::task::{Task, TaskSpec};
use crate::validation::{FieldError, FieldErrorType};

/// The Corral role a Pod runs under.
pub const ROLE_LABEL: &str = "corral.dev/role";
/// A Pod's tier (`preferred`, `preemptible`, `revocable`; default preemptible).
pub const TIER_LABEL: &str = "corral.dev/tier";
/// A Pod's priority within its role and tier (an integer; default 0).
pub const PRIORITY_LABEL: &str = "corral.dev/priority";
/// The runtime a Pod's task runs in (`containerd`, `process`; default: the
/// node's).
pub const RUNTIME_ANNOTATION: &str = "corral.dev/runtime";
/// On a Namespace: the role of its Pods that name none.
pub const DEFAULT_ROLE_ANNOTATION: &str = "corral.dev/default-role";
/// On a Pod: held until its task has ended, so that a deleted Pod shows
/// `deletionTimestamp` while its task is killed (as kubelet holds a Pod
/// through its grace period).
pub const TASK_FINALIZER: &str = "corral.dev/task";

/// The pod fields a `fieldRef` may name, and the task field each reads.
const POD_FIELDS: [(&str, TaskField); 7] = [
    ("metadata.name", TaskField::Name),
    ("metadata.namespace", TaskField::Namespace),
    ("metadata.uid", TaskField::Uid),
    ("spec.nodeName", TaskField::NodeName),
    ("status.hostIP", TaskField::HostIp),
    ("status.podIP", TaskField::HostIp),
    ("status.podIPs", TaskField::HostIp),
];

/// What a problem list is built from.
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, type_: FieldErrorType, field: &str, value: Option<String>, detail: &str) {
        self.0.push(FieldError {
            type_,
            field: field.to_owned(),
            value,
            detail: detail.to_owned(),
        });
    }
}

/// The Task that runs `pod`: named as the Pod, in its namespace, owned by
/// it; `default_role` is its namespace's [`DEFAULT_ROLE_ANNOTATION`].
pub fn task_for(pod: &Pod, default_role: Option<&str>) -> Result<Task, Vec<FieldError>> {
    let mut p = Problems(Vec::new());
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    if !crate::validation::is_dns1123_label(&name) {
        p.add(
            FieldErrorType::Invalid,
            "metadata.name",
            Some(format!("\"{name}\"")),
            "a Pod runs as a Corral task, named as a Job is: a DNS-1123 label (at most 63 lower-case letters, digits and '-')",
        );
    }
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let role = labels
        .get(ROLE_LABEL)
        .map(String::as_str)
        .or(default_role)
        .unwrap_or_default()
        .to_owned();
    if role.is_empty() {
        p.add(
            FieldErrorType::Required,
            &format!("metadata.labels[{ROLE_LABEL}]"),
            None,
            &format!("a Pod runs under a Corral role: the label {ROLE_LABEL}, or its namespace's annotation {DEFAULT_ROLE_ANNOTATION}"),
        );
    }
    let tier = match labels.get(TIER_LABEL) {
        None => Tier::default(),
        Some(t) => {
            serde_json::from_value(serde_json::Value::String(t.clone())).unwrap_or_else(|_| {
                p.add(
                    FieldErrorType::NotSupported,
                    &format!("metadata.labels[{TIER_LABEL}]"),
                    Some(format!("\"{t}\"")),
                    "supported values: \"preferred\", \"preemptible\", \"revocable\"",
                );
                Tier::default()
            })
        }
    };
    let priority = match labels.get(PRIORITY_LABEL) {
        None => 0,
        Some(v) => v.parse::<i32>().unwrap_or_else(|_| {
            p.add(
                FieldErrorType::Invalid,
                &format!("metadata.labels[{PRIORITY_LABEL}]"),
                Some(format!("\"{v}\"")),
                "must be an integer",
            );
            0
        }),
    };
    let runtime = annotations.get(RUNTIME_ANNOTATION).and_then(|r| {
        let kind = RuntimeKind::from_name(r).filter(|k| *k != RuntimeKind::Simulated);
        if kind.is_none() {
            p.add(
                FieldErrorType::NotSupported,
                &format!("metadata.annotations[{RUNTIME_ANNOTATION}]"),
                Some(format!("\"{r}\"")),
                "supported values: \"containerd\", \"process\"",
            );
        }
        kind
    });
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    if pod.spec.is_none() {
        p.add(FieldErrorType::Required, "spec", None, "");
    }
    check_spec(&mut p, spec);
    let (resources, container) = match spec.containers.as_slice() {
        [c] => (
            resources_of(&mut p, c),
            container_of(&mut p, spec, c, runtime),
        ),
        _ => (Resources::new(), None),
    };
    let constraints = Constraints {
        attributes: spec
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| AttributeConstraint {
                name: k.clone(),
                operator: ConstraintOperator::In,
                values: vec![v.clone()],
            })
            .collect(),
        ..Constraints::default()
    };
    let Some(container) = container.filter(|_| p.0.is_empty()) else {
        return Err(p.0);
    };
    let mut task_labels: BTreeMap<String, String> = labels;
    task_labels.insert(crate::job::JOB_LABEL.to_owned(), name.clone());
    let task = Task {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: meta.namespace.clone(),
            labels: Some(task_labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: name.clone(),
                uid: meta.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: TaskSpec {
            job: name,
            role,
            instance_id: 0,
            resources,
            tier,
            priority,
            container,
            ports: Vec::new(),
            health_check: None,
            constraints,
            node_name: None,
            fenced: false,
            gang: None,
        },
        status: None,
    };
    let problems = crate::validation::validate_task(&task);
    if problems.is_empty() {
        Ok(task)
    } else {
        // The task's rules, said on the Pod: its own path names the task's field.
        Err(problems
            .into_iter()
            .map(|e| FieldError {
                detail: format!("as a Corral task ({}): {}", e.field, e.detail),
                field: "spec.containers[0]".into(),
                ..e
            })
            .collect())
    }
}

fn check_spec(p: &mut Problems, spec: &PodSpec) {
    if spec.containers.len() != 1 {
        p.add(
            FieldErrorType::Invalid,
            "spec.containers",
            Some(spec.containers.len().to_string()),
            "a Pod runs as one Corral task: exactly one container",
        );
    }
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        p.add(
            FieldErrorType::Forbidden,
            "spec.initContainers",
            None,
            "a Pod runs as one Corral task, without init containers",
        );
    }
    if let Some(policy) = spec.restart_policy.as_deref()
        && policy != "Never"
    {
        p.add(
            FieldErrorType::NotSupported,
            "spec.restartPolicy",
            Some(format!("\"{policy}\"")),
            "supported values: \"Never\" (a Pod runs once; a Corral service Job restarts)",
        );
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if v.empty_dir.is_none() && v.config_map.is_none() {
            p.add(
                FieldErrorType::Forbidden,
                &format!("spec.volumes[{i}]"),
                None,
                "a Corral task has its sandbox ($CORRAL_SANDBOX): only emptyDir and configMap volumes are accepted, and neither is mounted",
            );
        }
    }
}

/// `cpu` and `memory` (and `ephemeral-storage` as disk), the larger of
/// request and limit.
fn resources_of(p: &mut Problems, c: &Container) -> Resources {
    let reqs = c.resources.as_ref();
    let pick = |name: &str| {
        let of = |m: Option<
            &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            m.and_then(|m| m.get(name))
                .map(|q| Quantity::from_text(q.0.clone()))
        };
        let request = of(reqs.and_then(|r| r.requests.as_ref()));
        let limit = of(reqs.and_then(|r| r.limits.as_ref()));
        match (request, limit) {
            (Some(r), Some(l)) => Some(if l.milli().ok() > r.milli().ok() {
                l
            } else {
                r
            }),
            (r, l) => r.or(l),
        }
    };
    let mut resources = Resources::new();
    for (pod_name, task_name, required) in [
        ("cpu", CPUS, true),
        ("memory", MEMORY, true),
        ("ephemeral-storage", DISK, false),
    ] {
        match pick(pod_name) {
            Some(q) => resources = resources.with(task_name, q),
            None if required => p.add(
                FieldErrorType::Required,
                &format!("spec.containers[0].resources.requests[{pod_name}]"),
                None,
                "a Corral task holds what it asks for: a cpu and memory request (or limit)",
            ),
            None => {}
        }
    }
    resources
}

fn container_of(
    p: &mut Problems,
    spec: &PodSpec,
    c: &Container,
    runtime: Option<RuntimeKind>,
) -> Option<ContainerSpec> {
    let at = "spec.containers[0]";
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        p.add(
            FieldErrorType::Forbidden,
            &format!("{at}.envFrom"),
            None,
            "not supported: name each variable",
        );
    }
    let security = c.security_context.as_ref();
    if security.and_then(|s| s.privileged) == Some(true) {
        p.add(
            FieldErrorType::Forbidden,
            &format!("{at}.securityContext.privileged"),
            None,
            "Corral runs no privileged containers",
        );
    }
    let pod_security = spec.security_context.as_ref();
    let uid = security
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_security.and_then(|s| s.run_as_user));
    let gid = security
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_security.and_then(|s| s.run_as_group));
    let user = uid.map(|u| match gid {
        Some(g) => format!("{u}:{g}"),
        None => u.to_string(),
    });
    let env = c
        .env
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, e)| env_var(p, &format!("{at}.env[{i}]"), e))
        .collect();
    Some(ContainerSpec {
        image: c.image.clone().unwrap_or_default(),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        env,
        working_dir: c.working_dir.clone(),
        kill_grace_period_seconds: spec
            .termination_grace_period_seconds
            .map(|s| u32::try_from(s.clamp(0, 3600)).unwrap_or(0)),
        runtime,
        network: None,
        user,
        read_only_root_filesystem: security
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        seccomp_profile: None,
    })
}

fn env_var(p: &mut Problems, at: &str, e: &k8s_openapi::api::core::v1::EnvVar) -> Option<EnvVar> {
    let mut var = EnvVar {
        name: e.name.clone(),
        value: e.value.clone().unwrap_or_default(),
        value_from: None,
    };
    let Some(from) = &e.value_from else {
        return Some(var);
    };
    if let Some(f) = &from.field_ref {
        let Some((_, field)) = POD_FIELDS.iter().find(|(path, _)| *path == f.field_path) else {
            let supported: Vec<String> =
                POD_FIELDS.iter().map(|(p, _)| format!("\"{p}\"")).collect();
            p.add(
                FieldErrorType::NotSupported,
                &format!("{at}.valueFrom.fieldRef.fieldPath"),
                Some(format!("\"{}\"", f.field_path)),
                &format!("supported values: {}", supported.join(", ")),
            );
            return None;
        };
        var.value_from = Some(EnvVarSource {
            secret_key_ref: None,
            field_ref: Some(ObjectFieldSelector {
                field_path: field.path().to_owned(),
                api_version: None,
            }),
            endpoint_ref: None,
        });
    } else if let Some(s) = &from.secret_key_ref {
        var.value_from = Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: s.name.clone(),
                key: s.key.clone(),
                optional: s.optional.unwrap_or(false),
            }),
            field_ref: None,
            endpoint_ref: None,
        });
    } else {
        p.add(
            FieldErrorType::Forbidden,
            &format!("{at}.valueFrom"),
            None,
            "a Corral task reads fieldRef and secretKeyRef variables only",
        );
        return None;
    }
    Some(var)
}

#[cfg(test)]
mod tests;
