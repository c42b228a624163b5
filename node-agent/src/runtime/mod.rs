//! The `ContainerRuntime` trait and its implementations.
//!
//! A runtime starts a task's container and reports what happens to it as
//! [`RuntimeEvent`]s on a channel; the agent turns them into task phases
//! through the lifecycle state machine. Runtimes are tried in the configured
//! order; the first that supports the task's container and is healthy runs it
//! (Mesos containerizers' rule).
//!
//! - [`containerd`]: containers from images, through containerd's gRPC API.
//! - [`process`]: plain host processes in cgroups with the same limits.
//! - [`simulated`]: no process at all, for scale tests.
//!
//! [`stop_all`] kills every task a machine's runtimes run, with no agent.
//!
//! Each runtime reports exactly one terminal event per start: `Exited` when
//! the container ended by itself, `Killed` when it ended after
//! [`ContainerRuntime::kill`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use corral_api::node::RuntimeKind;
use corral_api::task::FailureReason;
use corral_api::{Resources, job::ContainerSpec};
use corral_core::lifecycle::Failure;
use tokio::sync::mpsc;

pub mod cgroup;
pub mod containerd;
mod image;
pub mod process;
pub mod seccomp;
pub mod simulated;
pub mod stop_all;
pub mod user;

pub use simulated::{SIMULATE_DURATION, SIMULATE_EXIT_CODE, Simulated, parse_duration};
pub use stop_all::{Stopped, stop_all};

/// What a runtime reports about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The sandbox is being prepared.
    Starting,
    /// The container runs.
    Running,
    /// The container exited by itself (or could not be started).
    Exited {
        /// Its exit code (128 + signal for a signal).
        code: i32,
        /// Why it failed, when the code alone does not say it.
        failure: Option<Failure>,
    },
    /// The container ended after a kill request.
    Killed,
}

impl RuntimeEvent {
    /// A failure before the container ran: exit code 128, with the reason.
    pub fn failed(reason: FailureReason, detail: impl Into<String>) -> Self {
        RuntimeEvent::Exited {
            code: 128,
            failure: Some(Failure::new(reason, detail)),
        }
    }
}

/// A task's events, tagged with the task key.
pub type Events = mpsc::Sender<(String, RuntimeEvent)>;

/// What a runtime needs to run a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// `namespace/name` of the task.
    pub key: String,
    /// The container to run.
    pub container: ContainerSpec,
    /// The task's resources: `cpus` becomes a CFS quota, `memory` a memory
    /// limit.
    pub resources: Resources,
    /// The task's annotations (the simulated runtime reads its instructions there).
    pub annotations: BTreeMap<String, String>,
    /// The Task object's uid: which task a copy belongs to, should a later
    /// task get the same name.
    pub uid: Option<String>,
}

impl Launch {
    /// The limits to enforce, from the task's resources.
    pub fn limits(&self) -> Limits {
        let milli = |name: &str| {
            self.resources
                .get(name)
                .and_then(|q| q.milli().ok())
                .filter(|v| *v > 0)
        };
        Limits {
            cpu_millis: milli("cpus").and_then(|v| u64::try_from(v).ok()),
            memory_bytes: milli("memory").and_then(|v| u64::try_from(v / 1000).ok()),
            pids: Some(DEFAULT_PIDS_LIMIT),
        }
    }
}

/// The most processes a task may have (fork bombs stay inside their task).
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// Limits enforced on a task's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// CPU in thousandths of a core (a CFS quota of `cpu_millis × 100` µs per 100 ms).
    pub cpu_millis: Option<u64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Processes.
    pub pids: Option<u64>,
}

/// The CFS period used for every task.
pub const CFS_PERIOD_US: u64 = 100_000;

impl Limits {
    /// The CFS quota for the CPU limit.
    pub fn cfs_quota_us(&self) -> Option<u64> {
        self.cpu_millis
            .map(|m| (m * CFS_PERIOD_US / 1000).max(1000))
    }
}

/// What a task's container uses now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time used so far, in nanoseconds.
    pub cpu_nanos: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
}

/// Why a runtime could not act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime cannot run this container.
    #[error("runtime {runtime} does not support this container: {why}")]
    Unsupported {
        /// The runtime.
        runtime: &'static str,
        /// Why.
        why: String,
    },
    /// No such task is running here.
    #[error("task {0} is not running here")]
    NotRunning(String),
    /// The runtime's backend failed (containerd unreachable, cgroup write refused…).
    #[error("{runtime}: {detail}")]
    Backend {
        /// The runtime.
        runtime: &'static str,
        /// What failed.
        detail: String,
    },
}

/// What a command run in a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Its exit status; None when it ran past its time and was killed.
    pub code: Option<i32>,
    /// The end of its output (stdout and stderr together), at most
    /// [`corral_api::health::MAX_OUTPUT`] bytes.
    pub output: String,
}

