//! Table tests: each case breaks one thing in a valid object and names the
//! field path and error type it must produce.

use serde_json::{Value, json};

use super::{FieldErrorType as T, *};
use crate::{Job, Node, Quota, Reservation, Role, Task};

fn job_json() -> Value {
    json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": "sparkie", "namespace": "analytics"},
        "spec": {
            "role": "analytics", "environment": "devel", "kind": "adhoc", "instances": 1,
            "resources": {"cpus": 1, "memory": "5120Mi", "disk": "5120Mi"},
            "priority": 0, "tier": "preemptible", "maxTaskFailures": 1,
            "container": {"image": "docker.io/library/sparkie:image", "command": ["sh", "-c", "echo running; sleep 5"]},
            "constraints": {"hostLimit": 1, "attributes": [{"name": "rack", "operator": "NotIn", "values": ["r1"]}]}
        }
    })
}

/// Applies `edit` to a valid object's JSON, decodes it and validates it.
fn job_with(edit: impl FnOnce(&mut Value)) -> Vec<FieldError> {
    let mut v = job_json();
    edit(&mut v);
    let job: Job = serde_json::from_value(v).expect("the edited job still decodes");
    validate_job(&job)
}

fn fields(errs: &[FieldError]) -> Vec<(String, T)> {
    errs.iter().map(|e| (e.field.clone(), e.type_)).collect()
}

#[test]
fn the_issue_example_is_valid() {
    assert_eq!(job_with(|_| {}), vec![]);
}

