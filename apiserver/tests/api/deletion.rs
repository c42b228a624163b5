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
