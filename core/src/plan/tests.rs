use serde_json::json;

use super::*;

fn node(name: &str, cpus: i64) -> Node {
    serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node", "metadata": {"name": name},
        "spec": {}, "status": {"allocatable": {"cpus": cpus, "memory": "64Gi"}, "total": {"cpus": cpus, "memory": "64Gi"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}]}}))
    .expect("node")
}

fn running(name: &str, role: &str, tier: &str, cpus: i64, on: &str) -> Task {
    serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": "batch", "creationTimestamp": "2026-12-07T00:00:00Z"},
        "spec": {"job": "etl", "role": role, "instanceId": 0, "tier": tier, "resources": {"cpus": cpus, "memory": "1Gi"},
                 "container": {"image": "x"}, "nodeName": on},
        "status": {"phase": "RUNNING", "taskEvents": [
            {"timestamp": "2026-12-07T00:00:00.000000Z", "status": "RUNNING", "message": "", "actor": "agent"}]}}))
    .expect("task")
}

fn pending(name: &str, role: &str, cpus: i64) -> Task {
    serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": "batch", "creationTimestamp": "2026-12-07T00:00:00Z"},
        "spec": {"job": "queued", "role": role, "instanceId": 0, "resources": {"cpus": cpus, "memory": "1Gi"},
                 "container": {"image": "x"}},
        "status": {"phase": "PENDING", "taskEvents": [
            {"timestamp": "2026-12-07T00:00:00.000000Z", "status": "PENDING", "message": "", "actor": "jobs"}]}}))
    .expect("task")
}

fn role(name: &str) -> Role {
    serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role", "metadata": {"name": name}, "spec": {}}),
    )
    .expect("role")
}

fn quota(role: &str, limit_cpus: i64) -> Quota {
    serde_json::from_value(
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Quota", "metadata": {"name": role},
        "spec": {"role": role, "limit": {"cpus": limit_cpus}}}),
    )
    .expect("quota")
}

fn job(instances: u32, tier: &str, cpus: i64) -> Job {
    serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": "api", "namespace": "web"},
        "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": instances, "tier": tier,
                 "resources": {"cpus": cpus, "memory": "1Gi"}, "container": {"image": "x"}}}))
    .expect("job")
}

fn settings() -> Settings {
    Settings {
        policy: Policy::BinPack,
        rules: Rules::default(),
    }
}

fn now() -> jiff::Timestamp {
    "2026-12-07T12:00:00Z".parse().expect("time")
}

#[test]
fn a_job_plan_places_names_its_victims_and_explains_what_waits() {
    let nodes = [node("n1", 4), node("n2", 2)].map(Arc::new);
    let tasks = [running("etl-0-0", "batch", "preemptible", 3, "n1")].map(Arc::new);
    let roles = [role("web"), role("batch")];
    let world = World {
        nodes: &nodes,
        reservations: &[],
        roles: &roles,
        quotas: &[],
        tasks: &tasks,
    };
    let plan = plan(&world, &[job(3, "preferred", 2)], &[], settings(), now());
    assert_eq!(plan.nodes, 2);
    assert_eq!(plan.instances.len(), 3, "{plan:#?}");
    let by = |i: u32| &plan.instances[i as usize];
    assert_eq!(by(0).node.as_deref(), Some("n2"), "{plan:#?}");
    assert!(by(0).preempts.is_empty());
    assert_eq!(by(1).node.as_deref(), Some("n1"));
    assert_eq!(
        by(1).preempts,
        vec![PlannedVictim {
            task: "batch/etl-0-0".into(),
            role: "batch".into(),
            rule: "lower tier".into()
        }]
    );
    assert!(by(2).node.is_none());
    assert!(by(2).pending.is_some(), "the third waits, explained");
    let web = plan.roles.iter().find(|r| r.role == "web").expect("web");
    assert_eq!(
        web.after.get("cpus").map(|q| q.to_string()),
        Some("4".into())
    );
}

#[test]
fn a_quota_plan_starts_what_waits_and_flags_a_lowered_limit() {
    let nodes = [node("n1", 8)].map(Arc::new);
    let tasks = [
        running("etl-0-0", "batch", "preemptible", 3, "n1"),
        pending("queued-0-0", "batch", 2),
    ]
    .map(Arc::new);
    let roles = [role("batch")];
    let quotas = [quota("batch", 3)];
    let world = World {
        nodes: &nodes,
        reservations: &[],
        roles: &roles,
        quotas: &quotas,
        tasks: &tasks,
    };
    // Raised: the waiting task would start.
    let raised = plan(&world, &[], &[quota("batch", 6)], settings(), now());
    assert_eq!(
        raised.started,
        vec![PlannedStart {
            task: "batch/queued-0-0".into(),
            node: "n1".into()
        }]
    );
    // Lowered below what runs: nothing starts, the role is over it.
    let lowered = plan(&world, &[], &[quota("batch", 2)], settings(), now());
    assert!(lowered.started.is_empty());
    let batch = lowered
        .roles
        .iter()
        .find(|r| r.role == "batch")
        .expect("batch");
    assert_eq!(batch.over_limit, vec!["cpus".to_owned()]);
    assert_eq!(batch.beyond_limit, vec!["batch/etl-0-0".to_owned()]);
}
