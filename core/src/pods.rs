//! What the pod controller does for one Pod and the Task that runs it
//! (see `corral_api::pods` for how a Pod becomes a Task).
//!
//! - A Pod without its task gets one (a placed one whose task was deleted
//!   is Failed, never run twice); a deleted Pod (its `deletionTimestamp`
//!   set, held by the task finalizer) has its task killed, and is released
//!   once the task has ended, its last status written first (the task goes
//!   with it, by owner reference).
//! - A task lost to the infrastructure — preempted, drained, lost with its
//!   node — deletes its Pod: Kubernetes clients read a deleted Pod as a
//!   loss that is not the workload's fault (Spark does not count it against
//!   the application), where a Failed Pod would be.
//! - Otherwise the Pod mirrors its task: phase (Pending, Running,
//!   Succeeded, Failed, Unknown while its node is cut off), the node and its
//!   address as the Pod's IP (tasks share their node's network), the
//!   container's state with its exit code and reason, and the conditions
//!   `PodScheduled` (False, `Unschedulable`, with Corral's explanation of
//!   why it waits) and `Ready`. A new explanation is also an Event
//!   (`FailedScheduling`), which `kubectl describe pod` shows.

use corral_api::pods::TASK_FINALIZER;
use corral_api::task::FailureReason;
use corral_api::{Task, TaskPhase};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What to do about one Pod.
#[derive(Debug, Clone, PartialEq)]
pub enum PodAction {
    /// Create its task (from `corral_api::pods::task_for`).
    CreateTask,
    /// Set `spec.nodeName` to the task's node.
    SetNode(String),
    /// Write this status.
    WriteStatus(Box<PodStatus>),
    /// Record a Warning Event `FailedScheduling` with this message.
    ExplainPending(String),
    /// Ask for the task to be killed (the Pod is being deleted).
    KillTask,
    /// Delete the Pod: its task was lost to the infrastructure.
    DeletePod,
    /// Remove the task finalizer: the task has ended (or never was).
    Release,
}

/// True when `task` was, or is being, taken by the infrastructure rather
/// than ended by its workload or a user.
pub fn lost_to_infrastructure(task: &Task) -> bool {
    let Some(status) = &task.status else {
        return false;
    };
    match status.phase() {
        TaskPhase::Preempting | TaskPhase::Draining | TaskPhase::Lost => true,
        TaskPhase::Killed => status
            .task_events
            .iter()
            .rev()
            .take_while(|e| e.status != TaskPhase::Running)
            .any(|e| matches!(e.status, TaskPhase::Preempting | TaskPhase::Draining)),
        _ => false,
    }
}

/// What `pod` needs, given its task (`None`: none exists), at `now`.
pub fn decide(pod: &Pod, task: Option<&Task>, now: jiff::Timestamp) -> Vec<PodAction> {
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let held = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TASK_FINALIZER);
    let ended = task.is_none_or(|t| t.status.as_ref().is_some_and(|s| s.phase().is_terminal()));
    if deleting {
        return match task {
            _ if !held => Vec::new(),
            // Its last status first, as kubelet reports the containers'
            // end before the Pod goes: clients read a deleted Pod's end
            // from it (Spark tells a deleted executor from a lost one so).
            Some(t) if ended => {
                let wanted = status_of(t, pod.status.as_ref(), now);
                let mut actions = Vec::new();
                if pod.status.as_ref() != Some(&wanted) {
                    actions.push(PodAction::WriteStatus(Box::new(wanted)));
                }
                actions.push(PodAction::Release);
                actions
            }
            Some(t) if !being_killed(t) => vec![PodAction::KillTask],
            Some(_) => Vec::new(),
            None => vec![PodAction::Release],
        };
    }
    let Some(task) = task else {
        // A pod whose task ended and is gone stays as it was; one whose
        // task went while it ran is never run twice: it failed.
        let done = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let ran = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
        return match (done, ran) {
            (true, _) => Vec::new(),
            (false, true) => vec![PodAction::WriteStatus(Box::new(task_gone(pod, now)))],
            (false, false) => vec![PodAction::CreateTask],
        };
    };
    let mut actions = Vec::new();
    if lost_to_infrastructure(task) {
        actions.push(PodAction::DeletePod);
    }
    let node = task.spec.node_name.clone();
    let pod_node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    if let Some(node) = node
        && pod_node.is_none()
    {
        actions.push(PodAction::SetNode(node));
    }
    let wanted = status_of(task, pod.status.as_ref(), now);
    if pod.status.as_ref() != Some(&wanted) {
        let said = |s: Option<&PodStatus>| scheduled_message(s).map(str::to_owned);
        if let Some(why) = said(Some(&wanted))
            && said(pod.status.as_ref()) != Some(why.clone())
        {
            actions.push(PodAction::ExplainPending(why));
        }
        actions.push(PodAction::WriteStatus(Box::new(wanted)));
    }
    actions
}

/// The status of a Pod whose task was deleted after it was placed.
fn task_gone(pod: &Pod, now: jiff::Timestamp) -> PodStatus {
    let current = pod.status.as_ref();
    let mut status = current.cloned().unwrap_or_default();
    status.phase = Some("Failed".to_owned());
    status.reason = Some("TaskDeleted".to_owned());
    status.message = Some("its task was deleted before it ended".to_owned());
    status.conditions = Some(vec![
        condition(current, ("PodScheduled", "True"), None, None, now),
        condition(current, ("Ready", "False"), None, None, now),
    ]);
    status
}

