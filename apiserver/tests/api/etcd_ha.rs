//! etcd done properly: client TLS with a client certificate, and a
//! three-member cluster that loses a member (SIGKILL) under load without
//! losing an acknowledged write or a watch event.

use std::collections::{BTreeMap, BTreeSet};

use corral_store::Store;
use corral_store::etcd::{EtcdStore, EtcdTls};
use corral_store::testing::{EtcdCluster, EtcdServer, ServingTls};
use k8s_openapi::api::core::v1::ConfigMap;

use super::*;

fn config_map(name: &str) -> Result<ConfigMap> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default"}, "data": {"k": name}}),
    )?)
}

#[tokio::test]
async fn the_server_stores_into_etcd_over_client_tls() -> Result<()> {
    // etcd's serving certificate and the client's, from one CA.
    let dir = tempfile::tempdir()?;
    let pki = corral_apiserver::transport::pki::Pki::load_or_create(
        &dir.path().join("pki"),
        &["127.0.0.1".to_owned()],
    )?;
    let write = |name: &str, pem: &str| -> Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, pem)?;
        Ok(path)
    };
    let serving = ServingTls {
        cert: write("etcd.crt", &pki.server_cert_pem)?,
        key: write("etcd.key", &pki.server_key_pem)?,
        client_ca: write("ca.crt", &pki.ca_pem)?,
    };
    let etcd = EtcdServer::start_tls(&serving)?;
    assert!(etcd.endpoint().starts_with("https://"));
    let (cert, key) = pki.issue_client(
        "corral-apiserver",
        &[],
        jiff::Timestamp::now(),
        jiff::SignedDuration::from_hours(1),
    )?;
    let tls = EtcdTls {
        ca_pem: pki.ca_pem.clone().into_bytes(),
        cert_pem: cert.into_bytes(),
        key_pem: key.into_bytes(),
    };
    let store = EtcdStore::connect_tls(&[etcd.endpoint().to_owned()], &tls).await?;
    let ts = TestServer::start_over(Arc::new(store))
        .await
        .map_err(|e| anyhow!(e))?;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "default");
    cms.create(&PostParams::default(), &config_map("over-tls")?)
        .await?;
    assert!(cms.get_opt("over-tls").await?.is_some());

    // Without a client certificate etcd lets nobody in.
    let anonymous = EtcdTls {
        cert_pem: Vec::new(),
        key_pem: Vec::new(),
        ..tls.clone()
    };
    let refused = tokio::time::timeout(Duration::from_secs(20), async {
        match EtcdStore::connect_tls(&[etcd.endpoint().to_owned()], &anonymous).await {
            Err(_) => true,
            Ok(s) => s.get("/registry/").await.is_err(),
        }
    })
    .await?;
    assert!(refused, "etcd served a client without a certificate");
    Ok(())
}

/// What one writer saw: creates acknowledged, and each stretch of errors.
#[derive(Default)]
struct Seen {
    acknowledged: BTreeSet<String>,
    longest_errors: Duration,
}

/// Writers, and the creates they make between them.
const WRITERS: usize = 32;
const CREATES: usize = 2000;

