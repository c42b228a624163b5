//! Table tests: the action for each pod × task situation, and the status a
//! Pod shows for each task phase.

use corral_api::task::{PendingExplanation, TaskEvent, TaskStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde_json::json;

use super::*;

fn now() -> jiff::Timestamp {
    "2026-12-07T12:00:00Z".parse().expect("a time")
}

fn pod(deleting: bool, held: bool) -> Pod {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "exec-1", "namespace": "a", "uid": "p1"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}
    }))
    .expect("a pod");
    if deleting {
        p.metadata.deletion_timestamp = Some(Time(now()));
    }
    if held {
        p.metadata.finalizers = Some(vec![TASK_FINALIZER.to_owned()]);
    }
    p
}

/// A pod placed on n1 and running.
fn placed() -> Pod {
    let mut p = pod(false, true);
    p.spec.as_mut().expect("spec").node_name = Some("n1".into());
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..PodStatus::default()
    });
    p
}

fn task(phases: &[TaskPhase], node: Option<&str>) -> Task {
    let mut t: Task = serde_json::from_value(json!({
        "metadata": {"name": "exec-1", "namespace": "a"},
        "spec": {"job": "exec-1", "role": "r", "instanceId": 0, "resources": {"cpus": 1, "memory": "1Gi"},
                 "container": {"image": "i", "command": ["x"]}}
    }))
    .expect("a task");
    t.spec.node_name = node.map(str::to_owned);
    let mut status = TaskStatus {
        host_ip: node.map(|_| "10.0.0.5".to_owned()),
        ..TaskStatus::default()
    };
    for (i, p) in phases.iter().enumerate() {
        status.phase = Some(*p);
        let at = now() + jiff::SignedDuration::from_secs(i64::try_from(i).unwrap_or(0));
        status.task_events.push(TaskEvent {
            timestamp: MicroTime(at),
            status: *p,
            message: String::new(),
            actor: "test".into(),
        });
    }
    t.status = Some(status);
    t
}

fn kinds(actions: &[PodAction]) -> Vec<&'static str> {
    actions
        .iter()
        .map(|a| match a {
            PodAction::CreateTask => "create",
            PodAction::SetNode(_) => "node",
            PodAction::WriteStatus(_) => "status",
            PodAction::ExplainPending(_) => "explain",
            PodAction::KillTask => "kill",
            PodAction::DeletePod => "delete",
            PodAction::Release => "release",
        })
        .collect()
}

use TaskPhase::*;

#[test]
fn each_situation_has_its_actions() {
    let running = task(&[Pending, Assigned, Starting, Running], Some("n1"));
    let cases: Vec<(&str, Pod, Option<Task>, Vec<&str>)> = vec![
        ("a new pod", pod(false, true), None, vec!["create"]),
        (
            "bound and running",
            pod(false, true),
            Some(running.clone()),
            vec!["node", "status"],
        ),
        (
            "deleted while running",
            pod(true, true),
            Some(running.clone()),
            vec!["kill"],
        ),
        (
            "deleted while being killed",
            pod(true, true),
            Some(task(&[Pending, Assigned, Running, Killing], Some("n1"))),
            vec![],
        ),
        (
            "deleted and its task ended: its end, then released",
            pod(true, true),
            Some(task(
                &[Pending, Assigned, Running, Killing, Killed],
                Some("n1"),
            )),
            vec!["status", "release"],
        ),
        (
            "deleted before any task",
            pod(true, true),
            None,
            vec!["release"],
        ),
        (
            "placed, and its task deleted",
            placed(),
            None,
            vec!["status"],
        ),
        ("deleted and released", pod(true, false), None, vec![]),
        (
            "preempted",
            pod(false, true),
            Some(task(&[Pending, Assigned, Running, Preempting], Some("n1"))),
            vec!["delete", "node", "status"],
        ),
        (
            "killed after a drain",
            pod(false, true),
            Some(task(
                &[Pending, Assigned, Running, Draining, Killed],
                Some("n1"),
            )),
            vec!["delete", "node", "status"],
        ),
        (
            "lost with its node",
            pod(false, true),
            Some(task(&[Pending, Assigned, Running, Lost], Some("n1"))),
            vec!["delete", "node", "status"],
        ),
        (
            "failed by itself",
            pod(false, true),
            Some(task(&[Pending, Assigned, Running, Failed], Some("n1"))),
            vec!["node", "status"],
        ),
    ];
    for (name, pod, task, want) in cases {
        assert_eq!(kinds(&decide(&pod, task.as_ref(), now())), want, "{name}");
    }
}

