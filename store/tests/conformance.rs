//! One conformance suite, run against every backend: the embedded store in
//! memory and on disk, and a real etcd started for each test.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use corral_store::{RangeRequest, Store, StoreError, WatchEvent, WatchStream};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

async fn next_event(w: &mut WatchStream) -> Result<WatchEvent> {
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(Ok(ev))) => Ok(ev),
        Ok(Some(Err(e))) => bail!("watch failed: {e}"),
        Ok(None) => bail!("watch ended"),
        Err(_) => bail!("no watch event within {WAIT:?}"),
    }
}

fn put_of(ev: &WatchEvent) -> Option<(&str, &[u8])> {
    match ev {
        WatchEvent::Put { kv, .. } => Some((kv.key.as_str(), kv.value.as_slice())),
        WatchEvent::Delete { .. } | WatchEvent::Progress { .. } => None,
    }
}

/// Asks for progress until `w` reports `revision` or later.
async fn progress_reaches(s: &dyn Store, w: &mut WatchStream, revision: i64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no progress report to {revision} within {WAIT:?}"
        );
        s.request_progress().await?;
        match tokio::time::timeout(Duration::from_millis(200), w.next()).await {
            Ok(Some(Ok(WatchEvent::Progress { revision: r }))) if r >= revision => return Ok(()),
            Ok(Some(Ok(WatchEvent::Progress { .. }))) | Err(_) => {}
            Ok(Some(Ok(other))) => bail!("unexpected {other:?}"),
            Ok(Some(Err(e))) => bail!("watch failed: {e}"),
            Ok(None) => bail!("watch ended"),
        }
    }
}

mod suite {
    use super::*;

    pub async fn create_then_get_returns_the_value_and_revisions(
        s: &dyn Store,
        p: &str,
    ) -> Result<()> {
        let before = s.current_revision().await?;
        let kv = s.create(&format!("{p}a"), b"one".to_vec()).await?;
        assert!(kv.mod_revision > before);
        assert_eq!(kv.create_revision, kv.mod_revision);
        let got = s.get(&format!("{p}a")).await?.context("key missing")?;
        assert_eq!(got, kv);
        assert_eq!(s.current_revision().await?, kv.mod_revision);
        assert!(s.get(&format!("{p}missing")).await?.is_none());
        Ok(())
    }

    pub async fn creating_an_existing_key_is_already_exists(s: &dyn Store, p: &str) -> Result<()> {
        s.create(&format!("{p}a"), b"one".to_vec()).await?;
        let err = s
            .create(&format!("{p}a"), b"two".to_vec())
            .await
            .err()
            .context("created twice")?;
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
        assert_eq!(
            s.get(&format!("{p}a")).await?.context("gone")?.value,
            b"one"
        );
        Ok(())
    }

    pub async fn update_with_the_read_revision_succeeds(s: &dyn Store, p: &str) -> Result<()> {
        let k = format!("{p}a");
        let v1 = s.create(&k, b"one".to_vec()).await?;
        let v2 = s.update(&k, b"two".to_vec(), v1.mod_revision).await?;
        assert!(v2.mod_revision > v1.mod_revision);
        assert_eq!(v2.create_revision, v1.create_revision);
        assert_eq!(s.get(&k).await?.context("gone")?, v2);
        Ok(())
    }

    pub async fn update_with_a_stale_revision_is_a_conflict_with_the_current_value(
        s: &dyn Store,
        p: &str,
    ) -> Result<()> {
        let k = format!("{p}a");
        let v1 = s.create(&k, b"one".to_vec()).await?;
        let v2 = s.update(&k, b"two".to_vec(), v1.mod_revision).await?;
        match s.update(&k, b"three".to_vec(), v1.mod_revision).await {
            Err(StoreError::Conflict {
                current, expected, ..
            }) => {
                assert_eq!(*current, v2);
                assert_eq!(expected, v1.mod_revision);
            }
            other => bail!("expected a conflict, got {other:?}"),
        }
        match s.delete(&k, Some(v1.mod_revision)).await {
            Err(StoreError::Conflict { current, .. }) => assert_eq!(*current, v2),
            other => bail!("expected a conflict, got {other:?}"),
        }
        assert_eq!(s.get(&k).await?.context("gone")?.value, b"two");
        Ok(())
    }

