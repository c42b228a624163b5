//! Stopping every task a machine's runtimes run, with no agent and no API
//! server: what `corral down` does after `corral up` has stopped (k3s ships
//! the same as its kill-all script).
//!
//! Each runtime re-adopts what survived its agent (exactly what a restarted
//! agent would find), then kills every task: SIGTERM, the grace period,
//! SIGKILL. Returns once each has reported its end, or when the grace
//! period and a margin have passed.

use std::sync::Arc;
use std::time::Duration;

use super::{ContainerRuntime, RuntimeError, RuntimeEvent};

/// How long after the grace period a task may take to report its end.
const MARGIN: Duration = Duration::from_secs(10);

/// What [`stop_all`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Tasks that ended.
    pub stopped: Vec<String>,
    /// Tasks that did not report their end in time.
    pub stuck: Vec<String>,
}

/// Kills every task `runtimes` run on this machine (see the module doc).
pub async fn stop_all(
    runtimes: &[Arc<dyn ContainerRuntime>],
    grace: Duration,
) -> Result<Stopped, RuntimeError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut left = std::collections::BTreeSet::new();
    for runtime in runtimes {
        for key in runtime.recover(tx.clone()).await? {
            left.insert(key);
        }
    }
    let mut out = Stopped::default();
    // Tasks that ended while nobody watched report their exit on recovery.
    let ended = |left: &mut std::collections::BTreeSet<String>, out: &mut Stopped, key: String| {
        if left.remove(&key) {
            out.stopped.push(key);
        }
    };
    while let Ok((key, event)) = rx.try_recv() {
        if matches!(event, RuntimeEvent::Exited { .. } | RuntimeEvent::Killed) {
            ended(&mut left, &mut out, key);
        }
    }
    for runtime in runtimes {
        for key in runtime.running() {
            if left.contains(&key) {
                // NotRunning: it ended between the recovery and now.
                if let Err(e) = runtime.kill(&key, grace).await
                    && !matches!(e, RuntimeError::NotRunning(_))
                {
                    return Err(e);
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + grace + MARGIN;
    while !left.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((key, RuntimeEvent::Exited { .. } | RuntimeEvent::Killed))) => {
                ended(&mut left, &mut out, key)
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    out.stuck = left.into_iter().collect();
    Ok(out)
}
