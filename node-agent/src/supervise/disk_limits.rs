//! The supervisor's side of disk enforcement (see [`crate::disk`]): which
//! running tasks have a `disk` limit and where they write, and killing one
//! that went past it, so that it ends FAILED with `DiskLimitExceeded`.

use corral_core::lifecycle::Failure;

use super::Supervisor;
use crate::disk::Watched;

impl Supervisor {
    /// The running tasks with a `disk` resource, and the directories each writes.
    pub(crate) fn disk_watch(&self) -> Vec<Watched> {
        let mut watched = Vec::new();
        for (key, (idx, _)) in &self.tasks {
            if self.killing.contains(key) {
                continue;
            }
            let Some(limit) = self
                .object(key)
                .and_then(|t| t.spec.resources.get("disk").and_then(|q| q.milli().ok()))
                .and_then(|milli| u64::try_from(milli / 1000).ok())
                .filter(|bytes| *bytes > 0)
            else {
                continue;
            };
            let dirs = self.runtimes[*idx].writable_dirs(key);
            if !dirs.is_empty() {
                watched.push(Watched {
                    key: key.clone(),
                    limit,
                    dirs,
                });
            }
        }
        watched
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