/// Watches ConfigMaps from `from`, counting each name's ADDED events in
/// `created`; resumed from the last resourceVersion it saw whenever it
/// ends, as `kubectl get -w` and client-go's reflector do. A 410 would mean
/// lost history, and fails.
async fn count_creates(
    cms: Api<ConfigMap>,
    from: String,
    created: Arc<std::sync::Mutex<BTreeMap<String, u32>>>,
) -> Result<()> {
    let mut rv = from;
    loop {
        let params = kube::api::WatchParams::default().timeout(30);
        let mut stream = match cms.watch(&params, &rv).await {
            Ok(s) => s.boxed(),
            Err(kube::Error::Api(e)) if e.code == 410 => anyhow::bail!("history lost: {e:?}"),
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        while let Ok(Some(event)) = stream.try_next().await {
            match event {
                kube::core::WatchEvent::Added(cm) => {
                    rv = cm.metadata.resource_version.clone().unwrap_or(rv);
                    if let (Some(name), Ok(mut c)) = (cm.metadata.name, created.lock()) {
                        *c.entry(name).or_default() += 1;
                    }
                }
                kube::core::WatchEvent::Modified(o) | kube::core::WatchEvent::Deleted(o) => {
                    rv = o.metadata.resource_version.unwrap_or(rv);
                }
                kube::core::WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                kube::core::WatchEvent::Error(e) if e.code == 410 => {
                    anyhow::bail!("history lost: {e:?}")
                }
                kube::core::WatchEvent::Error(_) => break,
            }
        }
    }
}

/// Writer `w`'s share of the creates, each retried (without the client's
/// own retries) until acknowledged; says when the kill is due.
async fn create_all(
    cms: Api<ConfigMap>,
    w: usize,
    kill_now: tokio::sync::watch::Sender<bool>,
) -> Result<Seen> {
    let mut seen = Seen::default();
    for i in (w..CREATES).step_by(WRITERS) {
        if i == CREATES / 3 {
            kill_now.send_replace(true);
        }
        let name = format!("cm-{i:04}");
        let mut failing_since = None;
        loop {
            match cms
                .create(&PostParams::default(), &config_map(&name)?)
                .await
            {
                // Created, or created by an attempt whose answer was lost.
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => break,
                Err(_) => {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    seen.longest_errors = seen.longest_errors.max(since.elapsed());
                    anyhow::ensure!(
                        since.elapsed() < Duration::from_secs(30),
                        "{name}: failing for 30 s"
                    );
                    tokio::task::yield_now().await;
                }
            }
        }
        seen.acknowledged.insert(name);
    }
    Ok(seen)
}

#[tokio::test]
async fn a_member_killed_under_load_loses_no_acknowledged_write_nor_watch_event() -> Result<()> {
    let mut cluster = EtcdCluster::start(3)?;
    let store = EtcdStore::connect(cluster.endpoints()).await?;
    let ts = TestServer::start_over(Arc::new(store))
        .await
        .map_err(|e| anyhow!(e))?;
    // No retries: every error a request meets is counted.
    let client = ts
        .client_as(&ts.pki.admin_token)
        .await
        .map_err(|e| anyhow!(e))?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    // A watch from before the load.
    let from = cms
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let created = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u32>::new()));
    let watched = tokio::spawn(count_creates(cms.clone(), from, created.clone()));

    // 32 writers, 2,000 creates; one member is killed a third of the way in.
    let started = tokio::time::Instant::now();
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(create_all(cms.clone(), w, killed_tx.clone())))
        .collect();
    let mut killed_rx = killed_rx;
    // The member that leads is the one killed: the others elect anew.
    let mut leader = 0;
    for (i, endpoint) in cluster.endpoints().iter().enumerate() {
        let status = EtcdStore::connect(std::slice::from_ref(endpoint))
            .await?
            .client()
            .status()
            .await?;
        if status.header().map(|h| h.member_id()) == Some(status.leader()) {
            leader = i;
        }
    }
    killed_rx.wait_for(|k| *k).await?;
    cluster.kill(leader);
    let mut acknowledged = BTreeSet::new();
    let mut longest = Duration::ZERO;
    for w in writers {
        let seen = w.await??;
        acknowledged.extend(seen.acknowledged);
        longest = longest.max(seen.longest_errors);
    }
    let elapsed = started.elapsed();
    assert_eq!(acknowledged.len(), CREATES);

    // Every acknowledged create is there.
    let stored: BTreeSet<String> = cms
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");

    // The watch saw every one.
    eventually("the watch to see every create", || async {
        Ok(created.lock().map(|c| c.len()).unwrap_or(0) >= CREATES)
    })
    .await?;
    let counts = created.lock().map(|c| c.clone()).unwrap_or_default();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "{CREATES} creates from {WRITERS} writers in {elapsed:?}, one of three members killed: \
         longest stretch of errors {longest:?}; seen twice by the watch: {}",
        twice.len()
    );
    assert!(twice.is_empty(), "seen more than once: {twice:?}");
    watched.abort();
    Ok(())
}

async fn eventually<F, Fut>(what: &str, check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    corral_apiserver::testing::eventually(what, check).await
}
