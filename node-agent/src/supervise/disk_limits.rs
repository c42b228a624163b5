//! The supervisor's side of disk measurement and enforcement (see
//! [`crate::disk`]): where each running task writes and its `disk` limit, if
//! any (every task's use is measured for the agent's metrics), and killing
//! one that went past its limit, so that it ends FAILED with
//! `DiskLimitExceeded`.

use corral_core::lifecycle::Failure;

use super::Supervisor;
use crate::disk::Watched;

impl Supervisor {
    /// The running tasks, the directories each writes, and each one's
    /// `disk` limit (`u64::MAX` for a task without one: measured, never
    /// killed).
    pub(crate) fn disk_watch(&self) -> Vec<Watched> {
        // The limits, read in place (no Task is copied for them).
        let limits: Vec<(String, usize, u64)> = {
            let Ok(objects) = self.objects.lock() else {
                return Vec::new();
            };
            self.tasks
                .iter()
                .filter(|(key, _)| !self.killing.contains(*key))
                .filter_map(|(key, (idx, _))| {
                    let limit = objects
                        .get(key)?
                        .spec
                        .resources
                        .get("disk")
                        .and_then(|q| q.milli().ok())
                        .and_then(|milli| u64::try_from(milli / 1000).ok())
                        .filter(|b| *b > 0)
                        .unwrap_or(u64::MAX);
                    Some((key.clone(), *idx, limit))
                })
                .collect()
        };
        limits
            .into_iter()
            .filter_map(|(key, idx, limit)| {
                let dirs = self.runtimes[idx].writable_dirs(&key);
                (!dirs.is_empty()).then_some(Watched { key, limit, dirs })
            })
            .collect()
    }

    /// Kills `key` for its disk use; it ends with `failure`.
    pub(crate) fn exceeded_disk(&mut self, key: &str, failure: Failure) {
        let Some((idx, _)) = self.tasks.get(key).cloned() else {
            return;
        };
        if self.killing.contains(key) {
            return;
        }
        tracing::warn!(task = %key, detail = %failure.detail, "killing a task past its disk limit");
        self.over_disk.insert(key.to_owned(), failure);
        let grace = self.grace(key);
        self.kill(key, idx, grace);
    }
}
