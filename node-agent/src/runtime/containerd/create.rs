//! Creating and starting one task's container: its image (pulled when
//! allowed), its snapshot under a short lease, its user and user namespace,
//! its OCI spec, then containerd's task.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{MountsRequest, PrepareSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
    DeleteRequest as DeleteLeaseRequest, StartRequest, leases_client::LeasesClient,
};
use containerd_client::types::Mount;
use corral_api::job::{NetworkMode, SeccompProfile};
use corral_api::task::FailureReason;
use serde_json::{Value, json};

use super::spec::{SpecParts, USERNS_SIZE, mount_points, oci_spec, upper_of, with_user_namespace};
use super::{Containerd, RUNC, SANDBOX_MOUNT, SPEC_TYPE, TASK_LABEL, TASK_UID_LABEL};
use crate::runtime::image::{self, ImageError};
use crate::runtime::{Launch, RuntimeEvent, TaskDirs};

/// The runc shim's options (`containerd.runc.v1.Options`); only the field
/// Corral sets.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    /// The OCI runtime binary (name or path).
    #[prost(string, tag = "6")]
    binary_name: String,
}

/// A step of starting a container that failed.
#[derive(Debug)]
pub(super) enum StartError {
    Image(ImageError),
    Pull { name: String, detail: String },
    Step(&'static str, tonic::Status),
    User(crate::runtime::user::UserError),
    Sandbox(std::io::Error),
}

impl From<ImageError> for StartError {
    fn from(e: ImageError) -> Self {
        StartError::Image(e)
    }
}

impl StartError {
    pub(super) fn event(&self) -> RuntimeEvent {
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

pub(super) fn step(what: &'static str) -> impl FnOnce(tonic::Status) -> StartError {
    move |s| StartError::Step(what, s)
}

impl Containerd {
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
    pub(super) async fn create_and_start(
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
            self.run_as(launch, &image, &mounts, sandbox, &mut spec, with_userns)?;
            let container = self.container(launch, id, &image, &spec);
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

    /// Settles who the task runs as from the image's own files (so once
    /// its snapshot exists), with a user namespace unless it is root (ids
    /// past the namespace's range keep the host's), and gives it the sandbox.
    fn run_as(
        &self,
        launch: &Launch,
        image: &image::ImageConfig,
        mounts: &[Mount],
        sandbox: &Path,
        spec: &mut Value,
        with_userns: bool,
    ) -> Result<(), StartError> {
        let db = crate::runtime::user::LayersDb::from_mounts(
            mounts
                .iter()
                .map(|m| (m.r#type.as_str(), m.source.as_str(), m.options.as_slice())),
        );
        let who = crate::runtime::user::resolve(
            launch.container.user.as_deref(),
            Some(image.user.as_str()),
            &db,
        )
        .map_err(StartError::User)?;
        let mapped = who.uid != 0 && who.uid < USERNS_SIZE && who.gid < USERNS_SIZE;
        let base = self
            .inner
            .cfg
            .userns_base
            .filter(|_| mapped && with_userns)
            .unwrap_or(0);
        if base != 0 {
            let network = launch.container.network.unwrap_or(NetworkMode::Host);
            if let Some(upper) = upper_of(mounts) {
                mount_points(&upper, network).map_err(StartError::Sandbox)?;
            }
            with_user_namespace(spec, base, network);
        }
        let (uid, gid) = (base.saturating_add(who.uid), base.saturating_add(who.gid));
        std::os::unix::fs::chown(sandbox, Some(uid), Some(gid)).map_err(StartError::Sandbox)?;
        spec["process"]["user"] = json!({"uid": who.uid, "gid": who.gid});
        Ok(())
    }

    /// The container record of the task, labelled with its key and uid.
    fn container(
        &self,
        launch: &Launch,
        id: &str,
        image: &image::ImageConfig,
        spec: &Value,
    ) -> Container {
        let cfg = &self.inner.cfg;
        Container {
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
        }
    }

    /// The writable layer of the container `id`'s snapshot.
    pub(super) async fn upper_dir(&self, id: &str) -> Option<PathBuf> {
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
}