#[test]
fn job_rules_name_the_field_and_the_error() {
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, &str, T)] = &[
        (
            "zero cpus",
            |v| v["spec"]["resources"]["cpus"] = json!(0),
            "spec.resources.cpus",
            T::Invalid,
        ),
        (
            "negative memory",
            |v| v["spec"]["resources"]["memory"] = json!("-1Gi"),
            "spec.resources.memory",
            T::Invalid,
        ),
        (
            "unreadable quantity",
            |v| v["spec"]["resources"]["disk"] = json!("lots"),
            "spec.resources.disk",
            T::Invalid,
        ),
        (
            "bad resource name",
            |v| v["spec"]["resources"]["GPUs"] = json!(1),
            "spec.resources.GPUs",
            T::Invalid,
        ),
        (
            "no memory",
            |v| {
                v["spec"]["resources"]
                    .as_object_mut()
                    .map(|o| o.remove("memory"));
            },
            "spec.resources.memory",
            T::Required,
        ),
        (
            "role with a slash",
            |v| v["spec"]["role"] = json!("eng/backend"),
            "spec.role",
            T::Invalid,
        ),
        (
            "empty environment",
            |v| v["spec"]["environment"] = json!(""),
            "spec.environment",
            T::Required,
        ),
        (
            "adhoc with no instances",
            |v| v["spec"]["instances"] = json!(0),
            "spec.instances",
            T::Invalid,
        ),
        (
            "too many instances",
            |v| v["spec"]["instances"] = json!(crate::job::MAX_INSTANCES + 1),
            "spec.instances",
            T::Invalid,
        ),
        (
            "maxTaskFailures below -1",
            |v| v["spec"]["maxTaskFailures"] = json!(-2),
            "spec.maxTaskFailures",
            T::Invalid,
        ),
        (
            "a name too long for the label its tasks carry",
            |v| v["metadata"]["name"] = json!("x".repeat(64)),
            "metadata.name",
            T::Invalid,
        ),
        (
            "empty image",
            |v| v["spec"]["container"]["image"] = json!(""),
            "spec.container.image",
            T::Required,
        ),
        (
            "malformed image",
            |v| v["spec"]["container"]["image"] = json!("Docker.IO/UPPER/case:tag"),
            "spec.container.image",
            T::Invalid,
        ),
        (
            "image with spaces",
            |v| v["spec"]["container"]["image"] = json!("busybox latest"),
            "spec.container.image",
            T::Invalid,
        ),
        (
            "bad env name",
            |v| v["spec"]["container"]["env"] = json!([{"name": "1X", "value": "y"}]),
            "spec.container.env[0].name",
            T::Invalid,
        ),
        (
            "a job asking for the simulated runtime",
            |v| v["spec"]["container"]["runtime"] = json!("simulated"),
            "spec.container.runtime",
            T::NotSupported,
        ),
        (
            "a host process without the host's network",
            |v| {
                v["spec"]["container"]["runtime"] = json!("process");
                v["spec"]["container"]["network"] = json!("none");
            },
            "spec.container.network",
            T::Forbidden,
        ),
        (
            "a user with a space",
            |v| v["spec"]["container"]["user"] = json!("web user"),
            "spec.container.user",
            T::Invalid,
        ),
        (
            "a user with an empty group",
            |v| v["spec"]["container"]["user"] = json!("1000:"),
            "spec.container.user",
            T::Invalid,
        ),
        (
            "a host process with a read-only root",
            |v| {
                v["spec"]["container"]["runtime"] = json!("process");
                v["spec"]["container"]["readOnlyRootFilesystem"] = json!(true);
            },
            "spec.container.readOnlyRootFilesystem",
            T::Forbidden,
        ),
        (
            "duplicate env",
            |v| v["spec"]["container"]["env"] = json!([{"name": "A"}, {"name": "A"}]),
            "spec.container.env[1].name",
            T::Duplicate,
        ),
        (
            "env with a value and a secret",
            |v| v["spec"]["container"]["env"] = json!([{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]),
            "spec.container.env[0].valueFrom",
            T::Invalid,
        ),
        (
            "env from nothing",
            |v| v["spec"]["container"]["env"] = json!([{"name": "A", "valueFrom": {}}]),
            "spec.container.env[0].valueFrom",
            T::Required,
        ),
        (
            "env from two sources",
            |v| v["spec"]["container"]["env"] = json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}, "fieldRef": {"fieldPath": "metadata.name"}}}]),
            "spec.container.env[0].valueFrom",
            T::Forbidden,
        ),
        (
            "fieldRef to a field a task does not have",
            |v| {
                v["spec"]["container"]["env"] =
                    json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}])
            },
            "spec.container.env[0].valueFrom.fieldRef.fieldPath",
            T::NotSupported,
        ),
        (
            "fieldRef against an unknown version",
            |v| v["spec"]["container"]["env"] = json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v2"}}}]),
            "spec.container.env[0].valueFrom.fieldRef.apiVersion",
            T::NotSupported,
        ),
        (
            "endpointRef to a bad job name",
            |v| v["spec"]["container"]["env"] = json!([{"name": "A", "valueFrom": {"endpointRef": {"job": "Spark_Master", "port": "spark"}}}]),
            "spec.container.env[0].valueFrom.endpointRef.job",
            T::Invalid,
        ),
        (
            "endpointRef without a port",
            |v| {
                v["spec"]["container"]["env"] = json!([{"name": "A", "valueFrom": {"endpointRef": {"job": "master", "port": ""}}}])
            },
            "spec.container.env[0].valueFrom.endpointRef.port",
            T::Required,
        ),
        (
            "endpointRef to a bad port name",
            |v| v["spec"]["container"]["env"] = json!([{"name": "A", "valueFrom": {"endpointRef": {"job": "master", "port": "7077"}}}]),
            "spec.container.env[0].valueFrom.endpointRef.port",
            T::Invalid,
        ),
        (
            "secret without a name",
            |v| {
                v["spec"]["container"]["env"] =
                    json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "", "key": "k"}}}])
            },
            "spec.container.env[0].valueFrom.secretKeyRef.name",
            T::Required,
        ),
        (
            "secret with a bad name",
            |v| v["spec"]["container"]["env"] = json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "../etc", "key": "k"}}}]),
            "spec.container.env[0].valueFrom.secretKeyRef.name",
            T::Invalid,
        ),
        (
            "secret with a bad key",
            |v| {
                v["spec"]["container"]["env"] = json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "a/b"}}}])
            },
            "spec.container.env[0].valueFrom.secretKeyRef.key",
            T::Invalid,
        ),
        (
            "relative workingDir",
            |v| v["spec"]["container"]["workingDir"] = json!("tmp"),
            "spec.container.workingDir",
            T::Invalid,
        ),
        (
            "host limit zero",
            |v| v["spec"]["constraints"]["hostLimit"] = json!(0),
            "spec.constraints.hostLimit",
            T::Invalid,
        ),
        (
            "NotIn without values",
            |v| v["spec"]["constraints"]["attributes"][0]["values"] = json!([]),
            "spec.constraints.attributes[0].values",
            T::Required,
        ),
        (
            "Exists with values",
            |v| v["spec"]["constraints"]["attributes"][0]["operator"] = json!("Exists"),
            "spec.constraints.attributes[0].values",
            T::Forbidden,
        ),
        (
            "bad attribute value",
            |v| v["spec"]["constraints"]["attributes"][0]["values"] = json!(["a b"]),
            "spec.constraints.attributes[0].values[0]",
            T::Invalid,
        ),
        (
            "dedicated to another role",
            |v| v["spec"]["constraints"]["dedicated"] = json!("web"),
            "spec.constraints.dedicated",
            T::Forbidden,
        ),
        (
            "cron without schedule",
            |v| v["spec"]["kind"] = json!("cron"),
            "spec.cron",
            T::Required,
        ),
        (
            "schedule on an adhoc job",
            |v| v["spec"]["cron"] = json!({"schedule": "* * * * *"}),
            "spec.cron",
            T::Forbidden,
        ),
        (
            "bad cron expression",
            |v| {
                v["spec"]["kind"] = json!("cron");
                v["spec"]["cron"] = json!({"schedule": "61 * * * *"});
            },
            "spec.cron.schedule",
            T::Invalid,
        ),
        (
            "six-field cron",
            |v| {
                v["spec"]["kind"] = json!("cron");
                v["spec"]["cron"] = json!({"schedule": "0 */5 * * * *"});
            },
            "spec.cron.schedule",
            T::Invalid,
        ),
        (
            "unknown time zone",
            |v| {
                v["spec"]["kind"] = json!("cron");
                v["spec"]["cron"] = json!({"schedule": "*/5 * * * *", "timezone": "Mars/Olympus"});
            },
            "spec.cron.timezone",
            T::Invalid,
        ),
        (
            "zero assign timeout",
            |v| v["spec"]["timeouts"] = json!({"assignSeconds": 0}),
            "spec.timeouts.assignSeconds",
            T::Invalid,
        ),
        (
            "huge partition delay",
            |v| v["spec"]["partitionPolicy"] = json!({"reschedule": true, "delaySeconds": 100_000}),
            "spec.partitionPolicy.delaySeconds",
            T::Invalid,
        ),
        (
            "empty update batch",
            |v| v["spec"]["update"] = json!({"batchSize": 0}),
            "spec.update.batchSize",
            T::Invalid,
        ),
        (
            "a negative disruption budget",
            |v| v["spec"]["disruptionBudget"] = json!({"maxUnavailable": -1}),
            "spec.disruptionBudget.maxUnavailable",
            T::Invalid,
        ),
        (
            "a disruption budget over 100%",
            |v| v["spec"]["disruptionBudget"] = json!({"maxUnavailable": "150%"}),
            "spec.disruptionBudget.maxUnavailable",
            T::Invalid,
        ),
        (
            "a gang larger than the job",
            |v| v["spec"]["gang"] = json!({"minInstances": 99}),
            "spec.gang.minInstances",
            T::Invalid,
        ),
        (
            "a port name in upper case",
            |v| v["spec"]["ports"] = json!([{"name": "HTTP"}]),
            "spec.ports[0].name",
            T::Invalid,
        ),
        (
            "a port name twice",
            |v| v["spec"]["ports"] = json!([{"name": "http"}, {"name": "http"}]),
            "spec.ports[1].name",
            T::Duplicate,
        ),
        (
            "a fixed port twice",
            |v| v["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}]),
            "spec.ports[1].port",
            T::Duplicate,
        ),
        (
            "port zero",
            |v| v["spec"]["ports"] = json!([{"name": "http", "port": 0}]),
            "spec.ports[0].port",
            T::Invalid,
        ),
        (
            "ports without a network",
            |v| {
                v["spec"]["ports"] = json!([{"name": "http"}]);
                v["spec"]["container"]["network"] = json!("none");
            },
            "spec.ports",
            T::Forbidden,
        ),
        (
            "a variable its ports set",
            |v| {
                v["spec"]["ports"] = json!([{"name": "http"}]);
                v["spec"]["container"]["env"] = json!([{"name": "PORT0", "value": "80"}]);
            },
            "spec.container.env[0].name",
            T::Invalid,
        ),
        (
            "a health check of no kind",
            |v| v["spec"]["healthCheck"] = json!({"periodSeconds": 2}),
            "spec.healthCheck",
            T::Required,
        ),
        (
            "a health check of two kinds",
            |v| {
                v["spec"]["ports"] = json!([{"name": "http"}]);
                v["spec"]["healthCheck"] =
                    json!({"tcp": {"port": "http"}, "exec": {"command": ["true"]}});
            },
            "spec.healthCheck",
            T::Forbidden,
        ),
        (
            "a health check on a port the job does not name",
            |v| v["spec"]["healthCheck"] = json!({"http": {"port": "http", "path": "/health"}}),
            "spec.healthCheck.http.port",
            T::Invalid,
        ),
        (
            "a relative health path",
            |v| {
                v["spec"]["ports"] = json!([{"name": "http"}]);
                v["spec"]["healthCheck"] = json!({"http": {"port": "http", "path": "health"}});
            },
            "spec.healthCheck.http.path",
            T::Invalid,
        ),
        (
            "an empty health command",
            |v| v["spec"]["healthCheck"] = json!({"exec": {"command": []}}),
            "spec.healthCheck.exec.command",
            T::Required,
        ),
        (
            "a zero period",
            |v| {
                v["spec"]["healthCheck"] =
                    json!({"exec": {"command": ["true"]}, "periodSeconds": 0})
            },
            "spec.healthCheck.periodSeconds",
            T::Invalid,
        ),
        (
            "a zero failure threshold",
            |v| {
                v["spec"]["healthCheck"] =
                    json!({"exec": {"command": ["true"]}, "failureThreshold": 0})
            },
            "spec.healthCheck.failureThreshold",
            T::Invalid,
        ),
        (
            "too many ports",
            |v| {
                let ports: Vec<Value> = (0..17).map(|i| json!({"name": format!("p{i}")})).collect();
                v["spec"]["ports"] = json!(ports);
            },
            "spec.ports",
            T::TooMany,
        ),
    ];
    for (name, edit, field, type_) in cases {
        let errs = job_with(*edit);
        assert_eq!(
            fields(&errs),
            vec![(field.to_string(), *type_)],
            "{name}: {errs:?}"
        );
    }
}

