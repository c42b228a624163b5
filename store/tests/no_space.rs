//! A store out of space says so ([`StoreError::NoSpace`]), keeps serving
//! reads, and loses nothing it acknowledged: here etcd at its space quota
//! (its NOSPACE alarm). The embedded store on a full disk is driven through
//! a real `corral server` in the end-to-end outage tests.

use anyhow::{Result, bail};
use corral_store::etcd::EtcdStore;
use corral_store::testing::EtcdServer;
use corral_store::{RangeRequest, Store, StoreError};

#[tokio::test]
async fn etcd_at_its_space_quota_refuses_writes_as_no_space() -> Result<()> {
    let etcd = EtcdServer::start_with_quota(4 * 1024 * 1024)?;
    let store = EtcdStore::connect(&[etcd.endpoint().to_owned()]).await?;
    let value = vec![b'x'; 256 * 1024];
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let key = format!("/full/{}", acknowledged.len());
        match store.create(&key, value.clone()).await {
            Ok(_) => acknowledged.push(key),
            Err(e) => break e,
        }
        if acknowledged.len() > 200 {
            bail!("etcd never reached its 4 MiB quota");
        }
    };
    assert!(
        matches!(&refusal, StoreError::NoSpace { message } if message.contains("space")),
        "{refusal:?}"
    );
    // Every later write is refused the same way; reads go on.
    assert!(matches!(
        store.create("/full/later", b"small".to_vec()).await,
        Err(StoreError::NoSpace { .. })
    ));
    let stored = store.range(RangeRequest::prefix("/full/")).await?;
    let keys: Vec<&str> = stored.items.iter().map(|kv| kv.key.as_str()).collect();
    for key in &acknowledged {
        assert!(
            keys.contains(&key.as_str()),
            "{key} was acknowledged but is gone"
        );
    }
    Ok(())
}
