//! The supervisor's side of disk enforcement (see [`crate::disk`]): which
//! running tasks have a `disk` limit and where they write, and killing one
//! that went past it, so that it ends FAILED with `DiskLimitExceeded`.

use corral_core::lifecycle::Failure;

use super::Supervisor;
use crate::disk::Watched;

impl Supervisor {
    /// The running tasks with a `disk` resource, and the directories each writes.
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
                    let milli = objects.get(key)?.spec.resources.get("disk")?.milli().ok()?;
                    let bytes = u64::try_from(milli / 1000).ok().filter(|b| *b > 0)?;
                    Some((key.clone(), *idx, bytes))
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
