//! Load protection: the in-flight limits (429 with Retry-After) and request
//! deadlines (504 Timeout), seen by clients over TLS.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use corral_store::{
    KeyValue, RangeRequest, RangeResponse, Store, StoreError, WatchStream, WriteOp, WriteOutcome,
};

use super::*;

/// The code, headers and `Status` of an answer that is not a success.
async fn answer_of(
    client: &Client,
    req: http::Request<Vec<u8>>,
) -> Result<(u16, http::HeaderMap, Value)> {
    let response = client.send(req.map(Into::into)).await?;
    let code = response.status().as_u16();
    let headers = response.headers().clone();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    Ok((
        code,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}

/// The code and `Status` of an answer that is not a success.
async fn status_of(client: &Client, req: http::Request<Vec<u8>>) -> Result<(u16, Value)> {
    let (code, _, status) = answer_of(client, req).await?;
    Ok((code, status))
}

/// An embedded store whose writes wait, while `stalled`, as writes to an
/// etcd that lost its quorum wait; reads go through, and reads of one key
/// are counted.
#[derive(Debug)]
struct StallingStore {
    inner: corral_store::embedded::EmbeddedStore,
    stalled: AtomicBool,
    resumed: tokio::sync::Notify,
    gets: AtomicUsize,
}

impl StallingStore {
    fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
        if !on {
            self.resumed.notify_waiters();
        }
    }
}

#[async_trait::async_trait]
impl Store for StallingStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.inner.range(request).await
    }
    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        loop {
            let resumed = self.resumed.notified();
            if !self.stalled.load(Ordering::SeqCst) {
                break;
            }
            resumed.await;
        }
        self.inner.write(op).await
    }
    async fn watch(&self, prefix: &str, start: i64) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, start).await
    }
    async fn current_revision(&self) -> Result<i64, StoreError> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

