//! The request sequences GitOps controllers send, replayed with kube-rs:
//! Flux's kustomize-controller (server-side apply is its only write path,
//! preceded by a forced dry-run apply to detect drift; managedFields surgery
//! by JSON patch; delete-and-recreate on an immutable field; pruning that
//! waits for a 404) and Argo CD's cluster cache (a paged list of every
//! listable, watchable resource across namespaces, then a watch from the
//! list's resourceVersion; pruning with foreground propagation).

use super::*;
use kube::api::{DynamicObject, WatchEvent, WatchParams};
use kube::discovery::verbs;

fn flux_apply() -> PatchParams {
    PatchParams::apply("kustomize-controller").force()
}

fn applied_job(instances: u32, kind: &str) -> Value {
    json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": "flux-web", "namespace": "default",
                     "labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}},
        "spec": {"role": "analytics", "environment": "prod", "kind": kind, "instances": instances,
                 "resources": {"cpus": 1, "memory": "1Gi"},
                 "container": {"image": "docker.io/library/web:1.0"}}
    })
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// Flux's write path, step by step, with what Flux reads from each answer.
pub async fn flux_applies_detects_drift_recreates_and_prunes(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");

    // 1. Dry-run apply of an object that does not exist yet: the answer is
    //    what would be created, and nothing is stored.
    let preview = jobs
        .patch(
            "flux-web",
            &flux_apply().dry_run(),
            &Patch::Apply(applied_job(2, "service")),
        )
        .await?;
    assert_eq!(preview.spec.instances, 2);
    assert!(preview.metadata.uid.is_some(), "a preview is a full object");
    let err = jobs.get("flux-web").await.err().context("dry run stored")?;
    assert!(is_status(&err, 404), "{err}");

    // 2. The real apply creates it; a dry run of the same manifest then
    //    matches the live object exactly ("unchanged" in Flux's words).
    let live = jobs
        .patch(
            "flux-web",
            &flux_apply(),
            &Patch::Apply(applied_job(2, "service")),
        )
        .await?;
    let again = jobs
        .patch(
            "flux-web",
            &flux_apply().dry_run(),
            &Patch::Apply(applied_job(2, "service")),
        )
        .await?;
    assert_eq!(
        again.metadata.resource_version, live.metadata.resource_version,
        "a no-op dry run must not look like drift"
    );
    assert_eq!(serde_json::to_value(&again)?, serde_json::to_value(&live)?);

    // 3. A changed manifest shows as drift in the dry run, still without a write.
    let drift = jobs
        .patch(
            "flux-web",
            &flux_apply().dry_run(),
            &Patch::Apply(applied_job(3, "service")),
        )
        .await?;
    assert_eq!(drift.spec.instances, 3);
    let stored = jobs.get("flux-web").await?;
    assert_eq!(stored.spec.instances, 2);
    assert_eq!(
        stored.metadata.resource_version,
        live.metadata.resource_version
    );

    // 4. Another manager (kubectl edit, say) changed the object; Flux replaces
    //    the managedFields entries of other managers with a JSON patch, then
    //    its forced apply takes the fields back.
    // (No fieldManager: the change is recorded under the User-Agent's first word.)
    let edit = http::Request::patch("/apis/corral.dev/v1alpha1/namespaces/default/jobs/flux-web")
        .header("content-type", "application/merge-patch+json")
        .header("user-agent", "night-editor/1.0 (linux/amd64)")
        .body(serde_json::to_vec(&json!({"spec": {"instances": 5}}))?)?;
    let _: Job = ts.client.request(edit).await?;
    let before = jobs.get("flux-web").await?;
    let managers: Vec<String> = before
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(
        managers,
        vec!["kustomize-controller".to_owned(), "night-editor".to_owned()]
    );
    let flux_entry = before
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("kustomize-controller"))
        .context("flux's entry")?;
    let surgery = json!([
        {"op": "test", "path": "/metadata/resourceVersion",
         "value": before.metadata.resource_version},
        {"op": "replace", "path": "/metadata/managedFields",
         "value": [serde_json::to_value(flux_entry)?]}
    ]);
    // Sent as client-go sends it (kube-rs's JSON patch type is another
    // json-patch version than the server's).
    let req = http::Request::patch(
        "/apis/corral.dev/v1alpha1/namespaces/default/jobs/flux-web?fieldManager=kustomize-controller",
    )
    .header("content-type", "application/json-patch+json")
    .body(serde_json::to_vec(&surgery)?)?;
    let cleaned: Job = ts.client.request(req).await?;
    let left: Vec<Option<String>> = cleaned
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| m.manager.clone())
        .collect();
    assert_eq!(left, vec![Some("kustomize-controller".to_owned())]);
    let reverted = jobs
        .patch(
            "flux-web",
            &flux_apply(),
            &Patch::Apply(applied_job(2, "service")),
        )
        .await?;
    assert_eq!(reverted.spec.instances, 2);

    // 5. An immutable field: the apply is a 422 whose message says so, the
    //    object is unchanged, and Flux (force: true) deletes and recreates it.
    let err = jobs
        .patch(
            "flux-web",
            &flux_apply(),
            &Patch::Apply(applied_job(2, "adhoc")),
        )
        .await
        .err()
        .context("changing an immutable field was accepted")?;
    let (code, reason, message) = api_error(err)?;
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("field is immutable"), "{message}");
    let unchanged = jobs.get("flux-web").await?;
    assert_eq!(
        unchanged.metadata.resource_version,
        reverted.metadata.resource_version
    );
    // A dry-run delete leaves it in place.
    jobs.delete(
        "flux-web",
        &DeleteParams {
            dry_run: true,
            ..DeleteParams::default()
        },
    )
    .await?;
    assert!(jobs.get("flux-web").await.is_ok(), "dry-run delete deleted");
    jobs.delete("flux-web", &DeleteParams::background()).await?;
    wait_until_gone(&jobs, "flux-web").await?;
    let recreated = jobs
        .patch(
            "flux-web",
            &flux_apply(),
            &Patch::Apply(applied_job(2, "adhoc")),
        )
        .await?;
    assert_ne!(recreated.metadata.uid, unchanged.metadata.uid);

    // 6. Pruning: a background delete, then polling GET until it is a 404.
    jobs.delete("flux-web", &DeleteParams::background()).await?;
    wait_until_gone(&jobs, "flux-web").await
}

