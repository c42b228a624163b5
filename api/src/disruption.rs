//! Voluntary disruptions: a job's disruption budget, a node's drain and
//! maintenance window, and the eviction that carries one out.
//!
//! A job states how many of its instances may be down at once for
//! voluntary reasons (`spec.disruptionBudget.maxUnavailable`, a count or a
//! percentage of `instances`: Aurora's SLA, Kubernetes'
//! PodDisruptionBudget). Every voluntary disruption — an eviction through
//! the `tasks/eviction` subresource, and so every drain — honours it; a job
//! without a budget may lose any number at once (as a pod without a
//! PodDisruptionBudget may).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How long an eviction's record in `status.disruptedTasks` counts its
/// task as down (Kubernetes' two minutes): long enough for the task's
/// DRAINING to be seen by every API server, after which its phase says it.
pub const DISRUPTION_RECORD_SECONDS: i64 = 120;

/// How many of a job's instances voluntary disruptions may take down at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudget {
    /// A count (`1`) or a percentage of `instances` (`"25%"`, rounded up).
    pub max_unavailable: IntOrString,
}

/// Why a budget's value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A negative count.
    #[error("must be at least 0")]
    Negative,
    /// Not `N%` with N from 0 to 100.
    #[error("a percentage is written \"N%\" with N from 0 to 100")]
    BadPercent,
}

impl DisruptionBudget {
    /// The number of instances (of `instances`) that may be down at once.
    pub fn max_unavailable(&self, instances: u32) -> Result<u32, BudgetError> {
        match &self.max_unavailable {
            IntOrString::Int(n) => u32::try_from(*n).map_err(|_| BudgetError::Negative),
            IntOrString::String(s) => {
                let pct: u64 = s
                    .strip_suffix('%')
                    .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|d| d.parse().ok())
                    .filter(|p| *p <= 100)
                    .ok_or(BudgetError::BadPercent)?;
                let n = (u64::from(instances) * pct).div_ceil(100);
                Ok(u32::try_from(n).unwrap_or(u32::MAX))
            }
        }
    }
}

/// A node's planned maintenance: new services avoid the node from
/// `avoidAheadSeconds` before `start`, every task is drained from
/// `drainAheadSeconds` before it, and it is in maintenance for
/// `durationSeconds` from `start` (Mesos' maintenance schedule, Aurora's
/// maintenance API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// When the machine goes down.
    pub start: Time,
    /// How long it stays down.
    pub duration_seconds: u32,
    /// How long before `start` its drain begins (default 600 s), so that
    /// the node is empty when the window opens.
    #[serde(default = "default_drain_ahead")]
    pub drain_ahead_seconds: u32,
    /// How long before `start` new services stop being placed on the node
    /// (default 3600 s; batch work may still use it until its drain).
    #[serde(default = "default_avoid_ahead")]
    pub avoid_ahead_seconds: u32,
}

fn default_drain_ahead() -> u32 {
    600
}

fn default_avoid_ahead() -> u32 {
    3600
}

/// Where a node stands with its window at `now` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowPhase {
    /// The window is further away than both leads.
    Ahead,
    /// New services avoid the node (the window opens within
    /// `avoidAheadSeconds`), its drain has not begun.
    Near,
    /// Its drain has begun (the window opens within the lead).
    Draining,
    /// The window is open.
    Open,
    /// The window has closed.
    Over,
}

impl MaintenanceWindow {
    /// The window's start in Unix seconds.
    pub fn start_second(&self) -> i64 {
        self.start.0.as_second()
    }

    /// Where `now` (Unix seconds) falls.
    pub fn phase(&self, now: i64) -> WindowPhase {
        let start = self.start_second();
        let end = start + i64::from(self.duration_seconds);
        if now >= end {
            WindowPhase::Over
        } else if now >= start {
            WindowPhase::Open
        } else if now >= start - i64::from(self.drain_ahead_seconds) {
            WindowPhase::Draining
        } else if now >= start - i64::from(self.avoid_ahead_seconds) {
            WindowPhase::Near
        } else {
            WindowPhase::Ahead
        }
    }
}

/// A record of an eviction under way in a Job's status: the task's name
/// and when it was evicted.
pub type DisruptedTasks = std::collections::BTreeMap<String, Time>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_counts_and_percentages_rounding_up() {
        let b = |v: IntOrString| DisruptionBudget { max_unavailable: v };
        for (value, instances, want) in [
            (IntOrString::Int(1), 3, Ok(1)),
            (IntOrString::Int(0), 3, Ok(0)),
            (IntOrString::Int(5), 3, Ok(5)),
            (IntOrString::Int(-1), 3, Err(BudgetError::Negative)),
            (IntOrString::String("34%".into()), 3, Ok(2)),
            (IntOrString::String("33%".into()), 3, Ok(1)),
            (IntOrString::String("10%".into()), 3, Ok(1)),
            (IntOrString::String("0%".into()), 3, Ok(0)),
            (IntOrString::String("100%".into()), 7, Ok(7)),
            (
                IntOrString::String("101%".into()),
                7,
                Err(BudgetError::BadPercent),
            ),
            (
                IntOrString::String("5".into()),
                7,
                Err(BudgetError::BadPercent),
            ),
            (
                IntOrString::String("%".into()),
                7,
                Err(BudgetError::BadPercent),
            ),
            (
                IntOrString::String("-5%".into()),
                7,
                Err(BudgetError::BadPercent),
            ),
        ] {
            assert_eq!(
                b(value.clone()).max_unavailable(instances),
                want,
                "{value:?}"
            );
        }
    }

    #[test]
    fn a_window_drains_ahead_then_opens_then_ends() {
        let w = MaintenanceWindow {
            start: Time(jiff::Timestamp::from_second(10_000).expect("time")),
            duration_seconds: 100,
            drain_ahead_seconds: 600,
            avoid_ahead_seconds: 3600,
        };
        for (now, want) in [
            (6_399, WindowPhase::Ahead),
            (6_400, WindowPhase::Near),
            (9_399, WindowPhase::Near),
            (9_400, WindowPhase::Draining),
            (9_999, WindowPhase::Draining),
            (10_000, WindowPhase::Open),
            (10_099, WindowPhase::Open),
            (10_100, WindowPhase::Over),
        ] {
            assert_eq!(w.phase(now), want, "{now}");
        }
    }
}
