//! MTTA, MTTS and MTTR as histograms: each task's time from its creation to
//! its first ASSIGNED, STARTING and RUNNING event, observed once per task
//! and phase as the shared task cache shows the event.
//!
//! Watches Tasks through the cache; keeps, per task, which phases it has
//! observed (forgotten when the task goes). Events from before the process
//! started are not observed, so a restarted controller does not count a
//! cluster's history twice.

use std::collections::HashMap;
use std::sync::Arc;

use corral_api::{Task, TaskPhase};
use futures::StreamExt;

use super::Metrics;
use crate::cache::{Caches, Change};

/// A phase whose first reaching is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// ASSIGNED (MTTA).
    Assigned,
    /// STARTING (MTTS).
    Starting,
    /// RUNNING (MTTR).
    Running,
}

impl Reached {
    const ALL: [(Reached, TaskPhase); 3] = [
        (Reached::Assigned, TaskPhase::Assigned),
        (Reached::Starting, TaskPhase::Starting),
        (Reached::Running, TaskPhase::Running),
    ];

    fn bit(self) -> u8 {
        match self {
            Reached::Assigned => 1,
            Reached::Starting => 2,
            Reached::Running => 4,
        }
    }
}

/// The phases `task` first reached at or after `since` and not yet in
/// `seen` (a bit per [`Reached`]), with the seconds from its creation.
pub fn newly_reached(task: &Task, seen: u8, since: jiff::Timestamp) -> Vec<(Reached, f64)> {
    let (Some(created), Some(status)) = (&task.metadata.creation_timestamp, &task.status) else {
        return Vec::new();
    };
    Reached::ALL
        .iter()
        .filter(|(r, _)| seen & r.bit() == 0)
        .filter_map(|(r, phase)| {
            let at = status.task_events.iter().find(|e| e.status == *phase)?;
            (at.timestamp.0 >= since).then(|| {
                let ms = (at.timestamp.0.as_millisecond() - created.0.as_millisecond()).max(0);
                (*r, ms as f64 / 1000.0)
            })
        })
        .collect()
}

fn key(task: &Task) -> String {
    format!(
        "{}/{}",
        task.metadata.namespace.as_deref().unwrap_or_default(),
        task.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Observes the cache's tasks into `metrics` until the cache's changes end.
pub async fn observe(caches: Arc<Caches>, metrics: Metrics) {
    let since = jiff::Timestamp::now();
    let mut seen: HashMap<String, u8> = HashMap::new();
    let mut changes = std::pin::pin!(caches.tasks().changes());
    while let Some(change) = changes.next().await {
        match change {
            Change::Applied(task) => {
                let key = key(&task);
                let bits = seen.get(&key).copied().unwrap_or(0);
                let reached = newly_reached(&task, bits, since);
                if reached.is_empty() {
                    continue;
                }
                let mut now = bits;
                for (r, seconds) in reached {
                    metrics.latency(r, &task.spec.role, seconds);
                    now |= r.bit();
                }
                seen.insert(key, now);
            }
            Change::Deleted(task) => {
                seen.remove(&key(&task));
            }
            Change::Resynced => {
                let live: std::collections::HashSet<String> = caches
                    .tasks()
                    .store()
                    .state()
                    .iter()
                    .map(|t| key(t))
                    .collect();
                seen.retain(|k, _| live.contains(k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_api::task::{TaskEvent, TaskStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn task(events: &[(TaskPhase, i64)]) -> Task {
        let mut t: Task = serde_json::from_value(serde_json::json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "t", "namespace": "default"},
            "spec": {"job": "j", "role": "r", "instanceId": 0,
                     "resources": {"cpus": 1}, "container": {"image": "x"}}}))
        .expect("a task");
        t.metadata.creation_timestamp = Some(Time(at(0)));
        let mut st = TaskStatus::default();
        for (phase, s) in events {
            st.task_events.push(TaskEvent {
                status: *phase,
                timestamp: MicroTime(at(*s)),
                message: String::new(),
                actor: "test".into(),
            });
        }
        t.status = Some(st);
        t
    }

    #[test]
    fn each_phase_is_timed_once_and_history_before_the_start_is_not() {
        let t = task(&[
            (TaskPhase::Pending, 0),
            (TaskPhase::Assigned, 2),
            (TaskPhase::Starting, 3),
        ]);
        assert_eq!(
            newly_reached(&t, 0, at(0)),
            vec![(Reached::Assigned, 2.0), (Reached::Starting, 3.0)]
        );
        // Assigned already observed.
        assert_eq!(
            newly_reached(&t, Reached::Assigned.bit(), at(0)),
            vec![(Reached::Starting, 3.0)]
        );
        // The process started after the assignment.
        assert_eq!(newly_reached(&t, 0, at(3)), vec![(Reached::Starting, 3.0)]);
        assert!(newly_reached(&task(&[(TaskPhase::Pending, 0)]), 0, at(0)).is_empty());
    }
}
