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