/// Polls GET until it answers 404, as Flux's pruning wait does.
async fn wait_until_gone(jobs: &Api<Job>, name: &str) -> Result<()> {
    tokio::time::timeout(WAIT, async {
        loop {
            match jobs.get(name).await {
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e) => return Err(anyhow::Error::from(e)),
                Ok(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .context("still there")?
}

/// Argo CD's cluster cache: every resource discovery lists with the list
/// and watch verbs is listed across namespaces in pages of 500, then
/// watched from the list's resourceVersion.
pub async fn argo_cd_lists_every_resource_in_pages_and_watches_from_there(
    ts: &TestServer,
) -> Result<()> {
    // More tasks than one page, in two namespaces.
    for ns in ["argo-a", "argo-b"] {
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ts.client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    }
    let total = 620;
    for i in 0..total {
        let ns = if i % 2 == 0 { "argo-a" } else { "argo-b" };
        let tasks: Api<Task> = Api::namespaced(ts.client.clone(), ns);
        let t: Task = serde_json::from_value(json!({
            "metadata": {"name": format!("t{i:04}"), "namespace": ns},
            "spec": {"job": "argo", "role": "analytics", "instanceId": i, "tier": "preemptible",
                     "priority": 0, "resources": {"cpus": "100m", "memory": "64Mi"},
                     "container": {"image": "docker.io/library/busybox:1.36"}}
        }))?;
        tasks.create(&PostParams::default(), &t).await?;
    }

    let discovery = kube::Discovery::new(ts.client.clone()).run().await?;
    let mut resources = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::WATCH) {
                resources.push(ar);
            }
        }
    }
    // Each resource is synced at once, as Argo CD's cache does.
    let syncs = resources.iter().map(|ar| async move {
        let api: Api<DynamicObject> = Api::all_with(ts.client.clone(), ar);
        let (items, rv) = paged_list(&api).await?;
        // The watch from the list's resourceVersion opens and runs to its
        // timeout without an error (no 410).
        let mut stream = api
            .watch(&WatchParams::default().timeout(1), &rv)
            .await?
            .boxed();
        while let Some(ev) = tokio::time::timeout(WAIT, stream.next())
            .await
            .context("watch did not end at its timeout")?
        {
            if let WatchEvent::Error(e) = ev? {
                bail!("{}: watch from {rv}: {e:?}", ar.kind);
            }
        }
        anyhow::Ok((ar.kind.clone(), items, rv))
    });
    let mut synced = Vec::new();
    let mut task_rv = None;
    for r in futures::future::join_all(syncs).await {
        let (kind, items, rv) = r?;
        if kind == "Task" {
            assert_eq!(items, total, "every task, across pages and namespaces");
            task_rv = Some(rv);
        }
        synced.push(kind);
    }
    for want in ["Job", "Task", "Node", "Namespace", "ConfigMap", "Lease"] {
        assert!(synced.iter().any(|k| k == want), "{want} not in {synced:?}");
    }

    // A change after the list reaches a watch from the list's version.
    let rv = task_rv.context("tasks not discovered")?;
    let ar = resources
        .iter()
        .find(|r| r.kind == "Task")
        .context("tasks not discovered")?;
    let api: Api<DynamicObject> = Api::all_with(ts.client.clone(), ar);
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await?
        .boxed();
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "argo-b");
    tasks.delete("t0001", &DeleteParams::foreground()).await?;
    loop {
        let ev = tokio::time::timeout(WAIT, stream.next())
            .await
            .context("no event")?
            .context("watch ended")??;
        match ev {
            WatchEvent::Deleted(o) if o.metadata.name.as_deref() == Some("t0001") => break,
            WatchEvent::Error(e) => bail!("{e:?}"),
            _ => {}
        }
    }
    Ok(())
}

/// Lists `api` across namespaces in pages of 500, as Argo CD's pager does;
/// returns the item count and the first page's resourceVersion.
async fn paged_list(api: &Api<DynamicObject>) -> Result<(usize, String)> {
    let mut params = ListParams::default().limit(500);
    let mut count = 0;
    let mut first_rv = None;
    loop {
        let page = api.list(&params).await?;
        count += page.items.len();
        first_rv.get_or_insert(page.metadata.resource_version.clone().unwrap_or_default());
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let rv = first_rv.unwrap_or_default();
    anyhow::ensure!(!rv.is_empty(), "a list without a resourceVersion");
    Ok((count, rv))
}
