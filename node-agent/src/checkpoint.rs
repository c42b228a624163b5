//! Task ends kept on the agent's disk until the API server has them (Mesos
//! checkpoints status updates until they are acknowledged).
//!
//! A runtime records a task's end here before it removes the container (or
//! the pid file) that would otherwise be the only trace of it; the
//! supervisor deletes the record once the end is written to the Task (or the
//! Task is gone). An agent that restarts while the API server was
//! unreachable loads what is left, counts those tasks as ended here (so
//! reconciliation does not report them as having no copy, which would make
//! an ad-hoc task LOST and run it again) and reports each end once, dated
//! when it happened.
//!
//! Writes: one file per ended task, `<uid>.json`, in the agent's checkpoint
//! directory (0700; files 0600), written to a temporary name, synced and
//! renamed, so a crash leaves the old state or the new one. The uid is the
//! API server's, checked to be a plain token before it names a file; a
//! record whose task has no uid is not kept. Unreadable records are
//! removed with a warning, and temporary files once they are a minute old
//! (a crash's leftovers; a younger one may be being written).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use corral_api::task::FailureReason;
use corral_core::lifecycle::{Event, Failure};
use serde::{Deserialize, Serialize};

use crate::runtime::RuntimeEvent;

/// Why a checkpoint could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The directory or a file could not be written or read.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The task's uid cannot name a file.
    #[error("the task uid {0:?} is not a plain token")]
    BadUid(String),
}

/// How a task ended, as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum End {
    /// It exited by itself.
    Exited {
        /// Its exit code.
        code: i32,
        /// Why it failed, beyond the code.
        failure: Option<(FailureReason, String)>,
    },
    /// The agent killed it.
    Killed,
}

impl End {
    /// The end a runtime reported (none for a report that is not an end).
    pub fn of(event: &RuntimeEvent) -> Option<End> {
        match event {
            RuntimeEvent::Exited { code, failure } => Some(End::Exited {
                code: *code,
                failure: failure.as_ref().map(|f| (f.reason, f.detail.clone())),
            }),
            RuntimeEvent::Killed => Some(End::Killed),
            RuntimeEvent::Starting | RuntimeEvent::Running => None,
        }
    }

    /// The lifecycle event it is reported as.
    pub fn event(&self) -> Event {
        match self {
            End::Exited { code, failure } => Event::AgentExited {
                code: *code,
                failure: failure
                    .as_ref()
                    .map(|(reason, detail)| Failure::new(*reason, detail.clone())),
            },
            End::Killed => Event::AgentKilled,
        }
    }
}

/// One task's end, not yet acknowledged by the API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    /// The task's key, `<namespace>/<name>`.
    pub key: String,
    /// The uid of the task the copy ran for.
    pub uid: String,
    /// When the agent learned of the end.
    pub at: jiff::Timestamp,
    /// How it ended.
    pub end: End,
}

/// How old a temporary file must be before [`Checkpoints::load`] takes it
/// for a crash's leftover (a record being written is younger).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(60);

/// The agent's checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
}

