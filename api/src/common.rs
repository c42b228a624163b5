//! Types shared by several kinds: tiers, conditions, latency figures.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Corral kind.
pub const GROUP: &str = "corral.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `group/version`, as written in `apiVersion`.
pub const API_VERSION: &str = "corral.dev/v1alpha1";
/// The namespace of Corral's own components (the controllers' leader
/// election Lease), made by the API server at its start.
pub const SYSTEM_NAMESPACE: &str = "corral-system";

/// How a task may be treated when capacity is short (Aurora's tiers).
///
/// `preferred` is production work: never preempted by lower tiers. `preemptible`
/// may be pushed aside by higher-priority or preferred work. `revocable` runs
/// only on oversubscribed capacity and is the first to go.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Production: the talk's `production: true`.
    Preferred,
    /// The default: may be preempted by preferred work.
    #[default]
    Preemptible,
    /// Runs on revocable (oversubscribed) capacity only.
    Revocable,
}

impl Tier {
    /// Higher rank wins capacity: preferred 2, preemptible 1, revocable 0.
    pub fn rank(self) -> u8 {
        match self {
            Tier::Preferred => 2,
            Tier::Preemptible => 1,
            Tier::Revocable => 0,
        }
    }
}

/// The status of a condition, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known (e.g. the reporter is unreachable).
    Unknown,
}

/// A typed condition: `T` names the condition, `R` is its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition<T, R> {
    /// What the condition is about.
    #[serde(rename = "type")]
    pub type_: T,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// Why, in one word.
    pub reason: R,
    /// Why, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A median and a 99th percentile over a number of samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    /// Median, in milliseconds.
    pub median_millis: u64,
    /// 99th percentile, in milliseconds.
    pub p99_millis: u64,
    /// How many tasks the figures cover.
    pub samples: u32,
}

/// Scheduling latency figures (Aurora's MTTA / MTTS / MTTR).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyFigures {
    /// Time from PENDING to ASSIGNED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_assigned: Option<LatencySummary>,
    /// Time from PENDING to STARTING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_starting: Option<LatencySummary>,
    /// Time from PENDING to RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_running: Option<LatencySummary>,
}
