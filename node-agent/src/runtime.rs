//! The `ContainerRuntime` trait and the simulated runtime.
//!
//! A runtime starts a task's container and reports what happens to it as
//! [`RuntimeEvent`]s on a channel; the agent turns them into task phases
//! through the lifecycle state machine. Runtimes are tried in the configured
//! order; the first that supports the task's container and is healthy runs it
//! (Mesos containerizers' rule).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

/// What a runtime reports about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The sandbox is being prepared.
    Starting,
    /// The container runs.
    Running,
    /// The container exited by itself.
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// The container was killed on request.
    Killed,
}

/// What a runtime needs to run a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// `namespace/name` of the task.
    pub key: String,
    /// The container to run.
    pub container: corral_api::job::ContainerSpec,
    /// The task's annotations (the simulated runtime reads its instructions there).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Why a runtime could not act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime cannot run this container.
    #[error("runtime {runtime} does not support this container: {why}")]
    Unsupported {
        /// The runtime.
        runtime: &'static str,
        /// Why.
        why: String,
    },
    /// No such task is running here.
    #[error("task {0} is not running here")]
    NotRunning(String),
}

/// A way to run containers (containerd, plain processes, or simulation).
#[async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// The runtime's name (`simulated`).
    fn name(&self) -> &'static str;
    /// True when this runtime can run `launch` now.
    fn supports(&self, launch: &Launch) -> bool;
    /// Starts the task; its events arrive on `events`, tagged with the task key.
    async fn start(
        &self,
        launch: Launch,
        events: mpsc::Sender<(String, RuntimeEvent)>,
    ) -> Result<(), RuntimeError>;
    /// Kills the task: a grace period, then for good.
    async fn kill(&self, key: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// The tasks it runs now (for re-adoption and reconciliation).
    fn running(&self) -> Vec<String>;
}

/// The annotation giving a simulated task's run time (`5s`, `500ms`, `2m`).
pub const SIMULATE_DURATION: &str = "corral.dev/simulate-duration";
/// The annotation giving a simulated task's exit code.
pub const SIMULATE_EXIT_CODE: &str = "corral.dev/simulate-exit-code";

/// Parses `500ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// No process at all: a task runs until killed, or for
/// `corral.dev/simulate-duration` and then exits with
/// `corral.dev/simulate-exit-code` (default 0). One machine can stand in for
/// thousands of nodes with it.
#[derive(Debug, Default, Clone)]
pub struct Simulated {
    running: Arc<Mutex<HashMap<String, tokio::task::JoinHandle<()>>>>,
}

#[async_trait]
impl ContainerRuntime for Simulated {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn supports(&self, _launch: &Launch) -> bool {
        true
    }

    async fn start(
        &self,
        launch: Launch,
        events: mpsc::Sender<(String, RuntimeEvent)>,
    ) -> Result<(), RuntimeError> {
        let duration = launch
            .annotations
            .get(SIMULATE_DURATION)
            .and_then(|d| parse_duration(d));
        let code: i32 = launch
            .annotations
            .get(SIMULATE_EXIT_CODE)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let key = launch.key.clone();
        let running = self.running.clone();
        let task_key = key.clone();
        let handle = tokio::spawn(async move {
            let _ = events
                .send((task_key.clone(), RuntimeEvent::Starting))
                .await;
            let _ = events.send((task_key.clone(), RuntimeEvent::Running)).await;
            if let Some(d) = duration {
                tokio::time::sleep(d).await;
                if let Ok(mut r) = running.lock() {
                    r.remove(&task_key);
                }
                let _ = events.send((task_key, RuntimeEvent::Exited { code })).await;
            }
        });
        if let Ok(mut r) = self.running.lock() {
            r.insert(key, handle);
        }
        Ok(())
    }

    async fn kill(&self, key: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let handle = self.running.lock().ok().and_then(|mut r| r.remove(key));
        match handle {
            Some(h) => {
                h.abort();
                Ok(())
            }
            None => Err(RuntimeError::NotRunning(key.to_owned())),
        }
    }

    fn running(&self) -> Vec<String> {
        self.running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("xs"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_simulated_task_runs_for_its_duration_then_exits_with_its_code() {
        let rt = Simulated::default();
        let (tx, mut rx) = mpsc::channel(16);
        let launch = Launch {
            key: "ns/t".into(),
            container: serde_json::from_value(serde_json::json!({"image": "busybox"}))
                .expect("container"),
            annotations: [
                (SIMULATE_DURATION.to_string(), "5s".to_string()),
                (SIMULATE_EXIT_CODE.to_string(), "3".to_string()),
            ]
            .into(),
        };
        rt.start(launch, tx).await.expect("start");
        assert_eq!(rx.recv().await.map(|e| e.1), Some(RuntimeEvent::Starting));
        assert_eq!(rx.recv().await.map(|e| e.1), Some(RuntimeEvent::Running));
        assert_eq!(rt.running(), vec!["ns/t".to_string()]);
        assert_eq!(
            rx.recv().await.map(|e| e.1),
            Some(RuntimeEvent::Exited { code: 3 }),
            "paused time jumps the 5 s"
        );
        assert!(rt.running().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_simulated_task_without_duration_runs_until_killed() {
        let rt = Simulated::default();
        let (tx, mut rx) = mpsc::channel(16);
        let launch = Launch {
            key: "ns/t".into(),
            container: serde_json::from_value(serde_json::json!({"image": "busybox"}))
                .expect("container"),
            annotations: Default::default(),
        };
        rt.start(launch, tx).await.expect("start");
        rx.recv().await;
        rx.recv().await;
        rt.kill("ns/t", Duration::from_secs(1)).await.expect("kill");
        assert!(rt.running().is_empty());
        assert!(matches!(
            rt.kill("ns/t", Duration::from_secs(1)).await,
            Err(RuntimeError::NotRunning(_))
        ));
    }
}