/// A write stuck on the store is answered 504 Timeout by its deadline (the
/// request's `timeout`, or the server's cap), keeps its in-flight slot
/// while it waits, and completes once the store answers; reads are served
/// meanwhile, and a malformed `timeout` is a 400.
#[tokio::test]
async fn a_request_stuck_on_the_store_times_out_and_may_still_complete() -> Result<()> {
    let store = Arc::new(StallingStore {
        inner: corral_store::embedded::EmbeddedStore::in_memory()?,
        stalled: AtomicBool::new(false),
        resumed: tokio::sync::Notify::new(),
        gets: AtomicUsize::new(0),
    });
    let options = corral_apiserver::ServeOptions {
        request_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let ts = serve_custom(
        store.clone(),
        Arc::new(corral_apiserver::AllowAuthenticated),
        options,
    )
    .await?;
    let kubeconfig = ts.pki.kubeconfig(&ts.url);
    let once = client_without_retries(&kubeconfig).await?;
    let jobs: Api<Job> = Api::namespaced(once.clone(), "default");
    let post = |name: &str, query: &str| -> Result<http::Request<Vec<u8>>> {
        Ok(http::Request::post(format!(
            "/apis/corral.dev/v1alpha1/namespaces/default/jobs{query}"
        ))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&job(name, 1)?)?)?)
    };

    let (code, status) = status_of(&once, post("soon", "?timeout=soon")?).await?;
    assert_eq!(
        (code, status["reason"].as_str()),
        (400, Some("BadRequest")),
        "{status}"
    );

    store.stall(true);
    // The request's own timeout, shorter than the server's cap.
    let started = std::time::Instant::now();
    let (code, status) = status_of(&once, post("stuck", "?timeout=200ms")?).await?;
    assert_eq!(
        (code, status["reason"].as_str()),
        (504, Some("Timeout")),
        "{status}"
    );
    assert!(
        started.elapsed() < WAIT,
        "answered only after {:?}",
        started.elapsed()
    );
    // The server's cap.
    let (code, _) = status_of(&once, post("capped", "")?).await?;
    assert_eq!(code, 504);
    // Reads are served, and the two stuck writes still hold their slots.
    assert!(jobs.list(&ListParams::default()).await?.items.is_empty());
    let metrics = once
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"apiserver_current_inflight_requests{request_kind="mutating"} 2"#),
        "{metrics}"
    );

    // The store answers: what was asked is done, as a 504 warns it may be.
    store.stall(false);
    tokio::time::timeout(WAIT, async {
        loop {
            if jobs.list(&ListParams::default()).await?.items.len() == 2 {
                return anyhow::Ok(());
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .context("the stuck writes never completed")??;
    ts.shutdown().await;
    Ok(())
}

/// Past its class's limit, a request waits its turn for a moment, then is
/// answered 429 with Retry-After and changes nothing; reads and watches are
/// not held up by writes.
#[tokio::test]
async fn requests_past_the_in_flight_limit_are_told_to_retry() -> Result<()> {
    use corral_apiserver::InFlight;
    use corral_apiserver::InFlightLimits;
    use corral_apiserver::transport::server::{PriorityLevel, RequestClass};
    let inflight = InFlight::new(InFlightLimits {
        readonly: 4,
        mutating: 1,
    });
    let options = corral_apiserver::ServeOptions {
        inflight: inflight.clone(),
        ..Default::default()
    };
    let ts = serve_custom(
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        Arc::new(corral_apiserver::AllowAuthenticated),
        options,
    )
    .await?;
    let kubeconfig = ts.pki.kubeconfig(&ts.url);
    // Alice is an ordinary user (the administrator is never limited).
    let as_alice = |retries: bool| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let mut config = config_for(&kubeconfig).await?;
            config.auth_info.impersonate = Some("alice".to_owned());
            config.default_retry = retries;
            anyhow::Ok(Client::try_from(config)?)
        }
    };
    let client = as_alice(true).await?;
    let once = as_alice(false).await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");

    // Every write slot is taken (as by a write still being served).
    let busy = inflight
        .admit(RequestClass::Mutating, PriorityLevel::Workload, "alice")
        .await?;
    let post = || -> Result<http::Request<Vec<u8>>> {
        Ok(
            http::Request::post("/apis/corral.dev/v1alpha1/namespaces/default/jobs")
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&job("busy", 1)?)?)?,
        )
    };
    let (code, headers, status) = answer_of(&once, post()?).await?;
    assert_eq!(code, 429);
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    // A caller without credentials hears 401 first, and takes no slot.
    let stranger =
        client_without_retries(&kubeconfig.replace(&ts.pki.admin_token, "not-a-token")).await?;
    let (code, _) = status_of(&stranger, post()?).await?;
    assert_eq!(code, 401);
    // Reads and watches still get through.
    assert!(jobs.list(&ListParams::default()).await?.items.is_empty());
    let mut watch = jobs
        .watch(&kube::api::WatchParams::default().timeout(5), "0")
        .await?
        .boxed();

    // A retrying client's write waits out the busy time, goes through once
    // the slot is back, and the watch sees it.
    let retrying = tokio::spawn({
        let client = client.clone();
        let req = post()?;
        async move { client.request_text(req).await }
    });
    drop(busy);
    tokio::time::timeout(WAIT, retrying).await???;
    let event = tokio::time::timeout(WAIT, watch.next())
        .await?
        .context("watch ended")??;
    assert!(
        matches!(&event, kube::api::WatchEvent::Added(j) if j.metadata.name.as_deref() == Some("busy")),
        "{event:?}"
    );
    drop(watch);
    ts.shutdown().await;
    Ok(())
}

/// A write conditional on the version the watch cache holds reads nothing
/// from the store first (the store takes it only at that version anyway); a
/// stale version is still a 409, and a write naming no version reads the
/// store.
#[tokio::test]
async fn a_write_at_the_cached_version_does_not_read_the_store() -> Result<()> {
    let store = Arc::new(StallingStore {
        inner: corral_store::embedded::EmbeddedStore::in_memory()?,
        stalled: AtomicBool::new(false),
        resumed: tokio::sync::Notify::new(),
        gets: AtomicUsize::new(0),
    });
    let ts = serve_custom(
        store.clone(),
        Arc::new(corral_apiserver::AllowAuthenticated),
        corral_apiserver::ServeOptions::default(),
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let created = jobs
        .create(&PostParams::default(), &job("cached", 1)?)
        .await?;
    let rv = created
        .metadata
        .resource_version
        .context("no resourceVersion")?;
    let cache = ts.api.cache.as_ref().context("no watch cache")?;
    assert!(
        cache.wait_for(rv.parse()?, WAIT).await,
        "the cache never saw the job"
    );
    let labelled =
        |n: &str| Patch::Merge(json!({"metadata": {"resourceVersion": rv, "labels": {"n": n}}}));

    let before = store.gets.load(Ordering::SeqCst);
    jobs.patch("cached", &PatchParams::default(), &labelled("1"))
        .await?;
    assert_eq!(store.gets.load(Ordering::SeqCst), before, "a store read");

    // Now stale: the cache may or may not have the new version yet; either
    // way the write is refused.
    let (code, _, _) = api_error(
        jobs.patch("cached", &PatchParams::default(), &labelled("2"))
            .await
            .err()
            .context("a stale write was taken")?,
    )?;
    assert_eq!(code, 409);

    let before = store.gets.load(Ordering::SeqCst);
    jobs.patch(
        "cached",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"n": "3"}}})),
    )
    .await?;
    assert!(store.gets.load(Ordering::SeqCst) > before, "no store read");
    assert_eq!(
        jobs.get("cached")
            .await?
            .metadata
            .labels
            .and_then(|l| l.get("n").cloned()),
        Some("3".to_owned())
    );
    Ok(())
}

