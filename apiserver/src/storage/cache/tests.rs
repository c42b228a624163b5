//! The watch cache against the embedded store: lists, watches, the node index, history.

use super::*;
use corral_store::embedded::EmbeddedStore;
use corral_store::{RangeRequest, StoreError, WatchEvent};
use futures::StreamExt;
use serde_json::json;

fn task(name: &str, node: Option<&str>) -> Vec<u8> {
    let mut v = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task", "metadata": {"name": name, "namespace": "default"}, "spec": {}});
    if let Some(n) = node {
        v["spec"]["nodeName"] = json!(n);
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

async fn ready(cache: &WatchCache, store: &dyn Store) -> anyhow::Result<()> {
    let rev = store.current_revision().await?;
    anyhow::ensure!(
        cache.wait_for(rev, Duration::from_secs(10)).await,
        "cache did not catch up"
    );
    Ok(())
}

/// A cache over a fresh in-memory store, caught up, and the Task resource's index.
async fn tasks_cache() -> anyhow::Result<(Arc<dyn Store>, WatchCache, usize)> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory()?);
    let cache = WatchCache::start(store.clone(), Catalog::standard());
    ready(&cache, store.as_ref()).await?;
    let tasks = cache
        .index_of("tasks", "corral.dev")
        .ok_or_else(|| anyhow::anyhow!("no tasks"))?;
    Ok((store, cache, tasks))
}

#[tokio::test]
async fn a_node_watcher_hears_only_about_its_own_node() -> anyhow::Result<()> {
    let (store, cache, tasks) = tasks_cache().await?;
    let interest = |n: &str| Interest {
        resource: tasks,
        namespace: None,
        node: Some(n.into()),
    };
    let mut n1 = cache.subscribe(interest("n1"), Start::Snapshot)?;
    let mut n2 = cache.subscribe(interest("n2"), Start::Snapshot)?;
    let kv = store
        .create("/registry/corral.dev/tasks/default/a", task("a", None))
        .await?;
    let kv = store
        .update(
            "/registry/corral.dev/tasks/default/a",
            task("a", Some("n1")),
            kv.mod_revision,
        )
        .await?;
    store
        .update(
            "/registry/corral.dev/tasks/default/a",
            task("a", Some("n2")),
            kv.mod_revision,
        )
        .await?;
    store
        .create(
            "/registry/corral.dev/tasks/default/b",
            task("b", Some("n2")),
        )
        .await?;
    ready(&cache, store.as_ref()).await?;
    let drain = |live: &mut Live| {
        let mut out = Vec::new();
        while let Some(c) = live.try_recv() {
            out.push((c.object.name.clone(), c.object.node.clone()));
        }
        out
    };
    // n1 hears the binding to n1 and the move away from it; n2 the move and b.
    assert_eq!(
        drain(&mut n1.live),
        vec![
            ("a".into(), Some("n1".into())),
            ("a".into(), Some("n2".into()))
        ]
    );
    assert_eq!(
        drain(&mut n2.live),
        vec![
            ("a".into(), Some("n2".into())),
            ("b".into(), Some("n2".into()))
        ]
    );
    let on_n2 = cache.snapshot(tasks, None, Some("n2"))?;
    assert_eq!(on_n2.items.len(), 2);
    assert_eq!(cache.snapshot(tasks, None, Some("n1"))?.items.len(), 0);
    Ok(())
}

#[tokio::test]
async fn a_resume_older_than_the_history_is_expired() -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory()?);
    let limits = HistoryLimits {
        events: 5,
        ..HistoryLimits::default()
    };
    let cache = WatchCache::start_with_history(store.clone(), Catalog::standard(), limits);
    ready(&cache, store.as_ref()).await?;
    let first = store
        .create("/registry/corral.dev/tasks/default/t0", task("t0", None))
        .await?
        .mod_revision;
    for i in 1..10 {
        store
            .create(
                &format!("/registry/corral.dev/tasks/default/t{i}"),
                task(&format!("t{i}"), None),
            )
            .await?;
    }
    ready(&cache, store.as_ref()).await?;
    let tasks = cache
        .index_of("tasks", "corral.dev")
        .ok_or_else(|| anyhow::anyhow!("no tasks"))?;
    let interest = Interest {
        resource: tasks,
        namespace: Some("default".into()),
        node: None,
    };
    assert!(matches!(
        cache.subscribe(interest.clone(), Start::After(first)),
        Err(ApiError::Expired { .. })
    ));
    let recent = cache.revision() - 3;
    let sub = cache.subscribe(interest, Start::After(recent))?;
    assert_eq!(
        sub.replay.len(),
        3,
        "events after the resume point are replayed"
    );
    Ok(())
}

