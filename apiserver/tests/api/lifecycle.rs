//! The store stays bounded: periodic compaction keeps the embedded store's
//! size flat under churn and leaves one round of history; expired Events
//! go, over both stores.

use corral_apiserver::storage::lifecycle::{EventExpiry, compact_step};
use corral_store::{RangeRequest, Store, StoreError};
use k8s_openapi::api::core::v1::Event;

use super::*;

/// The embedded store's bytes on disk (database and write-ahead log).
fn size_on_disk(dir: &std::path::Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

/// Rewrites 20 keys with 4 KiB values `rounds` times; with `compact`, a
/// compaction round (to the revision of the round before) follows each.
/// Returns the size on disk after `warm` rounds and at the end.
async fn churn(compact: bool, warm: usize, rounds: usize) -> Result<(u64, u64)> {
    let dir = tempfile::tempdir()?;
    let store = corral_store::embedded::EmbeddedStore::open(dir.path().join("store.db"))?;
    let value = vec![b'x'; 4096];
    let mut previous = None;
    let mut warm_size = 0;
    for round in 0..rounds {
        for k in 0..20 {
            let key = format!("/registry/core/configmaps/default/c{k}");
            match store.get(&key).await? {
                None => {
                    store.create(&key, value.clone()).await?;
                }
                Some(kv) => {
                    store.update(&key, value.clone(), kv.mod_revision).await?;
                }
            }
        }
        if compact {
            previous = compact_step(&store, previous).await;
        }
        if round + 1 == warm {
            warm_size = size_on_disk(dir.path())?;
        }
    }
    Ok((warm_size, size_on_disk(dir.path())?))
}

#[tokio::test]
async fn compaction_keeps_the_embedded_store_flat_under_churn() -> Result<()> {
    let (warm, end) = churn(true, 20, 120).await?;
    let (warm_unbounded, end_unbounded) = churn(false, 20, 120).await?;
    eprintln!(
        "bytes on disk after 20 and 120 rounds: compacted {warm} → {end}, uncompacted {warm_unbounded} → {end_unbounded}"
    );
    // Without compaction every version stays: the store grows with the
    // churn (100 rounds of 20 × 4 KiB).
    assert!(
        end_unbounded > warm_unbounded + 6_000_000,
        "uncompacted: {warm_unbounded} → {end_unbounded} bytes"
    );
    // With it, freed pages are reused: flat after warm-up.
    assert!(
        end <= warm + warm / 5,
        "compacted: {warm} → {end} bytes (uncompacted: {warm_unbounded} → {end_unbounded})"
    );
    Ok(())
}

async fn compaction_leaves_one_round_of_history(b: Backend) -> Result<()> {
    let store = b.ts.api.store.clone();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(b.ts.client.clone(), "default");
    let cm = |v: &str| -> Result<k8s_openapi::api::core::v1::ConfigMap> {
        Ok(serde_json::from_value(
            json!({"metadata": {"name": "c"}, "data": {"v": v}}),
        )?)
    };
    cms.create(&PostParams::default(), &cm("0")?).await?;
    let first = compact_step(&*store, None).await;
    let old_rv = cms.get("c").await?.metadata.resource_version;
    cms.replace("c", &PostParams::default(), &{
        let mut c = cm("1")?;
        c.metadata.resource_version = old_rv.clone();
        c
    })
    .await?;
    // The first round only notes the revision; the second compacts to it:
    // what was read before it is gone from the store, what came after stays.
    let second = compact_step(&*store, first).await;
    let (Some(first), Some(second)) = (first, second) else {
        bail!("no revision read");
    };
    assert!(second > first);
    let at = |revision| RangeRequest {
        revision: Some(revision),
        ..RangeRequest::prefix("/registry/core/configmaps/")
    };
    match store.range(at(first - 1)).await {
        Err(StoreError::Compacted { .. }) => {}
        other => bail!("a read before the compaction got {other:?}"),
    }
    store.range(at(first)).await?;
    // What is current reads and watches as before.
    assert_eq!(
        cms.get("c").await?.data.and_then(|d| d.get("v").cloned()),
        Some("1".to_owned())
    );
    let latest = cms
        .get("c")
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut from_latest = cms
        .watch(&kube::api::WatchParams::default().timeout(1), &latest)
        .await?
        .boxed();
    while let Some(event) = from_latest.try_next().await? {
        if let kube::core::WatchEvent::Error(e) = event {
            bail!("a watch from the current revision failed: {e:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn compaction_leaves_one_round_of_history_embedded() -> Result<()> {
    compaction_leaves_one_round_of_history(embedded().await?).await
}

#[tokio::test]
async fn compaction_leaves_one_round_of_history_etcd() -> Result<()> {
    compaction_leaves_one_round_of_history(etcd().await?).await
}

fn event(name: &str) -> Result<Event> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Job", "namespace": "default", "name": "j"},
        "reason": "Test", "message": "m", "type": "Normal", "count": 1,
        // What a writer claims decides nothing.
        "lastTimestamp": "2036-01-01T00:00:00Z",
    }))?)
}

async fn names(events: &Api<Event>) -> Result<Vec<String>> {
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.metadata.name)
        .collect())
}

async fn expired_events_go_and_fresh_ones_stay(b: Backend) -> Result<()> {
    let store = b.ts.api.store.clone();
    let events: Api<Event> = Api::namespaced(b.ts.client.clone(), "default");
    let now = jiff::Timestamp::now();
    let hour = jiff::SignedDuration::from_hours(1);
    let ttl = Duration::from_secs(3600);
    // One created two hours ago (as a server two hours ago stored it).
    let created = (now - hour * 2).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut old = serde_json::to_value(event("old")?)?;
    old["apiVersion"] = json!("v1");
    old["kind"] = json!("Event");
    old["metadata"]["creationTimestamp"] = json!(created);
    old["metadata"]["uid"] = json!("6f1d2c4e-0000-4000-8000-000000000001");
    store
        .create(
            "/registry/core/events/default/old",
            serde_json::to_vec(&old)?,
        )
        .await?;
    // One created now, and one created now and updated since.
    events
        .create(&PostParams::default(), &event("fresh")?)
        .await?;
    let mut updated = events
        .create(&PostParams::default(), &event("updated")?)
        .await?;
    updated.count = Some(2);
    events
        .replace("updated", &PostParams::default(), &updated)
        .await?;

    let mut expiry = EventExpiry::default();
    assert_eq!(expiry.sweep(&*store, ttl, now).await?, 1);
    assert_eq!(names(&events).await?, vec!["fresh", "updated"]);
    // Nothing else is due yet.
    assert_eq!(expiry.sweep(&*store, ttl, now + hour / 2).await?, 0);
    // Two hours on, both are.
    assert_eq!(expiry.sweep(&*store, ttl, now + hour * 2).await?, 2);
    assert!(names(&events).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn expired_events_go_and_fresh_ones_stay_embedded() -> Result<()> {
    expired_events_go_and_fresh_ones_stay(embedded().await?).await
}

#[tokio::test]
async fn expired_events_go_and_fresh_ones_stay_etcd() -> Result<()> {
    expired_events_go_and_fresh_ones_stay(etcd().await?).await
}