/// A request to the server at `url` (whose CA is `ca_pem`) over a
/// connection of its own, whose body is sent `chunk` bytes at a time every
/// `every` (as a slow or hostile client uploads), as `token`; `sending` hears
/// once the head and the first chunk are on their way. Returns the
/// answer's code.
async fn trickled(
    (url, ca_pem): (String, String),
    token: &'static str,
    path: &'static str,
    body: Vec<u8>,
    (chunk, every): (usize, Duration),
    sending: tokio::sync::oneshot::Sender<()>,
) -> Result<u16> {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("https://")).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned(),
            tcp,
        )
        .await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let chunks: Vec<bytes::Bytes> = body
        .chunks(chunk)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let mut sending = Some(sending);
    let frames = futures::stream::iter(chunks.into_iter().enumerate()).then(move |(i, c)| {
        // The second chunk is asked for once the first went out.
        if i == 1
            && let Some(tx) = sending.take()
        {
            let _ = tx.send(());
        }
        async move {
            if i > 0 {
                tokio::time::sleep(every).await;
            }
            Ok::<_, std::convert::Infallible>(Frame::data(c))
        }
    });
    let req = http::Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(StreamBody::new(frames))?;
    Ok(sender.send_request(req).await?.status().as_u16())
}

/// A ConfigMap of about `size` bytes, as JSON.
fn config_map_json(name: &str, size: usize) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"v": "x".repeat(size)},
    }))?)
}