#[test]
fn valid_variants_pass() {
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit)] = &[
        ("half a cpu as a number", |v| {
            v["spec"]["resources"]["cpus"] = json!(0.5)
        }),
        ("millicores", |v| {
            v["spec"]["resources"]["cpus"] = json!("500m")
        }),
        ("extended resource", |v| {
            v["spec"]["resources"]["gpus"] = json!(1)
        }),
        ("domain resource", |v| {
            v["spec"]["resources"]["example.com/fpga"] = json!(1)
        }),
        ("image by digest", |v| {
            v["spec"]["container"]["image"] = json!(
                "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            )
        }),
        ("short image", |v| {
            v["spec"]["container"]["image"] = json!("busybox")
        }),
        ("registry with port", |v| {
            v["spec"]["container"]["image"] = json!("localhost:5000/team/app:v1.2")
        }),
        ("service scaled to zero", |v| {
            v["spec"]["kind"] = json!("service");
            v["spec"]["instances"] = json!(0);
        }),
        ("cron in a time zone", |v| {
            v["spec"]["kind"] = json!("cron");
            v["spec"]["cron"] = json!({"schedule": "0 2 * * 1-5", "timezone": "Europe/Paris", "collisionPolicy": "RUN_OVERLAP", "missedRunPolicy": "RUN_ONCE"});
        }),
        ("cron macro", |v| {
            v["spec"]["kind"] = json!("cron");
            v["spec"]["cron"] = json!({"schedule": "@daily"});
        }),
        ("unlimited failures", |v| {
            v["spec"]["maxTaskFailures"] = json!(-1)
        }),
        ("dedicated to own role", |v| {
            v["spec"]["constraints"]["dedicated"] = json!("analytics")
        }),
        ("the issue's health check", |v| {
            v["spec"]["ports"] = json!([{"name": "http"}, {"name": "admin", "port": 9090}]);
            v["spec"]["healthCheck"] = json!({"http": {"port": "http", "path": "/health"}, "initialDelaySeconds": 1,
                "periodSeconds": 2, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3});
        }),
        (
            "named ports, one fixed",
            |v| v["spec"]["ports"] = json!([{"name": "http"}, {"name": "admin", "port": 9090}]),
        ),
        (
            "a Spark worker's environment: its node and its master",
            |v| {
                v["spec"]["container"]["env"] = json!([
                    {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}},
                    {"name": "MASTER", "valueFrom": {"endpointRef": {"job": "spark-master", "port": "spark"}}},
                ])
            },
        ),
    ];
    for (name, edit) in cases {
        assert_eq!(job_with(*edit), vec![], "{name}");
    }
}

