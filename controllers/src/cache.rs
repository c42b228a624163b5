//! One watch per kind for every controller in a process (client-go's shared
//! informers): Tasks are watched once, not once per controller.
//!
//! Watches: each kind a controller asks [`Caches`] for, once, through the
//! client the caches were made with, from the first request until `stop`.
//! Keeps: per kind a reflector store (every object as last seen) and whether
//! its watch is healthy; for Tasks an index by owning Job (the
//! `corral.dev/job` label, [`BY_JOB`]) and one by node ([`BY_NODE`]), so a
//! job's or a node's tasks are found without walking every task.
//! Sends: every change to every subscriber of the kind, over a bounded
//! broadcast. A subscriber that falls more than the buffer behind is told to
//! resync from the store instead: it may miss an intermediate version of an
//! object, never its latest one.
//! Guarantees: a change is sent only once the store (and the index) show it;
//! every subscription starts with [`Change::Resynced`], so a subscriber that
//! joins late learns what was there before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use corral_api::{Job, Node, Quota, Reservation, Role, Task};
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use tokio::sync::broadcast;

use crate::endpoints::SERVICE_NAME_LABEL;
use crate::jobs::JOB_LABEL;

/// Changes buffered per kind for the slowest subscriber before it must resync.
const BUFFER: usize = 16_384;

/// What a subscriber hears.
#[derive(Debug)]
pub enum Change<K> {
    /// An object was created or changed; this is its new state.
    Applied(Arc<K>),
    /// An object was deleted; this is its last state.
    Deleted(Arc<K>),
    /// The store was (re)filled, or this subscriber fell behind or just
    /// joined: what it knows must be compared with the whole store.
    Resynced,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(o) => Change::Applied(o.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Resynced => Change::Resynced,
        }
    }
}

/// The bounds every cached kind meets.
pub trait Cached:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Cached for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// How an index keys an object (`None`: not in the index).
type KeyOf<K> = fn(&K) -> Option<String>;

/// Objects grouped by a key derived from each (for Tasks: their job, their node).
struct Index<K: Cached> {
    name: &'static str,
    key_of: KeyOf<K>,
    inner: RwLock<IndexInner<K>>,
}

/// The objects themselves, not references into the store: a lookup of a
/// job's tens of thousands of tasks clones `Arc`s, nothing else.
struct IndexInner<K: Cached> {
    by_key: HashMap<String, HashMap<ObjectRef<K>, Arc<K>>>,
    key_by_obj: HashMap<ObjectRef<K>, String>,
}