    pub async fn writes_to_a_missing_key_are_not_found(s: &dyn Store, p: &str) -> Result<()> {
        let k = format!("{p}nothing");
        assert!(matches!(
            s.update(&k, b"x".to_vec(), 1).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.delete(&k, None).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.delete(&k, Some(1)).await,
            Err(StoreError::NotFound { .. })
        ));
        Ok(())
    }

    pub async fn delete_returns_the_last_state(s: &dyn Store, p: &str) -> Result<()> {
        let k = format!("{p}a");
        let v1 = s.create(&k, b"one".to_vec()).await?;
        let d = s.delete(&k, Some(v1.mod_revision)).await?;
        assert_eq!(d.prev, v1);
        assert!(d.revision > v1.mod_revision);
        assert!(s.get(&k).await?.is_none());
        let again = s.create(&k, b"new".to_vec()).await?;
        assert!(
            again.create_revision > d.revision,
            "a re-created key starts a new life"
        );
        let d2 = s.delete(&k, None).await?;
        assert_eq!(d2.prev.value, b"new");
        Ok(())
    }

    /// A page of large values, and a watch replaying them, may be bigger
    /// than gRPC's default 4 MiB message (etcd).
    pub async fn a_page_and_a_watch_larger_than_four_mib_are_read(
        s: &dyn Store,
        p: &str,
    ) -> Result<()> {
        let value = vec![b'v'; 1024 * 1024];
        let mut first = 0;
        for i in 0..6 {
            let kv = s.create(&format!("{p}big{i}"), value.clone()).await?;
            if i == 0 {
                first = kv.mod_revision;
            }
        }
        let page = s.range(RangeRequest::prefix(p)).await?;
        assert_eq!(page.items.len(), 6);
        let mut w = s.watch(p, first).await?;
        for _ in 0..6 {
            match tokio::time::timeout(WAIT, w.next()).await {
                Ok(Some(Ok(WatchEvent::Put { kv, .. }))) => assert_eq!(kv.value.len(), value.len()),
                other => bail!("expected a put, got {other:?}"),
            }
        }
        Ok(())
    }