#[test]
fn several_problems_are_all_reported() {
    let errs = job_with(|v| {
        v["spec"]["resources"]["cpus"] = json!(0);
        v["spec"]["instances"] = json!(0);
        v["spec"]["container"]["image"] = json!("");
    });
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(
        errs.iter()
            .find(|e| e.field == "spec.instances")
            .map(ToString::to_string)
            .as_deref(),
        Some("spec.instances: Invalid value: 0: must be between 1 and 100000")
    );
}

#[test]
fn a_jobs_kind_and_role_are_immutable() {
    let old: Job = serde_json::from_value(job_json()).expect("job");
    let mut new = old.clone();
    new.spec.kind = crate::JobKind::Service;
    new.spec.role = "web".into();
    new.spec.instances = 3;
    let errs = validate_job_update(&new, &old);
    assert_eq!(
        fields(&errs),
        vec![
            ("spec.kind".into(), T::Invalid),
            ("spec.role".into(), T::Invalid)
        ]
    );
    assert!(errs.iter().all(|e| e.detail == "field is immutable"));
}

fn task_json() -> Value {
    json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "sparkie-0-abcde", "namespace": "analytics"},
        "spec": {
            "job": "sparkie", "role": "analytics", "instanceId": 0,
            "resources": {"cpus": 1, "memory": "5120Mi"},
            "container": {"image": "docker.io/library/sparkie:image"}
        }
    })
}

