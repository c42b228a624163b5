//! The `containerd` runtime: a task's image runs as a container through
//! containerd's gRPC API (containerd 1.6 and later).
//!
//! Per task (container id `<namespace>.<name>`, label `corral.dev/task`):
//! resolve the image from the content store; under a short-lived lease
//! (`containerd.io/gc.expire`, so a crashed agent leaks nothing) prepare a
//! snapshot on the image's chain ID and create the container with an OCI spec
//! carrying the CPU quota, memory limit and pids limit, the cgroup path
//! `/<namespace>/<id>`, host networking (as Mesos does by default) and the
//! task's sandbox bind-mounted at `/mnt/sandbox`; create the task with its
//! stdout and stderr going to files the agent keeps outside the sandbox
//! (see [`super::task_files_dir`]), start it, and wait for its
//! exit. The memory cgroup tells an OOM kill apart from other deaths. Kills
//! send SIGTERM, wait the grace period, then SIGKILL to every process.
//! Containers run under containerd's runc shim, which runs `runc` or, when
//! configured, another OCI runtime binary such as `crun`.
//!
//! Nothing is kept only in memory: after an agent restart, [`recover`]
//! lists the labelled containers and re-adopts those still running.
//!
//! [`recover`]: ContainerRuntime::recover

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_client::services::v1::snapshots::RemoveSnapshotRequest;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::{
    DeleteContainerRequest, DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest,
    GetContainerRequest, GetRequest as GetTaskRequest, KillRequest, ListContainersRequest,
    StartRequest, WaitRequest, containers_client::ContainersClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use containerd_client::types::v1::Status as ProcessStatus;
use corral_api::job::ContainerSpec;
use corral_api::node::RuntimeKind;
use corral_api::task::FailureReason;
use corral_core::lifecycle::Failure;
use tokio::sync::watch;
use tonic::transport::Channel;

mod create;
mod spec;
use create::StartError;
pub use spec::user_namespaces_allowed;

use super::cgroup::Cgroup;
use super::{
    ContainerRuntime, Events, ExecOutcome, Launch, RuntimeError, RuntimeEvent, Usage, container_id,
    prepare_sandbox,
};

/// The label naming a container's task (`namespace/name`).
pub const TASK_LABEL: &str = "corral.dev/task";
/// The container label holding the uid of the Task it runs.
pub const TASK_UID_LABEL: &str = "corral.dev/task-uid";
/// Where a task's sandbox appears inside its container.
pub const SANDBOX_MOUNT: &str = "/mnt/sandbox";
/// containerd's default socket.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// The containerd namespace Corral's containers live in.
pub const DEFAULT_NAMESPACE: &str = "corral";
const RUNC: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Where and how to reach containerd.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// The socket.
    pub address: PathBuf,
    /// The containerd namespace (one per cluster).
    pub namespace: String,
    /// The snapshotter images were unpacked into.
    pub snapshotter: String,
    /// Where task sandboxes live.
    pub sandboxes: PathBuf,
    /// The cgroup v1 root, for usage and OOM readings.
    pub cgroup_root: PathBuf,
    /// Pull an image that is not present from the registry its name names.
    pub pull: bool,
    /// Where a task's end is kept, before its container is removed, until
    /// it is reported (none: not kept; see [`crate::checkpoint`]).
    pub checkpoints: Option<crate::checkpoint::Checkpoints>,
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The OCI runtime binary containerd's runc shim runs (`runc` when
    /// `None`; `crun` is a compatible one that starts containers faster).
    pub oci_runtime: Option<String>,
    /// The host uid and gid a task's user namespace maps its ids 0–65535
    /// to; `None`: tasks share the host's ids.
    pub userns_base: Option<u32>,
}

impl ContainerdConfig {
    /// A configuration with the default namespace and snapshotter, no pulls.
    pub fn new(address: PathBuf, sandboxes: PathBuf, cgroup_root: PathBuf) -> Self {
        Self {
            address,
            namespace: DEFAULT_NAMESPACE.into(),
            snapshotter: "overlayfs".into(),
            sandboxes,
            cgroup_root,
            pull: false,
            insecure_registries: Vec::new(),
            oci_runtime: None,
            checkpoints: None,
            userns_base: user_namespaces_allowed().then_some(DEFAULT_USERNS_BASE),
        }
    }
}

/// The first host id of tasks' user namespaces, as Docker's `dockremap`
/// range in `/etc/subuid` usually begins.
pub const DEFAULT_USERNS_BASE: u32 = 100_000;