/// The last `MAX_OUTPUT` bytes of `bytes`, as text.
pub fn output_tail(bytes: &[u8]) -> String {
    let max = corral_api::health::MAX_OUTPUT;
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

/// A way to run containers (containerd, plain processes, or simulation).
#[async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// The runtime's kind.
    fn kind(&self) -> RuntimeKind;
    /// Why this runtime cannot run `launch` at all (None: it can).
    fn unsupported(&self, launch: &Launch) -> Option<String>;
    /// True when the runtime can start containers now (containerd answers).
    async fn healthy(&self) -> bool {
        true
    }
    /// Runs `command` in running task `key` (its container, or as its user
    /// beside its process), with `container` its spec, for at most
    /// `timeout`: a health check's `exec`.
    async fn exec(
        &self,
        key: &str,
        container: &ContainerSpec,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let _ = (container, command, timeout);
        Err(RuntimeError::Unsupported {
            runtime: kind_name(self.kind()),
            why: format!("running a command in task {key}"),
        })
    }
    /// Starts the task; its events arrive on `events`. Returns once the task
    /// is started (or has failed to start, which is reported as an event).
    async fn start(&self, launch: Launch, events: Events) -> Result<(), RuntimeError>;
    /// Kills the task: SIGTERM, `grace`, then SIGKILL. The runtime reports
    /// `Killed` once the container is gone.
    async fn kill(&self, key: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// The tasks it runs now.
    fn running(&self) -> Vec<String>;
    /// Re-adopts the tasks that survived an agent restart, reporting them on
    /// `events` like freshly started ones (tasks that ended meanwhile report
    /// their exit). Returns the keys of the tasks found.
    async fn recover(&self, events: Events) -> Result<Vec<String>, RuntimeError> {
        let _ = events;
        Ok(Vec::new())
    }
    /// The uid of the task the copy of `key` was launched for, when the
    /// runtime keeps it (also across agent restarts).
    fn uid(&self, key: &str) -> Option<String> {
        let _ = key;
        None
    }
    /// What the task's container uses now, when the runtime can measure it.
    fn usage(&self, key: &str) -> Option<Usage> {
        let _ = key;
        None
    }
    /// The directories the running task `key` writes on the node's disk
    /// (its sandbox, a container's writable layer), for its `disk` limit.
    fn writable_dirs(&self, key: &str) -> Vec<PathBuf> {
        let _ = key;
        Vec::new()
    }
}

/// The name `kind` has on the command line (`--runtimes containerd,process`).
pub fn kind_name(kind: RuntimeKind) -> &'static str {
    kind.as_str()
}

/// A name usable as a container id, cgroup and directory name:
/// `namespace/name` becomes `namespace.name` (both parts are DNS labels or
/// subdomains, so the result is unambiguous).
pub fn container_id(key: &str) -> String {
    key.replace('/', ".")
}

/// The inverse of [`container_id`].
pub fn key_of_container_id(id: &str) -> Option<String> {
    id.split_once('.').map(|(ns, name)| format!("{ns}/{name}"))
}

/// The per-task sandbox directory under `root`: the task's working files,
/// mounted into its container.
pub fn sandbox_dir(root: &Path, key: &str) -> PathBuf {
    root.join(container_id(key))
}

/// The directory under the sandboxes root where the agent keeps each task's
/// own files (see [`task_files_dir`]). Task names are DNS labels, so no
/// sandbox can be called this.
pub const TASK_FILES: &str = ".agent";

/// Where the agent keeps a task's own files: its output (`stdout` and
/// `stderr`) and the process runtime's records of it. Beside the
/// sandboxes, never inside one: no container mounts it, so no task can
/// plant a link or a file there, and the agent never reads or appends
/// through a path a task chose.
pub fn task_files_dir(root: &Path, key: &str) -> PathBuf {
    root.join(TASK_FILES).join(container_id(key))
}

/// A task's directories, as [`prepare_sandbox`] made them.
#[derive(Debug, Clone)]
pub struct TaskDirs {
    /// The sandbox, the task's to write.
    pub sandbox: PathBuf,
    /// The agent's own files about the task (see [`task_files_dir`]).
    pub files: PathBuf,
}

/// Opens `path` for writing without following a link at its end.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Creates the sandbox, and the task's files directory (0700) with empty
/// `stdout` and `stderr`: output of an earlier task of the same name is
/// dropped, never appended to.
pub fn prepare_sandbox(root: &Path, key: &str) -> std::io::Result<TaskDirs> {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = sandbox_dir(root, key);
    std::fs::create_dir_all(&sandbox)?;
    let files = task_files_dir(root, key);
    std::fs::create_dir_all(&files)?;
    for dir in [&root.join(TASK_FILES), &files] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    for f in ["stdout", "stderr"] {
        create_private(&files.join(f))?;
    }
    Ok(TaskDirs { sandbox, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_api::Quantity;

    #[test]
    fn limits_come_from_the_tasks_resources() {
        let launch = |r: Resources| Launch {
            key: "ns/t".into(),
            container: serde_json::from_value(serde_json::json!({"image": "busybox"}))
                .expect("container"),
            resources: r,
            annotations: BTreeMap::new(),
            uid: None,
        };
        let l = launch(
            Resources::new()
                .with("cpus", Quantity::from_text("0.5"))
                .with("memory", Quantity::from_text("64Mi")),
        )
        .limits();
        assert_eq!(l.cpu_millis, Some(500));
        assert_eq!(l.cfs_quota_us(), Some(50_000));
        assert_eq!(l.memory_bytes, Some(64 << 20));
        assert_eq!(l.pids, Some(DEFAULT_PIDS_LIMIT));
        let none = launch(Resources::new()).limits();
        assert_eq!((none.cpu_millis, none.memory_bytes), (None, None));
        let tiny = launch(Resources::new().with("cpus", Quantity::from_text("1m"))).limits();
        assert_eq!(
            tiny.cfs_quota_us(),
            Some(1000),
            "the kernel's minimum quota"
        );
    }

    #[test]
    fn container_ids_round_trip_task_keys() {
        assert_eq!(container_id("team-a/job-0-abc"), "team-a.job-0-abc");
        assert_eq!(
            key_of_container_id("team-a.job-0.x").as_deref(),
            Some("team-a/job-0.x")
        );
        assert_eq!(key_of_container_id("nodot"), None);
    }
}
