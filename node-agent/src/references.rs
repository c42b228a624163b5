//! Environment variables a task reads from itself and from its namespace
//! as it starts, besides Secrets ([`crate::secrets`]):
//!
//! - `valueFrom.fieldRef`: a field of the task object — its name,
//!   namespace, uid, node, or the node's address (`status.hostIP`, written
//!   by its binding), filled in from the task the agent was given;
//! - `valueFrom.endpointRef`: where another service job of the namespace
//!   serves, `ADDRESS:PORT` of one of its ready instances, read from the
//!   EndpointSlices Corral's discovery controller keeps for that job (slices
//!   another manager wrote are ignored). While none is ready the task stays
//!   STARTING and the agent looks again, every second at first, then every
//!   few; the wait ends when an instance is ready, when the task is killed
//!   (nothing is started), or when its job's start timeout makes it LOST.
//!
//! The node reads only the slices of jobs its own tasks look up (the API
//! server's Node authorizer checks the label selector). Values become plain
//! variables of the launch and never reach a shell unquoted.

use std::time::Duration;

use corral_api::discovery::{ENDPOINTS_MANAGER, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use corral_api::job::{ContainerSpec, EndpointSelector, TaskField};
use corral_api::task::FailureReason;
use corral_api::{Task, TaskPhase};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use tokio::sync::watch;

/// The longest pause between two looks at a job's endpoints.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Fills in `container`'s variables read from fields of `task`, or says
/// which cannot be read (a field the task does not have yet).
pub fn fill_fields(container: &mut ContainerSpec, task: &Task) -> Result<(), String> {
    for var in &mut container.env {
        let Some(path) = var.field().map(|f| f.field_path.clone()) else {
            continue;
        };
        let value = match TaskField::parse(&path) {
            Some(TaskField::Name) => task.metadata.name.clone(),
            Some(TaskField::Namespace) => task.metadata.namespace.clone(),
            Some(TaskField::Uid) => task.metadata.uid.clone(),
            Some(TaskField::NodeName) => task.spec.node_name.clone(),
            Some(TaskField::HostIp) => task.status.as_ref().and_then(|s| s.host_ip.clone()),
            None => return Err(format!("variable {}: no field {path:?}", var.name)),
        };
        let Some(value) = value else {
            return Err(format!("variable {}: the task has no {path} yet", var.name));
        };
        var.value = value;
        var.value_from = None;
    }
    Ok(())
}

/// True when `container` looks up another job's endpoints.
pub fn looks_up_endpoints(container: &ContainerSpec) -> bool {
    container.env.iter().any(|e| e.endpoint().is_some())
}

/// How waiting for endpoints ended without filling them in.
#[derive(Debug, PartialEq, Eq)]
pub enum NotResolved {
    /// The task was killed (or given up) while it waited: start nothing.
    Abandoned,
    /// The lookup cannot succeed (the node may not read the slices).
    Failed(String),
}

/// Fills in `container`'s `endpointRef` variables from the EndpointSlices
/// of `namespace`, waiting while a job has no ready instance, until
/// `abandon` is dropped or sent to, or `wanted` says the task no longer
/// waits to start (it was found LOST, or deleted).
pub async fn resolve_endpoints(
    client: &kube::Client,
    namespace: &str,
    container: &mut ContainerSpec,
    mut abandon: watch::Receiver<()>,
    wanted: impl Fn() -> bool,
) -> Result<(), NotResolved> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    for var in &mut container.env {
        let Some(want) = var.endpoint().cloned() else {
            continue;
        };
        let mut pause = Duration::from_secs(1);
        let mut said = false;
        let address = loop {
            let slices = api
                .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={}", want.job)))
                .await;
            match slices {
                Ok(list) => {
                    if let Some(address) = pick(&list.items, &want) {
                        break address;
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    return Err(NotResolved::Failed(format!(
                        "this node may not read the endpoints of job {namespace}/{}: {}",
                        want.job, s.message
                    )));
                }
                Err(e) => tracing::warn!(job = %want.job, error = %e, "reading endpoints failed"),
            }
            if !said {
                tracing::info!(
                    namespace, job = %want.job, port = %want.port,
                    "waiting for a ready instance of the job a task looks up"
                );
                said = true;
            }
            tokio::select! {
                _ = abandon.changed() => return Err(NotResolved::Abandoned),
                () = tokio::time::sleep(pause) => {}
            }
            if !wanted() {
                return Err(NotResolved::Abandoned);
            }
            pause = (pause * 2).min(MAX_PAUSE);
        };
        var.value = address;
        var.value_from = None;
    }
    Ok(())
}

/// A launch's wait for the endpoints its task looks up.
#[derive(Debug)]
pub(crate) struct Wait {
    /// Dropped or sent to when the task is killed.
    pub(crate) abandon: watch::Receiver<()>,
    /// The agent's tasks as its watch last showed them.
    pub(crate) objects: crate::supervise::Objects,
}

impl Wait {
    /// Reports the task `key` STARTING and fills in `container`'s endpoint
    /// variables; false when it must not start (abandoned, or failed, which
    /// is reported on `events`).
    pub(crate) async fn until_found(
        self,
        client: &kube::Client,
        key: &str,
        container: &mut ContainerSpec,
        events: &crate::runtime::Events,
    ) -> bool {
        use crate::runtime::RuntimeEvent;
        let _ = events.send((key.to_owned(), RuntimeEvent::Starting)).await;
        let ns = key.split_once('/').map_or("", |(ns, _)| ns);
        // Still bound here and waiting to start, as the watch last showed it.
        let objects = self.objects;
        let wanted = || {
            objects.lock().is_ok_and(|o| {
                o.get(key).is_some_and(|t| {
                    let phase = t.status.as_ref().map(|s| s.phase());
                    matches!(phase, Some(TaskPhase::Assigned | TaskPhase::Starting))
                })
            })
        };
        match resolve_endpoints(client, ns, container, self.abandon, wanted).await {
            Ok(()) => true,
            Err(NotResolved::Abandoned) => false,
            Err(NotResolved::Failed(why)) => {
                let failed = RuntimeEvent::failed(FailureReason::LaunchFailed, why);
                let _ = events.send((key.to_owned(), failed)).await;
                false
            }
        }
    }
}

/// `ADDRESS:PORT` of the first ready endpoint (by task name) serving port
/// `want.port` in the slices Corral keeps for job `want.job`.
pub fn pick(slices: &[EndpointSlice], want: &EndpointSelector) -> Option<String> {
    let mut ready: Vec<(String, String)> = Vec::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        if label(SERVICE_NAME_LABEL) != Some(want.job.as_str())
            || label(MANAGED_BY_LABEL) != Some(ENDPOINTS_MANAGER)
        {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find_map(|p| {
            (p.name.as_deref() == Some(want.port.as_str()))
                .then_some(p.port)
                .flatten()
        }) else {
            continue;
        };
        for e in &slice.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) != Some(true) {
                continue;
            }
            let Some(address) = e.addresses.first() else {
                continue;
            };
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            let task = e
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            ready.push((task, format!("{host}:{port}")));
        }
    }
    ready.sort();
    ready.into_iter().next().map(|(_, address)| address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_api::job::{EnvVar, EnvVarSource, ObjectFieldSelector};
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use std::collections::BTreeMap;

    fn slice(
        job: &str,
        manager: &str,
        port: (&str, i32),
        eps: &[(&str, &str, bool)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: kube::api::ObjectMeta {
                labels: Some(BTreeMap::from([
                    (SERVICE_NAME_LABEL.to_owned(), job.to_owned()),
                    (MANAGED_BY_LABEL.to_owned(), manager.to_owned()),
                ])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                name: Some(port.0.into()),
                port: Some(port.1),
                ..Default::default()
            }]),
            endpoints: eps
                .iter()
                .map(|(task, address, ready)| Endpoint {
                    addresses: vec![(*address).into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        ..Default::default()
                    }),
                    target_ref: Some(ObjectReference {
                        name: Some((*task).into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn want(job: &str, port: &str) -> EndpointSelector {
        EndpointSelector {
            job: job.into(),
            port: port.into(),
        }
    }

    #[test]
    fn the_first_ready_instance_of_corrals_slices_serving_the_port() {
        let m = ENDPOINTS_MANAGER;
        let cases: Vec<(&str, Vec<EndpointSlice>, EndpointSelector, Option<&str>)> = vec![
            ("none", vec![], want("master", "spark"), None),
            (
                "ready, by task name",
                vec![slice(
                    "master",
                    m,
                    ("spark", 31001),
                    &[
                        ("master-1", "10.0.0.2", true),
                        ("master-0", "10.0.0.1", true),
                    ],
                )],
                want("master", "spark"),
                Some("10.0.0.1:31001"),
            ),
            (
                "not ready is skipped",
                vec![slice(
                    "master",
                    m,
                    ("spark", 31001),
                    &[
                        ("master-0", "10.0.0.1", false),
                        ("master-1", "10.0.0.2", true),
                    ],
                )],
                want("master", "spark"),
                Some("10.0.0.2:31001"),
            ),
            (
                "another port",
                vec![slice(
                    "master",
                    m,
                    ("webui", 31002),
                    &[("master-0", "10.0.0.1", true)],
                )],
                want("master", "spark"),
                None,
            ),
            (
                "another manager's slice",
                vec![slice(
                    "master",
                    "someone",
                    ("spark", 7077),
                    &[("fake-0", "6.6.6.6", true)],
                )],
                want("master", "spark"),
                None,
            ),
            (
                "another job's slice",
                vec![slice(
                    "web",
                    m,
                    ("spark", 80),
                    &[("web-0", "10.0.0.9", true)],
                )],
                want("master", "spark"),
                None,
            ),
            (
                "IPv6 is bracketed",
                vec![slice(
                    "master",
                    m,
                    ("spark", 7077),
                    &[("master-0", "fd00::1", true)],
                )],
                want("master", "spark"),
                Some("[fd00::1]:7077"),
            ),
        ];
        for (name, slices, want, expected) in cases {
            assert_eq!(pick(&slices, &want).as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn fields_come_from_the_task_and_a_missing_one_is_said() {
        let task: Task = serde_json::from_value(serde_json::json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "w-0", "namespace": "analytics", "uid": "u1"},
            "spec": {"job": "w", "instanceId": 0, "role": "analytics", "tier": "preemptible",
                "resources": {"cpus": 1, "memory": "1Gi"}, "nodeName": "n1",
                "container": {"image": "i", "command": ["true"]}},
            "status": {"phase": "ASSIGNED", "hostIP": "10.0.0.7"}
        }))
        .expect("a task");
        let var = |name: &str, path: &str| EnvVar {
            name: name.into(),
            value: String::new(),
            value_from: Some(EnvVarSource {
                secret_key_ref: None,
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                }),
                endpoint_ref: None,
            }),
        };
        let mut c = task.spec.container.clone();
        c.env = TaskField::ALL
            .iter()
            .enumerate()
            .map(|(i, f)| var(&format!("V{i}"), f.path()))
            .collect();
        fill_fields(&mut c, &task).expect("every field is there");
        let values: Vec<&str> = c.env.iter().map(|e| e.value.as_str()).collect();
        assert_eq!(values, ["w-0", "analytics", "u1", "n1", "10.0.0.7"]);
        assert!(c.env.iter().all(|e| e.value_from.is_none()));

        let mut unbound = task.clone();
        unbound.status = None;
        let mut c = task.spec.container.clone();
        c.env = vec![var("HOST", "status.hostIP")];
        let err = fill_fields(&mut c, &unbound).expect_err("no address yet");
        assert!(
            err.contains("HOST") && err.contains("status.hostIP"),
            "{err}"
        );
    }
}
