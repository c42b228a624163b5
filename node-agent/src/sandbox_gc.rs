//! Removing ended tasks' sandboxes and output, as Mesos' agent does with
//! `--gc_delay` and its disk watch: a sandbox, with the output the agent
//! keeps beside it, goes once its task has ended and nothing was written to
//! either for the delay; the fuller the disk, the shorter the delay, down
//! to nothing once less than [`HEADROOM`] of it is free.
//!
//! Reads the sandboxes root and the filesystem's free space; removes
//! directories. Never removes what a live task uses: the agent passes the
//! keys of every task it runs, launches or is bound to, and an entry whose
//! name is not a task's is left alone. Removal does not follow links.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::runtime::{TASK_FILES, container_id, key_of_container_id, task_files_dir};

/// How long an ended task's sandbox stays by default (on a disk with room).
pub const DEFAULT_DELAY: Duration = Duration::from_secs(24 * 3600);

/// The share of the disk kept free: below it, ended sandboxes go at once.
pub const HEADROOM: f64 = 0.1;

/// Where sandboxes live and how long ended ones stay.
#[derive(Debug, Clone)]
pub struct SandboxGc {
    /// The sandboxes root.
    pub root: PathBuf,
    /// How long after its last write an ended task's sandbox stays.
    pub delay: Duration,
}

/// The delay on a disk `used` full (0 to 1): Mesos' rule, the delay times
/// the share of the disk still free beyond the headroom.
pub fn effective_delay(delay: Duration, used: f64) -> Duration {
    delay.mul_f64((1.0 - used - HEADROOM).clamp(0.0, 1.0))
}

/// Which of the `found` tasks (key, time since their last write) to
/// remove: those not `live` whose last write is at least `delay` old.
pub fn to_remove(
    found: &[(String, Duration)],
    live: &HashSet<String>,
    delay: Duration,
) -> Vec<String> {
    found
        .iter()
        .filter(|(key, idle)| !live.contains(key) && *idle >= delay)
        .map(|(key, _)| key.clone())
        .collect()
}

/// The share of the filesystem holding `path` in use.
fn disk_used(path: &Path) -> Option<f64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let total = st.blocks() as f64;
    (total > 0.0).then(|| 1.0 - st.blocks_available() as f64 / total)
}

/// When `path` (not followed) was last modified.
fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(path).ok()?.modified().ok()
}

/// Every task with a sandbox or output under `root`, with the time since
/// its last write (to the sandbox directory itself or to its output).
fn found(root: &Path) -> Vec<(String, Duration)> {
    let mut keys: HashSet<String> = HashSet::new();
    for dir in [root.to_owned(), root.join(TASK_FILES)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == TASK_FILES || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // Only names a task's key makes (`namespace.task`).
            if let Some(key) = key_of_container_id(name).filter(|k| container_id(k) == name) {
                keys.insert(key);
            }
        }
    }
    let now = SystemTime::now();
    keys.into_iter()
        .filter_map(|key| {
            let files = task_files_dir(root, &key);
            let last = [
                root.join(container_id(&key)),
                files.join("stdout"),
                files.join("stderr"),
                files,
            ]
            .iter()
            .filter_map(|p| modified(p))
            .max()?;
            Some((key, now.duration_since(last).unwrap_or_default()))
        })
        .collect()
}

/// One pass over `gc.root`: removes the sandboxes and output of ended
/// tasks (none of `live`) idle past the delay the disk allows. Returns the
/// tasks whose files went.
pub fn collect(gc: &SandboxGc, live: &HashSet<String>) -> Vec<String> {
    collect_with_usage(gc, live, disk_used(&gc.root).unwrap_or(0.0))
}

/// [`collect`] on a disk `used` full.
fn collect_with_usage(gc: &SandboxGc, live: &HashSet<String>, used: f64) -> Vec<String> {
    let delay = effective_delay(gc.delay, used);
    let gone = to_remove(&found(&gc.root), live, delay);
    for key in &gone {
        for dir in [
            gc.root.join(container_id(key)),
            task_files_dir(&gc.root, key),
        ] {
            // remove_dir_all removes links, never what they point to.
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "removing an ended task's files");
            }
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_shrinks_as_the_disk_fills() {
        let day = Duration::from_secs(86_400);
        let table = [
            (0.0, day.mul_f64(0.9)),
            (0.5, day.mul_f64(0.4)),
            (0.9, Duration::ZERO),
            (0.99, Duration::ZERO),
        ];
        for (used, want) in table {
            let got = effective_delay(day, used);
            assert!(
                got.as_secs_f64().sub_abs(want.as_secs_f64()) < 1.0,
                "{used}: {got:?} vs {want:?}"
            );
        }
    }

    trait SubAbs {
        fn sub_abs(self, other: f64) -> f64;
    }
    impl SubAbs for f64 {
        fn sub_abs(self, other: f64) -> f64 {
            (self - other).abs()
        }
    }

    #[test]
    fn only_ended_tasks_idle_past_the_delay_go() {
        let minute = Duration::from_secs(60);
        let found = vec![
            ("ns/live-0-0".to_owned(), 10 * minute),
            ("ns/old-0-0".to_owned(), 10 * minute),
            ("ns/recent-0-0".to_owned(), minute),
        ];
        let live: HashSet<String> = ["ns/live-0-0".to_owned()].into();
        assert_eq!(to_remove(&found, &live, 5 * minute), ["ns/old-0-0"]);
        assert!(to_remove(&found, &live, 20 * minute).is_empty());
    }

    #[test]
    fn a_pass_removes_ended_sandboxes_and_their_output_only() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        for key in ["ns/done-0-0", "ns/live-0-0"] {
            crate::runtime::prepare_sandbox(root.path(), key)?;
        }
        // A link in an ended sandbox to something outside it: the link
        // goes, its target stays.
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("keep"), "keep")?;
        std::os::unix::fs::symlink(
            outside.path(),
            root.path().join("ns.done-0-0").join("escape"),
        )?;
        // Something that is no task's.
        std::fs::create_dir(root.path().join("lost+found"))?;
        let gc = SandboxGc {
            root: root.path().to_owned(),
            delay: Duration::ZERO,
        };
        let live: HashSet<String> = ["ns/live-0-0".to_owned()].into();
        assert_eq!(collect_with_usage(&gc, &live, 0.5), ["ns/done-0-0"]);
        assert!(!root.path().join("ns.done-0-0").exists());
        assert!(!task_files_dir(root.path(), "ns/done-0-0").exists());
        assert!(root.path().join("ns.live-0-0").exists());
        assert!(
            task_files_dir(root.path(), "ns/live-0-0")
                .join("stdout")
                .exists()
        );
        assert!(root.path().join("lost+found").exists());
        assert!(outside.path().join("keep").exists());
        // Not yet idle long enough: nothing goes.
        let gc = SandboxGc {
            delay: Duration::from_secs(3600),
            ..gc
        };
        assert!(collect_with_usage(&gc, &HashSet::new(), 0.5).is_empty());
        // Unless the disk is nearly full.
        assert_eq!(collect_with_usage(&gc, &live, 0.95), Vec::<String>::new());
        assert_eq!(
            collect_with_usage(&gc, &HashSet::new(), 0.95),
            ["ns/live-0-0"]
        );
        Ok(())
    }
}