/// Containers through containerd.
#[derive(Debug, Clone)]
pub struct Containerd {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: ContainerdConfig,
    channel: Channel,
    tasks: Mutex<HashMap<String, Running>>,
    /// Tasks get user namespaces (`cfg.userns_base`), until the OCI runtime
    /// shows it cannot reach containerd's state as a remapped root.
    userns: std::sync::atomic::AtomicBool,
    /// Numbers commands run in tasks (health checks' `exec`).
    execs: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone)]
struct Running {
    id: String,
    uid: Option<String>,
    /// The container's writable layer (an overlay's upper directory).
    upper: Option<PathBuf>,
    killed: bool,
    done: watch::Receiver<bool>,
}

fn backend(detail: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Backend {
        runtime: "containerd",
        detail: detail.to_string(),
    }
}

impl Containerd {
    /// Connects to containerd at `cfg.address` (the connection is checked
    /// with a version call).
    pub async fn connect(cfg: ContainerdConfig) -> Result<Self, RuntimeError> {
        let channel = containerd_client::connect(&cfg.address)
            .await
            .map_err(|e| backend(format!("connecting to {}: {e}", cfg.address.display())))?;
        let cfg_userns = cfg.userns_base.is_some();
        let me = Self {
            inner: Arc::new(Inner {
                cfg,
                channel,
                tasks: Mutex::new(HashMap::new()),
                userns: std::sync::atomic::AtomicBool::new(cfg_userns),
                execs: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        me.version().await?;
        Ok(me)
    }

    /// containerd's version.
    pub async fn version(&self) -> Result<String, RuntimeError> {
        let v = VersionClient::new(self.inner.channel.clone())
            .version(())
            .await
            .map_err(|s| backend(s.message()))?;
        Ok(v.into_inner().version)
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(ns) = self.inner.cfg.namespace.parse() {
            req.metadata_mut().insert("containerd-namespace", ns);
        }
        req
    }

    fn leased<T>(&self, msg: T, lease: &str) -> tonic::Request<T> {
        let mut req = self.req(msg);
        if let Ok(l) = lease.parse() {
            req.metadata_mut().insert("containerd-lease", l);
        }
        req
    }

    fn cgroup(&self, id: &str) -> Cgroup {
        Cgroup::new(
            &self.inner.cfg.cgroup_root,
            format!("{}/{id}", self.inner.cfg.namespace),
        )
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.inner.channel.clone())
    }

    fn task_service(&self) -> TasksClient<Channel> {
        TasksClient::new(self.inner.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.inner.channel.clone())
    }

    /// Deletes the task, the container and its snapshot, ignoring what is
    /// already gone.
    async fn cleanup(&self, id: &str) {
        let _ = self
            .task_service()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_owned(),
            }))
            .await;
        let _ = self
            .containers()
            .delete(self.req(DeleteContainerRequest { id: id.to_owned() }))
            .await;
        let _ = self
            .snapshots()
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: self.inner.cfg.snapshotter.clone(),
                key: id.to_owned(),
            }))
            .await;
    }

    fn track(
        &self,
        key: &str,
        id: &str,
        uid: Option<String>,
        upper: Option<PathBuf>,
    ) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        self.tasks().insert(
            key.to_owned(),
            Running {
                id: id.to_owned(),
                uid,
                upper,
                killed: false,
                done: rx,
            },
        );
        tx
    }

    /// Waits for the container's exit, reads the OOM counter before the
    /// cgroup goes, cleans up and reports.
    fn wait_for_exit(&self, key: String, id: String, events: Events, done: watch::Sender<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            let code = loop {
                match me
                    .task_service()
                    .wait(me.req(WaitRequest {
                        container_id: id.clone(),
                        exec_id: String::new(),
                    }))
                    .await
                {
                    Ok(r) => break i32::try_from(r.into_inner().exit_status).unwrap_or(255),
                    Err(s) if s.code() == tonic::Code::NotFound => break 137,
                    Err(s) => {
                        // containerd restarting: its shims keep the container alive.
                        tracing::debug!(container = %id, error = %s.message(), "waiting again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
            let cg = me.cgroup(&id);
            let oom = cg.oom_kills() > 0;
            let limit = cg.memory_limit();
            let record = me.tasks().remove(&key);
            let killed = record.as_ref().is_some_and(|r| r.killed);
            let event = if killed {
                RuntimeEvent::Killed
            } else if oom {
                let limit = limit.map(|b| format!(" of {b} bytes")).unwrap_or_default();
                RuntimeEvent::Exited {
                    code,
                    failure: Some(Failure::new(
                        FailureReason::OutOfMemory,
                        format!("killed by the kernel for exceeding its memory limit{limit}"),
                    )),
                }
            } else {
                RuntimeEvent::Exited {
                    code,
                    failure: None,
                }
            };
            // Kept before the container, the end's only other trace, goes.
            if let Some(c) = &me.inner.cfg.checkpoints {
                c.record_end(&key, record.and_then(|r| r.uid).as_deref(), &event);
            }
            me.cleanup(&id).await;
            let _ = events.send((key, event)).await;
            let _ = done.send(true);
        });
    }

    /// Removes an exec'd process's record (once it exited or was killed).
    async fn delete_exec(&self, id: &str, exec_id: &str) {
        let _ = self
            .task_service()
            .delete_process(self.req(DeleteProcessRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            }))
            .await;
    }

    async fn signal(&self, id: &str, signal: u32, all: bool) {
        let _ = self
            .task_service()
            .kill(self.req(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await;
    }
}

#[async_trait]
impl ContainerRuntime for Containerd {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Containerd
    }

    fn unsupported(&self, launch: &Launch) -> Option<String> {
        launch
            .container
            .image
            .trim()
            .is_empty()
            .then(|| "a container needs an image".to_owned())
    }

    async fn healthy(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(2), self.version())
            .await
            .is_ok_and(|v| v.is_ok())
    }

    async fn start(&self, launch: Launch, events: Events) -> Result<(), RuntimeError> {
        let key = launch.key.clone();
        let _ = events.send((key.clone(), RuntimeEvent::Starting)).await;
        let id = container_id(&key);
        let dirs = match prepare_sandbox(&self.inner.cfg.sandboxes, &key) {
            Ok(d) => d,
            Err(e) => {
                let ev = RuntimeEvent::failed(FailureReason::LaunchFailed, format!("sandbox: {e}"));
                let _ = events.send((key, ev)).await;
                return Ok(());
            }
        };
        let with_userns = self.inner.userns.load(Ordering::Relaxed);
        let mut started = self
            .create_and_start(&launch, &id, &dirs, with_userns)
            .await;
        if let Err(StartError::Step("create task", status)) = &started
            && with_userns
            && status.message().contains("permission denied")
        {
            // The OCI runtime, as a remapped root, could not reach the
            // container's files (containerd's state under a directory only
            // the host's root may enter, such as /root): tasks keep the
            // host's ids from now on.
            if self.inner.userns.swap(false, Ordering::Relaxed) {
                tracing::warn!(task = %key, error = %status.message(), "a container could not start in a user namespace; tasks run without one");
            }
            self.cleanup(&id).await;
            started = self.create_and_start(&launch, &id, &dirs, false).await;
        }
        match started {
            Ok(upper) => {
                let done = self.track(&key, &id, launch.uid.clone(), upper);
                let _ = events.send((key.clone(), RuntimeEvent::Running)).await;
                self.wait_for_exit(key, id, events, done);
            }
            Err(e) => {
                tracing::warn!(task = %key, error = ?e, "starting the container failed");
                self.cleanup(&id).await;
                let _ = events.send((key, e.event())).await;
            }
        }
        Ok(())
    }

    async fn exec(
        &self,
        key: &str,
        _container: &ContainerSpec,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let id = match self.tasks().get(key) {
            Some(r) => r.id.clone(),
            None => return Err(RuntimeError::NotRunning(key.to_owned())),
        };
        // As the container's own process runs (user, environment, working
        // directory, capabilities, no new privileges), with `command`.
        let container = self
            .containers()
            .get(self.req(GetContainerRequest { id: id.clone() }))
            .await
            .map_err(|s| backend(s.message()))?
            .into_inner()
            .container
            .ok_or_else(|| backend("the container has no record"))?;
        let spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|a| serde_json::from_slice(&a.value).ok())
            .ok_or_else(|| backend("the container's spec is unreadable"))?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(command);
        process["terminal"] = serde_json::json!(false);
        let value = serde_json::to_vec(&process).map_err(backend)?;
        let exec_id = format!("probe-{}", self.inner.execs.fetch_add(1, Ordering::Relaxed));
        let files = super::task_files_dir(&self.inner.cfg.sandboxes, key);
        let out = files.join("probe.out");
        std::fs::write(&out, b"").map_err(|e| backend(format!("{}: {e}", out.display())))?;
        let path = out.display().to_string();
        let tasks = self.task_service();
        let run = async {
            tasks
                .clone()
                .exec(self.req(ExecProcessRequest {
                    container_id: id.clone(),
                    exec_id: exec_id.clone(),
                    stdin: String::new(),
                    stdout: path.clone(),
                    stderr: path.clone(),
                    terminal: false,
                    spec: Some(prost_types::Any {
                        type_url:
                            "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                        value,
                    }),
                }))
                .await?;
            tasks
                .clone()
                .start(self.req(StartRequest {
                    container_id: id.clone(),
                    exec_id: exec_id.clone(),
                }))
                .await?;
            let waited = tasks
                .clone()
                .wait(self.req(WaitRequest {
                    container_id: id.clone(),
                    exec_id: exec_id.clone(),
                }))
                .await?;
            Ok::<_, tonic::Status>(waited.into_inner().exit_status)
        };
        let code = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(status)) => Some(i32::try_from(status).unwrap_or(128)),
            Ok(Err(s)) => {
                self.delete_exec(&id, &exec_id).await;
                return Err(backend(s.message()));
            }
            Err(_) => {
                let _ = tasks
                    .clone()
                    .kill(self.req(KillRequest {
                        container_id: id.clone(),
                        exec_id: exec_id.clone(),
                        signal: 9,
                        all: false,
                    }))
                    .await;
                None
            }
        };
        self.delete_exec(&id, &exec_id).await;
        let output = std::fs::read(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        Ok(ExecOutcome {
            code,
            output: match code {
                Some(_) => super::output_tail(&output),
                None => format!("timed out after {}s", timeout.as_secs_f32()),
            },
        })
    }

    async fn kill(&self, key: &str, grace: Duration) -> Result<(), RuntimeError> {
        let (id, mut done) = {
            let mut tasks = self.tasks();
            let r = tasks
                .get_mut(key)
                .ok_or_else(|| RuntimeError::NotRunning(key.to_owned()))?;
            r.killed = true;
            (r.id.clone(), r.done.clone())
        };
        self.signal(&id, 15, false).await;
        if tokio::time::timeout(grace, done.wait_for(|d| *d))
            .await
            .is_err()
        {
            self.signal(&id, 9, true).await;
            let _ = done.wait_for(|d| *d).await;
        }
        Ok(())
    }

    fn running(&self) -> Vec<String> {
        self.tasks().keys().cloned().collect()
    }

    async fn recover(&self, events: Events) -> Result<Vec<String>, RuntimeError> {
        let containers = self
            .containers()
            .list(self.req(ListContainersRequest {
                filters: vec![format!("labels.\"{TASK_LABEL}\"")],
            }))
            .await
            .map_err(|s| backend(s.message()))?
            .into_inner()
            .containers;
        let mut found = Vec::new();
        for c in containers {
            let Some(key) = c.labels.get(TASK_LABEL).cloned() else {
                continue;
            };
            let uid = c.labels.get(TASK_UID_LABEL).cloned();
            if self.tasks().contains_key(&key) {
                continue;
            }
            let status = self
                .task_service()
                .get(self.req(GetTaskRequest {
                    container_id: c.id.clone(),
                    exec_id: String::new(),
                }))
                .await
                .ok()
                .and_then(|r| r.into_inner().process)
                .map(|p| p.status());
            match status {
                Some(ProcessStatus::Running | ProcessStatus::Paused | ProcessStatus::Pausing) => {
                    let _ = events.send((key.clone(), RuntimeEvent::Running)).await;
                    let upper = self.upper_dir(&c.id).await;
                    let done = self.track(&key, &c.id, uid, upper);
                    self.wait_for_exit(key.clone(), c.id, events.clone(), done);
                    found.push(key);
                }
                Some(ProcessStatus::Stopped) => {
                    // It ended while no agent watched: collect its exit code.
                    let done = self.track(&key, &c.id, uid, None);
                    self.wait_for_exit(key.clone(), c.id, events.clone(), done);
                    found.push(key);
                }
                _ => {
                    // Created but never started, or no task at all: not worth keeping.
                    self.cleanup(&c.id).await;
                }
            }
        }
        Ok(found)
    }

    fn writable_dirs(&self, key: &str) -> Vec<PathBuf> {
        let Some(upper) = self.tasks().get(key).map(|r| r.upper.clone()) else {
            return Vec::new();
        };
        let mut dirs = vec![super::sandbox_dir(&self.inner.cfg.sandboxes, key)];
        dirs.extend(upper);
        dirs
    }

    fn uid(&self, key: &str) -> Option<String> {
        self.tasks().get(key)?.uid.clone()
    }

    fn usage(&self, key: &str) -> Option<Usage> {
        let id = self.tasks().get(key)?.id.clone();
        self.cgroup(&id).usage()
    }
}
