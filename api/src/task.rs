//! Task: one instance of a Job, the unit the scheduler places and agents run.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Tier};
use crate::job::{Constraints, ContainerSpec};
use crate::resources::Resources;

/// The Aurora task states.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskPhase {
    /// Waiting for a node that satisfies resources and constraints.
    Pending,
    /// Held back because the instance flaps.
    Throttled,
    /// Bound to a node; the agent has not started it yet.
    Assigned,
    /// The agent is preparing the sandbox and launching.
    Starting,
    /// The container runs.
    Running,
    /// Exited 0.
    Finished,
    /// Exited non-zero, was OOM-killed, or could not start.
    Failed,
    /// A kill was requested; the agent is stopping it.
    Killing,
    /// Stopped on request.
    Killed,
    /// Its node or agent lost track of it.
    Lost,
    /// Being killed to make room for a higher-tier or higher-priority task.
    Preempting,
    /// Being killed to be replaced by a fresh task.
    Restarting,
    /// Being killed because its node is drained for maintenance.
    Draining,
    /// Its node is unreachable; replacement waits for the partition policy.
    Partitioned,
}

impl TaskPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [TaskPhase; 14] = [
        TaskPhase::Pending,
        TaskPhase::Throttled,
        TaskPhase::Assigned,
        TaskPhase::Starting,
        TaskPhase::Running,
        TaskPhase::Finished,
        TaskPhase::Failed,
        TaskPhase::Killing,
        TaskPhase::Killed,
        TaskPhase::Lost,
        TaskPhase::Preempting,
        TaskPhase::Restarting,
        TaskPhase::Draining,
        TaskPhase::Partitioned,
    ];

    /// The Aurora name (`PENDING`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskPhase::Pending => "PENDING",
            TaskPhase::Throttled => "THROTTLED",
            TaskPhase::Assigned => "ASSIGNED",
            TaskPhase::Starting => "STARTING",
            TaskPhase::Running => "RUNNING",
            TaskPhase::Finished => "FINISHED",
            TaskPhase::Failed => "FAILED",
            TaskPhase::Killing => "KILLING",
            TaskPhase::Killed => "KILLED",
            TaskPhase::Lost => "LOST",
            TaskPhase::Preempting => "PREEMPTING",
            TaskPhase::Restarting => "RESTARTING",
            TaskPhase::Draining => "DRAINING",
            TaskPhase::Partitioned => "PARTITIONED",
        }
    }

    /// True for the states a task never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskPhase::Finished | TaskPhase::Failed | TaskPhase::Killed | TaskPhase::Lost
        )
    }

    /// True while a kill is under way (KILLING, PREEMPTING, RESTARTING,
    /// DRAINING): the task is leaving its node.
    pub fn is_being_killed(self) -> bool {
        matches!(
            self,
            TaskPhase::Killing
                | TaskPhase::Preempting
                | TaskPhase::Restarting
                | TaskPhase::Draining
        )
    }

    /// True while the task holds resources on a node.
    pub fn holds_resources(self) -> bool {
        matches!(
            self,
            TaskPhase::Assigned
                | TaskPhase::Starting
                | TaskPhase::Running
                | TaskPhase::Killing
                | TaskPhase::Preempting
                | TaskPhase::Restarting
                | TaskPhase::Draining
                | TaskPhase::Partitioned
        )
    }
}

impl std::fmt::Display for TaskPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task: one instance of a job. Created by the job controller, owned by its Job.
///
/// The spec is immutable except `nodeName`, which the scheduler sets once.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "corral.dev",
    version = "v1alpha1",
    kind = "Task",
    namespaced,
    status = "TaskStatus",
    shortname = "tk",
    category = "corral",
    category = "all",
    derive = "PartialEq",
    doc = "A Corral task: one instance of a job, placed on a node and run by its agent.",
    selectable = ".spec.nodeName",
    selectable = ".spec.role",
    selectable = ".status.phase",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Instance", type_ = "integer", json_path = ".spec.instanceId"),
    printcolumn(
        name = "Failures",
        type_ = "integer",
        json_path = ".status.failureCount",
        priority = 1
    ),
    printcolumn(
        name = "Tier",
        type_ = "string",
        json_path = ".spec.tier",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// The owning job's name (same namespace).
    pub job: String,
    /// The owning job's role.
    pub role: String,
    /// Instance number within the job (0..instances-1).
    pub instance_id: u32,
    /// Resources the task holds on its node.
    pub resources: Resources,
    /// Copied from the job.
    #[serde(default)]
    pub tier: Tier,
    /// Copied from the job.
    #[serde(default)]
    pub priority: i32,
    /// What the agent runs.
    pub container: ContainerSpec,
    /// Copied from the job: the host ports it needs, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::ports::PortSpec>,
    /// Copied from the job: how its agent checks its health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<crate::health::HealthCheck>,
    /// Copied from the job.
    #[serde(default, skip_serializing_if = "Constraints::is_empty")]
    pub constraints: Constraints,
    /// The node the task is bound to; set once by the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Its job's `fenced`: its agent stops it when cut off from the control
    /// plane for half a lease.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
    /// Its job's gang: placed only together with enough of its job's
    /// instances (see [`crate::job::GangSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<crate::job::GangSpec>,
}