impl<K: Cached> Index<K> {
    fn new(name: &'static str, key_of: KeyOf<K>) -> Self {
        Index {
            name,
            key_of,
            inner: RwLock::new(IndexInner {
                by_key: HashMap::new(),
                key_by_obj: HashMap::new(),
            }),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IndexInner<K>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn applied(&self, obj: &Arc<K>) {
        let r = ObjectRef::from_obj(&**obj);
        let key = (self.key_of)(obj);
        let mut inner = self.write();
        inner.remove(&r);
        if let Some(key) = key {
            inner
                .by_key
                .entry(key.clone())
                .or_default()
                .insert(r.clone(), obj.clone());
            inner.key_by_obj.insert(r, key);
        }
    }

    fn deleted(&self, obj: &K) {
        self.write().remove(&ObjectRef::from_obj(obj));
    }

    fn rebuild(&self, all: &[Arc<K>]) {
        let mut inner = self.write();
        inner.by_key.clear();
        inner.key_by_obj.clear();
        for obj in all {
            if let Some(key) = (self.key_of)(obj) {
                let r = ObjectRef::from_obj(&**obj);
                inner
                    .by_key
                    .entry(key.clone())
                    .or_default()
                    .insert(r.clone(), obj.clone());
                inner.key_by_obj.insert(r, key);
            }
        }
    }

    fn objects(&self, key: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .by_key
            .get(key)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl<K: Cached> IndexInner<K> {
    fn remove(&mut self, r: &ObjectRef<K>) {
        if let Some(old) = self.key_by_obj.remove(r)
            && let Some(set) = self.by_key.get_mut(&old)
        {
            set.remove(r);
            if set.is_empty() {
                self.by_key.remove(&old);
            }
        }
    }
}

/// One kind's watch, store and subscribers.
pub struct Shared<K: Cached> {
    store: Store<K>,
    tx: broadcast::Sender<Change<K>>,
    indexes: Arc<Vec<Index<K>>>,
    healthy: Arc<AtomicBool>,
    /// Becomes true once the watch has listed everything the first time.
    listed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl<K: Cached> Shared<K> {
    /// Starts watching `api` until `stop` turns true.
    fn start(
        api: Api<K>,
        indexes: &[(&'static str, KeyOf<K>)],
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let (store, writer) = reflector::store();
        let (tx, _) = broadcast::channel(BUFFER);
        let shared = Shared {
            store,
            tx,
            indexes: Arc::new(indexes.iter().map(|(n, k)| Index::new(n, *k)).collect()),
            healthy: Arc::new(AtomicBool::new(false)),
            listed: Arc::new(tokio::sync::watch::channel(false).0),
        };
        tokio::spawn(drive(api, writer, shared.clone(), stop));
        shared
    }

    /// Waits until the watch has listed everything once. Any number of
    /// tasks may wait at once (the reflector store's own
    /// `wait_until_ready` wakes only the last task to wait on it, so
    /// controllers that start together must not share it).
    pub async fn listed(&self) {
        let mut rx = self.listed.subscribe();
        let _ = rx.wait_for(|listed| *listed).await;
    }

    /// Whether the watch has listed everything and not failed since (a
    /// failed watch is healthy again once it has listed everything anew).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Every object as last seen.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every change from now on, starting with [`Change::Resynced`]; the
    /// stream ends once the watch has stopped and every handle to this
    /// kind's cache is gone (its users stop on the same signal anyway).
    pub fn changes(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        let rx = self.tx.subscribe();
        let first = futures::stream::iter([Change::Resynced]);
        let rest = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(change) => Some((change, rx)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        kind = %K::kind(&()),
                        missed,
                        "a cache subscriber fell behind; it resyncs"
                    );
                    Some((Change::Resynced, rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        first.chain(rest)
    }

    /// The objects that changed (a deleted one in its last state; on a
    /// resync, every object in the store): a controller's trigger stream.
    pub fn touched(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.touched_after(|_| {})
    }

    /// As [`Shared::touched`], each change first handed to `seen`: for a
    /// subscriber that keeps something derived from the objects, up to date
    /// before the objects the change touched trigger it.
    pub fn touched_after(
        &self,
        mut seen: impl FnMut(&Change<K>) + Send + 'static,
    ) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let store = self.store.clone();
        self.changes().flat_map(move |change| {
            seen(&change);
            let objs = match change {
                Change::Applied(o) | Change::Deleted(o) => vec![o],
                Change::Resynced => store.state(),
            };
            futures::stream::iter(objs)
        })
    }

    /// The objects whose key in index `index` is `key` (none for an index
    /// the kind does not have).
    pub fn indexed(&self, index: &str, key: &str) -> Vec<Arc<K>> {
        let Some(index) = self.indexes.iter().find(|i| i.name == index) else {
            return Vec::new();
        };
        index.objects(key)
    }
}

impl<K: Cached> std::fmt::Debug for Shared<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("kind", &K::kind(&()))
            .field("healthy", &self.healthy())
            .finish_non_exhaustive()
    }
}

impl<K: Cached> Clone for Shared<K> {
    fn clone(&self) -> Self {
        Shared {
            store: self.store.clone(),
            tx: self.tx.clone(),
            indexes: self.indexes.clone(),
            healthy: self.healthy.clone(),
            listed: self.listed.clone(),
        }
    }
}

/// Feeds one kind's store, indexes and subscribers from its watch.
async fn drive<K: Cached>(
    api: Api<K>,
    mut writer: reflector::store::Writer<K>,
    shared: Shared<K>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut events = watcher(api).boxed();
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            next = events.next() => next,
        };
        let event = match next {
            None => return,
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                // The watcher backs off and tries again by itself.
                shared.healthy.store(false, Ordering::Relaxed);
                tracing::debug!(kind = %K::kind(&()), error = %e, "cache watch error");
                continue;
            }
        };
        writer.apply_watcher_event(&event);
        let change = match event {
            Event::Apply(obj) => {
                let stored = shared
                    .store
                    .get(&ObjectRef::from_obj(&obj))
                    .unwrap_or_else(|| Arc::new(obj));
                for index in shared.indexes.iter() {
                    index.applied(&stored);
                }
                Change::Applied(stored)
            }
            Event::Delete(obj) => {
                for index in shared.indexes.iter() {
                    index.deleted(&obj);
                }
                Change::Deleted(Arc::new(obj))
            }
            Event::InitDone => {
                let all = shared.store.state();
                for index in shared.indexes.iter() {
                    index.rebuild(&all);
                }
                shared.healthy.store(true, Ordering::Relaxed);
                shared.listed.send_replace(true);
                Change::Resynced
            }
            Event::Init | Event::InitApply(_) => continue,
        };
        // An error only means nobody subscribes yet.
        let _ = shared.tx.send(change);
    }
}

fn watcher<K: Cached>(
    api: Api<K>,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static {
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

/// The task index by job; keys are [`job_key`]s.
pub const BY_JOB: &str = "job";
/// The task index by node; keys are node names.
pub const BY_NODE: &str = "node";

/// The key of a task's job in the [`BY_JOB`] index: `namespace/job`.
pub fn job_key(namespace: &str, job: &str) -> String {
    format!("{namespace}/{job}")
}

/// The job of a task (its [`JOB_LABEL`]), as its key in [`BY_JOB`].
pub(crate) fn task_job(task: &Task) -> Option<String> {
    let job = task.metadata.labels.as_ref()?.get(JOB_LABEL)?;
    Some(job_key(task.metadata.namespace.as_deref()?, job))
}

/// The EndpointSlice index by the service it serves; keys are
/// `namespace/service` ([`job_key`] for a job's slices).
pub const BY_SERVICE: &str = "service";

/// The service of a slice (its `kubernetes.io/service-name`), as its key in
/// [`BY_SERVICE`].
pub(crate) fn slice_service(slice: &EndpointSlice) -> Option<String> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(job_key(slice.metadata.namespace.as_deref()?, service))
}

fn task_node(task: &Task) -> Option<String> {
    task.spec.node_name.clone()
}

/// The shared caches of one process's controllers, each kind started on
/// first use.
pub struct Caches {
    client: kube::Client,
    stop: tokio::sync::watch::Receiver<bool>,
    tasks: OnceLock<Shared<Task>>,
    jobs: OnceLock<Shared<Job>>,
    nodes: OnceLock<Shared<Node>>,
    roles: OnceLock<Shared<Role>>,
    quotas: OnceLock<Shared<Quota>>,
    reservations: OnceLock<Shared<Reservation>>,
    leases: OnceLock<Shared<Lease>>,
    endpoint_slices: OnceLock<Shared<EndpointSlice>>,
    pods: OnceLock<Shared<Pod>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl Caches {
    /// Caches that watch through `client` until `stop` turns true.
    pub fn new(client: kube::Client, stop: tokio::sync::watch::Receiver<bool>) -> Arc<Caches> {
        Arc::new(Caches {
            client,
            stop,
            tasks: OnceLock::new(),
            jobs: OnceLock::new(),
            nodes: OnceLock::new(),
            roles: OnceLock::new(),
            quotas: OnceLock::new(),
            reservations: OnceLock::new(),
            leases: OnceLock::new(),
            endpoint_slices: OnceLock::new(),
            pods: OnceLock::new(),
        })
    }

    fn cluster_wide<'a, K: Cached>(
        &'a self,
        cell: &'a OnceLock<Shared<K>>,
        indexes: &[(&'static str, KeyOf<K>)],
    ) -> &'a Shared<K> {
        cell.get_or_init(|| {
            Shared::start(Api::all(self.client.clone()), indexes, self.stop.clone())
        })
    }

    /// Every Task, indexed by job ([`BY_JOB`]) and by node ([`BY_NODE`]).
    pub fn tasks(&self) -> &Shared<Task> {
        self.cluster_wide(&self.tasks, &[(BY_JOB, task_job), (BY_NODE, task_node)])
    }

    /// Every Job.
    pub fn jobs(&self) -> &Shared<Job> {
        self.cluster_wide(&self.jobs, &[])
    }

    /// Every Node.
    pub fn nodes(&self) -> &Shared<Node> {
        self.cluster_wide(&self.nodes, &[])
    }

    /// Every Role.
    pub fn roles(&self) -> &Shared<Role> {
        self.cluster_wide(&self.roles, &[])
    }

    /// Every Quota.
    pub fn quotas(&self) -> &Shared<Quota> {
        self.cluster_wide(&self.quotas, &[])
    }

    /// Every Reservation.
    pub fn reservations(&self) -> &Shared<Reservation> {
        self.cluster_wide(&self.reservations, &[])
    }

    /// Every EndpointSlice, indexed by the service (job) it serves
    /// ([`BY_SERVICE`]).
    pub fn endpoint_slices(&self) -> &Shared<EndpointSlice> {
        self.cluster_wide(&self.endpoint_slices, &[(BY_SERVICE, slice_service)])
    }

    /// Every Pod (each run as a task by [`crate::pods`]).
    pub fn pods(&self) -> &Shared<Pod> {
        self.cluster_wide(&self.pods, &[])
    }

    /// The node leases (in [`crate::nodes::LEASE_NAMESPACE`]).
    pub fn leases(&self) -> &Shared<Lease> {
        self.leases.get_or_init(|| {
            Shared::start(
                Api::namespaced(self.client.clone(), crate::nodes::LEASE_NAMESPACE),
                &[],
                self.stop.clone(),
            )
        })
    }
}

/// Runs `pass` every `period` once `filled` (the caches it reads are
/// filled: a pass over half-filled caches would decide wrong) until `stop`
/// turns true: the loop of the controllers that recompute on a tick.
pub(crate) async fn every<F, Fut>(
    period: std::time::Duration,
    filled: impl std::future::Future<Output = bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let go = tokio::select! {
        _ = stop.changed() => false,
        ok = filled => ok,
    };
    if !go {
        return;
    }
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => pass().await,
        }
    }
}