fn being_killed(task: &Task) -> bool {
    task.status.as_ref().is_some_and(|s| {
        matches!(
            s.phase(),
            TaskPhase::Killing
                | TaskPhase::Preempting
                | TaskPhase::Draining
                | TaskPhase::Restarting
        )
    })
}

/// The message of an unschedulable `PodScheduled` condition, if any.
fn scheduled_message(status: Option<&PodStatus>) -> Option<&str> {
    status?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
        .message
        .as_deref()
}

/// The status a Pod shows for `task`; `current` keeps the transition times
/// of conditions that did not change (a changed one is dated `now`).
pub fn status_of(task: &Task, current: Option<&PodStatus>, now: jiff::Timestamp) -> PodStatus {
    let status = task.status.clone().unwrap_or_default();
    let phase = status.phase();
    let pod_phase = match phase {
        TaskPhase::Pending | TaskPhase::Throttled | TaskPhase::Assigned | TaskPhase::Starting => {
            "Pending"
        }
        TaskPhase::Running
        | TaskPhase::Killing
        | TaskPhase::Preempting
        | TaskPhase::Restarting
        | TaskPhase::Draining => "Running",
        TaskPhase::Finished => "Succeeded",
        TaskPhase::Failed | TaskPhase::Killed | TaskPhase::Lost => "Failed",
        TaskPhase::Partitioned => "Unknown",
    };
    let event_at = |p: TaskPhase| {
        status
            .task_events
            .iter()
            .rev()
            .find(|e| e.status == p)
            .map(|e| Time(e.timestamp.0))
    };
    let started = event_at(TaskPhase::Running);
    let bound = task.spec.node_name.is_some();
    let unschedulable = !bound && matches!(phase, TaskPhase::Pending | TaskPhase::Throttled);
    let (sched_status, sched_reason, sched_message) = if bound {
        ("True", None, None)
    } else if unschedulable {
        let why = status
            .explanation
            .as_ref()
            .map(|e| e.summary.clone())
            .filter(|m| !m.is_empty());
        ("False", Some("Unschedulable".to_owned()), why)
    } else {
        ("False", None, None)
    };
    let running = phase == TaskPhase::Running;
    let mut conditions = vec![
        condition(
            current,
            ("PodScheduled", sched_status),
            sched_reason,
            sched_message,
            now,
        ),
        condition(
            current,
            ("Ready", if running { "True" } else { "False" }),
            None,
            None,
            now,
        ),
    ];
    conditions.retain(|c| c.type_ != "Ready" || bound);
    let state = container_state(&status, phase, started.clone());
    let ip = status.host_ip.clone().filter(|_| bound);
    PodStatus {
        phase: Some(pod_phase.to_owned()),
        conditions: Some(conditions),
        host_ip: ip.clone(),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: event_at(TaskPhase::Assigned).or(started),
        message: status.message.clone().filter(|_| pod_phase == "Failed"),
        reason: match phase {
            TaskPhase::Lost => Some("NodeLost".to_owned()),
            _ => None,
        },
        container_statuses: bound.then(|| {
            vec![ContainerStatus {
                name: task_container_name(task),
                image: task.spec.container.image.clone(),
                image_id: String::new(),
                ready: running,
                started: Some(running),
                restart_count: 0,
                state: Some(state),
                ..ContainerStatus::default()
            }]
        }),
        ..PodStatus::default()
    }
}

/// The name the Pod gave its container, kept on the task as an annotation
/// by the pod controller (`main` when unknown).
fn task_container_name(task: &Task) -> String {
    task.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONTAINER_NAME_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| "main".to_owned())
}

/// On a Pod's task: the name of the Pod's container.
pub const CONTAINER_NAME_ANNOTATION: &str = "corral.dev/pod-container";

fn container_state(
    status: &corral_api::TaskStatus,
    phase: TaskPhase,
    started: Option<Time>,
) -> ContainerState {
    if phase.is_terminal() {
        let code = status.exit_code.unwrap_or(match phase {
            TaskPhase::Finished => 0,
            _ => 137,
        });
        let reason = match (phase, status.failure_reason) {
            (_, Some(FailureReason::OutOfMemory)) => "OOMKilled",
            (TaskPhase::Finished, _) => "Completed",
            (TaskPhase::Lost, _) => "NodeLost",
            (TaskPhase::Killed, _) => "Killed",
            _ => "Error",
        };
        let finished = status.task_events.last().map(|e| Time(e.timestamp.0));
        return ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.to_owned()),
                message: status.message.clone(),
                started_at: started,
                finished_at: finished,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
    }
    match phase {
        TaskPhase::Running
        | TaskPhase::Killing
        | TaskPhase::Preempting
        | TaskPhase::Restarting
        | TaskPhase::Draining
        | TaskPhase::Partitioned => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: started,
            }),
            ..ContainerState::default()
        },
        _ => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".to_owned()),
                message: None,
            }),
            ..ContainerState::default()
        },
    }
}

/// A condition, dated when its status last changed from `current`'s.
fn condition(
    current: Option<&PodStatus>,
    (type_, status): (&str, &str),
    reason: Option<String>,
    message: Option<String>,
    now: jiff::Timestamp,
) -> PodCondition {
    let before = current
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let since = before
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or(Some(Time(now)));
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason,
        message,
        last_transition_time: since,
        ..PodCondition::default()
    }
}

#[cfg(test)]
mod tests;
