//! Enforcing tasks' `disk` by measurement, as Mesos' `posix/disk` isolator
//! does (`--enforce_container_disk_quota`): every sample interval the agent
//! adds up what each running task with a `disk` resource holds in the
//! directories it writes (its sandbox, and a container's writable layer),
//! and kills a task past its limit, which then fails with
//! `DiskLimitExceeded`. Filesystem quotas would stop the writes instead;
//! measuring needs nothing of the filesystem, and a task can go past its
//! limit by what it writes in one interval.
//!
//! Counts allocated blocks (what `du` counts), each inode once, without
//! following links or leaving the filesystem a directory is on; stops as
//! soon as a task is known to be over, so a task with many files costs one
//! walk up to its limit.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use corral_api::task::FailureReason;
use corral_core::lifecycle::Failure;

/// A running task whose disk use is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// `namespace/name`.
    pub key: String,
    /// Its `disk` resource, in bytes (`u64::MAX` for a task without one).
    pub limit: u64,
    /// The directories it writes.
    pub dirs: Vec<PathBuf>,
}

/// Bytes `dirs` hold on disk, counting stopped once past `stop_after`.
pub fn usage(dirs: &[PathBuf], stop_after: u64) -> u64 {
    let mut total = 0u64;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    for root in dirs {
        let Ok(meta) = std::fs::symlink_metadata(root) else {
            continue;
        };
        let device = meta.dev();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(m) = entry.metadata() else { continue };
                if m.dev() != device || !seen.insert((m.dev(), m.ino())) {
                    continue;
                }
                total = total.saturating_add(m.blocks().saturating_mul(512));
                if total > stop_after {
                    return total;
                }
                if m.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
    }
    total
}

/// What each task of `watched` holds on disk (bytes; counting stopped
/// once past its limit).
pub fn measure(watched: &[Watched]) -> Vec<(String, u64)> {
    watched
        .iter()
        .map(|w| (w.key.clone(), usage(&w.dirs, w.limit)))
        .collect()
}

/// The tasks of `watched` that hold more than their limit, with the failure
/// each is killed for.
pub fn over_limit(watched: &[Watched]) -> Vec<(String, Failure)> {
    over(watched, &measure(watched))
}

/// The tasks of `watched` that hold more than their limit, by `used` (as
/// [`measure`] gives it), with the failure each is killed for.
pub fn over(watched: &[Watched], used: &[(String, u64)]) -> Vec<(String, Failure)> {
    watched
        .iter()
        .zip(used)
        .filter_map(|(w, (_, used))| {
            let used = *used;
            (used > w.limit).then(|| {
                (
                    w.key.clone(),
                    Failure::new(
                        FailureReason::DiskLimitExceeded,
                        format!(
                            "killed for using more than its disk limit of {} bytes (at least {used} bytes in its sandbox and writable layer)",
                            w.limit
                        ),
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_once_and_stops_past_the_limit() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub)?;
        std::fs::write(sub.join("big"), vec![1u8; 256 * 1024])?;
        // A hard link is the same blocks; a symlink to a big file outside
        // is not followed.
        std::fs::hard_link(sub.join("big"), dir.path().join("again"))?;
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("huge"), vec![1u8; 1024 * 1024])?;
        std::os::unix::fs::symlink(outside.path().join("huge"), dir.path().join("link"))?;
        let dirs = vec![dir.path().to_owned()];
        let used = usage(&dirs, u64::MAX);
        assert!(
            (256 * 1024..512 * 1024).contains(&used),
            "one copy of the file and a few directory blocks: {used}"
        );
        let w = |limit| Watched {
            key: "ns/t".into(),
            limit,
            dirs: dirs.clone(),
        };
        assert!(over_limit(&[w(10 << 20)]).is_empty());
        let over = over_limit(&[w(64 * 1024)]);
        assert_eq!(over.len(), 1);
        assert_eq!(over[0].1.reason, FailureReason::DiskLimitExceeded);
        Ok(())
    }
}
