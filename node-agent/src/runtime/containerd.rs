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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest,
    GetRequest as GetTaskRequest, KillRequest, ListContainersRequest, StartRequest, WaitRequest,
    containers_client::ContainersClient, leases_client::LeasesClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use containerd_client::types::Mount;
use containerd_client::types::v1::Status as ProcessStatus;
use corral_api::job::{NetworkMode, SeccompProfile};
use corral_api::node::RuntimeKind;
use corral_api::task::FailureReason;
use corral_core::lifecycle::Failure;
use serde_json::{Value, json};
use tokio::sync::watch;
use tonic::transport::Channel;

mod spec;
pub use spec::user_namespaces_allowed;
use spec::{SpecParts, USERNS_SIZE, mount_points, oci_spec, upper_of, with_user_namespace};

use super::cgroup::Cgroup;
use super::image::{self, ImageError};
use super::{
    ContainerRuntime, Events, Launch, RuntimeError, RuntimeEvent, TaskDirs, Usage, container_id,
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
    /// to; `None`: tasks share the host's ids (see [`with_user_namespace`]).
    pub userns_base: Option<u32>,
}

/// The runc shim's options (`containerd.runc.v1.Options`); only the field
/// Corral sets.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    /// The OCI runtime binary (name or path).
    #[prost(string, tag = "6")]
    binary_name: String,
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