    pub async fn range_lists_a_prefix_in_key_order_and_pages(s: &dyn Store, p: &str) -> Result<()> {
        for k in ["c", "a", "b", "d", "e"] {
            s.create(&format!("{p}jobs/{k}"), k.as_bytes().to_vec())
                .await?;
        }
        s.create(&format!("{p}jobsx"), b"outside".to_vec()).await?;
        s.create(&format!("{p}job"), b"outside".to_vec()).await?;
        let all = s.range(RangeRequest::prefix(format!("{p}jobs/"))).await?;
        let keys: Vec<_> = all.items.iter().map(|kv| kv.value.clone()).collect();
        assert_eq!(keys, [b"a", b"b", b"c", b"d", b"e"].map(|k| k.to_vec()));
        assert!(!all.more);
        assert_eq!(all.revision, s.current_revision().await?);

        let mut seen = Vec::new();
        let mut req = RangeRequest::prefix(format!("{p}jobs/")).limit(2);
        loop {
            let page = s.range(req.clone()).await?;
            assert!(page.items.len() <= 2);
            seen.extend(page.items.iter().map(|kv| kv.key.clone()));
            let Some(last) = page.items.last() else { break };
            if !page.more {
                break;
            }
            req = req.after(last.key.clone()).at(page.revision);
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        Ok(())
    }

    pub async fn range_at_a_past_revision_sees_the_past(s: &dyn Store, p: &str) -> Result<()> {
        let a = s.create(&format!("{p}a"), b"a1".to_vec()).await?;
        let b = s.create(&format!("{p}b"), b"b1".to_vec()).await?;
        let then = s.current_revision().await?;
        s.update(&format!("{p}a"), b"a2".to_vec(), a.mod_revision)
            .await?;
        s.delete(&format!("{p}b"), Some(b.mod_revision)).await?;
        s.create(&format!("{p}c"), b"c1".to_vec()).await?;

        let past = s.range(RangeRequest::prefix(p).at(then)).await?;
        let values: Vec<_> = past.items.iter().map(|kv| kv.value.clone()).collect();
        assert_eq!(values, vec![b"a1".to_vec(), b"b1".to_vec()]);
        assert_eq!(past.revision, then);
        let now = s.range(RangeRequest::prefix(p)).await?;
        let values: Vec<_> = now.items.iter().map(|kv| kv.value.clone()).collect();
        assert_eq!(values, vec![b"a2".to_vec(), b"c1".to_vec()]);

        let future = s.current_revision().await? + 100;
        assert!(matches!(
            s.range(RangeRequest::prefix(p).at(future)).await,
            Err(StoreError::FutureRevision { .. })
        ));
        Ok(())
    }

    pub async fn watch_replays_history_then_follows_live_changes(
        s: &dyn Store,
        p: &str,
    ) -> Result<()> {
        let a = s.create(&format!("{p}a"), b"1".to_vec()).await?;
        s.update(&format!("{p}a"), b"2".to_vec(), a.mod_revision)
            .await?;
        s.create(&format!("{p}other/x"), b"x".to_vec()).await?;
        let mut w = s.watch(&format!("{p}a"), a.mod_revision).await?;
        let e1 = next_event(&mut w).await?;
        assert_eq!(
            put_of(&e1),
            Some((format!("{p}a").as_str(), b"1".as_slice()))
        );
        let e2 = next_event(&mut w).await?;
        match &e2 {
            WatchEvent::Put { kv, prev } => {
                assert_eq!(kv.value, b"2");
                assert_eq!(prev.as_ref().map(|p| p.value.clone()), Some(b"1".to_vec()));
            }
            other => bail!("expected a put, got {other:?}"),
        }
        let cur = s.get(&format!("{p}a")).await?.context("gone")?;
        let d = s.delete(&format!("{p}a"), Some(cur.mod_revision)).await?;
        match next_event(&mut w).await? {
            WatchEvent::Delete { prev, revision } => {
                assert_eq!(prev.value, b"2");
                assert_eq!(revision, d.revision);
            }
            other => bail!("expected a delete, got {other:?}"),
        }
        Ok(())
    }

    /// The watch the API server's cache follows: every change, in order,
    /// each put with its new value and each delete with its key; the
    /// previous states may be left out.
    pub async fn watch_current_delivers_every_change_in_order(
        s: &dyn Store,
        p: &str,
    ) -> Result<()> {
        let a = s.create(&format!("{p}c/a"), b"1".to_vec()).await?;
        let mut w = s.watch_current(&format!("{p}c/"), a.mod_revision).await?;
        let a2 = s
            .update(&format!("{p}c/a"), b"2".to_vec(), a.mod_revision)
            .await?;
        s.create(&format!("{p}elsewhere"), b"no".to_vec()).await?;
        let d = s.delete(&format!("{p}c/a"), Some(a2.mod_revision)).await?;
        let key = format!("{p}c/a");
        for (want, revision) in [(b"1", a.mod_revision), (b"2", a2.mod_revision)] {
            let ev = next_event(&mut w).await?;
            assert_eq!(put_of(&ev), Some((key.as_str(), want.as_slice())));
            assert_eq!(ev.revision(), revision);
        }
        match next_event(&mut w).await? {
            WatchEvent::Delete { prev, revision } => {
                assert_eq!(prev.key, key);
                assert!(prev.value.is_empty() || prev.value == b"2");
                assert_eq!(revision, d.revision);
            }
            other => bail!("expected a delete, got {other:?}"),
        }
        Ok(())
    }

    pub async fn watch_from_now_sees_only_new_changes_under_its_prefix(
        s: &dyn Store,
        p: &str,
    ) -> Result<()> {
        s.create(&format!("{p}w/old"), b"old".to_vec()).await?;
        let mut w = s.watch(&format!("{p}w/"), 0).await?;
        s.create(&format!("{p}elsewhere"), b"no".to_vec()).await?;
        let new = s.create(&format!("{p}w/new"), b"new".to_vec()).await?;
        let ev = next_event(&mut w).await?;
        assert_eq!(put_of(&ev), Some((new.key.as_str(), b"new".as_slice())));
        assert_eq!(ev.revision(), new.mod_revision);
        let mut revisions = Vec::new();
        for i in 0..20 {
            revisions.push(
                s.create(&format!("{p}w/n{i:02}"), vec![i])
                    .await?
                    .mod_revision,
            );
        }
        for want in revisions {
            assert_eq!(
                next_event(&mut w).await?.revision(),
                want,
                "events arrive in revision order"
            );
        }
        Ok(())
    }

    pub async fn compaction_makes_older_revisions_unreadable(s: &dyn Store, p: &str) -> Result<()> {
        let k = format!("{p}a");
        let mut kv = s.create(&k, b"0".to_vec()).await?;
        let first = kv.mod_revision;
        for i in 1..5u8 {
            kv = s.update(&k, vec![i], kv.mod_revision).await?;
        }
        let gone = s.create(&format!("{p}b"), b"b".to_vec()).await?;
        s.delete(&gone.key, None).await?;
        let keep = s.current_revision().await?;
        s.compact(keep).await?;

        // The refusal says where readable history begins.
        match s.range(RangeRequest::prefix(p).at(first)).await {
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => {
                assert_eq!(requested, first);
                assert_eq!(compacted, keep, "the oldest readable revision");
            }
            other => bail!("expected Compacted, got {other:?}"),
        }
        let watch_err = match s.watch(p, first).await {
            Err(e) => e,
            Ok(mut w) => match tokio::time::timeout(WAIT, w.next()).await {
                Ok(Some(Err(e))) => e,
                other => bail!("expected the watch to fail, got {other:?}"),
            },
        };
        assert!(
            matches!(watch_err, StoreError::Compacted { .. }),
            "{watch_err:?}"
        );
        // The state at the compaction revision and after is intact.
        let at = s.range(RangeRequest::prefix(p).at(keep)).await?;
        assert_eq!(at.items, vec![kv.clone()]);
        let now = s.get(&k).await?.context("gone")?;
        assert_eq!(now, kv);
        s.update(&k, b"after".to_vec(), kv.mod_revision).await?;
        assert!(matches!(
            s.compact(keep).await,
            Err(StoreError::Compacted { .. })
        ));
        Ok(())
    }

    /// Many writers incrementing one counter with compare-and-swap lose no update,
    /// even when their writes are group-committed with other writes.
    pub async fn concurrent_compare_and_swap_loses_no_update(s: &dyn Store, p: &str) -> Result<()> {
        let counter = format!("{p}counter");
        s.create(&counter, b"0".to_vec()).await?;
        let writers = 16;
        let per_writer = 20;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let counter = counter.clone();
            let own = format!("{p}own/{w}");
            tasks.push(async move {
                let mut conflicts = 0u32;
                for i in 0..per_writer {
                    // A write of the writer's own key rides along in the same batches.
                    if i == 0 {
                        s.create(&own, vec![0]).await?;
                    }
                    loop {
                        let cur = s.get(&counter).await?.context("counter gone")?;
                        let n: u64 = std::str::from_utf8(&cur.value)?.parse()?;
                        match s
                            .update(&counter, (n + 1).to_string().into_bytes(), cur.mod_revision)
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => return Err(anyhow::Error::from(e)),
                        }
                    }
                }
                anyhow::Ok(conflicts)
            });
        }
        let results = futures::future::join_all(tasks).await;
        let conflicts: u32 = results
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .sum();
        let final_value = s.get(&counter).await?.context("counter gone")?;
        assert_eq!(
            std::str::from_utf8(&final_value.value)?,
            (writers * per_writer).to_string()
        );
        assert!(
            conflicts > 0,
            "the writers never raced; the test proves nothing"
        );
        Ok(())
    }

    /// Concurrent creates of one key: exactly one wins; concurrent writes to
    /// distinct keys all succeed with the revisions they report.
    pub async fn concurrent_writes_keep_their_own_preconditions_and_results(
        s: &dyn Store,
        p: &str,
    ) -> Result<()> {
        let same = format!("{p}contended");
        let creates = (0..32u8).map(|i| {
            let same = same.clone();
            async move { s.create(&same, vec![i]).await }
        });
        let results = futures::future::join_all(creates).await;
        let winners = results.iter().filter(|r| r.is_ok()).count();
        let losers = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::AlreadyExists { .. })))
            .count();
        assert_eq!((winners, losers), (1, 31));

        let distinct = (0..64u32).map(|i| {
            let k = format!("{p}d/{i:03}");
            async move { s.create(&k, i.to_le_bytes().to_vec()).await }
        });
        let written = futures::future::join_all(distinct)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        for kv in &written {
            assert_eq!(s.get(&kv.key).await?.as_ref(), Some(kv));
        }
        let listed = s.range(RangeRequest::prefix(format!("{p}d/"))).await?;
        assert_eq!(listed.items.len(), 64);
        Ok(())
    }

    /// A watch learns that the store moved past changes it does not watch
    /// when progress is requested (etcd answers only a watch that has
    /// caught up, so the request is repeated until it does), and keeps
    /// delivering changes afterwards. A report is never ahead of a change
    /// the watch has yet to deliver. A store that cannot report progress
    /// (etcd before 3.4.31 and 3.5.13) asks for none.
    pub async fn a_watch_reports_progress_past_changes_it_does_not_watch(
        s: &dyn Store,
        p: &str,
    ) -> Result<()> {
        let mut w = s.watch(&format!("{p}watched/"), 0).await?;
        s.create(&format!("{p}watched/a"), b"1".to_vec()).await?;
        assert!(put_of(&next_event(&mut w).await?).is_some());
        let elsewhere = s.create(&format!("{p}other/b"), b"1".to_vec()).await?;
        if s.reports_progress() {
            progress_reaches(s, &mut w, elsewhere.mod_revision).await?;
            // A watch that starts at that revision (its catch-up passes over a
            // change it does not watch) reports it too.
            let mut late = s
                .watch(&format!("{p}watched/"), elsewhere.mod_revision)
                .await?;
            progress_reaches(s, &mut late, elsewhere.mod_revision).await?;
            // Changes asked about at once arrive before any report past them.
            for i in 0..20 {
                let kv = s.create(&format!("{p}watched/r{i}"), b"1".to_vec()).await?;
                s.request_progress().await?;
                match next_event(&mut w).await? {
                    WatchEvent::Progress { revision } => {
                        anyhow::ensure!(
                            revision < kv.mod_revision,
                            "progress to {revision} before the change at {}",
                            kv.mod_revision
                        );
                        assert!(put_of(&next_event(&mut w).await?).is_some());
                    }
                    ev => assert!(put_of(&ev).is_some(), "{ev:?}"),
                }
                // Let any answer to the request arrive before the next round.
                while let Ok(Some(Ok(WatchEvent::Progress { .. }))) =
                    tokio::time::timeout(Duration::from_millis(20), w.next()).await
                {
                }
            }
        } else {
            s.request_progress().await?;
        }
        s.create(&format!("{p}watched/c"), b"1".to_vec()).await?;
        loop {
            match next_event(&mut w).await? {
                WatchEvent::Progress { .. } => {}
                ev => {
                    assert_eq!(
                        put_of(&ev).map(|(k, _)| k.to_owned()),
                        Some(format!("{p}watched/c"))
                    );
                    return Ok(());
                }
            }
        }
    }

    pub async fn an_oversized_value_is_rejected(s: &dyn Store, p: &str) -> Result<()> {
        let err = s
            .create(&format!("{p}big"), vec![0; 2 * 1024 * 1024])
            .await
            .err()
            .context("a 2 MiB value was accepted")?;
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
        Ok(())
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded_in_memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() -> Result<()> {
                    let s = corral_store::embedded::EmbeddedStore::in_memory()?;
                    suite::$name(&s, "/t/").await
                }
            )*
        }
        mod embedded_on_disk {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() -> Result<()> {
                    let dir = tempfile::tempdir()?;
                    let s = corral_store::embedded::EmbeddedStore::open(dir.path().join("store.db"))?;
                    suite::$name(&s, "/t/").await
                }
            )*
        }
        mod etcd {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() -> Result<()> {
                    let server = corral_store::testing::EtcdServer::start_with(
                        corral_store::testing::Durability::NoFsync,
                    )?;
                    let s = corral_store::etcd::EtcdStore::connect(&[server.endpoint().to_owned()]).await?;
                    suite::$name(&s, "/t/").await
                }
            )*
        }
    };
}

conformance!(
    create_then_get_returns_the_value_and_revisions,
    a_page_and_a_watch_larger_than_four_mib_are_read,
    creating_an_existing_key_is_already_exists,
    update_with_the_read_revision_succeeds,
    update_with_a_stale_revision_is_a_conflict_with_the_current_value,
    writes_to_a_missing_key_are_not_found,
    delete_returns_the_last_state,
    range_lists_a_prefix_in_key_order_and_pages,
    range_at_a_past_revision_sees_the_past,
    watch_replays_history_then_follows_live_changes,
    watch_current_delivers_every_change_in_order,
    watch_from_now_sees_only_new_changes_under_its_prefix,
    compaction_makes_older_revisions_unreadable,
    concurrent_compare_and_swap_loses_no_update,
    concurrent_writes_keep_their_own_preconditions_and_results,
    an_oversized_value_is_rejected,
    a_watch_reports_progress_past_changes_it_does_not_watch,
);
