//! The `process` runtime: a task's command runs as a plain host process (the
//! image is not used; the host's filesystem is the task's), in its own
//! process group and in a cgroup v1 group `corral/<id>` with the task's CPU
//! quota, memory limit and pids limit, as the user its Job names from the
//! node's users (nobody by default; see [`super::user`]), with no new
//! privileges. Offered only where an operator names it in `--runtimes`, to
//! tasks that ask for it (or, on such a node, as its default).
//!
//! The command runs under a small `/bin/sh` wrapper that joins the cgroup
//! before the command starts and writes the command's exit code to
//! `exit_code` in the task's files (see [`super::task_files_dir`], outside
//! the sandbox, as its `stdout` and `stderr` are); the wrapper's pid is
//! checkpointed in `pid` there. A restarted agent re-adopts a wrapper that
//! still runs (checking that the pid is still in the task's cgroup, so a
//! reused pid is never mistaken for the task) and reads the exit code once
//! it ends. Nothing in the sandbox, which the task writes, decides what the
//! agent adopts or signals.
//!
//! Kills signal the whole process group: SIGTERM, the grace period, SIGKILL.
//!
//! With checkpoints, a task's end is kept on disk before its pid file goes,
//! so an agent restarted before it could report the end still reports it.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corral_api::job::{ContainerSpec, NetworkMode};
use corral_api::node::RuntimeKind;
use corral_api::task::FailureReason;
use corral_core::lifecycle::Failure;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::cgroup::Cgroup;
use super::{
    ContainerRuntime, Events, ExecOutcome, Launch, RuntimeError, RuntimeEvent, Usage, container_id,
    key_of_container_id, prepare_sandbox, task_files_dir,
};
use crate::checkpoint::Checkpoints;

const PID_FILE: &str = "pid";
/// The file holding the uid of the Task the process runs.
const UID_FILE: &str = "uid";
const EXIT_FILE: &str = "exit_code";
/// How often a re-adopted process (not our child) is checked for exit.
const ADOPTED_POLL: Duration = Duration::from_millis(200);

/// Plain processes in cgroups.
#[derive(Debug, Clone)]
pub struct Process {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sandboxes: PathBuf,
    /// Where ends are kept until reported (none: not kept).
    checkpoints: Option<Checkpoints>,
    /// The cgroup v1 root, when limits can be enforced.
    cgroup_root: Option<PathBuf>,
    tasks: Mutex<HashMap<String, Running>>,
}

#[derive(Debug, Clone)]
struct Running {
    pgid: i32,
    /// The group leader's start time, when known (see [`start_time`]).
    started: Option<u64>,
    uid: Option<String>,
    killed: bool,
    /// Turns true once the process has ended and been reported.
    done: watch::Receiver<bool>,
}

impl Process {
    /// A process runtime keeping sandboxes under `sandboxes`; limits are
    /// enforced with the cgroup v1 hierarchies under `cgroup_root` (None: no
    /// enforcement, for machines without them).
    pub fn new(sandboxes: impl Into<PathBuf>, cgroup_root: Option<PathBuf>) -> Self {
        Self::keeping_ends(sandboxes, cgroup_root, None)
    }

    /// A process runtime that records each task's end in `checkpoints`
    /// before it removes the task's pid file (see [`crate::checkpoint`]).
    pub fn keeping_ends(
        sandboxes: impl Into<PathBuf>,
        cgroup_root: Option<PathBuf>,
        checkpoints: Option<Checkpoints>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sandboxes: sandboxes.into(),
                checkpoints,
                cgroup_root,
                tasks: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn cgroup(&self, key: &str) -> Option<Cgroup> {
        self.inner
            .cgroup_root
            .as_ref()
            .map(|r| Cgroup::new(r, format!("corral/{}", container_id(key))))
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a running task and returns the sender that marks it done.
    fn track(&self, key: &str, pgid: i32, started: Option<u64>) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        let uid =
            std::fs::read_to_string(task_files_dir(&self.inner.sandboxes, key).join(UID_FILE))
                .ok()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty());
        self.tasks().insert(
            key.to_owned(),
            Running {
                pgid,
                started,
                uid,
                killed: false,
                done: rx,
            },
        );
        tx
    }

