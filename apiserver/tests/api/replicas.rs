//! Two API servers over one etcd, as an HA control plane runs them: each
//! has its own watch cache, and a client moving between them (a load
//! balancer in front of both) never reads older state than it has seen,
//! never loses a change on a watch, and cannot overwrite a change made
//! through the other.

use kube::api::WatchEvent;

use super::*;

/// A server over its own connection to `etcd`.
async fn replica(etcd: &corral_store::testing::EtcdServer) -> Result<TestServer> {
    let store = corral_store::etcd::EtcdStore::connect(&[etcd.endpoint().to_owned()]).await?;
    let ts = TestServer::start_over(Arc::new(store))
        .await
        .map_err(|e| anyhow!(e))?;
    seed_roles(&ts).await?;
    Ok(ts)
}

fn names(jobs: &[Job]) -> Vec<String> {
    let mut n: Vec<String> = jobs
        .iter()
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    n.sort();
    n
}

/// The names of the `expected` objects a watch of `server`'s jobs with `query`
/// starts with.
async fn initial_names(server: &TestServer, query: &str, expected: usize) -> Result<Vec<String>> {
    let mut events = super::watch::job_events(server, query).await?;
    Ok(super::watch::initial_objects(&mut events, Some(expected))
        .await?
        .0)
}

#[tokio::test]
async fn two_servers_over_one_etcd_agree() -> Result<()> {
    let etcd =
        corral_store::testing::EtcdServer::start_with(corral_store::testing::Durability::NoFsync)?;
    let (a, b) = (replica(&etcd).await?, replica(&etcd).await?);
    let via_a: Api<Job> = Api::namespaced(a.client.clone(), "default");
    let via_b: Api<Job> = Api::namespaced(b.client.clone(), "default");

    // B's watch, started before any of the writes below, made through A.
    let listed = via_b.list(&ListParams::default()).await?;
    let from = listed.metadata.resource_version.context("list RV")?;
    let mut watch_b = via_b
        .watch(&kube::api::WatchParams::default(), &from)
        .await?
        .boxed();

    // Read-your-writes across servers: whatever A has just written, B's
    // reads and the watches it starts include (its cache waits for etcd).
    let mut written = Vec::new();
    for i in 0..10 {
        let name = format!("j{i}");
        let created = via_a
            .create(&PostParams::default(), &job(&name, 1)?)
            .await?;
        written.push(name.clone());
        written.sort();
        let rv = created.metadata.resource_version.context("RV")?;
        assert_eq!(
            via_b.get(&name).await?.metadata.resource_version.as_deref(),
            Some(rv.as_str())
        );
        assert_eq!(
            names(&via_b.list(&ListParams::default()).await?.items),
            written
        );
        let not_older = ListParams::default()
            .at(&rv)
            .matching(kube::api::VersionMatch::NotOlderThan);
        assert_eq!(names(&via_b.list(&not_older).await?.items), written);
        let exact = ListParams::default()
            .at(&rv)
            .matching(kube::api::VersionMatch::Exact);
        assert_eq!(names(&via_b.list(&exact).await?.items), written);
        assert_eq!(initial_names(&b, "", written.len()).await?, written);
        assert_eq!(
            initial_names(
                &b,
                &format!(
                    "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={rv}"
                ),
                written.len()
            )
            .await?,
            written
        );
    }

    // B's watch saw every write A made, in order.
    let mut added = Vec::new();
    while added.len() < written.len() {
        match tokio::time::timeout(WAIT, watch_b.try_next())
            .await
            .context("watch stalled")??
            .context("watch ended")?
        {
            WatchEvent::Added(j) => added.push(j.metadata.name.unwrap_or_default()),
            WatchEvent::Bookmark(_) => {}
            other => bail!("unexpected {other:?}"),
        }
    }
    let in_order: Vec<String> = (0..10).map(|i| format!("j{i}")).collect();
    assert_eq!(added, in_order);

    // Optimistic concurrency spans the servers: B's update from the version
    // both read loses to A's.
    let (mut from_a, mut from_b) = (via_a.get("j0").await?, via_b.get("j0").await?);
    from_a.spec.instances = 2;
    via_a.replace("j0", &PostParams::default(), &from_a).await?;
    from_b.spec.instances = 3;
    let (code, reason, _) = api_error(
        via_b
            .replace("j0", &PostParams::default(), &from_b)
            .await
            .err()
            .context("a stale update through B was accepted")?,
    )?;
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // So does field ownership: a field A's manager applied is B's
    // manager's conflict.
    let apply = |manager: &str, instances: u32| {
        let patch = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
                           "metadata": {"name": "j1"}, "spec": {"instances": instances}});
        (PatchParams::apply(manager), Patch::Apply(patch))
    };
    let (pp, patch) = apply("team-a", 4);
    via_a.patch("j1", &pp, &patch).await?;
    let (pp, patch) = apply("team-b", 5);
    let (code, _, message) = api_error(
        via_b
            .patch("j1", &pp, &patch)
            .await
            .err()
            .context("a conflicting apply through B was accepted")?,
    )?;
    assert_eq!(code, 409, "{message}");
    assert!(message.contains("team-a"), "{message}");

    // A deletion through B reaches a watch on A.
    let mut watch_a = via_a
        .watch(
            &kube::api::WatchParams::default(),
            &via_a
                .get("j2")
                .await?
                .metadata
                .resource_version
                .context("RV")?,
        )
        .await?
        .boxed();
    via_b.delete("j2", &DeleteParams::default()).await?;
    loop {
        match tokio::time::timeout(WAIT, watch_a.try_next())
            .await
            .context("watch stalled")??
            .context("watch ended")?
        {
            WatchEvent::Deleted(j) if j.metadata.name.as_deref() == Some("j2") => break,
            // The writes after j2's creation come first.
            WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Bookmark(_) => {}
            other => bail!("unexpected {other:?}"),
        }
    }
    let (code, _, _) = api_error(via_a.get("j2").await.err().context("j2 still there")?)?;
    assert_eq!(code, 404);
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