/// The most task events kept in a task's status; older ones are dropped first.
pub const MAX_TASK_EVENTS: usize = 32;

/// One step of a task's history (Aurora's taskEvents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskEvent {
    /// When it happened (microsecond precision).
    pub timestamp: MicroTime,
    /// The phase entered.
    pub status: TaskPhase,
    /// What happened, for humans.
    #[serde(default)]
    pub message: String,
    /// Who made the change: `scheduler`, `agent/<node>`, `job-controller`, a user.
    pub actor: String,
}

/// Condition types of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TaskConditionType {
    /// Bound to a node.
    Scheduled,
    /// The container runs.
    Ready,
    /// Chosen as a preemption victim.
    Preempted,
    /// Its health check passes (only for tasks that have one).
    Healthy,
    /// It is to leave its node for a voluntary disruption (Kubernetes'
    /// name): its node is being drained. A service instance's replacement
    /// is made before it goes.
    DisruptionTarget,
}

/// Reasons of task conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TaskReason {
    /// Bound to a node.
    Assigned,
    /// No node fits now; see `status.explanation`.
    Unschedulable,
    /// Capacity is being freed by preemption for this task.
    PreemptionNominated,
    /// The container started.
    Started,
    /// The container exited.
    Exited,
    /// The task was chosen to make room for another.
    PreemptedByHigherPriority,
    /// Its health check passed `successThreshold` times in a row.
    HealthCheckPassed,
    /// Its health check has not passed (yet, or any more).
    HealthCheckFailing,
    /// Its node is being drained (asked for, or ahead of a maintenance window).
    NodeDraining,
}

/// Why a task cannot be placed, one reason at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PendingReasonKind {
    /// The role's quota limit would be exceeded.
    QuotaExceeded,
    /// What is free is kept for other roles' unused guarantees.
    GuaranteeProtected,
    /// Capacity exists only in reservations of other roles.
    ReservationMismatch,
    /// A constraint ruled nodes out.
    ConstraintFiltered,
    /// A resource dimension is exhausted on nodes.
    InsufficientResources,
    /// Nodes are unhealthy or unschedulable.
    NodeUnavailable,
    /// Victims are being evicted to make room.
    PreemptionInProgress,
    /// Held back because the instance flaps.
    Throttled,
    /// Its job's gang did not fit as a whole: none of it was bound.
    GangIncomplete,
    /// Its role would borrow beyond its quota's borrowing limit.
    BorrowingLimitExceeded,
}

impl PendingReasonKind {
    /// Its name, as serialized (`QuotaExceeded`).
    pub fn as_str(self) -> &'static str {
        match self {
            PendingReasonKind::QuotaExceeded => "QuotaExceeded",
            PendingReasonKind::GuaranteeProtected => "GuaranteeProtected",
            PendingReasonKind::ReservationMismatch => "ReservationMismatch",
            PendingReasonKind::ConstraintFiltered => "ConstraintFiltered",
            PendingReasonKind::InsufficientResources => "InsufficientResources",
            PendingReasonKind::NodeUnavailable => "NodeUnavailable",
            PendingReasonKind::PreemptionInProgress => "PreemptionInProgress",
            PendingReasonKind::Throttled => "Throttled",
            PendingReasonKind::GangIncomplete => "GangIncomplete",
            PendingReasonKind::BorrowingLimitExceeded => "BorrowingLimitExceeded",
        }
    }
}

/// One structured reason in a pending explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingReason {
    /// What kind of obstacle.
    pub kind: PendingReasonKind,
    /// The obstacle, for humans.
    pub message: String,
    /// The resource concerned (`memory`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The constraint or role concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// How many nodes this reason ruled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// Amount needed (quantity text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<String>,
    /// Amount available (quantity text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,
}

