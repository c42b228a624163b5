//! Role: a team or framework that owns work and shares the cluster by weight.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::LatencyFigures;
use crate::resources::Resources;

fn default_weight() -> f64 {
    1.0
}

/// Writes whole weights as integers (`2`, not `2.0`), as users write them.
fn whole_as_integer<S: serde::Serializer>(w: &f64, s: S) -> Result<S::Ok, S::Error> {
    if w.fract() == 0.0 && w.abs() < 1e15 {
        s.serialize_i64(*w as i64)
    } else {
        s.serialize_f64(*w)
    }
}

/// A role (Mesos role): who owns jobs, quota and reservations.
///
/// Roles nest through `parent` (`eng` → `backend` reads as `eng/backend`); a child
/// shares its parent's quota. `weight` scales the role's fair share under
/// weighted Dominant Resource Fairness.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "corral.dev",
    version = "v1alpha1",
    kind = "Role",
    status = "RoleStatus",
    shortname = "rl",
    category = "corral",
    derive = "PartialEq",
    doc = "A Corral role: a team sharing the cluster by weight, with quota and reservations.",
    printcolumn(name = "Weight", type_ = "number", json_path = ".spec.weight"),
    printcolumn(name = "Parent", type_ = "string", json_path = ".spec.parent"),
    printcolumn(name = "Share", type_ = "number", json_path = ".status.dominantShare"),
    printcolumn(name = "CPUs", type_ = "string", json_path = ".status.allocated.cpus"),
    printcolumn(
        name = "Pending-CPUs",
        type_ = "string",
        json_path = ".status.pending.cpus",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Relative share under weighted DRF; must be positive. Default 1.
    #[serde(default = "default_weight", serialize_with = "whole_as_integer")]
    pub weight: f64,
    /// The parent role's name, for hierarchical roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// What the scheduler observed for the role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatus {
    /// Resources held by the role's assigned and running tasks.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub allocated: Resources,
    /// Resources requested by the role's pending tasks.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub pending: Resources,
    /// The role's dominant share of the cluster (0..1), divided by its weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dominant_share: Option<f64>,
    /// Scheduling latency of the role's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFigures>,
    /// The generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