/// True for a uid that can name a file: letters, digits and dashes only.
fn plain(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 128
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Checkpoints {
    /// Checkpoints kept in `dir` (created, 0700, if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        Ok(Checkpoints { dir })
    }

    fn file(&self, uid: &str) -> Result<PathBuf, CheckpointError> {
        if !plain(uid) {
            return Err(CheckpointError::BadUid(uid.to_owned()));
        }
        Ok(self.dir.join(format!("{uid}.json")))
    }

    /// Keeps `ended` until [`Checkpoints::clear`] (synced to disk on return).
    pub fn record(&self, ended: &Ended) -> Result<(), CheckpointError> {
        let path = self.file(&ended.uid)?;
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec(ended).map_err(|e| CheckpointError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }

    /// Records the end `event` of the copy of task `uid` named `key`, when
    /// it is an end and the uid is known; a failure is logged (the end is
    /// still reported, only not kept across a restart).
    pub fn record_end(&self, key: &str, uid: Option<&str>, event: &RuntimeEvent) {
        let (Some(uid), Some(end)) = (uid, End::of(event)) else {
            return;
        };
        let ended = Ended {
            key: key.to_owned(),
            uid: uid.to_owned(),
            at: jiff::Timestamp::now(),
            end,
        };
        if let Err(e) = self.record(&ended) {
            tracing::warn!(task = %key, error = %e, "keeping the task's end on disk failed");
        }
    }

    /// Forgets the end of task `uid` (the API server has it).
    pub fn clear(&self, uid: &str) {
        let Ok(path) = self.file(uid) else { return };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "removing a checkpoint failed")
            }
        }
    }

    /// Every end kept, oldest first.
    pub fn load(&self) -> Vec<Ended> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut all = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                // A temporary file: one being written now is left alone, one
                // a crash left behind long ago goes.
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| at.elapsed().ok())
                    .is_some_and(|age| age > STALE_TEMPORARY);
                if stale {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            let parsed = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Ended>(&b).ok())
                .filter(|e| self.file(&e.uid).is_ok_and(|f| f == path));
            match parsed {
                Some(e) => all.push(e),
                None => {
                    tracing::warn!(path = %path.display(), "an unreadable checkpoint is removed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        all.sort_by_key(|e| e.at);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(uid: &str, end: End) -> Ended {
        Ended {
            key: "default/web-0-0".into(),
            uid: uid.into(),
            at: jiff::Timestamp::from_second(1_800_000_000).expect("time"),
            end,
        }
    }

    #[test]
    fn ends_are_kept_until_cleared_and_survive_a_reopen() -> Result<(), CheckpointError> {
        let dir = tempfile::tempdir().map_err(io(Path::new(".")))?;
        let c = Checkpoints::open(dir.path().join("reports"))?;
        let a = ended(
            "6f1d2c4e-0000-4000-8000-000000000001",
            End::Exited {
                code: 137,
                failure: Some((FailureReason::OutOfMemory, "killed".into())),
            },
        );
        let b = ended("6f1d2c4e-0000-4000-8000-000000000002", End::Killed);
        c.record(&a)?;
        c.record(&b)?;
        // The leftover of a crash mid-write long ago, one being written
        // now, and a file that is not a record.
        let old = dir.path().join("reports/x.json.tmp");
        std::fs::write(&old, b"{").map_err(io(dir.path()))?;
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(std::time::SystemTime::now() - 2 * STALE_TEMPORARY))
            .map_err(io(&old))?;
        let writing = dir.path().join("reports/y.json.tmp");
        std::fs::write(&writing, b"{").map_err(io(dir.path()))?;
        std::fs::write(dir.path().join("reports/junk.json"), b"nope").map_err(io(dir.path()))?;
        let again = Checkpoints::open(dir.path().join("reports"))?;
        let mut loaded = again.load();
        loaded.sort_by(|x, y| x.uid.cmp(&y.uid));
        assert_eq!(loaded, vec![a.clone(), b.clone()]);
        again.clear(&a.uid);
        assert_eq!(again.load(), vec![b]);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("reports"))
            .map_err(io(dir.path()))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "the kept end and the file being written: {names:?}"
        );
        assert!(writing.exists() && !old.exists());
        Ok(())
    }

    #[test]
    fn a_uid_never_becomes_a_path_outside_the_directory() -> Result<(), CheckpointError> {
        let dir = tempfile::tempdir().map_err(io(Path::new(".")))?;
        let c = Checkpoints::open(dir.path())?;
        for uid in ["../x", "a/b", "", ".", "a b", &"a".repeat(200)] {
            assert!(
                matches!(
                    c.record(&ended(uid, End::Killed)),
                    Err(CheckpointError::BadUid(_))
                ),
                "{uid:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn an_end_is_reported_as_the_runtime_said() {
        let oom = RuntimeEvent::Exited {
            code: 137,
            failure: Some(Failure::new(FailureReason::OutOfMemory, "over")),
        };
        let end = End::of(&oom).expect("an end");
        assert_eq!(
            end.event(),
            Event::AgentExited {
                code: 137,
                failure: Some(Failure::new(FailureReason::OutOfMemory, "over")),
            }
        );
        assert_eq!(
            End::of(&RuntimeEvent::Killed).map(|e| e.event()),
            Some(Event::AgentKilled)
        );
        assert_eq!(End::of(&RuntimeEvent::Running), None);
    }
}
