//! Watches and the node-name field selector agents rely on.

use super::*;

pub async fn watch_sees_additions_changes_and_deletions(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("before", 1)?)
        .await?;
    let mut events = watcher(jobs.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    // The initial list first; then the changes, in order.
    loop {
        let ev = tokio::time::timeout(WAIT, events.try_next())
            .await
            .context("watch stalled")??
            .context("watch ended")?;
        match ev {
            watcher::Event::InitApply(j) => seen.push(format!(
                "apply {} {}",
                j.metadata.name.unwrap_or_default(),
                j.spec.instances
            )),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    jobs.create(&PostParams::default(), &job("w", 1)?).await?;
    jobs.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"instances": 2}})),
    )
    .await?;
    jobs.delete("w", &DeleteParams::default()).await?;
    while seen.last().map(String::as_str) != Some("delete w") {
        let ev = tokio::time::timeout(WAIT, events.try_next())
            .await
            .context("watch stalled")??
            .context("watch ended")?;
        match ev {
            watcher::Event::Apply(j) => seen.push(format!(
                "apply {} {}",
                j.metadata.name.unwrap_or_default(),
                j.spec.instances
            )),
            watcher::Event::Delete(j) => {
                seen.push(format!("delete {}", j.metadata.name.unwrap_or_default()))
            }
            _ => {}
        }
    }
    assert_eq!(
        seen,
        vec!["apply before 1", "apply w 1", "apply w 2", "delete w"]
    );
    Ok(())
}

pub async fn tasks_are_selected_by_node_name(ts: &TestServer) -> Result<()> {
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    tasks
        .create(&PostParams::default(), &task("t1", Some("n1"), None)?)
        .await?;
    tasks
        .create(&PostParams::default(), &task("t2", Some("n2"), None)?)
        .await?;
    tasks
        .create(&PostParams::default(), &task("t3", None, None)?)
        .await?;
    let on_n1 = tasks
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await?;
    assert_eq!(
        on_n1
            .items
            .iter()
            .filter_map(|t| t.metadata.name.clone())
            .collect::<Vec<_>>(),
        vec!["t1"]
    );
    let unbound = tasks
        .list(&ListParams::default().fields("spec.nodeName="))
        .await?;
    assert_eq!(unbound.items.len(), 1);
    let all: Api<Task> = Api::all(ts.client.clone());
    assert_eq!(
        all.list(&ListParams::default().fields("metadata.namespace=default"))
            .await?
            .items
            .len(),
        3
    );
    let req = http::Request::get("/apis/corral.dev/v1alpha1/tasks?fieldSelector=spec.bogus%3Dx")
        .body(Vec::new())?;
    let (code, _, message) = api_error(
        ts.client
            .request_text(req)
            .await
            .err()
            .context("accepted")?,
    )?;
    assert_eq!(
        (code, message.as_str()),
        (400, "field label not supported: spec.bogus")
    );
    Ok(())
}

/// The next event of a watch, within [`WAIT`].
async fn next_event<S, T, E>(events: &mut S) -> Result<T>
where
    S: futures::TryStream<Ok = T, Error = E> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(WAIT, events.try_next())
        .await
        .context("watch stalled")??
        .context("watch ended")
}

/// A watch of the default namespace's jobs with `query`, event by event.
pub(super) async fn job_events(
    ts: &TestServer,
    query: &str,
) -> Result<
    impl futures::TryStream<Ok = kube::api::WatchEvent<Job>, Error = kube::Error> + Unpin + use<>,
> {
    let req = http::Request::get(format!(
        "/apis/corral.dev/v1alpha1/namespaces/default/jobs?watch=true&{query}"
    ))
    .body(Vec::new())?;
    Ok(ts.client.request_events::<Job>(req).await?.boxed())
}

fn name_of(j: &Job) -> String {
    j.metadata.name.clone().unwrap_or_default()
}

