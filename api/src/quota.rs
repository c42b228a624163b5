//! Quota: a role's guaranteed and maximum share of the cluster.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::Resources;

fn yes() -> bool {
    true
}

/// A role's quota across the whole cluster.
///
/// `limit` is a hard ceiling on what the role's tasks may hold. `guarantee` is
/// capacity kept for the role: other roles may borrow it while unused (when
/// `lendUnused`), and give it back by preemption when the owner needs it.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "corral.dev",
    version = "v1alpha1",
    kind = "Quota",
    status = "QuotaStatus",
    shortname = "qt",
    category = "corral",
    derive = "PartialEq",
    doc = "A Corral quota: the guarantee and limit of one role.",
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(
        name = "Guarantee-CPUs",
        type_ = "string",
        json_path = ".spec.guarantee.cpus"
    ),
    printcolumn(name = "Used-CPUs", type_ = "string", json_path = ".status.used.cpus"),
    printcolumn(
        name = "Borrowed-CPUs",
        type_ = "string",
        json_path = ".status.borrowed.cpus"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    /// The role this quota applies to.
    pub role: String,
    /// Capacity protected for the role.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub guarantee: Resources,
    /// The most the role may hold; an absent resource is unlimited.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub limit: Resources,
    /// Whether other roles may borrow this role's unused guarantee. Default true.
    #[serde(default = "yes")]
    pub lend_unused: bool,
    /// Whether this role may use other roles' unused guarantee. Default true.
    #[serde(default = "yes")]
    pub borrow: bool,
    /// How much beyond its guarantee the role (with its descendants) may
    /// hold of the regular pool, per resource (Kueue's `borrowingLimit`);
    /// an absent resource is uncapped (up to `limit`).
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub borrowing_limit: Resources,
}

/// What the role currently uses against its quota.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    /// Resources held by the role (and its children).
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub used: Resources,
    /// The part of `used` above the guarantee, borrowed from other roles.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub borrowed: Resources,
    /// The generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