/// Creates tasks `t{from}`..`t{to}` (exclusive) and returns each one's revision.
async fn create_tasks(
    store: &dyn Store,
    range: std::ops::Range<usize>,
) -> anyhow::Result<Vec<i64>> {
    let mut revisions = Vec::new();
    for i in range {
        let kv = store
            .create(
                &format!("/registry/corral.dev/tasks/default/t{i}"),
                task(&format!("t{i}"), None),
            )
            .await?;
        revisions.push(kv.mod_revision);
    }
    Ok(revisions)
}

#[tokio::test]
async fn a_new_cache_replays_the_stores_history_to_watchers_from_before_it_started()
-> anyhow::Result<()> {
    // The store as a restarted server finds it: a watcher of the old server
    // saw up to t4; t5..t9 were written after.
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory()?);
    let revisions = create_tasks(store.as_ref(), 0..10).await?;
    let limits = HistoryLimits {
        events: 8,
        ..HistoryLimits::default()
    };
    let cache = WatchCache::start_with_history(store.clone(), Catalog::standard(), limits);
    ready(&cache, store.as_ref()).await?;
    let tasks = cache
        .index_of("tasks", "corral.dev")
        .ok_or_else(|| anyhow::anyhow!("no tasks"))?;
    let interest = Interest {
        resource: tasks,
        namespace: Some("default".into()),
        node: None,
    };
    let sub = cache.subscribe(interest.clone(), Start::After(revisions[4]))?;
    let names: Vec<_> = sub.replay.iter().map(|c| json!(c.object.name)).collect();
    assert_eq!(names, ["t5", "t6", "t7", "t8", "t9"].map(|n| json!(n)));
    let snapshot = cache.snapshot(tasks, None, None)?;
    assert_eq!(snapshot.items.len(), 10, "and the objects are the latest");
    // History reaches back as many revisions as it keeps events, no further.
    assert!(matches!(
        cache.subscribe(interest, Start::After(revisions[0])),
        Err(ApiError::Expired { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn a_new_cache_starts_its_history_at_the_stores_compaction() -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory()?);
    let revisions = create_tasks(store.as_ref(), 0..10).await?;
    store.compact(revisions[6]).await?;
    let cache = WatchCache::start(store.clone(), Catalog::standard());
    ready(&cache, store.as_ref()).await?;
    let tasks = cache
        .index_of("tasks", "corral.dev")
        .ok_or_else(|| anyhow::anyhow!("no tasks"))?;
    let interest = Interest {
        resource: tasks,
        namespace: None,
        node: None,
    };
    assert!(matches!(
        cache.subscribe(interest.clone(), Start::After(revisions[5])),
        Err(ApiError::Expired { .. })
    ));
    let sub = cache.subscribe(interest, Start::After(revisions[6]))?;
    assert_eq!(sub.replay.len(), 3, "t7, t8 and t9");
    assert_eq!(cache.snapshot(tasks, None, None)?.items.len(), 10);
    Ok(())
}

#[tokio::test]
async fn a_resume_at_a_shared_revision_replays_all_of_it() -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory()?);
    let cache = WatchCache::start(store.clone(), Catalog::standard());
    ready(&cache, store.as_ref()).await?;
    let kv = |name: &str, rev: i64| corral_store::KeyValue {
        key: format!("/registry/corral.dev/tasks/default/{name}"),
        value: task(name, None),
        create_revision: rev,
        mod_revision: rev,
    };
    // Two writes of one etcd transaction (same revision), then a lone one.
    cache.apply(WatchEvent::Put {
        kv: kv("a", 100),
        prev: None,
    })?;
    cache.apply(WatchEvent::Put {
        kv: kv("b", 100),
        prev: None,
    })?;
    cache.apply(WatchEvent::Put {
        kv: kv("c", 101),
        prev: None,
    })?;
    let tasks = cache
        .index_of("tasks", "corral.dev")
        .ok_or_else(|| anyhow::anyhow!("no tasks"))?;
    let interest = Interest {
        resource: tasks,
        namespace: None,
        node: None,
    };
    let at_shared = cache.subscribe(interest.clone(), Start::After(100))?;
    assert_eq!(
        at_shared
            .replay
            .iter()
            .map(|c| c.revision)
            .collect::<Vec<_>>(),
        vec![100, 100, 101]
    );
    let at_lone = cache.subscribe(interest, Start::After(101))?;
    assert!(at_lone.replay.is_empty(), "a lone revision is not replayed");
    Ok(())
}