#[test]
fn a_mirrored_pod_needs_nothing_more() {
    let t = task(&[Pending, Assigned, Starting, Running], Some("n1"));
    let mut p = pod(false, true);
    for a in decide(&p, Some(&t), now()) {
        match a {
            PodAction::SetNode(n) => p.spec.as_mut().expect("spec").node_name = Some(n),
            PodAction::WriteStatus(s) => p.status = Some(*s),
            other => panic!("unexpected {other:?}"),
        }
    }
    let later = now() + jiff::SignedDuration::from_secs(60);
    assert_eq!(
        decide(&p, Some(&t), later),
        vec![],
        "idempotent, whenever it runs"
    );
}

#[test]
fn the_status_follows_the_task() {
    // (case, task, pod phase, container reason, exit code)
    type Case<'a> = (&'a str, Task, &'a str, Option<&'a str>, Option<i32>);
    let cases: Vec<Case> = vec![
        ("pending", task(&[Pending], None), "Pending", None, None),
        (
            "starting",
            task(&[Pending, Assigned, Starting], Some("n1")),
            "Pending",
            Some("ContainerCreating"),
            None,
        ),
        (
            "running",
            task(&[Pending, Assigned, Running], Some("n1")),
            "Running",
            None,
            None,
        ),
        (
            "finished",
            task(&[Pending, Assigned, Running, Finished], Some("n1")),
            "Succeeded",
            Some("Completed"),
            Some(0),
        ),
        (
            "failed",
            task(&[Pending, Assigned, Running, Failed], Some("n1")),
            "Failed",
            Some("Error"),
            Some(137),
        ),
        (
            "partitioned",
            task(&[Pending, Assigned, Running, Partitioned], Some("n1")),
            "Unknown",
            None,
            None,
        ),
    ];
    for (name, t, phase, reason, code) in cases {
        let s = status_of(&t, None, now());
        assert_eq!(s.phase.as_deref(), Some(phase), "{name}");
        let state = s
            .container_statuses
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| c.state.clone());
        let got_reason = state.as_ref().and_then(|st| {
            st.waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .or_else(|| st.terminated.as_ref().and_then(|t| t.reason.clone()))
        });
        assert_eq!(got_reason.as_deref(), reason, "{name}");
        let got_code = state.and_then(|st| st.terminated.map(|t| t.exit_code));
        assert_eq!(got_code, code, "{name}");
        if t.spec.node_name.is_some() {
            assert_eq!(
                s.pod_ip.as_deref(),
                Some("10.0.0.5"),
                "{name}: the node's address"
            );
        }
    }
}

#[test]
fn a_waiting_task_is_unschedulable_with_corrals_explanation_said_once() {
    let mut t = task(&[Pending], None);
    t.status.as_mut().expect("status").explanation = Some(PendingExplanation {
        summary: "role analytics is at its quota limit: cpus 2 of 2 in use".into(),
        reasons: Vec::new(),
        evaluated_at: None,
    });
    let mut p = pod(false, true);
    let actions = decide(&p, Some(&t), now());
    assert_eq!(kinds(&actions), ["explain", "status"]);
    let PodAction::WriteStatus(s) = &actions[1] else {
        unreachable!()
    };
    let sched = s
        .conditions
        .as_ref()
        .expect("conditions")
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("PodScheduled")
        .clone();
    assert_eq!(
        (sched.status.as_str(), sched.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert!(
        sched
            .message
            .as_deref()
            .is_some_and(|m| m.contains("quota limit"))
    );
    p.status = Some((**s).clone());
    assert_eq!(decide(&p, Some(&t), now()), vec![], "said once");
}

#[test]
fn a_pod_whose_task_went_while_it_ran_fails_and_is_never_run_again() {
    let p = placed();
    let actions = decide(&p, None, now());
    let [PodAction::WriteStatus(s)] = actions.as_slice() else {
        panic!("one status write, no new task: {actions:?}");
    };
    assert_eq!(
        (s.phase.as_deref(), s.reason.as_deref()),
        (Some("Failed"), Some("TaskDeleted"))
    );
    let mut failed = p.clone();
    failed.status = Some((**s).clone());
    assert_eq!(decide(&failed, None, now()), vec![], "and then nothing");
}
