//! How the cache is filled and kept: it lists every object at a past
//! revision (as far back as history can reach), replays the store's changes
//! since into its history, and follows the store's watch, applying each
//! change under the lock that registers watchers. A broken store watch is
//! followed on from the last revision applied; only a compacted history or
//! a change that cannot be applied makes it list again and close its
//! watchers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use corral_store::{RangeRequest, Store, StoreError, WatchEvent};
use futures::StreamExt;
use tokio::sync::watch;

use super::{Change, ChangeKind, Entry, ROOT, WatchCache, lock_err};
use crate::error::ApiError;

/// Every object at one revision, as [`WatchCache::load`] read them.
struct Loaded {
    resources: Vec<BTreeMap<String, Arc<Entry>>>,
    by_node: Vec<HashMap<String, BTreeSet<String>>>,
    revision: i64,
}

/// Why the cache stopped following the store.
enum Lost {
    /// The store watch broke; the cache is whole up to `revision` and
    /// follows on from there.
    Watch { revision: i64, error: ApiError },
    /// The cache must list again: it never listed, the store compacted the
    /// revisions it needs, or it met a change it could not apply.
    Relist(ApiError),
}

impl Lost {
    /// The store watch failed with `error` after the cache applied `revision`.
    fn after(revision: i64, error: StoreError) -> Lost {
        match error {
            StoreError::Compacted { .. } => Lost::Relist(error.into()),
            error => Lost::Watch {
                revision,
                error: error.into(),
            },
        }
    }
}