/// A slot is taken once a request's body has arrived: a user's slow upload
/// holds none of their share while it trickles in.
#[tokio::test]
async fn a_slow_upload_holds_no_slot() -> Result<()> {
    use corral_apiserver::{InFlight, InFlightLimits};
    // Everyone else shares 3 write slots, one each.
    let ts = TestServer::start_with_users(
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        Arc::new(corral_apiserver::AllowAuthenticated),
        &[("alice-token", "alice", &[])],
        corral_apiserver::ServeOptions {
            inflight: InFlight::new(InFlightLimits {
                readonly: 4,
                mutating: 4,
            }),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow!(e))?;
    let alice = ts.client_as("alice-token").await.map_err(|e| anyhow!(e))?;
    // Alice's upload takes two seconds to arrive…
    let (sending, sent) = tokio::sync::oneshot::channel();
    let upload = tokio::spawn(trickled(
        (ts.url.clone(), ts.pki.ca_pem.clone()),
        "alice-token",
        "/api/v1/namespaces/default/configmaps",
        config_map_json("slow", 64 * 1024)?,
        (4 * 1024, Duration::from_millis(125)),
        sending,
    ));
    sent.await?;
    // …meanwhile her other writes go through at once, not after a wait in
    // line behind her own upload.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(alice, "default");
    for i in 0..3 {
        let started = std::time::Instant::now();
        cms.create(
            &PostParams::default(),
            &serde_json::from_slice(&config_map_json(&format!("quick-{i}"), 10)?)?,
        )
        .await?;
        assert!(
            started.elapsed() < corral_apiserver::transport::server::QUEUE_WAIT,
            "waited {:?} for a slot",
            started.elapsed()
        );
    }
    assert!(!upload.is_finished(), "the upload was still arriving");
    assert_eq!(upload.await??, 201);
    Ok(())
}

/// One client flooding the API — slow uploads, and as many large writes
/// at once as it likes — keeps no node from renewing its lease: nodes draw
/// on slots of their own, and the flooder on its own share of the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_keeps_no_node_from_renewing_its_lease() -> Result<()> {
    use corral_apiserver::{InFlight, InFlightLimits};
    use k8s_openapi::api::coordination::v1::Lease;
    let ts = TestServer::start_with_users(
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        Arc::new(corral_apiserver::AllowAuthenticated),
        &[
            ("flood-token", "flood", &[]),
            ("node-token", "system:node:n1", &["system:nodes"]),
        ],
        corral_apiserver::ServeOptions {
            inflight: InFlight::new(InFlightLimits {
                readonly: 8,
                mutating: 8,
            }),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow!(e))?;
    let node = ts.client_as("node-token").await.map_err(|e| anyhow!(e))?;
    let flood = ts.client_as("flood-token").await.map_err(|e| anyhow!(e))?;
    let leases: Api<Lease> = Api::namespaced(node, corral_api::node::NODE_LEASE_NAMESPACE);
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}}),
            )?,
        )
        .await?;

    // The flood: 16 slow uploads and 48 writers of 1 MiB ConfigMaps, for 3 s.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut flooders = Vec::new();
    for i in 0..16 {
        let (sending, _) = tokio::sync::oneshot::channel();
        flooders.push(tokio::spawn(trickled(
            (ts.url.clone(), ts.pki.ca_pem.clone()),
            "flood-token",
            "/api/v1/namespaces/default/configmaps",
            config_map_json(&format!("slow-{i}"), 32 * 1024)?,
            (1024, Duration::from_millis(100)),
            sending,
        )));
    }
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..48)
        .map(|w| {
            let (flood, refused) = (flood.clone(), refused.clone());
            tokio::spawn(async move {
                let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
                    Api::namespaced(flood, "default");
                let mut i = 0;
                while tokio::time::Instant::now() < until {
                    i += 1;
                    let cm = serde_json::from_slice(&config_map_json(
                        &format!("w{w}-{i}"),
                        1024 * 1024,
                    )?)?;
                    match cms.create(&PostParams::default(), &cm).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 429 => {
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => return Err(anyhow!(e)),
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();

    // Meanwhile the node renews its lease every 100 ms, with no retries: a
    // refusal fails the test.
    let mut renewals = 0;
    let mut slowest = Duration::ZERO;
    while renewals == 0 || tokio::time::Instant::now() < until {
        let started = std::time::Instant::now();
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        leases
            .patch(
                "n1",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"renewTime": now}})),
            )
            .await
            .context("a lease renewal during the flood")?;
        slowest = slowest.max(started.elapsed());
        renewals += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in writers {
        w.await??;
    }
    for f in flooders {
        f.abort();
    }
    let refused = refused.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{renewals} renewals during the flood, the slowest {slowest:?}; the flooder was refused {refused} times"
    );
    assert!(refused > 0, "the flood never met the limit");
    // Every renewal went through: none was refused (that fails the loop
    // above), and none waited in line for a slot, as the server's own
    // figures say. (How long each took is the machine's, whose cores the
    // flood in this very process, and other tests, keep busy: not a
    // queue's.)
    let metrics = ts
        .client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let series = |name: &str, le: Option<&str>| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(name)
                    && l.contains("priority_level=\"system\"")
                    && le.is_none_or(|le| l.contains(&format!("le=\"{le}\"")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let waits = "apiserver_flowcontrol_request_wait_duration_seconds";
    let (all, quick) = (
        series(&format!("{waits}_count"), None),
        series(&format!("{waits}_bucket"), Some("0.1")),
    );
    assert!(
        all >= f64::from(renewals),
        "{renewals} renewals, {all} counted"
    );
    assert_eq!(quick, all, "a node's request waited in line for a slot");
    Ok(())
}

/// A user holds at most so many watches open at once; past it, 429; one
/// that ends frees its place.
#[tokio::test]
async fn a_user_holds_a_bounded_number_of_watches() -> Result<()> {
    use corral_apiserver::transport::server::OpenStreams;
    let ts = TestServer::start_with_users(
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        Arc::new(corral_apiserver::AllowAuthenticated),
        &[("alice-token", "alice", &[])],
        corral_apiserver::ServeOptions {
            streams: OpenStreams::new(2),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow!(e))?;
    let alice = ts.client_as("alice-token").await.map_err(|e| anyhow!(e))?;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(alice, "default");
    let params = kube::api::WatchParams::default().timeout(30);
    let first = cms.watch(&params, "0").await?.boxed();
    let _second = cms.watch(&params, "0").await?.boxed();
    match cms.watch(&params, "0").await {
        Err(kube::Error::Api(e)) if e.code == 429 => {}
        Err(e) => bail!("a third watch failed otherwise: {e}"),
        Ok(_) => bail!("a third watch was served"),
    }
    // The administrator is not limited.
    let admin: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(ts.client.clone(), "default");
    let _admins: Vec<_> =
        futures::future::try_join_all((0..5).map(|_| admin.watch(&params, "0"))).await?;
    drop(first);
    eventually("a place to free up", || async {
        Ok(cms.watch(&params, "0").await.is_ok())
    })
    .await?;
    Ok(())
}