#[test]
fn a_tasks_node_name_is_set_once_and_the_rest_never_changes() {
    let pending: Task = serde_json::from_value(task_json()).expect("task");
    assert_eq!(validate_task(&pending), vec![]);
    let mut bound = pending.clone();
    bound.spec.node_name = Some("n1".into());
    assert_eq!(validate_task_update(&bound, &pending), vec![]);
    let mut moved = bound.clone();
    moved.spec.node_name = Some("n2".into());
    assert_eq!(
        fields(&validate_task_update(&moved, &bound)),
        vec![("spec.nodeName".into(), T::Invalid)]
    );
    let mut resized = bound.clone();
    resized.spec.resources = crate::Resources::new()
        .with("cpus", crate::Quantity::from_units(2))
        .with("memory", crate::Quantity::from_text("1Gi"));
    assert_eq!(
        fields(&validate_task_update(&resized, &bound)),
        vec![("spec.resources".into(), T::Invalid)]
    );
    let mut ported = bound.clone();
    ported.spec.ports = vec![crate::ports::PortSpec {
        name: "http".into(),
        port: None,
    }];
    assert_eq!(
        fields(&validate_task_update(&ported, &bound)),
        vec![("spec.ports".into(), T::Invalid)]
    );
}

#[test]
fn task_history_is_bounded() {
    let mut task: Task = serde_json::from_value(task_json()).expect("task");
    let mut status = crate::TaskStatus::default();
    for i in 0..(crate::task::MAX_TASK_EVENTS + 10) {
        status.push_event(crate::TaskEvent {
            timestamp: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(i64::try_from(i).expect("small"))
                    .expect("time"),
            ),
            status: crate::TaskPhase::Pending,
            message: format!("event {i}"),
            actor: "test".into(),
        });
    }
    assert_eq!(status.task_events.len(), crate::task::MAX_TASK_EVENTS);
    assert_eq!(
        status.task_events[0].message, "event 10",
        "the oldest events are dropped first"
    );
    task.status = Some(status.clone());
    assert_eq!(validate_task(&task), vec![]);
    status.task_events.push(status.task_events[0].clone());
    task.status = Some(status);
    assert_eq!(
        fields(&validate_task(&task)),
        vec![("status.taskEvents".into(), T::TooMany)]
    );
}