impl WatchCache {
    pub(super) async fn run(self, store: Arc<dyn Store>, progress: watch::Sender<i64>) {
        let mut backoff = Duration::from_millis(50);
        // The revision the cache is whole up to, once it has listed.
        let mut whole: Option<i64> = None;
        loop {
            let lost = match whole {
                None => match self.load_into_state(store.as_ref(), &progress).await {
                    Ok(revision) => {
                        whole = Some(revision);
                        backoff = Duration::from_millis(50);
                        continue;
                    }
                    Err(e) => Lost::Relist(e),
                },
                Some(revision) => self.follow(store.as_ref(), revision, &progress).await,
            };
            match lost {
                Lost::Watch { revision, error } => {
                    // Nothing was missed: follow on from where the cache is,
                    // and its own watchers stay open.
                    if whole.is_some_and(|w| revision > w) {
                        backoff = Duration::from_millis(50);
                    }
                    whole = Some(revision);
                    tracing::warn!(error = %error, revision, "watch cache lost the store watch; resuming it");
                }
                Lost::Relist(error) => {
                    whole = None;
                    tracing::warn!(error = %error, "watch cache lost the store; relisting");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Lists every object at the revision the cache starts from. That is as
    /// far back as its history can reach (as many revisions back as history
    /// keeps events, or the store's oldest revision if that is later), so
    /// that the changes since are replayed into history and a watcher
    /// resuming from before this server started (or before the cache
    /// relisted) is served them rather than told to relist.
    async fn load(&self, store: &dyn Store) -> Result<Loaded, ApiError> {
        let current = store.current_revision().await?;
        let back = i64::try_from(self.limits.events).unwrap_or(i64::MAX);
        let mut at = Some(current.saturating_sub(back).max(1)).filter(|r| *r < current);
        loop {
            match self.list_at(store, at).await? {
                Ok(loaded) => return Ok(loaded),
                // History ends later: start there (if that raced another
                // compaction, start from the latest).
                Err(oldest) => {
                    at = match at {
                        Some(r) if oldest > r && oldest < current => Some(oldest),
                        _ => None,
                    }
                }
            }
        }
    }

    /// Every object under the root at `at` (latest when `None`); `Err` with
    /// the store's oldest revision when `at` was compacted away.
    async fn list_at(
        &self,
        store: &dyn Store,
        at: Option<i64>,
    ) -> Result<Result<Loaded, i64>, ApiError> {
        let mut loaded = Loaded {
            resources: vec![BTreeMap::new(); self.prefixes.len()],
            by_node: vec![HashMap::new(); self.prefixes.len()],
            revision: 0,
        };
        let mut req = RangeRequest::prefix(ROOT).limit(1000);
        req.revision = at;
        loop {
            let page = match store.range(req.clone()).await {
                Ok(page) => page,
                Err(StoreError::Compacted { compacted, .. }) if at.is_some() => {
                    return Ok(Err(compacted));
                }
                Err(e) => return Err(e.into()),
            };
            for kv in &page.items {
                if let Some(r) = self.resource_of(&kv.key) {
                    let entry = Arc::new(Entry::from_stored(&kv.value, kv.mod_revision)?);
                    if self.indexed[r]
                        && let Some(n) = &entry.node
                    {
                        loaded.by_node[r]
                            .entry(n.clone())
                            .or_default()
                            .insert(kv.key.clone());
                    }
                    loaded.resources[r].insert(kv.key.clone(), entry);
                }
            }
            match page.items.last() {
                Some(last) if page.more => req = req.after(last.key.clone()).at(page.revision),
                _ => {
                    loaded.revision = page.revision;
                    return Ok(Ok(loaded));
                }
            }
        }
    }

    /// Lists anew and replaces the cache's contents and history; watchers
    /// are closed (their clients resume from the history just replayed).
    /// Returns the revision the cache is whole up to.
    async fn load_into_state(
        &self,
        store: &dyn Store,
        progress: &watch::Sender<i64>,
    ) -> Result<i64, ApiError> {
        let Loaded {
            resources,
            by_node,
            revision,
        } = self.load(store).await?;
        {
            let mut st = self.state.write().map_err(|_| lock_err())?;
            st.resources = resources;
            st.by_node = by_node;
            st.revision = revision;
            st.oldest = revision;
            st.history.clear();
            st.history_bytes = 0;
            st.history_times.clear();
            st.watchers.close_all();
        }
        progress.send_replace(revision);
        Ok(revision)
    }

    /// Follows the store's changes after `revision` (up to which the cache
    /// is whole) until the store watch ends. An etcd watch delivers one
    /// revision's changes in one response, so the cache is whole up to the
    /// last revision applied whenever the watch breaks, and following on
    /// from there misses and repeats nothing.
    async fn follow(
        &self,
        store: &dyn Store,
        revision: i64,
        progress: &watch::Sender<i64>,
    ) -> Lost {
        let mut applied = revision;
        let mut stream = match store.watch_current(ROOT, revision + 1).await {
            Ok(stream) => stream,
            Err(e) => return Lost::after(applied, e),
        };
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => return Lost::after(applied, e),
            };
            match self.apply(ev) {
                Ok(rev) => {
                    applied = rev;
                    progress.send_replace(rev);
                }
                Err(e) => return Lost::Relist(e),
            }
        }
        Lost::Watch {
            revision: applied,
            error: ApiError::Unavailable("the store watch ended".into()),
        }
    }

    pub(super) fn apply(&self, ev: WatchEvent) -> Result<i64, ApiError> {
        let revision = ev.revision();
        if let WatchEvent::Progress { .. } = ev {
            // Nothing under `/registry/` changed up to `revision`.
            let mut st = self.state.write().map_err(|_| lock_err())?;
            st.revision = st.revision.max(revision);
            return Ok(st.revision);
        }
        let resource = self.resource_of(ev.key());
        // Decode and encode a new state before taking the lock, so readers
        // and writers wait only for the index updates.
        let decoded = match (&ev, resource) {
            (WatchEvent::Put { kv, .. }, Some(_)) => {
                Some(Arc::new(Entry::from_stored(&kv.value, kv.mod_revision)?))
            }
            _ => None,
        };
        let mut st = self.state.write().map_err(|_| lock_err())?;
        let Some(r) = resource else {
            st.revision = st.revision.max(revision);
            return Ok(st.revision);
        };
        let key = ev.key().to_owned();
        let change = match (ev, decoded) {
            (WatchEvent::Put { .. }, Some(entry)) => {
                let prev = st.resources[r].insert(key.clone(), entry.clone());
                if self.indexed[r] {
                    if let Some(n) = prev.as_ref().and_then(|p| p.node.clone())
                        && let Some(set) = st.by_node[r].get_mut(&n)
                    {
                        set.remove(&key);
                    }
                    if let Some(n) = &entry.node {
                        st.by_node[r]
                            .entry(n.clone())
                            .or_default()
                            .insert(key.clone());
                    }
                }
                Change {
                    revision,
                    resource: r,
                    kind: ChangeKind::Put,
                    object: entry,
                    prev,
                }
            }
            (WatchEvent::Put { .. }, None) => {
                return Err(ApiError::Internal(format!(
                    "{key}: a change was not decoded"
                )));
            }
            (WatchEvent::Delete { prev, revision }, _) => {
                let old = st.resources[r].remove(&key);
                if self.indexed[r]
                    && let Some(n) = old.as_ref().and_then(|p| p.node.clone())
                    && let Some(set) = st.by_node[r].get_mut(&n)
                {
                    set.remove(&key);
                }
                // The last state, at the deletion's revision: the store's
                // copy of it, or the cache's (either may carry an older
                // resourceVersion, which this one replaces).
                let last = if prev.value.is_empty() {
                    match &old {
                        Some(o) => Entry::from_stored(&o.json, revision)?,
                        None => {
                            st.revision = st.revision.max(revision);
                            return Ok(st.revision);
                        }
                    }
                } else {
                    Entry::from_stored(&prev.value, revision)?
                };
                Change {
                    revision,
                    resource: r,
                    kind: ChangeKind::Delete,
                    object: Arc::new(last),
                    prev: old,
                }
            }
            (WatchEvent::Progress { .. }, _) => {
                return Err(ApiError::Internal(
                    "a progress report reached a resource".into(),
                ));
            }
        };
        let change = Arc::new(change);
        let now = tokio::time::Instant::now();
        st.history_bytes += change.object.json.len();
        st.history.push_back(change.clone());
        st.history_times.push_back(now);
        let limits = self.limits;
        while st.history.len() > limits.events
            || (st.history.len() > 1
                && (st.history_bytes > limits.bytes
                    || st
                        .history_times
                        .front()
                        .is_some_and(|at| now.duration_since(*at) > limits.age)))
        {
            st.history_times.pop_front();
            if let Some(dropped) = st.history.pop_front() {
                st.oldest = dropped.revision;
                st.history_bytes -= dropped.object.json.len();
            }
        }
        st.revision = st.revision.max(revision);
        st.watchers.dispatch(&change);
        Ok(st.revision)
    }
}
