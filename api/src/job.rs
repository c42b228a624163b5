//! Job: a service, ad-hoc or cron job made of one Task per instance.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, LatencyFigures, Tier};
use crate::resources::Resources;
use crate::task::TaskPhase;

/// What kind of job (Aurora: service, ad-hoc, cron).
/// The label naming a task's job (set on every task a job makes).
pub const JOB_LABEL: &str = "corral.dev/job";
/// The label naming a task's instance.
pub const INSTANCE_LABEL: &str = "corral.dev/instance";
/// The label naming the kind of a task's job (`service`, `adhoc`, `cron`):
/// services are long-running, and new ones avoid nodes whose maintenance
/// window is near.
pub const JOB_KIND_LABEL: &str = "corral.dev/job-kind";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Runs forever: an instance that ends is replaced.
    Service,
    /// Runs once: a failed task is retried until its instance has failed `maxTaskFailures` times.
    Adhoc,
    /// Runs on a schedule (`spec.cron`).
    Cron,
}

/// A container to run: an image and what to execute in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// Image reference (`docker.io/library/busybox:1.36`, `name@sha256:…`).
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// How long a kill waits after SIGTERM before SIGKILL (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_period_seconds: Option<u32>,
    /// The runtime that runs it: `containerd`, or `process` (the command
    /// as a host process, on nodes whose operator offers it). Unset: the
    /// node's default runtime, the first its agent names (`containerd`
    /// unless the operator chose otherwise). A task never moves to another
    /// runtime because its own is down: it waits for a node that has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::node::RuntimeKind>,
    /// The network it sees: `host` (the node's; the default, as in Mesos:
    /// its ports are the node's) or `none` (a network namespace of its
    /// own with only loopback, for work that needs no network; containers
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// The user it runs as: `UID[:GID]`, or `NAME[:GROUP]` from its image's
    /// `/etc/passwd` and `/etc/group` (the node's, for a host process).
    /// Unset: the image's user unless that is root, else nobody (65534).
    /// Root (`0` or `root`) is privileged: it takes the RBAC verb `use` on
    /// `roles/privileged` for the Job's role in its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Mounts the image's filesystem read-only (the sandbox stays
    /// writable; containers only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
    /// The seccomp filter of a container: `RuntimeDefault` (the default:
    /// the syscalls containers have no business making are refused) or
    /// `Unconfined` (none, for debuggers and profilers), which is
    /// privileged as root is. Host processes have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// A container's seccomp filter (Kubernetes' `seccompProfile.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SeccompProfile {
    /// The runtime's filter.
    RuntimeDefault,
    /// No filter.
    Unconfined,
}

impl ContainerSpec {
    /// True when the container asks for what only a privileged grant
    /// allows: to run as root, or without the seccomp filter.
    pub fn is_privileged(&self) -> bool {
        self.user.as_deref().is_some_and(is_root_user)
            || self.seccomp_profile == Some(SeccompProfile::Unconfined)
    }
}

/// True when a `container.user` asks for root: user `0` or `root`, any group.
pub fn is_root_user(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default();
    name == "root" || name.parse::<u32>() == Ok(0)
}

/// The network a task sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The node's network.
    Host,
    /// A namespace of its own with only loopback.
    None,
}

/// One environment variable: a value written in the spec, or one read
/// when the task starts (a key of a Secret in the task's namespace), so
/// that credentials stay out of specs every reader of the namespace sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Its value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Where its value comes from instead (with `value` empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Where an environment variable's value is read from: exactly one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret in the task's namespace, read by the task's node
    /// when it starts the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// A field of the task itself (Kubernetes' downward API): its name,
    /// namespace, uid, node or the node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
    /// Where another service job of the task's namespace serves:
    /// `ADDRESS:PORT` of one of its ready instances, read from its
    /// EndpointSlices by the task's node when it starts the task. The task
    /// stays STARTING until one is ready (its job's start timeout bounds
    /// the wait), so a worker started before its master finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_ref: Option<EndpointSelector>,
}

/// A field of the task (Kubernetes' `fieldRef`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectFieldSelector {
    /// `metadata.name`, `metadata.namespace`, `metadata.uid`,
    /// `spec.nodeName` or `status.hostIP` (the node's address, where its
    /// host ports are reached).
    pub field_path: String,
    /// The version the path is written against; only `v1` or
    /// `corral.dev/v1alpha1` (both name the same fields here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// The fields a `fieldRef` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskField {
    /// `metadata.name`.
    Name,
    /// `metadata.namespace`.
    Namespace,
    /// `metadata.uid`.
    Uid,
    /// `spec.nodeName`.
    NodeName,
    /// `status.hostIP`.
    HostIp,
}

