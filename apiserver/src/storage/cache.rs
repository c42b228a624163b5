//! The watch cache: one store watch over `/registry/` keeps every object in
//! memory, serves lists and all client watches, and indexes Tasks by
//! `spec.nodeName` so that thousands of node agents can each watch their own
//! tasks without every change waking every watcher.
//!
//! Guarantees:
//! - The cache applies store events in revision order; its `revision` is the
//!   last applied one, or the store's progress report past changes outside
//!   `/registry/`. A list that must be consistent first waits until the
//!   cache has caught up with the store's current revision; if that takes
//!   more than a moment (the store moved on through keys the cache does not
//!   watch, as in an etcd shared with other programs), it asks the store for
//!   progress rather than wait for a change that may never come.
//! - A watch registers under the same lock that applies events, after
//!   replaying the history it asked for, so it sees every later event once.
//! - History is bounded ([`HistoryLimits`]: by default [`MAX_HISTORY`]
//!   events, [`MAX_HISTORY_BYTES`] of encoded objects and
//!   [`MAX_HISTORY_AGE`], whichever is reached first); a watch from an older
//!   resourceVersion is answered 410 Expired and the client relists.
//! - History survives a restart of the server (and a relist): the cache
//!   lists at a past revision, as far back as history could hold, and
//!   replays the store's changes since, so a client that was watching
//!   before resumes from its resourceVersion and misses nothing.
//! - A watcher that cannot keep up (its buffer is full) is closed; its client
//!   resumes from the last resourceVersion it saw.
//! - If the store watch breaks, the cache watches again from the revision
//!   after the last one it applied; its watchers stay open and miss nothing.
//!   Only when the store no longer has those revisions (compacted), or a
//!   change cannot be applied, does the cache relist and close its watchers,
//!   so no watcher misses a change silently.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use corral_store::Store;
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;
use crate::kinds::catalog::Catalog;

mod entry;
mod feed;
mod watchers;
pub use entry::Entry;
pub use watchers::Interest;
use watchers::Watchers;

/// Events kept for watches that resume from a past resourceVersion.
pub const MAX_HISTORY: usize = 50_000;
/// How many bytes of encoded objects the history keeps at most, whatever
/// their number: a few hundred updates of a large ConfigMap must not take
/// the server's memory.
pub const MAX_HISTORY_BYTES: usize = 64 * 1024 * 1024;
/// How old the history's oldest event may be.
pub const MAX_HISTORY_AGE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How much history the cache keeps for watches that resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Events at most.
    pub events: usize,
    /// Bytes of encoded objects at most.
    pub bytes: usize,
    /// How long an event is kept at most.
    pub age: std::time::Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            events: MAX_HISTORY,
            bytes: MAX_HISTORY_BYTES,
            age: MAX_HISTORY_AGE,
        }
    }
}
/// Events buffered per watcher before it is considered too slow.
pub const WATCHER_BUFFER: usize = 4096;
/// How long a wait for a revision relies on changes alone before asking
/// the store for progress, and how often it asks again.
const PROGRESS_AFTER: Duration = Duration::from_millis(20);
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// The longest a wait lasts over a store that cannot report progress: the
/// revision waited for may belong to a change the cache does not watch, and
/// no report will say so, so the reader goes to the store instead.
const WITHOUT_PROGRESS: Duration = Duration::from_millis(250);
/// The root of every key the cache follows.
const ROOT: &str = "/registry/";
/// The field the Task index covers.
pub const NODE_FIELD: &str = "spec.nodeName";

/// Whether a change created/updated or deleted the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created or updated.
    Put,
    /// Deleted; `object` is the last state, with the deletion's resourceVersion.
    Delete,
}

/// One change, as watchers receive it.
#[derive(Debug)]
pub struct Change {
    /// The revision of the change.
    pub revision: i64,
    /// Index of the resource in the registry.
    pub resource: usize,
    /// Put or delete.
    pub kind: ChangeKind,
    /// The new state (or the last state, for a delete).
    pub object: Arc<Entry>,
    /// The state before, when there was one.
    pub prev: Option<Arc<Entry>>,
}

#[derive(Default)]
struct State {
    revision: i64,
    /// Every revision after this one is in `history`.
    oldest: i64,
    resources: Vec<BTreeMap<String, Arc<Entry>>>,
    /// Task keys by node name (only for resources with `spec.nodeName` selectable).
    by_node: Vec<HashMap<String, BTreeSet<String>>>,
    history: VecDeque<Arc<Change>>,
    /// The encoded size of the objects in `history`.
    history_bytes: usize,
    /// When each event in `history` arrived.
    history_times: VecDeque<tokio::time::Instant>,
    watchers: Watchers,
}

