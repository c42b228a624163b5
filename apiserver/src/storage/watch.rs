//! Watch streams: one JSON event per line (`ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK`, `ERROR`), as kube-apiserver starts them:
//! - with the current objects as ADDED events, then every later change: a
//!   watch from no resourceVersion or "0", or a streaming list
//!   (`sendInitialEvents=true`), which also gets a BOOKMARK annotated
//!   `k8s.io/initial-events-end` after the objects when it allows bookmarks;
//! - from a resourceVersion: the changes after it;
//! - from now: `sendInitialEvents=false` with no resourceVersion or "0".
//!
//! A resourceVersion older than the store's history ends the stream with an
//! `ERROR` 410 event inside a 200 response, which is what clients relist on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use corral_store::{StoreError, WatchEvent};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::kinds::render::{Rendering, render_object};
use crate::storage::cache::{
    Change, ChangeKind, Entry, Interest, NODE_FIELD, Start, Subscription, WatchCache,
};
use crate::storage::objects::from_stored;
use crate::storage::registry::{Api, ListQuery, matches};
use crate::storage::selectors::{FieldSelector, LabelSelector};

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

/// What a watch request asks for.
#[derive(Debug, Clone)]
pub struct WatchParams {
    /// `resourceVersion` (absent or "0": start with the current state).
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// `sendInitialEvents`, when given.
    pub send_initial: Option<bool>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// The objects' form: themselves, one-row Tables (kubectl get -w) or
    /// partial metadata.
    pub render: Rendering,
}

impl WatchParams {
    /// Where the watch starts: with the current objects when asked
    /// (`sendInitialEvents=true`) or when no version (or "0") is given and
    /// `sendInitialEvents=false` does not say to start from now.
    fn start(&self) -> Result<Start, ApiError> {
        let version = match self.resource_version.as_deref() {
            None | Some("") | Some("0") => None,
            Some(rv) => Some(crate::storage::objects::parse_rv(rv)?),
        };
        Ok(match (self.send_initial, version) {
            (Some(true), _) | (None, None) => Start::Snapshot,
            (_, Some(rv)) => Start::After(rv),
            (Some(false), None) => Start::Now,
        })
    }

