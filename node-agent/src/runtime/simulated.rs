//! The simulated runtime: no process, so one machine can stand in for
//! thousands of nodes (as KWOK does). A task runs until killed, or for
//! `corral.dev/simulate-duration` and then exits with
//! `corral.dev/simulate-exit-code`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corral_api::node::RuntimeKind;

use super::{ContainerRuntime, Events, Launch, RuntimeError, RuntimeEvent};

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

/// A simulated task: its timer, where its kill is reported, and its task's uid.
type SimulatedTask = (tokio::task::JoinHandle<()>, Events, Option<String>);

/// No process at all: a task runs until killed, or for
/// `corral.dev/simulate-duration` and then exits with
/// `corral.dev/simulate-exit-code` (default 0). One machine can stand in for
/// thousands of nodes with it.
#[derive(Debug, Default, Clone)]
pub struct Simulated {
    running: Arc<Mutex<HashMap<String, SimulatedTask>>>,
}

#[async_trait]
impl ContainerRuntime for Simulated {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Simulated
    }

    fn unsupported(&self, _launch: &Launch) -> Option<String> {
        None
    }

    async fn start(&self, launch: Launch, events: Events) -> Result<(), RuntimeError> {
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
        let uid = launch.uid.clone();
        let running = self.running.clone();
        let task_key = key.clone();
        let killed = events.clone();
        let handle = tokio::spawn(async move {
            let _ = events
                .send((task_key.clone(), RuntimeEvent::Starting))
                .await;
            let _ = events.send((task_key.clone(), RuntimeEvent::Running)).await;
            if let Some(d) = duration {
                tokio::time::sleep(d).await;
                // The exit goes to whichever agent re-adopted the task last.
                let Some((_, events, _)) =
                    running.lock().ok().and_then(|mut r| r.remove(&task_key))
                else {
                    return;
                };
                let _ = events
                    .send((
                        task_key,
                        RuntimeEvent::Exited {
                            code,
                            failure: None,
                        },
                    ))
                    .await;
            }
        });
        if let Ok(mut r) = self.running.lock() {
            r.insert(key, (handle, killed, uid));
        }
        Ok(())
    }

    async fn kill(&self, key: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let handle = self.running.lock().ok().and_then(|mut r| r.remove(key));
        match handle {
            Some((h, events, _)) => {
                h.abort();
                let _ = events.send((key.to_owned(), RuntimeEvent::Killed)).await;
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

    fn uid(&self, key: &str) -> Option<String> {
        self.running.lock().ok()?.get(key)?.2.clone()
    }

    /// The simulated tasks outlive an agent that shares this runtime (as
    /// containers outlive a real agent): the next one re-adopts them.
    async fn recover(&self, events: Events) -> Result<Vec<String>, RuntimeError> {
        let keys: Vec<String> = match self.running.lock() {
            Ok(mut r) => r
                .iter_mut()
                .map(|(k, (_, ev, _))| {
                    *ev = events.clone();
                    k.clone()
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        for k in &keys {
            let _ = events.send((k.clone(), RuntimeEvent::Running)).await;
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

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
            resources: Default::default(),
            annotations: [
                (SIMULATE_DURATION.to_string(), "5s".to_string()),
                (SIMULATE_EXIT_CODE.to_string(), "3".to_string()),
            ]
            .into(),
            uid: None,
        };
        rt.start(launch, tx).await.expect("start");
        assert_eq!(rx.recv().await.map(|e| e.1), Some(RuntimeEvent::Starting));
        assert_eq!(rx.recv().await.map(|e| e.1), Some(RuntimeEvent::Running));
        assert_eq!(rt.running(), vec!["ns/t".to_string()]);
        assert_eq!(
            rx.recv().await.map(|e| e.1),
            Some(RuntimeEvent::Exited {
                code: 3,
                failure: None
            }),
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
            resources: Default::default(),
            annotations: Default::default(),
            uid: Some("u1".into()),
        };
        rt.start(launch, tx).await.expect("start");
        rx.recv().await;
        rx.recv().await;
        rt.kill("ns/t", Duration::from_secs(1)).await.expect("kill");
        assert_eq!(rx.recv().await.map(|e| e.1), Some(RuntimeEvent::Killed));
        assert!(rt.running().is_empty());
        assert!(matches!(
            rt.kill("ns/t", Duration::from_secs(1)).await,
            Err(RuntimeError::NotRunning(_))
        ));
    }
}
