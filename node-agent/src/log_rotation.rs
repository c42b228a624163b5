//! Rotating task output by size, as the kubelet rotates container logs
//! (`containerLogMaxSize`, `containerLogMaxFiles`): once a task's `stdout`
//! or `stderr` passes the size, it is copied aside and truncated in place,
//! older copies are shifted up to `<stream>.<files - 1>` (the oldest
//! dropped), and the copy is renamed to `<stream>.1`, whole. The writer (containerd's shim, or the process runtime) keeps
//! its file open, so it is truncated rather than renamed; its writes append,
//! so they continue at the new end. A line written between the copy and the
//! truncation can be lost, as with logrotate's `copytruncate`.
//!
//! Reads and writes only the agent's own task files (see
//! [`crate::runtime::task_files_dir`]), opened without following links.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::runtime::task_files_dir;

/// The kubelet's default: 10 MiB a file.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// The kubelet's default: the live file and four rotated ones.
pub const DEFAULT_MAX_FILES: u32 = 5;

/// How task output is rotated.
#[derive(Debug, Clone)]
pub struct LogRotation {
    /// The sandboxes root.
    pub root: PathBuf,
    /// The size past which a stream is rotated.
    pub max_bytes: u64,
    /// Files kept per stream, the live one included (at least 2).
    pub max_files: u32,
}

fn open(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Rotates one stream if it is past the size; true when it was.
fn rotate_stream(live: &Path, max_bytes: u64, max_files: u32) -> std::io::Result<bool> {
    let mut file = open(live, true)?;
    let size = file.metadata()?.len();
    if size <= max_bytes {
        return Ok(false);
    }
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", live.display()));
    // The copy is made under a name of its own and renamed into place, so a
    // reader never finds `<stream>.1` half written.
    let staging = PathBuf::from(format!("{}.rotating", live.display()));
    let _ = std::fs::remove_file(&staging);
    let mut copy = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&staging)?;
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        copy.write_all(&buf[..n])?;
    }
    file.set_len(0)?;
    let keep = max_files.max(2) - 1;
    let _ = std::fs::remove_file(rotated(keep));
    for n in (1..keep).rev() {
        if std::fs::symlink_metadata(rotated(n)).is_ok() {
            std::fs::rename(rotated(n), rotated(n + 1))?;
        }
    }
    std::fs::rename(&staging, rotated(1))?;
    Ok(true)
}

/// One pass over the output of the `live` tasks; returns how many streams
/// were rotated.
pub fn rotate(rotation: &LogRotation, live: &HashSet<String>) -> usize {
    let mut rotated = 0;
    for key in live {
        let files = task_files_dir(&rotation.root, key);
        for stream in ["stdout", "stderr"] {
            match rotate_stream(&files.join(stream), rotation.max_bytes, rotation.max_files) {
                Ok(true) => rotated += 1,
                Ok(false) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(task = %key, stream, error = %e, "rotating task output"),
            }
        }
    }
    rotated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_past_its_size_is_copied_shifted_and_truncated() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let dirs = crate::runtime::prepare_sandbox(root.path(), "ns/t-0-0")?;
        let live: HashSet<String> = ["ns/t-0-0".to_owned()].into();
        let rotation = LogRotation {
            root: root.path().to_owned(),
            max_bytes: 10,
            max_files: 3,
        };
        let stdout = dirs.files.join("stdout");
        let mut writer = std::fs::OpenOptions::new().append(true).open(&stdout)?;
        for round in 0..4 {
            writer.write_all(format!("round {round} output\n").as_bytes())?;
            assert_eq!(rotate(&rotation, &live), 1, "round {round}");
        }
        // The live file is empty; two rotated ones are kept, newest first.
        assert_eq!(std::fs::read_to_string(&stdout)?, "");
        assert_eq!(
            std::fs::read_to_string(dirs.files.join("stdout.1"))?,
            "round 3 output\n"
        );
        assert_eq!(
            std::fs::read_to_string(dirs.files.join("stdout.2"))?,
            "round 2 output\n"
        );
        assert!(!dirs.files.join("stdout.3").exists());
        // The writer appends at the new end.
        writer.write_all(b"after\n")?;
        assert_eq!(std::fs::read_to_string(&stdout)?, "after\n");
        // Under the size, nothing moves.
        assert_eq!(rotate(&rotation, &live), 0);
        Ok(())
    }

    #[test]
    fn a_link_is_not_rotated_through() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let dirs = crate::runtime::prepare_sandbox(root.path(), "ns/t-0-0")?;
        let target = root.path().join("elsewhere");
        std::fs::write(&target, "x".repeat(100))?;
        std::fs::remove_file(dirs.files.join("stdout"))?;
        std::os::unix::fs::symlink(&target, dirs.files.join("stdout"))?;
        let rotation = LogRotation {
            root: root.path().to_owned(),
            max_bytes: 10,
            max_files: 3,
        };
        assert_eq!(rotate(&rotation, &["ns/t-0-0".to_owned()].into()), 0);
        assert_eq!(std::fs::read_to_string(&target)?.len(), 100);
        Ok(())
    }
}
