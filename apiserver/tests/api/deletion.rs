//! Garbage collection: owners, foreground deletion, namespaces.

use super::*;

pub async fn deleting_an_owner_collects_its_dependents(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let owner = jobs
        .create(&PostParams::default(), &job("owner", 1)?)
        .await?;
    let uid = owner.metadata.uid.clone().context("no uid")?;
    tasks
        .create(
            &PostParams::default(),
            &task("owned-0", None, Some(("owner", &uid)))?,
        )
        .await?;
    tasks
        .create(&PostParams::default(), &task("free", None, None)?)
        .await?;
    jobs.delete("owner", &DeleteParams::background()).await?;
    eventually("the owned task to be collected", || async {
        Ok(tasks.get_opt("owned-0").await?.is_none())
    })
    .await?;
    assert!(tasks.get_opt("free").await?.is_some());
    Ok(())
}

pub async fn foreground_deletion_waits_for_dependents(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let owner = jobs.create(&PostParams::default(), &job("fg", 1)?).await?;
    let uid = owner.metadata.uid.clone().context("no uid")?;
    let mut held = task("fg-0", None, Some(("fg", &uid)))?;
    held.metadata.finalizers = Some(vec!["corral.dev/hold".into()]);
    tasks.create(&PostParams::default(), &held).await?;
    jobs.delete("fg", &DeleteParams::foreground()).await?;
    // The owner waits, marked, while its dependent is held by a finalizer.
    eventually("the dependent to be marked for deletion", || async {
        Ok(tasks
            .get("fg-0")
            .await?
            .metadata
            .deletion_timestamp
            .is_some())
    })
    .await?;
    let marked = jobs.get("fg").await?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        marked
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );
    tasks
        .patch(
            "fg-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    eventually("the owner to go after its dependent", || async {
        Ok(jobs.get_opt("fg").await?.is_none())
    })
    .await?;
    Ok(())
}

/// An orphan deletion releases the dependents (they stay, without the
/// owner in their ownerReferences) before the owner goes; an object with
/// the `orphan` finalizer is orphaned by a plain delete; bad policies are
/// a 422 and delete nothing.
pub async fn orphan_deletion_releases_dependents(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let owner_uid = |j: Job| j.metadata.uid.context("no uid");
    let uid = owner_uid(
        jobs.create(&PostParams::default(), &job("orph", 1)?)
            .await?,
    )?;
    let other = owner_uid(
        jobs.create(&PostParams::default(), &job("keeper", 1)?)
            .await?,
    )?;
    tasks
        .create(
            &PostParams::default(),
            &task("orph-0", None, Some(("orph", &uid)))?,
        )
        .await?;
    let mut shared = task("orph-1", None, Some(("orph", &uid)))?;
    let keeper_ref = task("x", None, Some(("keeper", &other)))?
        .metadata
        .owner_references
        .unwrap_or_default();
    shared
        .metadata
        .owner_references
        .get_or_insert_with(Vec::new)
        .extend(keeper_ref);
    tasks.create(&PostParams::default(), &shared).await?;

    for (query, body, want) in [
        (
            "?propagationPolicy=Sideways",
            None,
            "propagationPolicy: Unsupported value: \"Sideways\"",
        ),
        (
            "",
            Some(json!({"kind": "DeleteOptions", "apiVersion": "v1",
                        "propagationPolicy": "Orphan", "orphanDependents": true})),
            "cannot be both set",
        ),
    ] {
        let req = http::Request::delete(format!(
            "/apis/corral.dev/v1alpha1/namespaces/default/jobs/orph{query}"
        ))
        .header("content-type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())?;
        let (code, reason, message) =
            api_error(ts.client.request_text(req).await.expect_err("a bad policy"))?;
        assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
        assert!(message.contains(want), "{message}");
    }
    assert!(jobs.get_opt("orph").await?.is_some());

    jobs.delete("orph", &DeleteParams::orphan()).await?;
    eventually("the orphaned owner to go", || async {
        Ok(jobs.get_opt("orph").await?.is_none())
    })
    .await?;
    let owners = |t: Task| -> Vec<String> {
        t.metadata
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.name)
            .collect()
    };
    assert_eq!(owners(tasks.get("orph-0").await?), Vec::<String>::new());
    assert_eq!(owners(tasks.get("orph-1").await?), ["keeper"]);

    // The `orphan` finalizer makes a plain delete an orphan one.
    let mut self_orphaning = job("lone", 1)?;
    self_orphaning.metadata.finalizers = Some(vec!["orphan".into()]);
    let uid = owner_uid(jobs.create(&PostParams::default(), &self_orphaning).await?)?;
    tasks
        .create(
            &PostParams::default(),
            &task("lone-0", None, Some(("lone", &uid)))?,
        )
        .await?;
    jobs.delete("lone", &DeleteParams::default()).await?;
    eventually("the owner with the orphan finalizer to go", || async {
        Ok(jobs.get_opt("lone").await?.is_none())
    })
    .await?;
    assert_eq!(owners(tasks.get("lone-0").await?), Vec::<String>::new());

    // An explicit background delete is not held by that finalizer: the
    // owner goes at once and its dependents after it.
    let uid = owner_uid(jobs.create(&PostParams::default(), &self_orphaning).await?)?;
    tasks
        .create(
            &PostParams::default(),
            &task("lone-1", None, Some(("lone", &uid)))?,
        )
        .await?;
    jobs.delete("lone", &DeleteParams::background()).await?;
    assert!(jobs.get_opt("lone").await?.is_none());
    eventually("the dependent to be collected", || async {
        Ok(tasks.get_opt("lone-1").await?.is_none())
    })
    .await?;
    Ok(())
}