/// The cache. Cheap to clone.
#[derive(Clone)]
pub struct WatchCache {
    registry: Catalog,
    limits: HistoryLimits,
    prefixes: Arc<Vec<String>>,
    indexed: Arc<Vec<bool>>,
    state: Arc<RwLock<State>>,
    progress: watch::Receiver<i64>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for WatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCache")
            .field("revision", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

/// A consistent view of one resource's objects.
#[derive(Debug)]
pub struct Snapshot {
    /// The objects, in key order.
    pub items: Vec<Arc<Entry>>,
    /// The revision they are current at.
    pub revision: i64,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With a snapshot of the current objects, then every later change.
    Snapshot,
    /// With the changes after this revision (exclusive).
    After(i64),
    /// With the next change: no snapshot, no replay.
    Now,
}

/// A registered watch.
#[derive(Debug)]
pub struct Subscription {
    /// Changes after the starting revision that were already in history.
    pub replay: Vec<Arc<Change>>,
    /// The initial objects, when the watch started from "now".
    pub initial: Option<Snapshot>,
    /// Live changes.
    pub live: Live,
    /// The revision the watch starts after.
    pub start: i64,
}

/// A watch's feed of live changes. Dropping it unregisters the watch at
/// once, so a watch whose client went away holds nothing in the cache, even
/// when no change would have reached it again.
#[derive(Debug)]
pub struct Live {
    rx: mpsc::Receiver<Arc<Change>>,
    _registration: Registration,
}

impl Live {
    /// The next change; `None` once the cache dropped the watch (it fell
    /// behind, or the cache relisted): the client resumes.
    pub async fn recv(&mut self) -> Option<Arc<Change>> {
        self.rx.recv().await
    }

    /// A change that is already here, if any.
    pub fn try_recv(&mut self) -> Option<Arc<Change>> {
        self.rx.try_recv().ok()
    }
}

/// Removes its watch from the cache's registry when dropped.
struct Registration {
    id: u64,
    state: std::sync::Weak<RwLock<State>>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade()
            && let Ok(mut st) = state.write()
        {
            st.watchers.remove(self.id);
        }
    }
}

fn lock_err() -> ApiError {
    ApiError::Internal("the watch cache lock was poisoned".into())
}

impl WatchCache {
    /// Starts the cache over `store`; it fills itself in the background.
    pub fn start(store: Arc<dyn Store>, registry: Catalog) -> Self {
        Self::start_with_history(store, registry, HistoryLimits::default())
    }

    /// Starts the cache keeping the history `limits` allow for resumes.
    pub fn start_with_history(
        store: Arc<dyn Store>,
        registry: Catalog,
        limits: HistoryLimits,
    ) -> Self {
        let prefixes: Vec<String> = registry.all().iter().map(|d| d.key_prefix(None)).collect();
        let indexed: Vec<bool> = registry
            .all()
            .iter()
            .map(|d| d.selectable.iter().any(|f| f == NODE_FIELD))
            .collect();
        let n = prefixes.len();
        let state = Arc::new(RwLock::new(State {
            resources: vec![BTreeMap::new(); n],
            by_node: vec![HashMap::new(); n],
            revision: -1,
            ..Default::default()
        }));
        let (progress_tx, progress) = watch::channel(-1);
        let cache = WatchCache {
            registry,
            limits,
            prefixes: Arc::new(prefixes),
            indexed: Arc::new(indexed),
            state,
            progress,
            store: store.clone(),
        };
        let runner = cache.clone();
        tokio::spawn(async move { runner.run(store, progress_tx).await });
        cache
    }

    /// The registry index of the resource owning `key`.
    fn resource_of(&self, key: &str) -> Option<usize> {
        self.prefixes
            .iter()
            .position(|p| key.starts_with(p.as_str()))
    }

    /// The revision the cache has applied (-1 before the first list).
    pub fn revision(&self) -> i64 {
        *self.progress.borrow()
    }