#[test]
fn role_quota_reservation_and_node_rules() {
    let role = |v: Value| -> Vec<(String, T)> {
        fields(&validate_role(
            &serde_json::from_value::<Role>(v).expect("role"),
        ))
    };
    assert_eq!(
        role(
            json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "analytics"}, "spec": {"weight": 2, "parent": "eng"}})
        ),
        vec![]
    );
    assert_eq!(
        role(
            json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "analytics"}, "spec": {}})
        ),
        vec![],
        "weight defaults to 1"
    );
    assert_eq!(
        role(
            json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "a"}, "spec": {"weight": 0}})
        ),
        vec![("spec.weight".into(), T::Invalid)]
    );
    assert_eq!(
        role(
            json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "a"}, "spec": {"parent": "a"}})
        ),
        vec![("spec.parent".into(), T::Invalid)]
    );
    assert_eq!(
        role(
            json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": "A_b"}, "spec": {}})
        ),
        vec![("metadata.name".into(), T::Invalid)]
    );

    let quota = |spec: Value| -> Vec<(String, T)> {
        fields(&validate_quota(&serde_json::from_value::<Quota>(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Quota", "metadata": {"name": "q"}, "spec": spec})).expect("quota")))
    };
    assert_eq!(
        quota(
            json!({"role": "analytics", "guarantee": {"cpus": 4, "memory": "8Gi"}, "limit": {"cpus": 8, "memory": "16Gi"}})
        ),
        vec![]
    );
    assert_eq!(
        quota(json!({"role": "analytics", "guarantee": {"cpus": 9}, "limit": {"cpus": 8}})),
        vec![("spec.guarantee.cpus".into(), T::Invalid)]
    );
    assert_eq!(
        quota(json!({"role": "analytics", "limit": {"cpus": -1}})),
        vec![("spec.limit.cpus".into(), T::Invalid)]
    );
    assert_eq!(
        quota(json!({"role": "analytics", "borrowingLimit": {"cpus": -1}})),
        vec![("spec.borrowingLimit.cpus".into(), T::Invalid)]
    );
    assert_eq!(
        quota(json!({"role": "analytics", "borrow": false, "borrowingLimit": {"cpus": 2}})),
        vec![("spec.borrowingLimit".into(), T::Invalid)]
    );
    assert_eq!(
        quota(json!({"role": "", "limit": {"cpus": 0}})),
        vec![("spec.role".into(), T::Required)]
    );

    let rsv = |spec: Value| -> Vec<(String, T)> {
        fields(&validate_reservation(&serde_json::from_value::<Reservation>(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Reservation", "metadata": {"name": "r"}, "spec": spec})).expect("reservation")))
    };
    assert_eq!(
        rsv(
            json!({"node": "n1", "role": "analytics", "resources": {"cpus": 2, "memory": "2Gi"}, "labels": {"purpose": "spark"}})
        ),
        vec![]
    );
    assert_eq!(
        rsv(json!({"node": "n1", "role": "analytics", "resources": {}})),
        vec![("spec.resources".into(), T::Required)]
    );
    assert_eq!(
        rsv(json!({"node": "N 1", "role": "analytics", "resources": {"cpus": 1}})),
        vec![("spec.node".into(), T::Invalid)]
    );
    assert_eq!(
        rsv(
            json!({"node": "n1", "role": "analytics", "resources": {"cpus": 1}, "labels": {"purpose": "two words"}})
        ),
        vec![("spec.labels[purpose]".into(), T::Invalid)]
    );

    let node: Node = serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"attributes": {"rack": "r1", "zone": "a"}},
        "status": {"total": {"cpus": 8, "memory": "16Gi"}, "allocatable": {"cpus": 7, "memory": "15Gi"}, "staticReservations": [{"role": "analytics", "resources": {"cpus": 0}}]}})).expect("node");
    assert_eq!(
        fields(&validate_node(&node)),
        vec![(
            "status.staticReservations[0].resources.cpus".into(),
            T::Invalid
        )]
    );
    let node: Node = serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {}, "status": {"portRanges": [{"begin": 31000, "end": 32000}, {"begin": 9, "end": 8}, {"begin": 0, "end": 10}],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": ""}]}})).expect("node");
    assert_eq!(
        fields(&validate_node(&node)),
        vec![
            ("status.portRanges[1]".into(), T::Invalid),
            ("status.portRanges[2]".into(), T::Invalid),
            ("status.addresses[1].address".into(), T::Invalid),
        ]
    );
    let node: Node = serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"maintenance": {"start": "2026-12-07T12:00:00Z", "durationSeconds": 0, "drainAheadSeconds": 700_000}}})).expect("node");
    assert_eq!(
        fields(&validate_node(&node)),
        vec![
            ("spec.maintenance.durationSeconds".into(), T::Invalid),
            ("spec.maintenance.drainAheadSeconds".into(), T::Invalid),
        ]
    );
}

