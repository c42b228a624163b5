//! Reservation: resources on one node that serve one role only.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Condition;
use crate::resources::Resources;

/// Where a reservation comes from (Mesos' static and dynamic reservations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReservationType {
    /// From the agent's configuration (`--reserved 'cpus(analytics)=2'`).
    Static,
    /// Created through the API.
    #[default]
    Dynamic,
}

/// Resources on `node` held for `role`: they serve that role first and never another.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "corral.dev",
    version = "v1alpha1",
    kind = "Reservation",
    status = "ReservationStatus",
    shortname = "rsv",
    category = "corral",
    derive = "PartialEq",
    doc = "A Corral reservation: resources on one node kept for one role.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Applied",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Applied\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Applied\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ReservationSpec {
    /// The node the resources are on.
    pub node: String,
    /// The role they serve.
    pub role: String,
    /// How much is reserved.
    pub resources: Resources,
    /// Free-form labels (Mesos reservation labels), e.g. `purpose: spark`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Static (agent configuration) or dynamic (API). Default dynamic.
    #[serde(default, rename = "type")]
    pub type_: ReservationType,
}

/// Condition types of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ReservationConditionType {
    /// The reservation is in force on its node.
    Applied,
}

/// Reasons for reservation conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ReservationReason {
    /// The node has room and the reservation holds.
    Reserved,
    /// No node of that name is registered.
    NodeNotFound,
    /// The node's unreserved resources are smaller than the reservation.
    InsufficientResources,
}

/// Whether the reservation is in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationStatus {
    /// Typed conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition<ReservationConditionType, ReservationReason>>,
    /// Resources of the reservation in use by the role's tasks.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub used: Resources,
}