    /// Reports the end of `key`: Killed after a kill request, else Exited
    /// (with an OOM reason when the cgroup saw the OOM killer).
    async fn finish(&self, key: &str, code: i32, events: &Events, done: watch::Sender<bool>) {
        let running = self.tasks().remove(key);
        let killed = running.as_ref().is_some_and(|r| r.killed);
        let cgroup = self.cgroup(key);
        let failure = cgroup.as_ref().filter(|cg| cg.oom_kills() > 0).map(|cg| {
            let limit = cg
                .memory_limit()
                .map(|b| format!(" of {b} bytes"))
                .unwrap_or_default();
            Failure::new(
                FailureReason::OutOfMemory,
                format!("killed by the kernel for exceeding its memory limit{limit}"),
            )
        });
        let event = if killed {
            RuntimeEvent::Killed
        } else {
            RuntimeEvent::Exited {
                code: if failure.is_some() { 137 } else { code },
                failure,
            }
        };
        // Kept before the pid file, the end's only other trace, goes.
        if let Some(c) = &self.inner.checkpoints {
            c.record_end(key, running.and_then(|r| r.uid).as_deref(), &event);
        }
        let _ = std::fs::remove_file(task_files_dir(&self.inner.sandboxes, key).join(PID_FILE));
        if let Some(cg) = cgroup {
            // Stragglers (daemonized children) go with the task.
            for _ in 0..50 {
                if !cg.has_processes() {
                    break;
                }
                for pid in std::fs::read_to_string(cg.dir("pids").join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cg.remove();
        }
        let _ = events.send((key.to_owned(), event)).await;
        let _ = done.send(true);
    }

    async fn launch(&self, launch: &Launch, events: &Events) -> Result<(), RuntimeEvent> {
        let key = &launch.key;
        let dirs = prepare_sandbox(&self.inner.sandboxes, key).map_err(|e| {
            RuntimeEvent::failed(
                FailureReason::LaunchFailed,
                format!("cannot create the sandbox: {e}"),
            )
        })?;
        let (sandbox, files) = (dirs.sandbox, dirs.files);
        let _ = std::fs::remove_file(files.join(EXIT_FILE));
        let cgroup = self.cgroup(key);
        let join = match &cgroup {
            Some(cg) => {
                cg.create(&launch.limits()).map_err(|e| {
                    RuntimeEvent::failed(FailureReason::LaunchFailed, e.to_string())
                })?;
                format!("{} || exit 126; ", cg.join_script())
            }
            None => String::new(),
        };
        let c = &launch.container;
        let argv: Vec<&String> = c.command.iter().chain(&c.args).collect();
        let drop_to = as_user(c.user.as_deref())?;
        std::os::unix::fs::chown(&sandbox, Some(drop_to.uid), Some(drop_to.gid)).map_err(|e| {
            RuntimeEvent::failed(
                FailureReason::LaunchFailed,
                format!("giving the sandbox to the task's user: {e}"),
            )
        })?;
        // The wrapper stays root (it joins the cgroup and writes the exit
        // code into the agent's files); the command runs as the task's user.
        let setpriv = match drop_to.uid {
            0 => String::new(),
            _ => format!(
                "{SETPRIV} --reuid={} --regid={} --clear-groups --no-new-privs -- ",
                drop_to.uid, drop_to.gid
            ),
        };
        // The path is the agent's: its root and the task's DNS-label name.
        let script = format!(
            "{join}{setpriv}\"$@\"; rc=$?; echo $rc > '{}'; exit $rc",
            files.join(EXIT_FILE).display()
        );
        let open = |f: &str| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(files.join(f))
                .map_err(|e| RuntimeEvent::failed(FailureReason::LaunchFailed, format!("{f}: {e}")))
        };
        let workdir = c
            .working_dir
            .as_deref()
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| sandbox.clone());
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .args(argv)
            .current_dir(workdir)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CORRAL_SANDBOX", &sandbox)
            .env("CORRAL_TASK", key)
            .envs(c.env.iter().map(|e| (&e.name, &e.value)))
            .stdin(std::process::Stdio::null())
            .stdout(open("stdout")?)
            .stderr(open("stderr")?)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            RuntimeEvent::failed(
                FailureReason::LaunchFailed,
                format!("cannot start /bin/sh: {e}"),
            )
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_default();
        let started = start_time(pid);
        let _ = std::fs::write(
            files.join(PID_FILE),
            match started {
                Some(t) => format!("{pid} {t}"),
                None => pid.to_string(),
            },
        );
        let _ = std::fs::write(
            files.join(UID_FILE),
            launch.uid.as_deref().unwrap_or_default(),
        );
        let done = self.track(key, pid, started);
        let _ = events.send((key.clone(), RuntimeEvent::Running)).await;
        let (me, key, events) = (self.clone(), key.clone(), events.clone());
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(st) => st
                    .code()
                    .or_else(|| st.signal().map(|s| 128 + s))
                    .unwrap_or(128),
                Err(_) => 128,
            };
            me.finish(&key, code, &events, done).await;
        });
        Ok(())
    }

    /// Follows a process that is not our child until it ends, then reports
    /// the exit code its wrapper wrote into the task's `files`.
    fn follow_adopted(
        &self,
        key: String,
        (pid, started): (i32, Option<u64>),
        files: PathBuf,
        events: Events,
    ) {
        let done = self.track(&key, pid, started);
        let me = self.clone();
        tokio::spawn(async move {
            while Path::new(&format!("/proc/{pid}")).exists()
                && !is_zombie(pid)
                && same_process(pid, started)
            {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            let code = std::fs::read_to_string(files.join(EXIT_FILE))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(137);
            me.finish(&key, code, &events, done).await;
        });
    }
}