impl TaskField {
    /// Every field, in the order errors list them.
    pub const ALL: [TaskField; 5] = [
        TaskField::Name,
        TaskField::Namespace,
        TaskField::Uid,
        TaskField::NodeName,
        TaskField::HostIp,
    ];

    /// The field's path.
    pub fn path(self) -> &'static str {
        match self {
            TaskField::Name => "metadata.name",
            TaskField::Namespace => "metadata.namespace",
            TaskField::Uid => "metadata.uid",
            TaskField::NodeName => "spec.nodeName",
            TaskField::HostIp => "status.hostIP",
        }
    }

    /// The field a path names, if it is one a task may read.
    pub fn parse(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.path() == path)
    }
}

/// A named port of another service job in the same namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSelector {
    /// The job's name.
    pub job: String,
    /// The name of one of its ports (`ports[].name`).
    pub port: String,
}

/// A key of a Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name, in the task's namespace.
    pub name: String,
    /// The key in its `data`.
    pub key: String,
    /// When true, a missing Secret or key leaves the variable unset;
    /// otherwise the task fails to start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

impl EnvVar {
    /// The Secret this variable is read from, if any.
    pub fn secret(&self) -> Option<&SecretKeySelector> {
        self.value_from.as_ref()?.secret_key_ref.as_ref()
    }

    /// The field of the task this variable is read from, if any.
    pub fn field(&self) -> Option<&ObjectFieldSelector> {
        self.value_from.as_ref()?.field_ref.as_ref()
    }

    /// The endpoint of another job this variable is read from, if any.
    pub fn endpoint(&self) -> Option<&EndpointSelector> {
        self.value_from.as_ref()?.endpoint_ref.as_ref()
    }
}

/// How an attribute constraint compares a node's attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConstraintOperator {
    /// The node's value is one of `values`.
    In,
    /// The node's value is none of `values` (Aurora's `rack: "!r1"`), or absent.
    NotIn,
    /// The node has the attribute.
    Exists,
    /// The node lacks the attribute.
    DoesNotExist,
}

/// A constraint on a node attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttributeConstraint {
    /// Attribute name (`rack`, `zone`).
    pub name: String,
    /// How to compare.
    pub operator: ConstraintOperator,
    /// Values for `In` / `NotIn`; empty for `Exists` / `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Placement constraints (Aurora: host limit, value constraints, dedicated).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Constraints {
    /// At most this many of the job's tasks on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_limit: Option<u32>,
    /// Every constraint must hold on the chosen node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeConstraint>,
    /// Run only on nodes dedicated to this role (node attribute `dedicated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated: Option<String>,
}

impl Constraints {
    /// True when nothing is constrained.
    pub fn is_empty(&self) -> bool {
        self == &Constraints::default()
    }
}

/// What to do when a cron tick comes while the previous run is still active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CollisionPolicy {
    /// Kill the active run, then start the new one (Aurora's default).
    #[default]
    KillExisting,
    /// Skip the new run.
    CancelNew,
    /// Start the new run beside the active one.
    RunOverlap,
}

/// What to do with ticks missed while the control plane was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MissedRunPolicy {
    /// Count them and wait for the next tick.
    #[default]
    Skip,
    /// Start one run for all the missed ticks.
    RunOnce,
}

fn utc() -> String {
    "UTC".to_owned()
}

fn default_history() -> u32 {
    3
}

/// Parses a five-field cron expression (or an `@daily`-style macro), the one
/// way schedules are read everywhere in Corral.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, croner::errors::CronError> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
}

/// A cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronSpec {
    /// Five-field cron expression (`*/5 * * * *`) or a macro (`@daily`).
    pub schedule: String,
    /// IANA time zone the schedule is read in. Default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// Default `KILL_EXISTING`.
    #[serde(default)]
    pub collision_policy: CollisionPolicy,
    /// Default `SKIP`.
    #[serde(default)]
    pub missed_run_policy: MissedRunPolicy,
    /// Finished runs kept, per outcome. Default 3.
    #[serde(default = "default_history")]
    pub history_limit: u32,
}

/// What happens to tasks on a node that stops heartbeating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionPolicy {
    /// Replace the tasks (true) or wait for the node to come back (false).
    pub reschedule: bool,
    /// Seconds to hold tasks PARTITIONED before replacing them.
    #[serde(default)]
    pub delay_seconds: u32,
}

