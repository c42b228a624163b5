//! Node: a machine an agent runs tasks on, with what it offers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Condition;
use crate::resources::Resources;

/// The node attribute naming the role a node is dedicated to.
pub const DEDICATED_ATTRIBUTE: &str = "dedicated";

/// The namespace of node Leases: one per node, named as the node, renewed
/// by its agent.
pub const NODE_LEASE_NAMESPACE: &str = "corral-node-lease";

/// A machine in the pool. The agent registers it and keeps `status` current.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "corral.dev",
    version = "v1alpha1",
    kind = "Node",
    status = "NodeStatus",
    shortname = "cn",
    category = "corral",
    derive = "PartialEq",
    doc = "A Corral node: a machine whose agent runs tasks.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "CPUs",
        type_ = "string",
        json_path = ".status.allocatable.cpus"
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".status.allocatable.memory"
    ),
    printcolumn(
        name = "Drain",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Draining\")].reason"
    ),
    printcolumn(
        name = "Maintenance",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Maintenance\")].reason"
    ),
    printcolumn(
        name = "Unschedulable",
        type_ = "boolean",
        json_path = ".spec.unschedulable",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Attributes matched by job constraints (`rack: r1`, `zone: a`, `dedicated: analytics`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// No new tasks are placed here (cordon).
    #[serde(default)]
    pub unschedulable: bool,
    /// Move every task off the node (`corral node drain`): nothing new is
    /// placed here, and each task is evicted as its job's disruption
    /// budget allows, a service's after its replacement runs elsewhere
    /// where there is room for one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain: bool,
    /// Planned maintenance: the node is drained ahead of the window, so it
    /// is empty when the window opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::disruption::MaintenanceWindow>,
}

impl NodeSpec {
    /// True when the node is to be emptied at `now` (Unix seconds): a drain
    /// was asked for, or its maintenance window opens within its drain lead
    /// or is open.
    pub fn draining(&self, now: i64) -> bool {
        use crate::disruption::WindowPhase;
        self.drain
            || self
                .maintenance
                .as_ref()
                .is_some_and(|w| matches!(w.phase(now), WindowPhase::Draining | WindowPhase::Open))
    }

    /// True when no new task may be placed at `now`: cordoned or draining.
    pub fn closed(&self, now: i64) -> bool {
        self.unschedulable || self.draining(now)
    }

    /// True when new long-running work should avoid the node at `now`:
    /// its maintenance window is near.
    pub fn window_near(&self, now: i64) -> bool {
        self.maintenance
            .as_ref()
            .is_some_and(|w| w.phase(now) == crate::disruption::WindowPhase::Near)
    }
}

/// A static reservation advertised by the agent (`cpus(analytics)=2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StaticReservation {
    /// The role served.
    pub role: String,
    /// What is reserved.
    pub resources: Resources,
}

/// A container runtime an agent can run tasks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// containerd over its socket.
    Containerd,
    /// Plain processes in cgroups.
    Process,
    /// No process: for scale tests.
    Simulated,
}

impl RuntimeKind {
    /// The runtime called `name` (`containerd`, `process`, `simulated`).
    pub fn from_name(name: &str) -> Option<RuntimeKind> {
        [
            RuntimeKind::Containerd,
            RuntimeKind::Process,
            RuntimeKind::Simulated,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }

    /// The name jobs and agents use (`--runtimes containerd,process`).
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Containerd => "containerd",
            RuntimeKind::Process => "process",
            RuntimeKind::Simulated => "simulated",
        }
    }
}

/// Condition types of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NodeConditionType {
    /// The agent heartbeats and can run tasks.
    Ready,
    /// The node is being drained (True while tasks are left; False with
    /// reason `Drained` once it is empty).
    Draining,
    /// The node has a maintenance window (True while it is open).
    Maintenance,
}

/// Reasons of node conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NodeReason {
    /// The agent renews its lease.
    AgentReady,
    /// The agent's lease expired.
    HeartbeatExpired,
    /// No runtime is healthy.
    RuntimeUnavailable,
    /// An operator asked for maintenance.
    MaintenanceRequested,
    /// An operator asked for a drain (`spec.drain`).
    DrainRequested,
    /// The node's maintenance window is about to open: new services avoid the
    /// node, and from the drain lead on it is drained.
    MaintenanceAhead,
    /// Every task has left the node.
    Drained,
    /// A maintenance window is scheduled, further away than its leads.
    MaintenanceScheduled,
    /// The maintenance window is open.
    MaintenanceWindowOpen,
    /// The maintenance window has closed.
    MaintenanceComplete,
}

/// What the node offers and how it is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Everything the machine has.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub total: Resources,
    /// What tasks may use (total minus what the system keeps).
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub allocatable: Resources,
    /// Oversubscribed capacity for revocable tasks, from measured idle usage.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub revocable: Resources,
    /// Static reservations from the agent's configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_reservations: Vec<StaticReservation>,
    /// Typed conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition<NodeConditionType, NodeReason>>,
    /// The agent's last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// Container runtimes the agent set up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<RuntimeKind>,
    /// The runtime that runs tasks naming none: the first the agent was
    /// told to use (reported even when it could not be set up, so that such
    /// tasks wait rather than run elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_runtime: Option<RuntimeKind>,
    /// What the node's tasks use now, as last measured by the agent (the
    /// "used" beside "allocated").
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub usage: Resources,
    /// Where the agent serves its tasks' logs, for the API server to proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_endpoint: Option<LogEndpoint>,
    /// The host ports the agent offers for assignment to tasks that name a
    /// port without a number (`--resources ports=[31000-32000]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_ranges: Vec<crate::ports::PortRange>,
    /// Where the node is reached (Kubernetes' `NodeAddress`): its tasks'
    /// ports are served there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
}

/// One address of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeAddress {
    /// `InternalIP` or `Hostname`.
    #[serde(rename = "type")]
    pub type_: NodeAddressType,
    /// The address.
    pub address: String,
}

/// Kinds of node address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NodeAddressType {
    /// An IP address others in the cluster reach it at.
    #[serde(rename = "InternalIP")]
    InternalIp,
    /// Its host name.
    Hostname,
}

impl NodeStatus {
    /// The address tasks on it are reached at: its first `InternalIP`, else
    /// its first address of any kind.
    pub fn reach_address(&self) -> Option<&str> {
        self.addresses
            .iter()
            .find(|a| a.type_ == NodeAddressType::InternalIp)
            .or(self.addresses.first())
            .map(|a| a.address.as_str())
    }
}

/// An agent's log endpoint: HTTPS with a self-made certificate, pinned by
/// its fingerprint; callers authenticate with certificates from Corral's CA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEndpoint {
    /// `https://HOST:PORT`.
    pub url: String,
    /// Lower-case hex SHA-256 of the endpoint's certificate (DER).
    pub certificate_sha256: String,
}

/// A v1 Event about Node `node`, reported by `component` (from `host`, when
/// it runs on a machine) at `now`, in `default` as Kubernetes records events
/// about cluster-scoped objects.
pub fn node_event(
    node: &str,
    reason: &str,
    type_: &str,
    message: String,
    (component, host): (&str, Option<&str>),
    now: jiff::Timestamp,
) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    let at = Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now));
    Event {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            generate_name: Some(format!("{node}.")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("corral.dev/v1alpha1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..Default::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message),
        type_: Some(type_.to_owned()),
        source: Some(EventSource {
            component: Some(component.to_owned()),
            host: host.map(str::to_owned),
        }),
        first_timestamp: Some(at.clone()),
        last_timestamp: Some(at),
        count: Some(1),
        ..Default::default()
    }
}