/// Why a task stays PENDING.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingExplanation {
    /// One line for humans.
    pub summary: String,
    /// The structured reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<PendingReason>,
    /// When the scheduler last evaluated the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<MicroTime>,
}

/// Observed state of a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// The Aurora state; absent means PENDING (not yet seen by a controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TaskPhase>,
    /// Failures of this instance so far.
    #[serde(default)]
    pub failure_count: u32,
    /// The container's exit code, once it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The last step's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// History, oldest first, at most `MAX_TASK_EVENTS`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_events: Vec<TaskEvent>,
    /// Typed conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition<TaskConditionType, TaskReason>>,
    /// Why the task is still pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<PendingExplanation>,
    /// Resources the container uses, as last measured by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Resources>,
    /// Why the container failed, when an exit code alone does not say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    /// The address of its node, written with its binding.
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// The host ports assigned to it, in the order its job names them,
    /// written with its binding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::ports::TaskPort>,
}

/// Why a container failed, beyond its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FailureReason {
    /// The kernel killed it for exceeding its memory limit.
    OutOfMemory,
    /// Its image is not present on the node (and no registry could provide it).
    ImageNotFound,
    /// The runtime could not create or start it.
    LaunchFailed,
    /// No configured runtime supports its container spec.
    NoRuntime,
    /// A Secret (or a key of one) its environment reads is missing, or
    /// could not be read.
    SecretUnavailable,
    /// Its node killed it for holding more than its `disk` resource.
    DiskLimitExceeded,
    /// Its health check failed `failureThreshold` times in a row.
    HealthCheckFailed,
}

impl TaskStatus {
    /// Sets the `Scheduled` condition, dating its transition (to the
    /// second, as Kubernetes' `Time`) when its status changes.
    pub fn set_scheduled(
        &mut self,
        status: crate::common::ConditionStatus,
        reason: TaskReason,
        message: String,
        now: jiff::Timestamp,
    ) {
        self.set_condition(TaskConditionType::Scheduled, status, reason, message, now);
    }

    /// Sets the `Healthy` condition (with the last probe's output), dating
    /// its transition when its status changes.
    pub fn set_healthy(&mut self, healthy: bool, message: String, now: jiff::Timestamp) {
        use crate::common::ConditionStatus;
        let (status, reason) = if healthy {
            (ConditionStatus::True, TaskReason::HealthCheckPassed)
        } else {
            (ConditionStatus::False, TaskReason::HealthCheckFailing)
        };
        self.set_condition(TaskConditionType::Healthy, status, reason, message, now);
    }

    /// Sets condition `type_`, dating its transition (to the second, as
    /// Kubernetes' `Time`) when its status changes.
    fn set_condition(
        &mut self,
        type_: TaskConditionType,
        status: crate::common::ConditionStatus,
        reason: TaskReason,
        message: String,
        now: jiff::Timestamp,
    ) {
        let time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
        ));
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = time;
                }
                c.status = status;
                c.reason = reason;
                c.message = message;
            }
            None => self.conditions.push(Condition {
                type_,
                status,
                reason,
                message,
                last_transition_time: time,
                observed_generation: None,
            }),
        }
    }

    /// Marks it as leaving its node for a drain (the `DisruptionTarget`
    /// condition), or clears that when the drain was called off.
    pub fn set_disruption_target(&mut self, leaving: bool, message: String, now: jiff::Timestamp) {
        use crate::common::ConditionStatus;
        let status = if leaving {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        self.set_condition(
            TaskConditionType::DisruptionTarget,
            status,
            TaskReason::NodeDraining,
            message,
            now,
        );
    }

    /// True when its `DisruptionTarget` condition is `True`.
    pub fn is_disruption_target(&self) -> bool {
        self.conditions.iter().any(|c| {
            c.type_ == TaskConditionType::DisruptionTarget
                && c.status == crate::common::ConditionStatus::True
        })
    }

    /// True when its `Healthy` condition is `True`.
    pub fn is_healthy(&self) -> bool {
        self.conditions.iter().any(|c| {
            c.type_ == TaskConditionType::Healthy
                && c.status == crate::common::ConditionStatus::True
        })
    }

    /// The phase, treating an absent one as PENDING.
    pub fn phase(&self) -> TaskPhase {
        self.phase.unwrap_or(TaskPhase::Pending)
    }

    /// Appends an event, dropping the oldest beyond [`MAX_TASK_EVENTS`].
    pub fn push_event(&mut self, event: TaskEvent) {
        self.task_events.push(event);
        let excess = self.task_events.len().saturating_sub(MAX_TASK_EVENTS);
        self.task_events.drain(..excess);
    }
}