    /// Whether the initial objects end with the `k8s.io/initial-events-end`
    /// bookmark: only a streaming list, which asks for the initial events and
    /// allows bookmarks, gets one (kube-apiserver's `isListWatchRequest`).
    fn end_bookmark(&self) -> bool {
        self.send_initial == Some(true) && self.bookmarks
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn expired(requested: i64, oldest: i64) -> Bytes {
    line("ERROR", ApiError::Expired { requested, oldest }.status())
}

fn bookmark(desc: &ResourceDesc, p: &WatchParams, revision: i64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    // A metadata watcher decodes every event's object as partial metadata.
    let (kind, api_version) = match p.render {
        Rendering::Metadata(v) => (
            "PartialObjectMetadata".to_owned(),
            v.api_version().to_owned(),
        ),
        _ => (desc.kind.to_owned(), desc.api_version()),
    };
    line(
        "BOOKMARK",
        json!({"kind": kind, "apiVersion": api_version, "metadata": meta}),
    )
}

/// An event line for a stored object, in the form of the resource watched
/// (`desc`; a view's form when it is one).
fn event(desc: &ResourceDesc, p: &WatchParams, kind: &str, obj: Value) -> Bytes {
    let obj = match &desc.view {
        Some(view) => (view.to_view)(obj),
        None => obj,
    };
    line(kind, render_object(desc, obj, p.render))
}

/// A watch event line built from an object's cached JSON (no re-encoding).
fn cached_line(desc: &ResourceDesc, p: &WatchParams, kind: &str, entry: &Entry) -> Bytes {
    if p.render != Rendering::Object || desc.view.is_some() {
        return match entry.value() {
            Ok(obj) => event(desc, p, kind, obj),
            Err(e) => line("ERROR", e.status()),
        };
    }
    let mut out = Vec::with_capacity(entry.json.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(&entry.json);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// The event a change is for this watcher, judged against its selectors
/// before and after (an object leaving the selection is DELETED for it).
fn classify(p: &WatchParams, c: &Change) -> Option<&'static str> {
    let now = c.object.matches(&p.labels, &p.fields);
    let before = c
        .prev
        .as_ref()
        .is_some_and(|e| e.matches(&p.labels, &p.fields));
    match c.kind {
        ChangeKind::Delete => (before || now).then_some("DELETED"),
        ChangeKind::Put => match (before, now) {
            (false, true) => Some("ADDED"),
            (true, true) => Some("MODIFIED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

/// Starts a watch; the returned channel yields the response body's chunks.
/// With a watch cache the watch is served from it; otherwise from the store.
pub async fn start(
    api: Api,
    desc: Arc<ResourceDesc>,
    ns: Option<String>,
    mut p: WatchParams,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    // A view is watched through its stored kind's objects, selected by the
    // stored names of its fields; `served` gives the events their form.
    let served = desc.clone();
    let desc = match &served.view {
        Some(view) => {
            view.to_stored_selector(&mut p.fields);
            view.storage.clone()
        }
        None => desc,
    };
    // A version the store has not reached (a client that saw a store since
    // restored from an older backup) cannot be resumed from: the watch
    // would silently skip the changes up to it. The client lists again.
    if let Some(rv) = p
        .resource_version
        .as_deref()
        .filter(|r| !r.is_empty() && *r != "0")
    {
        let requested = crate::storage::objects::parse_rv(rv)?;
        let current = api.store.current_revision().await?;
        if requested > current {
            return Err(ApiError::TooLargeResourceVersion { requested, current });
        }
    }
    let start = p.start()?;
    // How fresh the cache must be to serve the watch: initial objects are
    // as fresh as a list's (no version: the store's latest; "0": any; N: at
    // least N); a watch from a version replays from it; a watch from now
    // starts at the store's latest.
    let fresh = match start {
        Start::Snapshot | Start::After(_) => p.resource_version.as_deref(),
        Start::Now => None,
    };
    if let Some((cache, index)) = api.cache_for(&desc, fresh).await? {
        return start_cached(cache, index, desc, served, ns, p, start).await;
    }
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut initial = Vec::new();
    let start_after = match start {
        Start::Snapshot => {
            let q = ListQuery {
                labels: p.labels.clone(),
                fields: p.fields.clone(),
                ..Default::default()
            };
            let page = api.list(&desc, ns.as_deref(), &q).await?;
            for e in &page.items {
                initial.push(event(&served, &p, "ADDED", e.value()?));
            }
            if p.end_bookmark() {
                initial.push(bookmark(&served, &p, page.revision, true));
            }
            page.revision
        }
        Start::After(rv) => rv,
        Start::Now => api.store.current_revision().await?,
    };
    let prefix = desc.key_prefix(ns.as_deref());
    let stream = match api.store.watch(&prefix, start_after + 1).await {
        Ok(s) => Some(s),
        Err(StoreError::Compacted { compacted, .. }) => {
            let _ = tx.send(expired(start_after, compacted)).await;
            None
        }
        Err(e) => return Err(e.into()),
    };
    let Some(mut stream) = stream else {
        return Ok(rx);
    };
    tokio::spawn(async move {
        for chunk in initial {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut last_revision = start_after;
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = until_deadline => return,
                // The client went away (or the server is shutting down).
                _ = tx.closed() => return,
                _ = ticker.tick(), if p.bookmarks => {
                    if tx.send(bookmark(&served, &p, last_revision, false)).await.is_err() {
                        return;
                    }
                }
                next = stream.next() => {
                    let ev = match next {
                        None => return,
                        Some(Err(StoreError::Compacted { requested, compacted })) => {
                            let _ = tx.send(expired(requested, compacted)).await;
                            return;
                        }
                        Some(Err(e)) => {
                            let _ = tx.send(line("ERROR", ApiError::from(e).status())).await;
                            return;
                        }
                        Some(Ok(ev)) => ev,
                    };
                    last_revision = ev.revision();
                    let out = match translate(&p, ev) {
                        Ok(Some((kind, obj))) => event(&served, &p, kind, obj),
                        Ok(None) => continue,
                        Err(e) => line("ERROR", e.status()),
                    };
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// Turns a store change into a watch event, judged against the selectors both
/// before and after (an object leaving the selection is DELETED for this watcher).
fn translate(p: &WatchParams, ev: WatchEvent) -> Result<Option<(&'static str, Value)>, ApiError> {
    match ev {
        WatchEvent::Put { kv, prev } => {
            let obj = from_stored(&kv.value, kv.mod_revision)?;
            let now = matches(&p.labels, &p.fields, &obj);
            let before = match prev {
                Some(pkv) => matches(
                    &p.labels,
                    &p.fields,
                    &from_stored(&pkv.value, pkv.mod_revision)?,
                ),
                None => false,
            };
            Ok(match (before, now) {
                (_, true) if !before => Some(("ADDED", obj)),
                (true, true) => Some(("MODIFIED", obj)),
                (true, false) => Some(("DELETED", obj)),
                _ => None,
            })
        }
        // The store moved on through no change of this watch's.
        WatchEvent::Progress { .. } => Ok(None),
        WatchEvent::Delete { prev, revision } => {
            if prev.value.is_empty() {
                return Ok(None);
            }
            let obj = from_stored(&prev.value, revision)?;
            Ok(matches(&p.labels, &p.fields, &obj).then_some(("DELETED", obj)))
        }
    }
}

/// A watch served by the watch cache.
async fn start_cached(
    cache: WatchCache,
    index: usize,
    desc: Arc<ResourceDesc>,
    served: Arc<ResourceDesc>,
    ns: Option<String>,
    p: WatchParams,
    start: Start,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let interest = Interest {
        resource: index,
        namespace: ns.filter(|_| desc.namespaced),
        node: p
            .fields
            .required(NODE_FIELD)
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
    };
    let sub = match cache.subscribe(interest, start) {
        Ok(s) => s,
        Err(ApiError::Expired { requested, oldest }) => {
            let _ = tx.send(expired(requested, oldest)).await;
            return Ok(rx);
        }
        Err(e) => return Err(e),
    };
    tokio::spawn(async move {
        let Subscription {
            replay,
            initial,
            mut live,
            start,
        } = sub;
        let mut last_revision = start;
        if let Some(snap) = initial {
            for entry in &snap.items {
                if entry.matches(&p.labels, &p.fields)
                    && tx
                        .send(cached_line(&served, &p, "ADDED", entry))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            if p.end_bookmark()
                && tx
                    .send(bookmark(&served, &p, snap.revision, true))
                    .await
                    .is_err()
            {
                return;
            }
        }
        for c in replay {
            last_revision = c.revision;
            if let Some(kind) = classify(&p, &c)
                && tx
                    .send(cached_line(&served, &p, kind, &c.object))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = until_deadline => return,
                // The client went away (or the server is shutting down):
                // dropping the subscription unregisters it.
                _ = tx.closed() => return,
                _ = ticker.tick(), if p.bookmarks => {
                    let rev = cache.revision().max(last_revision);
                    if tx.send(bookmark(&served, &p, rev, false)).await.is_err() {
                        return;
                    }
                }
                next = live.recv() => {
                    // None: the watcher fell behind or the cache relisted; the client resumes.
                    let Some(c) = next else { return };
                    last_revision = c.revision;
                    if let Some(kind) = classify(&p, &c)
                        && tx.send(cached_line(&served, &p, kind, &c.object)).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Ok(rx)
}
