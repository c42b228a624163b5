//! Table tests: a Spark executor's Pod maps onto a Task whole, and each
//! thing a Task cannot be is a field error on the Pod's path.

use serde_json::{Value, json};

use super::*;
use crate::validation::FieldErrorType as T;

/// An executor Pod as Spark 4's Kubernetes backend sends it, built on a pod
/// template that runs it as a host process.
fn executor() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "sum-3f0c9a1b2c4d5e6f-exec-1", "namespace": "analytics", "uid": "u-1",
            "labels": {"spark-app-selector": "spark-123", "spark-role": "executor",
                       "spark-exec-id": "1", "corral.dev/role": "analytics"},
            "annotations": {"corral.dev/runtime": "process"}
        },
        "spec": {
            "restartPolicy": "Never",
            "hostname": "sum-3f0c9a1b2c4d5e6f-exec-1",
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "spark-kubernetes-executor",
                "image": "spark:corral",
                "command": ["/opt/corral/spark/k8s-executor.sh"],
                "args": ["executor"],
                "env": [
                    {"name": "SPARK_EXECUTOR_POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                    {"name": "SPARK_EXECUTOR_POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                    {"name": "SPARK_EXECUTOR_ID", "value": "1"},
                    {"name": "SPARK_DRIVER_URL", "value": "spark://CoarseGrainedScheduler@10.0.0.1:7078"}
                ],
                "resources": {"requests": {"cpu": "1", "memory": "896Mi"}, "limits": {"memory": "896Mi"}},
                "volumeMounts": [{"name": "spark-local-dir-1", "mountPath": "/var/data/spark-1"},
                                 {"name": "spark-conf-volume-exec", "mountPath": "/opt/spark/conf"}]
            }],
            "volumes": [
                {"name": "spark-local-dir-1", "emptyDir": {}},
                {"name": "spark-conf-volume-exec", "configMap": {"name": "spark-exec-conf-map"}}
            ]
        }
    })
}

fn task_with(
    edit: impl FnOnce(&mut Value),
    default_role: Option<&str>,
) -> Result<Task, Vec<FieldError>> {
    let mut v = executor();
    edit(&mut v);
    let pod: Pod = serde_json::from_value(v).expect("a pod");
    task_for(&pod, default_role)
}

#[test]
fn a_spark_executor_pod_is_one_task_owned_by_it() {
    let task = task_with(|_| {}, None).expect("it maps");
    assert_eq!(
        task.metadata.name.as_deref(),
        Some("sum-3f0c9a1b2c4d5e6f-exec-1")
    );
    assert_eq!(task.metadata.namespace.as_deref(), Some("analytics"));
    let owner = &task.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Pod", "u-1", Some(true))
    );
    assert_eq!(task.spec.role, "analytics");
    assert_eq!(task.spec.tier, Tier::Preemptible);
    assert_eq!(
        task.spec
            .resources
            .get(CPUS)
            .map(Quantity::as_written)
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        task.spec
            .resources
            .get(MEMORY)
            .map(Quantity::as_written)
            .as_deref(),
        Some("896Mi")
    );
    let c = &task.spec.container;
    assert_eq!(c.runtime, Some(RuntimeKind::Process));
    assert_eq!(c.command, ["/opt/corral/spark/k8s-executor.sh"]);
    assert_eq!(c.args, ["executor"]);
    assert_eq!(c.kill_grace_period_seconds, Some(30));
    // The pod's IP is its node's: the task reads its node's address.
    let fields: Vec<(&str, Option<&str>)> = c
        .env
        .iter()
        .map(|e| (e.name.as_str(), e.field().map(|f| f.field_path.as_str())))
        .collect();
    assert_eq!(
        fields,
        [
            ("SPARK_EXECUTOR_POD_IP", Some("status.hostIP")),
            ("SPARK_EXECUTOR_POD_NAME", Some("metadata.name")),
            ("SPARK_EXECUTOR_ID", None),
            ("SPARK_DRIVER_URL", None),
        ]
    );
    assert_eq!(
        task.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("spark-role"))
            .map(String::as_str),
        Some("executor")
    );
}

