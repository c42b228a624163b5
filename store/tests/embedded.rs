//! Behaviour only the embedded backend has: persistence across restarts, and
//! watchers that fall behind the live feed catching up from the log.

use std::time::Duration;

use anyhow::{Context, Result};
use corral_store::embedded::EmbeddedStore;
use corral_store::{RangeRequest, Store, StoreError};
use futures::StreamExt;

#[tokio::test]
async fn data_revisions_and_compaction_survive_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("home/store.db");
    let (kept, compacted_at, last) = {
        let s = EmbeddedStore::open(&path)?;
        let a = s.create("/r/a", b"1".to_vec()).await?;
        let a = s.update("/r/a", b"2".to_vec(), a.mod_revision).await?;
        let b = s.create("/r/b", b"b".to_vec()).await?;
        s.delete("/r/b", Some(b.mod_revision)).await?;
        let at = s.current_revision().await?;
        s.compact(at).await?;
        (a, at, s.current_revision().await?)
    };
    let s = EmbeddedStore::open(&path)?;
    assert_eq!(s.current_revision().await?, last);
    assert_eq!(s.get("/r/a").await?.as_ref(), Some(&kept));
    assert!(s.get("/r/b").await?.is_none());
    assert!(matches!(
        s.range(RangeRequest::prefix("/r/").at(compacted_at - 1))
            .await,
        Err(StoreError::Compacted { .. })
    ));
    let next = s.update("/r/a", b"3".to_vec(), kept.mod_revision).await?;
    assert_eq!(
        next.mod_revision,
        last + 1,
        "revisions continue where they stopped"
    );
    Ok(())
}

#[tokio::test]
async fn a_watcher_that_falls_behind_the_live_feed_catches_up_from_the_log() -> Result<()> {
    let s = EmbeddedStore::in_memory()?;
    let mut w = s.watch("/lag/", 0).await?;
    // Far more commits than the live feed buffers, while nobody reads the watch.
    let n = 3000;
    let mut kv = s.create("/lag/k", b"0".to_vec()).await?;
    for i in 1..n {
        kv = s
            .update("/lag/k", i.to_string().into_bytes(), kv.mod_revision)
            .await?;
    }
    let mut expected = 0;
    while expected < n {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .context("watch stalled")?
            .context("watch ended")??;
        let corral_store::WatchEvent::Put { kv, .. } = ev else {
            anyhow::bail!("unexpected delete");
        };
        assert_eq!(
            std::str::from_utf8(&kv.value)?,
            expected.to_string(),
            "no event lost or reordered"
        );
        expected += 1;
    }
    Ok(())
}