#[tokio::test]
async fn a_dropped_watch_is_unregistered_at_once() -> anyhow::Result<()> {
    let (store, cache, tasks) = tasks_cache().await?;
    let on = |node: Option<&str>| Interest {
        resource: tasks,
        namespace: None,
        node: node.map(str::to_owned),
    };
    // A node nothing will ever be bound to: no change would reach its
    // watcher to find it gone.
    let quiet = cache.subscribe(on(Some("quiet")), Start::Now)?;
    let general = cache.subscribe(on(None), Start::Snapshot)?;
    assert_eq!(cache.watcher_count(), 2);
    drop(quiet);
    assert_eq!(cache.watcher_count(), 1);
    drop(general);
    assert_eq!(cache.watcher_count(), 0);
    // The cache stays whole: a new watch hears the next change.
    let mut again = cache.subscribe(on(None), Start::Now)?;
    store
        .create("/registry/corral.dev/tasks/default/c", task("c", None))
        .await?;
    let change = tokio::time::timeout(Duration::from_secs(10), again.live.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the watch was dropped"))?;
    assert_eq!(change.object.value()?["metadata"]["name"], "c");
    Ok(())
}

#[tokio::test]
async fn history_is_bounded_by_bytes_too() -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory()?);
    // Room for the encoded objects of about four large updates.
    let limits = HistoryLimits {
        bytes: 4 * 64 * 1024,
        ..HistoryLimits::default()
    };
    let cache = WatchCache::start_with_history(store.clone(), Catalog::standard(), limits);
    ready(&cache, store.as_ref()).await?;
    let key = "/registry/core/configmaps/default/big";
    let big = |i: usize| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "big", "namespace": "default"},
            "data": {"v": format!("{i}{}", "x".repeat(60 * 1024))},
        }))
    };
    let mut revisions = vec![store.create(key, big(0)?).await?.mod_revision];
    for i in 1..20 {
        let prev = revisions[revisions.len() - 1];
        revisions.push(store.update(key, big(i)?, prev).await?.mod_revision);
    }
    ready(&cache, store.as_ref()).await?;
    let configmaps = cache
        .index_of("configmaps", "")
        .ok_or_else(|| anyhow::anyhow!("no configmaps"))?;
    let interest = Interest {
        resource: configmaps,
        namespace: Some("default".into()),
        node: None,
    };
    // Twenty updates of ~60 KiB do not fit: the oldest are gone…
    assert!(matches!(
        cache.subscribe(interest.clone(), Start::After(revisions[0])),
        Err(ApiError::Expired { .. })
    ));
    // …and the last few are kept.
    let sub = cache.subscribe(interest, Start::After(revisions[16]))?;
    assert_eq!(sub.replay.len(), 3);
    Ok(())
}

