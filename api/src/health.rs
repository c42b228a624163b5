//! Health checks of a job's tasks, run by their node's agent (Aurora's
//! health checker, Kubernetes' probes): an HTTP GET on a named port, a TCP
//! connection to one, or a command in the task. A task is `Healthy` (a
//! condition on the Task) after `successThreshold` passes in a row; after
//! `failureThreshold` failures in a row it is killed and FAILED with
//! `HealthCheckFailed` and the last probe's output.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The longest delay, period or timeout: an hour.
pub const MAX_SECONDS: u32 = 3600;
/// The most consecutive results a threshold may ask for.
pub const MAX_THRESHOLD: u32 = 100;
/// The most bytes of a probe's output kept in a task's status.
pub const MAX_OUTPUT: usize = 1024;

fn default_path() -> String {
    "/".into()
}
fn default_period() -> u32 {
    10
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}

/// An HTTP GET against the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// The name of one of the task's ports.
    pub port: String,
    /// The path (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The status that passes; absent: any of 200–399.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<u16>,
}

/// A TCP connection to the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct TcpCheck {
    /// The name of one of the task's ports.
    pub port: String,
}

/// A command run in the task (its container, or as its user beside its
/// process); exit status 0 passes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct ExecCheck {
    /// The program and its arguments (no shell unless it names one).
    pub command: Vec<String>,
}

/// How a job's tasks are checked (exactly one of `http`, `tcp`, `exec`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// An HTTP GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// A command in the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCheck>,
    /// Seconds after the task runs before the first probe (default 0).
    #[serde(default)]
    pub initial_delay_seconds: u32,
    /// Seconds between probes (default 10).
    #[serde(default = "default_period")]
    pub period_seconds: u32,
    /// Seconds a probe may take before it fails (default 1).
    #[serde(default = "one")]
    pub timeout_seconds: u32,
    /// Passes in a row that make the task healthy (default 1).
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// Failures in a row that kill it (default 3).
    #[serde(default = "three")]
    pub failure_threshold: u32,
}

impl HealthCheck {
    /// The port name it probes, if it probes one.
    pub fn port(&self) -> Option<&str> {
        self.http
            .as_ref()
            .map(|h| h.port.as_str())
            .or(self.tcp.as_ref().map(|t| t.port.as_str()))
    }
}
