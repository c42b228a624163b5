//! The supervisor's side of health checks (see [`crate::health`]): a probe
//! loop per running task that has a check, its results decided with
//! `corral_core::health`, the `Healthy` condition reported when it flips,
//! and a task that fails its check killed so that it ends FAILED with
//! `HealthCheckFailed` and the last probe's output (then replaced, and
//! counted by the flapping backoff, as any failure).

use std::collections::HashMap;

use corral_api::task::FailureReason;
use corral_core::health::{Flip, Health, Thresholds};
use corral_core::lifecycle::Failure;
use tokio::sync::mpsc;

use super::Supervisor;
use crate::health::{Probed, Target};

/// Probe results queued per agent before probe loops wait.
const QUEUE: usize = 1024;

/// The health checking of an agent's tasks.
pub(crate) struct Probing {
    results_tx: mpsc::Sender<Probed>,
    results: Option<mpsc::Receiver<Probed>>,
    /// Per checked task: its probe loop and its run of results.
    checked: HashMap<String, (tokio::task::AbortHandle, Health)>,
}

impl Default for Probing {
    fn default() -> Self {
        let (results_tx, results) = mpsc::channel(QUEUE);
        Probing {
            results_tx,
            results: Some(results),
            checked: HashMap::new(),
        }
    }
}

impl Drop for Probing {
    fn drop(&mut self) {
        for (handle, _) in self.checked.values() {
            handle.abort();
        }
    }
}

impl Supervisor {
    /// The probe results, for the agent loop to hand back one at a time
    /// (to [`Supervisor::probed`]); taken once.
    pub(crate) fn probe_results(&mut self) -> Option<mpsc::Receiver<Probed>> {
        self.probing.results.take()
    }

    /// Starts probing `key` if its task has a health check (it just started
    /// running, or was adopted running).
    pub(crate) fn start_probing(&mut self, key: &str) {
        let Some((idx, _)) = self.tasks.get(key).cloned() else {
            return;
        };
        let Some(task) = self.object(key) else { return };
        let Some(check) = task.spec.health_check.clone() else {
            return;
        };
        let port = check.port().and_then(|name| {
            task.status
                .as_ref()?
                .ports
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.port)
        });
        let target = Target {
            key: key.to_owned(),
            uid: task.metadata.uid.clone(),
            check,
            port,
            container: task.spec.container.clone(),
            runtime: self.runtimes[idx].clone(),
        };
        self.stop_probing(key);
        let handle = crate::health::spawn(target, self.probing.results_tx.clone());
        self.probing
            .checked
            .insert(key.to_owned(), (handle, Health::default()));
    }

    /// Starts probing `key` unless it is probed already.
    pub(crate) fn probe_if_unprobed(&mut self, key: &str) {
        if self.probing.checked.contains_key(key) {
            return;
        }
        // Read in place: most tasks have no check, and none is copied for it.
        let checked = self
            .objects
            .lock()
            .is_ok_and(|o| o.get(key).is_some_and(|t| t.spec.health_check.is_some()));
        if checked {
            self.start_probing(key);
        }
    }

    /// Stops probing `key` (it ended, or is being killed).
    pub(crate) fn stop_probing(&mut self, key: &str) {
        if let Some((handle, _)) = self.probing.checked.remove(key) {
            handle.abort();
        }
    }

    /// Takes one probe result: reports the `Healthy` condition when it
    /// flips; kills the task when it fails its check.
    pub(crate) fn probed(&mut self, result: Probed) {
        let Some(task) = self.object(&result.key) else {
            self.stop_probing(&result.key);
            return;
        };
        if task.metadata.uid != result.uid || self.killing.contains(&result.key) {
            return;
        }
        let Some(check) = &task.spec.health_check else {
            return;
        };
        let thresholds = Thresholds {
            success: check.success_threshold,
            failure: check.failure_threshold,
        };
        let failures = check.failure_threshold;
        let Some((_, health)) = self.probing.checked.get_mut(&result.key) else {
            return;
        };
        match health.observe(result.passed, thresholds) {
            Flip::Same => {}
            Flip::Healthy => self.report_health(&result.key, true, result.output),
            Flip::Unhealthy => self.report_health(&result.key, false, result.output),
            Flip::Failed => {
                self.stop_probing(&result.key);
                let failure = Failure::new(
                    FailureReason::HealthCheckFailed,
                    format!(
                        "its health check failed {failures} time(s) in a row: {}",
                        result.output
                    ),
                );
                self.failed_check(&result.key, failure);
            }
        }
    }

    /// Kills `key`, failed by its health check; it ends with `failure`.
    fn failed_check(&mut self, key: &str, failure: Failure) {
        let Some((idx, _)) = self.tasks.get(key).cloned() else {
            return;
        };
        if self.killing.contains(key) {
            return;
        }
        tracing::warn!(task = %key, detail = %failure.detail, "killing a task that failed its health check");
        self.report_health(key, false, failure.detail.clone());
        self.over_disk.insert(key.to_owned(), failure);
        let grace = self.grace(key);
        self.kill(key, idx, grace);
    }
}