    /// Waits until the cache has applied `revision`; false on timeout.
    pub async fn wait_for(&self, revision: i64, timeout: Duration) -> bool {
        let timeout = if self.store.reports_progress() {
            timeout
        } else {
            timeout.min(WITHOUT_PROGRESS)
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.progress.clone();
        let mut ask_at = tokio::time::Instant::now() + PROGRESS_AFTER;
        loop {
            let waited =
                tokio::time::timeout_at(ask_at.min(deadline), rx.wait_for(|r| *r >= revision))
                    .await
                    .map(|reached| reached.is_ok());
            match waited {
                Ok(reached) => return reached,
                Err(_) if tokio::time::Instant::now() >= deadline => return false,
                Err(_) => {
                    // Maybe no change the cache watches is coming: the
                    // store's progress report moves it on instead.
                    if let Err(e) = self.store.request_progress().await {
                        tracing::debug!(error = %e, "asking the store for progress");
                    }
                    ask_at = tokio::time::Instant::now() + PROGRESS_EVERY;
                }
            }
        }
    }

    /// The registry index of a resource.
    pub fn index_of(&self, plural: &str, group: &str) -> Option<usize> {
        self.registry
            .all()
            .iter()
            .position(|d| d.plural == plural && d.group == group)
    }

    /// The objects of `resource` (in `namespace`, on `node`), at the cache's revision.
    pub fn snapshot(
        &self,
        resource: usize,
        namespace: Option<&str>,
        node: Option<&str>,
    ) -> Result<Snapshot, ApiError> {
        let st = self.state.read().map_err(|_| lock_err())?;
        Ok(Snapshot {
            items: collect(
                &st,
                resource,
                &self.prefixes[resource],
                self.indexed[resource],
                namespace,
                node,
            ),
            revision: st.revision,
        })
    }

    /// Registers a watch that starts as `start` says. Fails with 410 Expired
    /// when history no longer reaches back to a [`Start::After`] revision.
    pub fn subscribe(&self, interest: Interest, start: Start) -> Result<Subscription, ApiError> {
        let mut st = self.state.write().map_err(|_| lock_err())?;
        let (replay, initial, after) = match start {
            Start::Now => (Vec::new(), None, st.revision),
            Start::Snapshot => {
                let items = collect(
                    &st,
                    interest.resource,
                    &self.prefixes[interest.resource],
                    self.indexed[interest.resource],
                    interest.namespace.as_deref(),
                    interest.node.as_deref(),
                );
                let snapshot = Snapshot {
                    items,
                    revision: st.revision,
                };
                (Vec::new(), Some(snapshot), st.revision)
            }
            Start::After(rv) if rv < st.oldest => {
                return Err(ApiError::Expired {
                    requested: rv,
                    oldest: st.oldest,
                });
            }
            Start::After(rv) => {
                // Writes committed in one etcd transaction share a revision; a
                // client resuming at such a revision may have seen only some of
                // them, so they are all replayed (at least once, never lost).
                let shared = st.history.iter().filter(|c| c.revision == rv).count() > 1;
                let replay: Vec<Arc<Change>> = st
                    .history
                    .iter()
                    .filter(|c| {
                        (c.revision > rv || (shared && c.revision == rv)) && interest.wants(c)
                    })
                    .cloned()
                    .collect();
                (replay, None, rv)
            }
        };
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let id = st.watchers.add(interest, tx);
        Ok(Subscription {
            replay,
            initial,
            live: Live {
                rx,
                _registration: Registration {
                    id,
                    state: Arc::downgrade(&self.state),
                },
            },
            start: after,
        })
    }

    /// The cached object at `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let r = self.resource_of(key)?;
        self.state.read().ok()?.resources[r].get(key).cloned()
    }

    /// True when the cache holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        let Some(r) = self.resource_of(key) else {
            return false;
        };
        self.state
            .read()
            .map(|st| st.resources[r].contains_key(key))
            .unwrap_or(false)
    }

    /// How many objects each resource holds, by registry index (for metrics).
    pub fn object_counts(&self) -> Vec<usize> {
        self.state
            .read()
            .map(|st| st.resources.iter().map(BTreeMap::len).collect())
            .unwrap_or_default()
    }

    /// How many watchers are registered (for tests and metrics).
    pub fn watcher_count(&self) -> usize {
        self.state.read().map(|st| st.watchers.len()).unwrap_or(0)
    }
}

fn collect(
    st: &State,
    resource: usize,
    prefix: &str,
    indexed: bool,
    namespace: Option<&str>,
    node: Option<&str>,
) -> Vec<Arc<Entry>> {
    let objects = &st.resources[resource];
    match (node, indexed) {
        (Some(n), true) => {
            let keys = st.by_node[resource].get(n);
            keys.into_iter()
                .flatten()
                .filter_map(|k| objects.get(k))
                .filter(|e| namespace.is_none() || e.namespace.as_deref() == namespace)
                .cloned()
                .collect()
        }
        _ => {
            let start = match namespace {
                Some(ns) => format!("{prefix}{ns}/"),
                None => prefix.to_owned(),
            };
            objects
                .range(start.clone()..)
                .take_while(|(k, _)| k.starts_with(start.as_str()))
                .map(|(_, e)| e.clone())
                .filter(|e| node.is_none() || e.node.as_deref() == node)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests;
