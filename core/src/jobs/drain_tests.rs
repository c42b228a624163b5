//! How a job meets a drain: a service's instance leaving a draining node
//! gets its replacement first; an update's batch stays within the budget.

use serde_json::json;

use super::*;

fn job(kind: &str, instances: u32, extra: serde_json::Value) -> Job {
    let mut v = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "j", "namespace": "default"},
        "spec": {"role": "r", "environment": "prod", "kind": kind, "instances": instances,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"}}});
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(v).expect("job")
}

fn running(instance: u32, attempt: u32, leaving: bool, template: Option<&str>) -> TaskView {
    TaskView {
        name: task_name("j", instance, attempt),
        instance,
        attempt,
        phase: TaskPhase::Running,
        displaced: false,
        assigned: Some(1),
        flapped: false,
        ended: None,
        template: template.map(str::to_owned),
        healthy_since: Some(1),
        leaving,
    }
}

#[test]
fn a_leaving_service_instance_is_replaced_before_it_goes() {
    let tasks = [running(0, 0, true, None), running(1, 0, false, None)];
    let p = reconcile(&job("service", 2, json!({})), &tasks, 10);
    assert_eq!(p.create, vec![(0, 1)], "a replacement for instance 0");
    assert!(
        p.kill.is_empty(),
        "the leaving task is the drain's to evict"
    );
    // Once made, the replacement covers the instance: no second one.
    let mut with_replacement = tasks.to_vec();
    with_replacement.push(TaskView {
        phase: TaskPhase::Pending,
        healthy_since: None,
        ..running(0, 1, false, None)
    });
    let p = reconcile(&job("service", 2, json!({})), &with_replacement, 10);
    assert!(p.create.is_empty(), "{:?}", p.create);
}

#[test]
fn a_leaving_batch_task_is_not_run_twice() {
    let tasks = [running(0, 0, true, None)];
    let p = reconcile(&job("adhoc", 1, json!({})), &tasks, 10);
    assert!(p.create.is_empty(), "{:?}", p.create);
}

#[test]
fn an_update_batch_stays_within_the_disruption_budget() {
    let budgeted = job(
        "service",
        4,
        json!({"update": {"batchSize": 3}, "disruptionBudget": {"maxUnavailable": 1}}),
    );
    let old = "0000";
    let tasks: Vec<TaskView> = (0..4).map(|i| running(i, 0, false, Some(old))).collect();
    let p = reconcile(&budgeted, &tasks, 10);
    assert_eq!(
        p.restart.len(),
        1,
        "batch 3 capped at the budget: {:?}",
        p.restart
    );
    let unbudgeted = job("service", 4, json!({"update": {"batchSize": 3}}));
    assert_eq!(reconcile(&unbudgeted, &tasks, 10).restart.len(), 3);
}

#[test]
fn a_replacement_for_a_drain_called_off_goes_again() {
    let tasks = [running(0, 0, false, None), running(0, 1, false, None)];
    let p = reconcile(&job("service", 1, json!({})), &tasks, 10);
    assert_eq!(p.kill, vec![task_name("j", 0, 1)], "the newer copy goes");
    assert!(p.create.is_empty());
    // While the older one is still leaving, both stay.
    let tasks = [running(0, 0, true, None), running(0, 1, false, None)];
    assert!(
        reconcile(&job("service", 1, json!({})), &tasks, 10)
            .kill
            .is_empty()
    );
}