/// The objects a watch starts with, sorted by name: `count` ADDED events,
/// or (without a count) every ADDED up to the first bookmark, returned too.
/// Any other event fails.
pub(super) async fn initial_objects<S>(
    events: &mut S,
    count: Option<usize>,
) -> Result<(Vec<String>, Option<kube::core::watch::Bookmark>)>
where
    S: futures::TryStream<Ok = kube::api::WatchEvent<Job>, Error = kube::Error> + Unpin,
{
    let mut names = Vec::new();
    let mut bookmark = None;
    while count.is_none_or(|n| names.len() < n) {
        match next_event(events).await? {
            kube::api::WatchEvent::Added(j) => names.push(name_of(&j)),
            kube::api::WatchEvent::Bookmark(b) if count.is_none() => {
                bookmark = Some(b);
                break;
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    names.sort();
    Ok((names, bookmark))
}

/// Streaming lists (`sendInitialEvents=true`, as client-go's reflector and
/// kube-rs' StreamingList strategy send them) start with the current objects
/// and, when they allow bookmarks, a bookmark marking the end of them; a
/// watch with `sendInitialEvents=false` starts from now.
pub async fn streaming_lists_and_watches_from_now_start_where_asked(ts: &TestServer) -> Result<()> {
    use kube::api::WatchEvent;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    for name in ["a", "b"] {
        jobs.create(&PostParams::default(), &job(name, 1)?).await?;
    }

    // kube-rs' StreamingList strategy: the objects, InitDone, then changes.
    // It asks for resourceVersion "0" (any freshness), so an object created
    // just before may come as a change instead of an initial object.
    let mut events = watcher(jobs.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    loop {
        match next_event(&mut events).await? {
            watcher::Event::InitApply(j) => seen.push(name_of(&j)),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    jobs.create(&PostParams::default(), &job("c", 1)?).await?;
    while seen.last().map(String::as_str) != Some("c") {
        if let watcher::Event::Apply(j) = next_event(&mut events).await? {
            seen.push(name_of(&j));
        }
    }
    seen.sort();
    assert_eq!(seen, ["a", "b", "c"]);

    // With bookmarks: the objects, then the initial-events-end bookmark.
    let mut streaming = job_events(
        ts,
        "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
    )
    .await?;
    let (listed, end) = initial_objects(&mut streaming, None).await?;
    assert_eq!(listed, ["a", "b", "c"]);
    let end = end.context("no bookmark")?;
    assert_eq!(
        end.metadata
            .annotations
            .get("k8s.io/initial-events-end")
            .map(String::as_str),
        Some("true")
    );

    // Without bookmarks: the objects, then the next change; no bookmark.
    let mut plain = job_events(
        ts,
        "sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
    )
    .await?;
    let (listed, _) = initial_objects(&mut plain, Some(3)).await?;
    assert_eq!(listed, ["a", "b", "c"]);

    // From now: the first event is the next change.
    let mut from_now = job_events(
        ts,
        "sendInitialEvents=false&resourceVersionMatch=NotOlderThan",
    )
    .await?;
    jobs.create(&PostParams::default(), &job("d", 1)?).await?;
    for stream in [&mut plain, &mut from_now] {
        match next_event(stream).await? {
            WatchEvent::Added(j) => assert_eq!(name_of(&j), "d"),
            other => bail!("unexpected {other:?}"),
        }
    }

    // A plain watch without a version starts with the latest objects.
    let mut latest = job_events(ts, "").await?;
    let (listed, _) = initial_objects(&mut latest, Some(4)).await?;
    assert_eq!(listed, ["a", "b", "c", "d"]);

    // Not older than a version: the objects as of at least that version.
    let rv = jobs
        .get("d")
        .await?
        .metadata
        .resource_version
        .context("no resourceVersion")?;
    let mut not_older = job_events(
        ts,
        &format!(
            "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={rv}"
        ),
    )
    .await?;
    let (listed, end) = initial_objects(&mut not_older, None).await?;
    assert_eq!(listed, ["a", "b", "c", "d"]);
    let end = end.context("no bookmark")?;
    assert!(end.metadata.resource_version.parse::<i64>()? >= rv.parse::<i64>()?);

    // Options kube-apiserver rejects are a 422 here too.
    for query in [
        "resourceVersionMatch=NotOlderThan",
        "sendInitialEvents=true",
        "sendInitialEvents=true&resourceVersionMatch=Exact",
    ] {
        let err = match job_events(ts, query).await {
            Ok(_) => bail!("{query}: accepted"),
            Err(e) => e.downcast::<kube::Error>()?,
        };
        let (code, reason, message) = api_error(err)?;
        assert_eq!(
            (code, reason.as_str()),
            (422, "Invalid"),
            "{query}: {message}"
        );
    }
    Ok(())
}

/// The same starts when the watch is served from the store (no cache).
pub async fn uncached_watches_start_where_asked(ts: &TestServer) -> Result<()> {
    use corral_apiserver::storage::watch::{WatchParams, start};
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("a", 1)?).await?;
    let uncached = corral_apiserver::Api::uncached(ts.api.store.clone(), ts.api.registry.clone());
    let desc = ts
        .api
        .registry
        .find("corral.dev", "v1alpha1", "jobs")
        .context("jobs")?;
    let params = |send_initial: Option<bool>, bookmarks: bool| WatchParams {
        resource_version: None,
        bookmarks,
        timeout: None,
        send_initial,
        labels: Default::default(),
        fields: Default::default(),
        render: corral_apiserver::kinds::render::Rendering::Object,
    };
    let watch = |p: WatchParams| start(uncached.clone(), desc.clone(), Some("default".into()), p);
    async fn next_line(
        rx: &mut tokio::sync::mpsc::Receiver<bytes::Bytes>,
    ) -> Result<(String, Value)> {
        let line = tokio::time::timeout(WAIT, rx.recv())
            .await
            .context("watch stalled")?
            .context("watch ended")?;
        let ev: Value = serde_json::from_slice(&line)?;
        let kind = ev["type"].as_str().unwrap_or_default().to_owned();
        Ok((kind, ev["object"].clone()))
    }
    let mut streaming = watch(params(Some(true), true)).await?;
    let (kind, obj) = next_line(&mut streaming).await?;
    assert_eq!(
        (kind.as_str(), &obj["metadata"]["name"]),
        ("ADDED", &json!("a"))
    );
    let (kind, obj) = next_line(&mut streaming).await?;
    assert_eq!(
        (
            kind.as_str(),
            &obj["metadata"]["annotations"]["k8s.io/initial-events-end"]
        ),
        ("BOOKMARK", &json!("true"))
    );
    let mut plain = watch(params(Some(true), false)).await?;
    let (kind, obj) = next_line(&mut plain).await?;
    assert_eq!(
        (kind.as_str(), &obj["metadata"]["name"]),
        ("ADDED", &json!("a"))
    );
    let mut from_now = watch(params(Some(false), true)).await?;
    jobs.create(&PostParams::default(), &job("b", 1)?).await?;
    for rx in [&mut streaming, &mut plain, &mut from_now] {
        let (kind, obj) = next_line(rx).await?;
        assert_eq!(
            (kind.as_str(), &obj["metadata"]["name"]),
            ("ADDED", &json!("b"))
        );
    }
    Ok(())
}

/// A watch whose client went away is released at once, even when no change
/// would ever reach it (the watch of a node nothing is bound to).
pub async fn a_watch_whose_client_left_is_released(ts: &TestServer) -> Result<()> {
    let cache = ts.api.cache.clone().context("no watch cache")?;
    let before = cache.watcher_count();
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let rv = tasks
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("list RV")?;
    let stream = tasks
        .watch(
            // Without bookmarks nothing is ever sent on it (kubectl get -w).
            &kube::api::WatchParams::default()
                .fields("spec.nodeName=quiet")
                .disable_bookmarks(),
            &rv,
        )
        .await?;
    eventually("the watch is registered", || async {
        Ok(cache.watcher_count() == before + 1)
    })
    .await?;
    drop(stream);
    eventually("the watch is released", || async {
        Ok(cache.watcher_count() == before)
    })
    .await
}

/// Shutting down ends open watches cleanly, as their timeout would: their
/// clients reconnect (to another server, in an HA control plane) instead of
/// waiting on a server that no longer answers.
#[tokio::test]
async fn shutting_down_ends_watches_cleanly() -> Result<()> {
    let ts = TestServer::start().await.map_err(|e| anyhow!(e))?;
    seed_roles(&ts).await?;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let mut watch = jobs
        .watch(&kube::api::WatchParams::default(), "0")
        .await?
        .boxed();
    jobs.create(&PostParams::default(), &job("seen", 1)?)
        .await?;
    match next_event(&mut watch).await? {
        kube::api::WatchEvent::Added(j) => assert_eq!(name_of(&j), "seen"),
        other => bail!("unexpected {other:?}"),
    }
    let shutdown = tokio::spawn(ts.shutdown());
    let end = tokio::time::timeout(WAIT, watch.try_next())
        .await
        .context("the watch outlived the shutdown")?;
    assert!(
        matches!(end, Ok(None)),
        "the watch did not end cleanly: {end:?}"
    );
    tokio::time::timeout(WAIT, shutdown)
        .await
        .context("shutdown waited on the watch")??;
    Ok(())
}