#[test]
fn remembered_image_references_answer_as_the_grammar_does() {
    let image = |i: &str| {
        job_with(|v| v["spec"]["container"]["image"] = json!(i))
            .into_iter()
            .map(|e| e.field)
            .collect::<Vec<_>>()
    };
    // Asked twice, so the second answer may come from memory.
    for _ in 0..2 {
        assert_eq!(
            image("docker.io/library/busybox:1.36"),
            Vec::<String>::new()
        );
        assert_eq!(
            image(
                "registry.local:5000/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            image("Docker.IO/UPPER/case:tag"),
            vec!["spec.container.image"]
        );
    }
    // More distinct references than are remembered: still all accepted, and
    // the memory stays bounded.
    for i in 0..(rules::ACCEPTED_IMAGES + 10) {
        assert_eq!(image(&format!("app-{i}:v1")), Vec::<String>::new());
    }
    assert!(rules::accepted_images() <= rules::ACCEPTED_IMAGES);
}

#[test]
fn a_long_job_name_is_refused_when_made_but_a_stored_one_still_updates() {
    let mut v = job_json();
    v["metadata"]["name"] = json!("x".repeat(64));
    let long: Job = serde_json::from_value(v).expect("decodes");
    assert_eq!(
        fields(&validate_job(&long)),
        [("metadata.name".to_string(), T::Invalid)]
    );
    let mut scaled = long.clone();
    scaled.spec.instances = 3;
    assert_eq!(validate_job_update(&scaled, &long), vec![]);
}
