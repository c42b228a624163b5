//! PlanReview: "what would happen if" — a create-only kind, never stored,
//! answered by the scheduler over the cluster as it is (Nomad's `job plan`,
//! Kubernetes' SubjectAccessReview for its shape). Given Jobs, it says where
//! each instance would land, which running tasks would be preempted (by
//! name, with the rule), what would stay pending and why, and what the
//! roles' quotas would hold. Given Quotas, it says which pending tasks would
//! start, and which roles would hold more than a lowered limit.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::Resources;
use crate::task::PendingExplanation;

/// The group, version and kind of a plan.
pub const PLAN_REVIEW_KIND: &str = "PlanReview";
/// Its plural, in paths and RBAC rules.
pub const PLAN_REVIEW_PLURAL: &str = "planreviews";

/// A plan request and its answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanReview {
    /// `corral.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `PlanReview`.
    #[serde(default)]
    pub kind: String,
    /// What to plan.
    #[serde(default)]
    pub spec: PlanSpec,
    /// The answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PlanStatus>,
}

/// What to plan: jobs to run, quotas to set (or both).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSpec {
    /// Jobs as they would be created (or replace the ones of that name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<crate::Job>,
    /// Quotas as they would be set (replacing the role's quota).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<crate::Quota>,
}

/// The answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// Each planned job's instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<PlannedInstance>,
    /// Tasks already pending that would be placed (a quota change frees them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started: Vec<PlannedStart>,
    /// The roles concerned, before and after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleEffect>,
    /// Nodes considered.
    pub nodes: u32,
}

/// Where one instance of a planned job would go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedInstance {
    /// `namespace/job`.
    pub job: String,
    /// The instance.
    pub instance: u32,
    /// The node it would be bound to now, or once its victims stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Running tasks that would be preempted to make room for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preempts: Vec<PlannedVictim>,
    /// Why it would stay pending, if it would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingExplanation>,
}

/// A running task a plan would preempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedVictim {
    /// `namespace/name`.
    pub task: String,
    /// Its role.
    pub role: String,
    /// The rule it would be preempted by (`tier`, `priority`, `reclaim`).
    pub rule: String,
}

/// A pending task a plan would place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStart {
    /// `namespace/name`.
    pub task: String,
    /// The node.
    pub node: String,
}

/// A role's use of the cluster before and after the plan, beside its quota.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleEffect {
    /// The role.
    pub role: String,
    /// What it (with its children) holds now, as its limit counts it.
    pub before: Resources,
    /// What it would hold.
    pub after: Resources,
    /// Its limit, as planned.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub limit: Resources,
    /// Its guarantee, as planned.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub guarantee: Resources,
    /// Resources it would hold more of than its limit (a lowered limit
    /// preempts nothing: it only stops new tasks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub over_limit: Vec<String>,
    /// Its running tasks beyond a lowered limit: newest first, as many as
    /// would have to end for it to fit its limit (nothing ends them: a limit
    /// stops new tasks only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beyond_limit: Vec<String>,
    /// Resources it would hold beyond its guarantee, which a role within
    /// its own guarantee may reclaim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reclaimable: Vec<String>,
}