pub async fn deleting_a_namespace_removes_its_contents(ts: &TestServer) -> Result<()> {
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ts.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "doomed"}}))?,
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "doomed");
    let mut j = job("inside", 1)?;
    j.metadata.namespace = Some("doomed".into());
    jobs.create(&PostParams::default(), &j).await?;
    let mut held = job("held", 1)?;
    held.metadata.namespace = Some("doomed".into());
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    jobs.create(&PostParams::default(), &held).await?;

    // The namespace terminates: nothing new goes in; its objects go, those
    // with finalizers once their finalizers are removed.
    nss.delete("doomed", &DeleteParams::default()).await?;
    let ns = nss.get("doomed").await?;
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let mut late = job("late", 1)?;
    late.metadata.namespace = Some("doomed".into());
    let (code, reason, message) = api_error(
        jobs.create(&PostParams::default(), &late)
            .await
            .err()
            .context("created in a terminating namespace")?,
    )?;
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (
            403,
            "Forbidden",
            "unable to create new content in namespace doomed because it is being terminated"
        )
    );
    eventually("the namespace's plain objects to go", || async {
        Ok(jobs.get_opt("inside").await?.is_none())
    })
    .await?;
    let waiting = jobs.get("held").await?;
    assert!(
        waiting.metadata.deletion_timestamp.is_some(),
        "marked, held"
    );
    assert!(nss.get_opt("doomed").await?.is_some(), "still terminating");
    jobs.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    eventually("the namespace to go once empty", || async {
        Ok(nss.get_opt("doomed").await?.is_none())
    })
    .await?;
    let (code, _, message) = api_error(
        jobs.create(&PostParams::default(), &j)
            .await
            .err()
            .context("created in a missing namespace")?,
    )?;
    assert_eq!(
        (code, message.as_str()),
        (404, "namespaces \"doomed\" not found")
    );
    Ok(())
}

/// A server that stopped in the middle of foreground and orphan deletions
/// (owners marked and holding their policy's finalizer, dependents not yet
/// handled) finishes them when it starts again.
#[tokio::test]
async fn a_restarted_server_finishes_held_deletions() -> Result<()> {
    let store: Arc<dyn corral_store::Store> =
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let first = TestServer::start_over(store.clone())
        .await
        .map_err(|e| anyhow!(e))?;
    seed_roles(&first).await?;
    let jobs: Api<Job> = Api::namespaced(first.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(first.client.clone(), "default");
    for (owner, finalizer) in [("fg", "foregroundDeletion"), ("or", "orphan")] {
        let created = jobs.create(&PostParams::default(), &job(owner, 1)?).await?;
        let uid = created.metadata.uid.context("no uid")?;
        let dependent = task(&format!("{owner}-0"), None, Some((owner, &uid)))?;
        tasks.create(&PostParams::default(), &dependent).await?;
        // What the delete wrote before the server stopped.
        let key = format!("/registry/corral.dev/jobs/default/{owner}");
        let kv = store.get(&key).await?.context("the job is stored")?;
        let mut marked: Value = serde_json::from_slice(&kv.value)?;
        marked["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        marked["metadata"]["finalizers"] = json!([finalizer]);
        store
            .update(&key, serde_json::to_vec(&marked)?, kv.mod_revision)
            .await?;
    }
    first.shutdown().await;

    let second = TestServer::start_over(store.clone())
        .await
        .map_err(|e| anyhow!(e))?;
    let jobs: Api<Job> = Api::namespaced(second.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(second.client.clone(), "default");
    eventually("both owners to go", || async {
        Ok(jobs.list(&ListParams::default()).await?.items.is_empty())
    })
    .await?;
    // Foreground: the dependent went first. Orphan: it stays, released.
    assert!(tasks.get_opt("fg-0").await?.is_none());
    let released = tasks.get("or-0").await?;
    assert_eq!(
        released.metadata.owner_references.unwrap_or_default(),
        vec![]
    );
    second.shutdown().await;
    Ok(())
}
