//! Job updates (Aurora's JobUpdate): every change of a job's task template
//! is an update with an identity, rolled through its instances a batch at a
//! time, gated on health, and rolled back by itself when it fails and the
//! job's policy says so.
//!
//! The policy is `spec.update`; the update under way (or the last one) is
//! `status.update`, earlier ones `status.updateHistory`; the template the
//! job's instances are meant to run is `status.template`, kept whole so a
//! rollback restores it exactly. A user pauses, resumes, aborts or rolls
//! back an update with the [`UPDATE_REQUEST_ANNOTATION`] on the Job.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Tier;
use crate::health::HealthCheck;
use crate::job::{Constraints, ContainerSpec, JobSpec};
use crate::ports::PortSpec;
use crate::resources::Resources;

/// A request on a job's update: `pause`, `resume`, `abort` or `rollback`,
/// then a space and when it was made (`pause 2026-12-07T10:00:00Z`); the
/// job controller carries out each value once.
pub const UPDATE_REQUEST_ANNOTATION: &str = "corral.dev/update-request";

/// Updates kept in `status.updateHistory`.
pub const HISTORY_LIMIT: usize = 10;
/// Instance events kept per update (the oldest go first).
pub const MAX_EVENTS: usize = 200;

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// How a change of the task template reaches running instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// How many instances may be in the middle of the update at once (their
    /// old task being killed, or their new one not yet healthy for
    /// `minHealthySeconds`). Default 1.
    #[serde(default = "one")]
    pub batch_size: u32,
    /// How long an updated instance must stay healthy (passing its health
    /// check, or running when it has none) before it counts as updated
    /// (Aurora's `watch_secs`). Default 0.
    #[serde(default)]
    pub min_healthy_seconds: u32,
    /// Instances that may fail the update before the update fails. Default 0.
    #[serde(default)]
    pub max_failures: u32,
    /// Failures of one instance's new tasks before that instance counts as
    /// failed. Default 0: its first failure.
    #[serde(default)]
    pub max_instance_failures: u32,
    /// Roll a failed update back, a batch at a time. Default true.
    #[serde(default = "yes")]
    pub rollback_on_failure: bool,
    /// Start the next batch only once the whole batch is updated; false (the
    /// default): a sliding window, the next instance as soon as one is done.
    #[serde(default)]
    pub wait_for_batch: bool,
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        Self {
            batch_size: 1,
            min_healthy_seconds: 0,
            max_failures: 0,
            max_instance_failures: 0,
            rollback_on_failure: true,
            wait_for_batch: false,
        }
    }
}

/// What a job's tasks are made of: everything that, changed, is an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskTemplate {
    /// The role.
    pub role: String,
    /// Resources of each task.
    pub resources: Resources,
    /// Tier.
    #[serde(default)]
    pub tier: Tier,
    /// Priority.
    #[serde(default)]
    pub priority: i32,
    /// What each task runs.
    pub container: ContainerSpec,
    /// Where tasks may run.
    #[serde(default, skip_serializing_if = "Constraints::is_empty")]
    pub constraints: Constraints,
    /// Named ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Fencing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
}

impl JobSpec {
    /// The task template this spec describes.
    pub fn template(&self) -> TaskTemplate {
        TaskTemplate {
            role: self.role.clone(),
            resources: self.resources.clone(),
            tier: self.tier,
            priority: self.priority,
            container: self.container.clone(),
            constraints: self.constraints.clone(),
            ports: self.ports.clone(),
            health_check: self.health_check.clone(),
            fenced: self.fenced,
        }
    }
}

/// Where an update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum UpdateState {
    /// Instances are moving to the new template.
    RollingForward,
    /// Every instance runs the new template, healthy.
    RolledForward,
    /// Instances are moving back to the old template.
    RollingBack,
    /// Every instance runs the old template again, healthy.
    RolledBack,
    /// Rolling forward, paused on request.
    Paused,
    /// Rolling back, paused on request.
    RollBackPaused,
    /// Stopped on request (or by a newer update); instances stay as they are.
    Aborted,
    /// Failed with no rollback (or its rollback failed); instances stay as
    /// they are.
    Failed,
}

impl UpdateState {
    /// True once it will move no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            UpdateState::RolledForward
                | UpdateState::RolledBack
                | UpdateState::Aborted
                | UpdateState::Failed
        )
    }

    /// True while instances move back to the old template (or will, once resumed).
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            UpdateState::RollingBack | UpdateState::RollBackPaused | UpdateState::RolledBack
        )
    }
}

/// What happened to one instance in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum InstanceAction {
    /// Its old task was stopped for a new one.
    Updating,
    /// It ran the new template healthy for `minHealthySeconds`.
    Updated,
    /// It failed the update.
    Failed,
    /// Its new task was stopped to go back to the old template.
    RollingBack,
    /// It runs the old template again, healthy.
    RolledBack,
}

/// One step of one instance in an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceEvent {
    /// The instance.
    pub instance: u32,
    /// What happened.
    pub action: InstanceAction,
    /// When.
    pub time: Time,
    /// Details, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One update of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatus {
    /// Its number in the job's life (1, 2, …).
    pub id: u32,
    /// The template hash it moves from.
    pub from_template: String,
    /// The template hash it moves to.
    pub to_template: String,
    /// The template it moves from, whole (a rollback restores it); absent
    /// when the job's earlier template was never recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<TaskTemplate>,
    /// Where it is.
    pub state: UpdateState,
    /// When it began.
    pub started_at: Time,
    /// When it ended, once final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Instances on the template being rolled to, healthy long enough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done_instances: Vec<u32>,
    /// Instances that failed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_instances: Vec<u32>,
    /// What happened to its instances, oldest first (at most [`MAX_EVENTS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<InstanceEvent>,
    /// When it began rolling back, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_back_since: Option<Time>,
    /// The last user request carried out (the annotation's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Why it is where it is, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