/// util-linux's tool that runs a command as another user.
const SETPRIV: &str = "/usr/bin/setpriv";

/// Who a host process runs as (see [`super::user`]: the node's users;
/// nobody unless the Job names a user).
fn as_user(asked: Option<&str>) -> Result<super::user::Identity, RuntimeEvent> {
    let who = super::user::resolve(asked, None, &super::user::HostDb)
        .map_err(|e| RuntimeEvent::failed(FailureReason::LaunchFailed, e.to_string()))?;
    if who.uid != 0 && !Path::new(SETPRIV).exists() {
        return Err(RuntimeEvent::failed(
            FailureReason::LaunchFailed,
            format!(
                "running a host process as user {} needs {SETPRIV} (util-linux)",
                who.uid
            ),
        ));
    }
    Ok(who)
}

/// When `pid` started (clock ticks since boot, `/proc/PID/stat` field 22):
/// with the pid, it names one process, so a pid the kernel has given to
/// another process since (pids wrap) is never taken for the task's.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at field 3.
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The wrapper's pid and start time from the task's pid file.
fn read_pid_file(files: &Path) -> Option<(i32, Option<u64>)> {
    let text = std::fs::read_to_string(files.join(PID_FILE)).ok()?;
    let mut parts = text.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    Some((pid, parts.next().and_then(|t| t.parse().ok())))
}

/// True while `pid` is the process that started at `started` (when known).
fn same_process(pid: i32, started: Option<u64>) -> bool {
    started.is_none_or(|t| start_time(pid) == Some(t))
}

/// True when `pid` has ended: it is gone, or a zombie its parent has yet
/// to reap.
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// True when `pid` runs inside the cgroup `group` (`corral/<id>`).
fn in_cgroup(pid: i32, group: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|s| {
            s.lines()
                .any(|l| l.ends_with(&format!(":/{group}")) && l.contains("memory"))
        })
        .unwrap_or(false)
}

#[async_trait]
impl ContainerRuntime for Process {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn unsupported(&self, launch: &Launch) -> Option<String> {
        let c = &launch.container;
        if c.command.is_empty() && c.args.is_empty() {
            return Some("a host process needs a command (the image is not used)".into());
        }
        if c.seccomp_profile == Some(corral_api::job::SeccompProfile::RuntimeDefault) {
            return Some("a host process has no seccomp filter: one needs a container".into());
        }
        if c.read_only_root_filesystem {
            return Some(
                "a host process has the node's filesystem: a read-only root needs a container"
                    .into(),
            );
        }
        if c.network == Some(NetworkMode::None) {
            return Some(
                "a host process runs in the node's network: network none needs a container".into(),
            );
        }
        None
    }

    async fn start(&self, launch: Launch, events: Events) -> Result<(), RuntimeError> {
        let _ = events
            .send((launch.key.clone(), RuntimeEvent::Starting))
            .await;
        if let Err(failed) = self.launch(&launch, &events).await {
            if let Some(cg) = self.cgroup(&launch.key) {
                cg.remove();
            }
            let _ = events.send((launch.key.clone(), failed)).await;
        }
        Ok(())
    }

