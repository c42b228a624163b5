//! Group commit really coalesces concurrent writes into shared transactions
//! (on both backends), while each write keeps its own result.

use anyhow::Result;
use corral_store::Store;

async fn write_concurrently(s: &dyn Store, n: u32) -> Result<()> {
    let writes = (0..n).map(|i| async move { s.create(&format!("/g/{i:03}"), vec![0; 64]).await });
    for r in futures::future::join_all(writes).await {
        r?;
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_writes_to_etcd_share_transactions() -> Result<()> {
    let server = corral_store::testing::EtcdServer::start()?;
    let s = corral_store::etcd::EtcdStore::connect(&[server.endpoint().to_owned()]).await?;
    write_concurrently(&s, 64).await?;
    let stats = s.commit_stats();
    assert_eq!(stats.writes, 64);
    assert!(stats.largest_batch > 1, "no write was coalesced: {stats:?}");
    assert!(stats.batches < 64, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn concurrent_writes_to_the_embedded_store_share_transactions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = corral_store::embedded::EmbeddedStore::open(dir.path().join("g.db"))?;
    write_concurrently(&s, 64).await?;
    let stats = s.commit_stats();
    assert_eq!(stats.writes, 64);
    assert!(stats.largest_batch > 1, "no write was coalesced: {stats:?}");
    Ok(())
}