/// A step of starting a container that failed.
#[derive(Debug)]
enum StartError {
    Image(ImageError),
    Pull { name: String, detail: String },
    Step(&'static str, tonic::Status),
    User(super::user::UserError),
    Sandbox(std::io::Error),
}

impl From<ImageError> for StartError {
    fn from(e: ImageError) -> Self {
        StartError::Image(e)
    }
}

impl StartError {
    fn event(&self) -> RuntimeEvent {
        match self {
            StartError::Image(e @ ImageError::NotFound(_)) => RuntimeEvent::failed(
                FailureReason::ImageNotFound,
                format!(
                    "{e}; import it with `corral agent image import`, or let the agent pull it (`--pull-images missing`)"
                ),
            ),
            StartError::Pull { name, detail } => RuntimeEvent::failed(
                FailureReason::ImageNotFound,
                format!("image {name} is not present and pulling it failed: {detail}"),
            ),
            StartError::Image(e) => {
                RuntimeEvent::failed(FailureReason::LaunchFailed, e.to_string())
            }
            StartError::Step(step, s) => RuntimeEvent::failed(
                FailureReason::LaunchFailed,
                format!("containerd: {step}: {}", s.message()),
            ),
            StartError::User(e) => RuntimeEvent::failed(FailureReason::LaunchFailed, e.to_string()),
            StartError::Sandbox(e) => RuntimeEvent::failed(
                FailureReason::LaunchFailed,
                format!("giving the sandbox to the task's user: {e}"),
            ),
        }
    }
}

fn step(what: &'static str) -> impl FnOnce(tonic::Status) -> StartError {
    move |s| StartError::Step(what, s)
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

    /// The OCI runtime spec of a task's container.
    fn spec(&self, launch: &Launch, id: &str, image: &image::ImageConfig, sandbox: &Path) -> Value {
        let c = &launch.container;
        let mut task_env: BTreeMap<String, String> = c
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        task_env.insert("CORRAL_TASK".into(), launch.key.clone());
        task_env.insert("CORRAL_SANDBOX".into(), SANDBOX_MOUNT.into());
        let cwd = c
            .working_dir
            .clone()
            .or_else(|| Some(image.working_dir.clone()).filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        let limits = launch.limits();
        let hostname: String = launch
            .key
            .rsplit('/')
            .next()
            .unwrap_or(id)
            .chars()
            .take(63)
            .collect();
        oci_spec(SpecParts {
            args: image::process_args(image, &c.command, &c.args),
            env: image::merge_env(&image.env, &task_env),
            cwd,
            hostname,
            limits: &limits,
            cgroups_path: &format!("/{}/{id}", self.inner.cfg.namespace),
            sandbox,
            network: c.network.unwrap_or(NetworkMode::Host),
            read_only_root: c.read_only_root_filesystem,
            filtered: c.seccomp_profile != Some(SeccompProfile::Unconfined),
        })
    }

    /// Creates and starts the task's container; returns its writable
    /// layer's directory, when its snapshot has one on the host.
    async fn create_and_start(
        &self,
        launch: &Launch,
        id: &str,
        dirs: &TaskDirs,
        with_userns: bool,
    ) -> Result<Option<PathBuf>, StartError> {
        let sandbox = dirs.sandbox.as_path();
        let cfg = &self.inner.cfg;
        let reference = &launch.container.image;
        let image = match image::resolve(&self.inner.channel, &cfg.namespace, reference).await {
            Err(ImageError::NotFound(name)) if cfg.pull => {
                self.pull(&name).await?;
                image::resolve(&self.inner.channel, &cfg.namespace, reference).await?
            }
            other => other?,
        };
        let mut spec = self.spec(launch, id, &image, sandbox);
        // A leftover of an earlier attempt with the same id (an agent that
        // died half-way) is cleared first.
        self.cleanup(id).await;
        let lease = format!("corral-{id}");
        let expire = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_mins(10))
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .to_string();
        LeasesClient::new(self.inner.channel.clone())
            .create(self.req(CreateLeaseRequest {
                id: lease.clone(),
                labels: HashMap::from([("containerd.io/gc.expire".to_owned(), expire)]),
            }))
            .await
            .map_err(step("create lease"))?;
        let created = async {
            let mounts: Vec<Mount> = self
                .snapshots()
                .prepare(self.leased(
                    PrepareSnapshotRequest {
                        snapshotter: cfg.snapshotter.clone(),
                        key: id.to_owned(),
                        parent: image.chain_id.clone(),
                        labels: HashMap::new(),
                    },
                    &lease,
                ))
                .await
                .map_err(step("prepare snapshot"))?
                .into_inner()
                .mounts;
            // The user comes from the image's own files, so it is settled
            // once its snapshot exists; the sandbox becomes that user's.
            let db = super::user::LayersDb::from_mounts(
                mounts
                    .iter()
                    .map(|m| (m.r#type.as_str(), m.source.as_str(), m.options.as_slice())),
            );
            let who = super::user::resolve(
                launch.container.user.as_deref(),
                Some(image.user.as_str()),
                &db,
            )
            .map_err(StartError::User)?;
            // Root asked for root on the host; everyone else gets a user
            // namespace where the kernel allows one (ids past its range
            // keep the host's).
            let mapped = who.uid != 0 && who.uid < USERNS_SIZE && who.gid < USERNS_SIZE;
            let base = cfg
                .userns_base
                .filter(|_| mapped && with_userns)
                .unwrap_or(0);
            if base != 0 {
                let network = launch.container.network.unwrap_or(NetworkMode::Host);
                if let Some(upper) = upper_of(&mounts) {
                    mount_points(&upper, network).map_err(StartError::Sandbox)?;
                }
                with_user_namespace(&mut spec, base, network);
            }
            let (uid, gid) = (base.saturating_add(who.uid), base.saturating_add(who.gid));
            std::os::unix::fs::chown(sandbox, Some(uid), Some(gid)).map_err(StartError::Sandbox)?;
            spec["process"]["user"] = json!({"uid": who.uid, "gid": who.gid});
            let container = Container {
                id: id.to_owned(),
                labels: [
                    (TASK_LABEL, Some(launch.key.clone())),
                    (TASK_UID_LABEL, launch.uid.clone()),
                ]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                .collect(),
                image: image.name.clone(),
                runtime: Some(Runtime {
                    name: RUNC.to_owned(),
                    options: cfg.oci_runtime.as_ref().map(|binary| prost_types::Any {
                        type_url: "containerd.runc.v1.Options".to_owned(),
                        value: prost::Message::encode_to_vec(&RuncOptions {
                            binary_name: binary.clone(),
                        }),
                    }),
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE.to_owned(),
                    value: serde_json::to_vec(&spec).unwrap_or_default(),
                }),
                snapshotter: cfg.snapshotter.clone(),
                snapshot_key: id.to_owned(),
                ..Container::default()
            };
            self.containers()
                .create(self.leased(
                    CreateContainerRequest {
                        container: Some(container),
                    },
                    &lease,
                ))
                .await
                .map_err(step("create container"))?;
            Ok::<_, StartError>(mounts)
        }
        .await;
        let _ = LeasesClient::new(self.inner.channel.clone())
            .delete(self.req(DeleteLeaseRequest {
                id: lease,
                sync: false,
            }))
            .await;
        let mounts = created?;
        let upper = upper_of(&mounts);
        self.task_service()
            .create(self.req(CreateTaskRequest {
                container_id: id.to_owned(),
                rootfs: mounts,
                // Outside every mount: the task cannot redirect them.
                stdout: dirs.files.join("stdout").display().to_string(),
                stderr: dirs.files.join("stderr").display().to_string(),
                ..CreateTaskRequest::default()
            }))
            .await
            .map_err(step("create task"))?;
        self.task_service()
            .start(self.req(StartRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
            .map_err(step("start task"))?;
        Ok(upper)
    }

    /// The writable layer of the container `id`'s snapshot.
    async fn upper_dir(&self, id: &str) -> Option<PathBuf> {
        let mounts = self
            .snapshots()
            .mounts(self.req(MountsRequest {
                snapshotter: self.inner.cfg.snapshotter.clone(),
                key: id.to_owned(),
            }))
            .await
            .ok()?
            .into_inner()
            .mounts;
        upper_of(&mounts)
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

    /// Pulls and unpacks `name` (normalized) with containerd's own `ctr`, as
    /// `image import` does (containerd 1.6 has no Transfer service): the
    /// registry is the one the name names, over HTTPS unless listed as
    /// insecure.
    async fn pull(&self, name: &str) -> Result<(), StartError> {
        let cfg = &self.inner.cfg;
        let host = name.split('/').next().unwrap_or_default();
        let mut cmd = tokio::process::Command::new("ctr");
        cmd.arg("--address")
            .arg(&cfg.address)
            .args(["-n", &cfg.namespace, "images", "pull"])
            .args(["--snapshotter", &cfg.snapshotter]);
        if cfg.insecure_registries.iter().any(|r| r == host) {
            cmd.arg("--plain-http");
        }
        let out = cmd
            .arg(name)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| StartError::Pull {
                name: name.to_owned(),
                detail: format!("running ctr: {e}"),
            })?;
        if out.status.success() {
            tracing::info!(image = name, "pulled");
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("ctr images pull failed")
            .trim()
            .to_owned();
        Err(StartError::Pull {
            name: name.to_owned(),
            detail,
        })
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