    async fn exec(
        &self,
        key: &str,
        container: &ContainerSpec,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        if !self.tasks().contains_key(key) {
            return Err(RuntimeError::NotRunning(key.to_owned()));
        }
        let backend = |detail: String| RuntimeError::Backend {
            runtime: "process",
            detail,
        };
        let drop_to = as_user(container.user.as_deref()).map_err(|e| backend(format!("{e:?}")))?;
        let sandbox = super::sandbox_dir(&self.inner.sandboxes, key);
        // As the task itself runs: in its cgroup, as its user, in its
        // sandbox, with its environment; its output to a pipe we read.
        let join = self
            .cgroup(key)
            .map(|cg| format!("{} || exit 126; ", cg.join_script()))
            .unwrap_or_default();
        let setpriv = match drop_to.uid {
            0 => String::new(),
            _ => format!(
                "{SETPRIV} --reuid={} --regid={} --clear-groups --no-new-privs -- ",
                drop_to.uid, drop_to.gid
            ),
        };
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("{join}exec {setpriv}\"$@\" 2>&1"))
            .arg("sh")
            .args(command)
            .current_dir(&sandbox)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CORRAL_SANDBOX", &sandbox)
            .env("CORRAL_TASK", key)
            .envs(container.env.iter().map(|e| (&e.name, &e.value)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| backend(format!("cannot start /bin/sh: {e}")))?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => Ok(ExecOutcome {
                code: out
                    .status
                    .code()
                    .or_else(|| out.status.signal().map(|s| 128 + s)),
                output: super::output_tail(&out.stdout),
            }),
            Ok(Err(e)) => Err(backend(format!("waiting for the command: {e}"))),
            Err(_) => {
                if let Some(pgid) = pgid {
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                }
                Ok(ExecOutcome {
                    code: None,
                    output: format!("timed out after {}s", timeout.as_secs_f32()),
                })
            }
        }
    }

    async fn kill(&self, key: &str, grace: Duration) -> Result<(), RuntimeError> {
        let (pgid, started, mut done) = {
            let mut tasks = self.tasks();
            let r = tasks
                .get_mut(key)
                .ok_or_else(|| RuntimeError::NotRunning(key.to_owned()))?;
            r.killed = true;
            (r.pgid, r.started, r.done.clone())
        };
        // The group's number is the leader's pid: once the leader is gone and
        // its number given to another process (pids wrap), that process leads
        // a group of its own under the same number, which is not ours.
        let signal = |sig| {
            if !Path::new(&format!("/proc/{pgid}")).exists() || same_process(pgid, started) {
                let _ = killpg(Pid::from_raw(pgid), sig);
            }
        };
        signal(Signal::SIGTERM);
        if tokio::time::timeout(grace, done.wait_for(|d| *d))
            .await
            .is_err()
        {
            signal(Signal::SIGKILL);
            let _ = done.wait_for(|d| *d).await;
        }
        Ok(())
    }

    fn running(&self) -> Vec<String> {
        self.tasks().keys().cloned().collect()
    }

    async fn recover(&self, events: Events) -> Result<Vec<String>, RuntimeError> {
        let Ok(dir) = std::fs::read_dir(self.inner.sandboxes.join(super::TASK_FILES)) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for entry in dir.flatten() {
            let files = entry.path();
            let Some(key) = entry.file_name().to_str().and_then(key_of_container_id) else {
                continue;
            };
            if self.tasks().contains_key(&key) {
                continue;
            }
            let Some((pid, started)) = read_pid_file(&files) else {
                continue;
            };
            // A pid reused by another process since is not the task's.
            let alive = Path::new(&format!("/proc/{pid}")).exists()
                && !is_zombie(pid)
                && same_process(pid, started)
                && (self.inner.cgroup_root.is_none()
                    || in_cgroup(pid, &format!("corral/{}", container_id(&key))));
            if !alive {
                // It ended while no agent watched: report the code its wrapper wrote.
                let code = std::fs::read_to_string(files.join(EXIT_FILE))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(137);
                let done = self.track(&key, pid, started);
                self.finish(&key, code, &events, done).await;
                found.push(key);
                continue;
            }
            let _ = events.send((key.clone(), RuntimeEvent::Running)).await;
            self.follow_adopted(key.clone(), (pid, started), files, events.clone());
            found.push(key);
        }
        Ok(found)
    }

    fn writable_dirs(&self, key: &str) -> Vec<PathBuf> {
        if !self.tasks().contains_key(key) {
            return Vec::new();
        }
        vec![super::sandbox_dir(&self.inner.sandboxes, key)]
    }

    fn uid(&self, key: &str) -> Option<String> {
        self.tasks().get(key)?.uid.clone()
    }

    fn usage(&self, key: &str) -> Option<Usage> {
        self.cgroup(key)?.usage()
    }
}
