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

/// Past its class's limit, a request is answered 429 with Retry-After at
/// once and changes nothing; reads and watches are not held up by writes.
#[tokio::test]
async fn requests_past_the_in_flight_limit_are_told_to_retry() -> Result<()> {
    use corral_apiserver::{InFlight, InFlightLimits, transport::server::RequestClass};
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
    let client = client_for(&kubeconfig).await?;
    let once = client_without_retries(&kubeconfig).await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");

    // Every write slot is taken (as by a write still being served).
    let busy = inflight.admit(RequestClass::Mutating)?;
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