impl Default for PartitionPolicy {
    fn default() -> Self {
        PartitionPolicy {
            reschedule: true,
            delay_seconds: 0,
        }
    }
}

/// Aurora's transient-state timeout: five minutes.
pub const DEFAULT_TRANSIENT_TIMEOUT_SECONDS: u32 = 300;

fn transient_timeout() -> u32 {
    DEFAULT_TRANSIENT_TIMEOUT_SECONDS
}

/// How long a task may stay in a transient state before it is LOST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Seconds in ASSIGNED. Default 300.
    #[serde(default = "transient_timeout")]
    pub assign_seconds: u32,
    /// Seconds in STARTING. Default 300.
    #[serde(default = "transient_timeout")]
    pub start_seconds: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            assign_seconds: DEFAULT_TRANSIENT_TIMEOUT_SECONDS,
            start_seconds: DEFAULT_TRANSIENT_TIMEOUT_SECONDS,
        }
    }
}

fn one() -> u32 {
    1
}

fn one_i32() -> i32 {
    1
}

/// The most instances one job may declare (a job of 50,000 is the
/// control-plane benchmark's).
pub const MAX_INSTANCES: u32 = 100_000;

/// A job: `instances` tasks of one container with one resource shape.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "corral.dev",
    version = "v1alpha1",
    kind = "Job",
    namespaced,
    status = "JobStatus",
    shortname = "cj",
    category = "corral",
    category = "all",
    scale = r#"{"specReplicasPath": ".spec.instances", "statusReplicasPath": ".status.tasks.RUNNING", "labelSelectorPath": ".status.selector"}"#,
    derive = "PartialEq",
    doc = "A Corral job: a service, ad-hoc or cron job of one task per instance.",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Instances", type_ = "integer", json_path = ".spec.instances"),
    printcolumn(
        name = "Running",
        type_ = "integer",
        json_path = ".status.tasks.RUNNING"
    ),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.tasks.PENDING"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Tier",
        type_ = "string",
        json_path = ".spec.tier",
        priority = 1
    ),
    printcolumn(
        name = "Env",
        type_ = "string",
        json_path = ".spec.environment",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// The role that owns the job (quota, reservations, fair share).
    pub role: String,
    /// Aurora environment: `prod`, `devel`, `test`, …
    pub environment: String,
    /// service, adhoc or cron.
    pub kind: JobKind,
    /// Number of tasks (instances 0..n-1). Default 1.
    #[serde(default = "one")]
    pub instances: u32,
    /// Resources of each task.
    pub resources: Resources,
    /// Order among the role's own tasks; higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Default `preemptible`.
    #[serde(default)]
    pub tier: Tier,
    /// Aurora's `max_task_failures`: an ad-hoc instance is failed (and the job
    /// with it) once it has failed this many times, so 1 (the default) means a
    /// failed task is not retried and 5 means five attempts; 0 is read as 1;
    /// -1 retries without limit.
    #[serde(default = "one_i32")]
    pub max_task_failures: i32,
    /// What each task runs.
    pub container: ContainerSpec,
    /// The host ports each task listens on, by name: assigned from its
    /// node's ranges when placed, or fixed (see [`crate::ports`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::ports::PortSpec>,
    /// How each task's health is checked by its agent (see
    /// [`crate::health`]); none: a task is healthy once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<crate::health::HealthCheck>,
    /// Where the tasks may run.
    #[serde(default, skip_serializing_if = "Constraints::is_empty")]
    pub constraints: Constraints,
    /// The schedule; required for cron jobs, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronSpec>,
    /// Behaviour when a node is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_policy: Option<PartitionPolicy>,
    /// At most one copy of each instance, even across a network partition
    /// (a singleton, a leader): a task's agent stops it once it has gone
    /// half a lease without renewing, before the control plane could
    /// replace it (Nomad's `stop_after_client_disconnect`). Off (the
    /// default), tasks run on through any outage of the control plane.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
    /// Transient-state timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// How a change of the task template (resources, container, ports,
    /// health check, constraints, tier, priority) reaches running
    /// instances: an update (see [`crate::update`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStrategy>,
    /// How many instances voluntary disruptions (evictions, drains) may
    /// take down at once (see [`crate::disruption`]); none: any number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<crate::disruption::DisruptionBudget>,
    /// All-or-nothing placement: the job's tasks are bound only in a
    /// cycle that places enough of them to have `minInstances` bound at
    /// once, never part of that (a Spark application's executors, a
    /// nested cluster's members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangSpec>,
}