#[tokio::test]
async fn history_is_bounded_by_age_too() -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory()?);
    let limits = HistoryLimits {
        age: std::time::Duration::from_secs(60),
        ..HistoryLimits::default()
    };
    let cache = WatchCache::start_with_history(store.clone(), Catalog::standard(), limits);
    ready(&cache, store.as_ref()).await?;
    let first = store
        .create("/registry/corral.dev/tasks/default/t0", task("t0", None))
        .await?
        .mod_revision;
    ready(&cache, store.as_ref()).await?;
    let tasks = cache
        .index_of("tasks", "corral.dev")
        .ok_or_else(|| anyhow::anyhow!("no tasks"))?;
    let interest = Interest {
        resource: tasks,
        namespace: Some("default".into()),
        node: None,
    };
    let before = first - 1;
    assert!(
        cache
            .subscribe(interest.clone(), Start::After(before))
            .is_ok()
    );
    // Two minutes on, the next change pushes the first one out.
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(120)).await;
    tokio::time::resume();
    store
        .create("/registry/corral.dev/tasks/default/t1", task("t1", None))
        .await?;
    ready(&cache, store.as_ref()).await?;
    assert!(matches!(
        cache.subscribe(interest.clone(), Start::After(before)),
        Err(ApiError::Expired { .. })
    ));
    assert_eq!(
        cache.subscribe(interest, Start::After(first))?.replay.len(),
        1
    );
    Ok(())
}

/// A store whose watches can be cut on demand, and which counts the cache's
/// full lists.
#[derive(Debug)]
struct CuttableWatches {
    inner: EmbeddedStore,
    cut: watch::Sender<u64>,
    lists: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Store for CuttableWatches {
    async fn get(&self, key: &str) -> Result<Option<corral_store::KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn range(
        &self,
        request: RangeRequest,
    ) -> Result<corral_store::RangeResponse, StoreError> {
        if request.start_after.is_none() && request.prefix == ROOT {
            self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.range(request).await
    }
    async fn write(
        &self,
        op: corral_store::WriteOp,
    ) -> Result<corral_store::WriteOutcome, StoreError> {
        self.inner.write(op).await
    }
    async fn watch(
        &self,
        prefix: &str,
        start: i64,
    ) -> Result<corral_store::WatchStream, StoreError> {
        let mut inner = self.inner.watch(prefix, start).await?;
        let mut cut = self.cut.subscribe();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cut.changed() => {
                        let _ = tx.send(Err(StoreError::Unavailable { message: "cut".into() })).await;
                        return;
                    }
                    ev = inner.next() => match ev {
                        Some(ev) => if tx.send(ev).await.is_err() { return },
                        None => return,
                    },
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
    async fn current_revision(&self) -> Result<i64, StoreError> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

/// When the store watch breaks (an etcd member dies), the cache watches on
/// from the last revision it applied: it does not relist, its watchers stay
/// open, and they see every change exactly once.
#[tokio::test]
async fn a_broken_store_watch_is_resumed_without_closing_watchers() -> anyhow::Result<()> {
    let store = Arc::new(CuttableWatches {
        inner: EmbeddedStore::in_memory()?,
        cut: watch::channel(0).0,
        lists: Default::default(),
    });
    let cache = WatchCache::start(store.clone(), Catalog::standard());
    ready(&cache, store.as_ref()).await?;
    let tasks = cache
        .index_of("tasks", "corral.dev")
        .ok_or_else(|| anyhow::anyhow!("no tasks"))?;
    let mut watcher = cache.subscribe(
        Interest {
            resource: tasks,
            namespace: None,
            node: None,
        },
        Start::Now,
    )?;
    let lists = store.lists.load(std::sync::atomic::Ordering::SeqCst);
    let mut names = Vec::new();
    for round in 0..3 {
        for i in 0..3 {
            let name = format!("t{round}{i}");
            store
                .create(
                    &format!("/registry/corral.dev/tasks/default/{name}"),
                    task(&name, None),
                )
                .await?;
            names.push(name);
        }
        store.cut.send_modify(|n| *n += 1);
    }
    let mut seen = Vec::new();
    while seen.len() < names.len() {
        let change = tokio::time::timeout(Duration::from_secs(10), watcher.live.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the watcher was closed after {seen:?}"))?;
        seen.push(change.object.name.as_str().to_owned());
    }
    assert_eq!(seen, names);
    ready(&cache, store.as_ref()).await?;
    assert!(watcher.live.try_recv().is_none(), "a change was repeated");
    assert_eq!(
        store.lists.load(std::sync::atomic::Ordering::SeqCst),
        lists,
        "the cache listed again"
    );
    Ok(())
}