#[test]
fn labels_annotations_and_the_namespace_default_say_role_tier_priority_and_user() {
    let task = task_with(
        |v| {
            v["metadata"]["labels"] =
                json!({"corral.dev/tier": "preferred", "corral.dev/priority": "7"});
            v["spec"]["securityContext"] = json!({"runAsUser": 1000, "runAsGroup": 100});
            v["spec"]["nodeSelector"] = json!({"rack": "r1"});
            v["spec"]["containers"][0]["resources"] =
                json!({"limits": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "2Gi"}});
        },
        Some("web"),
    )
    .expect("it maps");
    assert_eq!(
        (task.spec.role.as_str(), task.spec.tier, task.spec.priority),
        ("web", Tier::Preferred, 7)
    );
    assert_eq!(task.spec.container.user.as_deref(), Some("1000:100"));
    assert_eq!(
        task.spec
            .resources
            .get(DISK)
            .map(Quantity::as_written)
            .as_deref(),
        Some("2Gi")
    );
    assert_eq!(task.spec.constraints.attributes[0].values, ["r1"]);
    // The larger of request and limit.
    let task = task_with(
        |v| v["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}),
        None,
    )
    .expect("it maps");
    assert_eq!(
        task.spec
            .resources
            .get(CPUS)
            .map(Quantity::as_written)
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        task.spec
            .resources
            .get(MEMORY)
            .map(Quantity::as_written)
            .as_deref(),
        Some("2Gi")
    );
}

#[test]
fn what_a_task_cannot_be_is_an_error_on_the_pods_path() {
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, &str, T)] = &[
        (
            "no role anywhere",
            |v| v["metadata"]["labels"] = json!({}),
            "metadata.labels[corral.dev/role]",
            T::Required,
        ),
        (
            "a name with a dot",
            |v| v["metadata"]["name"] = json!("a.b"),
            "metadata.name",
            T::Invalid,
        ),
        (
            "an unknown tier",
            |v| v["metadata"]["labels"]["corral.dev/tier"] = json!("gold"),
            "metadata.labels[corral.dev/tier]",
            T::NotSupported,
        ),
        (
            "a priority that is no number",
            |v| v["metadata"]["labels"]["corral.dev/priority"] = json!("high"),
            "metadata.labels[corral.dev/priority]",
            T::Invalid,
        ),
        (
            "a simulated runtime",
            |v| v["metadata"]["annotations"]["corral.dev/runtime"] = json!("simulated"),
            "metadata.annotations[corral.dev/runtime]",
            T::NotSupported,
        ),
        (
            "restarts",
            |v| v["spec"]["restartPolicy"] = json!("Always"),
            "spec.restartPolicy",
            T::NotSupported,
        ),
        (
            "two containers",
            |v| {
                let c = v["spec"]["containers"][0].clone();
                v["spec"]["containers"] = json!([c.clone(), c]);
            },
            "spec.containers",
            T::Invalid,
        ),
        (
            "an init container",
            |v| v["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]),
            "spec.initContainers",
            T::Forbidden,
        ),
        (
            "a host path",
            |v| v["spec"]["volumes"] = json!([{"name": "etc", "hostPath": {"path": "/etc"}}]),
            "spec.volumes[0]",
            T::Forbidden,
        ),
        (
            "no cpu",
            |v| v["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "1Gi"}}),
            "spec.containers[0].resources.requests[cpu]",
            T::Required,
        ),
        (
            "no memory",
            |v| v["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1"}}),
            "spec.containers[0].resources.requests[memory]",
            T::Required,
        ),
        (
            "a field the task has not",
            |v| v["spec"]["containers"][0]["env"] = json!([{"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}}]),
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
            T::NotSupported,
        ),
        (
            "a config map key",
            |v| {
                v["spec"]["containers"][0]["env"] = json!([{"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}])
            },
            "spec.containers[0].env[0].valueFrom",
            T::Forbidden,
        ),
        (
            "envFrom",
            |v| v["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "c"}}]),
            "spec.containers[0].envFrom",
            T::Forbidden,
        ),
        (
            "privileged",
            |v| v["spec"]["containers"][0]["securityContext"] = json!({"privileged": true}),
            "spec.containers[0].securityContext.privileged",
            T::Forbidden,
        ),
        (
            "a task rule: zero cpus",
            |v| {
                v["spec"]["containers"][0]["resources"] =
                    json!({"requests": {"cpu": "0", "memory": "1Gi"}})
            },
            "spec.containers[0]",
            T::Invalid,
        ),
    ];
    for (name, edit, field, type_) in cases {
        let errs = task_with(*edit, None).expect_err(name);
        assert!(
            errs.iter().any(|e| e.field == *field && e.type_ == *type_),
            "{name}: want {field} {type_:?}, got {errs:?}"
        );
    }
}