/// A job's gang: how many of its instances must be placed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GangSpec {
    /// The fewest instances bound at once: a cycle binds the job's tasks
    /// only if it brings the job's bound tasks to at least this many.
    pub min_instances: u32,
}

pub use crate::update::UpdateStrategy;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JobPhase {
    /// Tasks are being created or run.
    Active,
    /// An ad-hoc job whose every instance finished.
    Succeeded,
    /// An ad-hoc job with an instance that failed `maxTaskFailures` times.
    Failed,
    /// Killed on request.
    Killed,
}

/// Condition types of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JobConditionType {
    /// Every instance has a task in the desired state.
    Available,
    /// A spec change is being rolled out.
    Progressing,
    /// The job has ended (Succeeded, Failed or Killed).
    Complete,
}

/// Reasons of job conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JobReason {
    /// Every instance is running.
    AllInstancesRunning,
    /// Some instances are pending or starting.
    InstancesPending,
    /// A rolling update is under way.
    RollingUpdate,
    /// Every live task runs the current template.
    UpdateComplete,
    /// A failed update (or a request) is rolling back.
    RollingBack,
    /// An update was rolled back.
    UpdateRolledBack,
    /// An update failed and stopped.
    UpdateFailed,
    /// An update is paused on request.
    UpdatePaused,
    /// An update was aborted.
    UpdateAborted,
    /// Every ad-hoc instance finished.
    AllInstancesFinished,
    /// An instance failed `maxTaskFailures` times.
    MaxTaskFailuresExceeded,
    /// A kill was requested.
    KillRequested,
}

/// Counts of a job's tasks per phase (keys are the Aurora names).
pub type PhaseCounts = BTreeMap<TaskPhase, u32>;

/// Cron bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronStatus {
    /// The tick of the newest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Runs started.
    #[serde(default)]
    pub runs_started: u64,
    /// Ticks skipped by `CANCEL_NEW`.
    #[serde(default)]
    pub runs_cancelled: u64,
    /// Ticks missed while the control plane was down.
    #[serde(default)]
    pub runs_missed: u64,
}

/// Observed state of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// Where the job is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// The generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Tasks per phase.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "phase_counts_schema")]
    pub tasks: PhaseCounts,
    /// Task failures across the job's life (including those of tasks since
    /// deleted by the history limit).
    #[serde(default)]
    pub failures: u32,
    /// Failures of tasks deleted by the history limit, so `failures` keeps
    /// counting them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pruned_failures: u32,
    /// Typed conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition<JobConditionType, JobReason>>,
    /// Cron bookkeeping (cron jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronStatus>,
    /// Scheduling latency of the job's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFigures>,
    /// Instances whose live task runs the current template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_instances: Option<u32>,
    /// The template the job's instances are meant to run: the last one
    /// rolled forward (or back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Box<crate::update::TaskTemplate>>,
    /// The update under way, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Box<crate::update::UpdateStatus>>,
    /// Earlier updates, newest first (at most ten).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_history: Vec<crate::update::UpdateStatus>,
    /// The label selector of the job's tasks, in its string form
    /// (`corral.dev/job=<name>`): the Scale's selector, so an autoscaler
    /// can find the tasks whose metrics it reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Evictions under way: each evicted task's name and when, counted as
    /// down until its phase says so (at most
    /// [`crate::disruption::DISRUPTION_RECORD_SECONDS`]). Written by the
    /// `tasks/eviction` subresource only, each write conditional, so that
    /// concurrent evictions of one job never overspend its budget.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub disrupted_tasks: crate::disruption::DisruptedTasks,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An object with one integer property per task phase.
fn phase_counts_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let props: serde_json::Map<String, serde_json::Value> = TaskPhase::ALL
        .iter()
        .map(|p| {
            (
                p.as_str().to_owned(),
                serde_json::json!({"type": "integer", "format": "uint32", "minimum": 0}),
            )
        })
        .collect();
    schemars::json_schema!({"type": "object", "properties": props})
}

#[cfg(test)]
mod user_tests {
    use super::is_root_user;

    #[test]
    fn root_is_asked_for_by_name_or_number_with_any_group() {
        for (user, root) in [
            ("root", true),
            ("0", true),
            ("00", true),
            ("0:1000", true),
            ("root:staff", true),
            ("1000", false),
            ("1000:0", false),
            ("rooted", false),
            ("nobody", false),
        ] {
            assert_eq!(is_root_user(user), root, "{user}");
        }
    }
}
