//! What stock clients see: discovery, core kinds, a kube-runtime controller.

use super::*;

pub async fn discovery_finds_every_kind(ts: &TestServer) -> Result<()> {
    let discovery = kube::Discovery::new(ts.client.clone()).run().await?;
    let mut kinds = Vec::new();
    for group in discovery.groups() {
        for (ar, _) in group.recommended_resources() {
            kinds.push(format!("{}/{}", ar.group, ar.kind));
        }
    }
    for want in [
        "corral.dev/Job",
        "corral.dev/Task",
        "corral.dev/Role",
        "corral.dev/Quota",
        "corral.dev/Reservation",
        "corral.dev/Node",
        "/ConfigMap",
        "/Namespace",
        "coordination.k8s.io/Lease",
        "events.k8s.io/Event",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }
    Ok(())
}

pub async fn core_kinds_work_for_clients(ts: &TestServer) -> Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c1"}, "data": {"a": "1", "b": "2"}}))?;
    let created = cms.create(&PostParams::default(), &cm).await?;
    // Built-in kinds have no generation, in Kubernetes as here.
    assert_eq!(created.metadata.generation, None);
    let patched = cms
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"a": "10", "b": null}})),
        )
        .await?;
    assert_eq!(
        patched
            .data
            .unwrap_or_default()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("a".to_string(), "10".to_string())]
    );
    let listed: Vec<ConfigMap> = cms.list(&ListParams::default()).await?.items;
    assert_eq!(listed.len(), 1);
    Ok(())
}

/// Secrets, ConfigMaps and Namespaces are stored as kube-apiserver stores
/// them: `stringData` folds into `data`, a Secret's type defaults to
/// `Opaque` and stays, a typed Secret needs its keys, an immutable
/// ConfigMap keeps its data, and a Namespace is labelled with its name.
pub async fn core_kinds_follow_their_kubernetes_rules(ts: &TestServer) -> Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
    let secrets: Api<Secret> = Api::namespaced(ts.client.clone(), "default");
    let created = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "creds"},
                "data": {"user": "b3RoZXI=", "keep": "aw=="},
                "stringData": {"user": "admin"}}))?,
        )
        .await?;
    for s in [created, secrets.get("creds").await?] {
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.string_data, None);
        let data = s.data.unwrap_or_default();
        let text = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        assert_eq!(
            (text("user"), text("keep")),
            (Some("admin".into()), Some("k".into()))
        );
    }
    let retyped = secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(json!({"type": "kubernetes.io/tls"})),
        )
        .await
        .expect_err("a secret's type is immutable");
    let (code, _, message) = api_error(retyped)?;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("type: Invalid value: \"kubernetes.io/tls\": field is immutable"),
        "{message}"
    );

    let tls: Secret = serde_json::from_value(json!({"metadata": {"name": "tls"},
        "type": "kubernetes.io/tls", "data": {"tls.crt": "Yw=="}}))?;
    let (code, reason, message) = api_error(
        secrets
            .create(&PostParams::default(), &tls)
            .await
            .expect_err("no key"),
    )?;
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    assert!(
        message.contains("data[tls.key]: Required value"),
        "{message}"
    );
    assert!(secrets.get_opt("tls").await?.is_none());

    let cms: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "frozen"}, "immutable": true,
            "data": {"a": "1"}}))?,
    )
    .await?;
    for change in [json!({"data": {"a": "2"}}), json!({"immutable": false})] {
        let (code, _, message) = api_error(
            cms.patch("frozen", &PatchParams::default(), &Patch::Merge(&change))
                .await
                .expect_err("immutable"),
        )?;
        assert_eq!(code, 422, "{message}");
        assert!(
            message.contains("field is immutable when `immutable` is set"),
            "{message}"
        );
    }
    // Its metadata still changes.
    cms.patch(
        "frozen",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await?;
    assert_eq!(cms.get("frozen").await?.data.unwrap_or_default()["a"], "1");

    let nss: Api<Namespace> = Api::all(ts.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "labelled"}}))?,
    )
    .await?;
    let found = nss
        .list(&ListParams::default().labels("kubernetes.io/metadata.name=labelled"))
        .await?
        .items;
    assert_eq!(found.len(), 1);
    let ns = &found[0];
    assert_eq!(
        ns.spec.as_ref().and_then(|s| s.finalizers.clone()),
        Some(vec!["kubernetes".to_string()])
    );
    Ok(())
}

/// events.k8s.io/v1 serves the same events as core/v1: what kube-runtime's
/// `Recorder` publishes (a create, then a merge patch of its series) reads
/// as a core Event, a core Event reads through events.k8s.io/v1, and a
/// watch of either sees the other's writes.
pub async fn events_are_one_store_seen_through_both_apis(ts: &TestServer) -> Result<()> {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use k8s_openapi::api::events::v1::Event as EventV1;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let core: Api<CoreEvent> = Api::namespaced(ts.client.clone(), "default");
    let v1: Api<EventV1> = Api::namespaced(ts.client.clone(), "default");
    let mut changes = v1
        .watch(&kube::api::WatchParams::default(), "0")
        .await?
        .boxed();

    let recorder = Recorder::new(
        ts.client.clone(),
        Reporter {
            controller: "example.com/operator".into(),
            instance: Some("operator-0".into()),
        },
    );
    let job = ObjectReference {
        api_version: Some("corral.dev/v1alpha1".into()),
        kind: Some("Job".into()),
        name: Some("reported".into()),
        namespace: Some("default".into()),
        uid: Some("u-1".into()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("reconciled".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &job).await?;
    recorder.publish(&event, &job).await?;

    let about_job = ListParams::default().fields("involvedObject.name=reported");
    let seen = core.list(&about_job).await?.items;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let e = &seen[0];
    assert_eq!(
        (
            e.reason.as_deref(),
            e.message.as_deref(),
            e.type_.as_deref()
        ),
        (Some("Synced"), Some("reconciled"), Some("Normal"))
    );
    assert_eq!(
        e.reporting_component.as_deref(),
        Some("example.com/operator")
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(Some(2)));
    // The same object through events.k8s.io/v1, selected by its own names.
    let through_v1 = v1
        .list(
            &ListParams::default()
                .fields("regarding.name=reported,reportingController=example.com/operator"),
        )
        .await?
        .items;
    assert_eq!(through_v1.len(), 1);
    assert_eq!(through_v1[0].note.as_deref(), Some("reconciled"));
    assert_eq!(through_v1[0].metadata.uid, e.metadata.uid);

    // A core Event (client-go's legacy recorder) reads through events.k8s.io/v1.
    let legacy: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "legacy.1"},
        "involvedObject": {"kind": "Task", "name": "t-0", "namespace": "default"},
        "reason": "Killed", "message": "preempted", "type": "Warning", "count": 1,
        "source": {"component": "corral-preemption"}}))?;
    core.create(&PostParams::default(), &legacy).await?;
    let read = v1.get("legacy.1").await?;
    assert_eq!(read.note.as_deref(), Some("preempted"));
    assert_eq!(read.regarding.and_then(|r| r.name).as_deref(), Some("t-0"));
    assert_eq!(read.deprecated_count, Some(1));

    // The watch saw the recorder's create and patch and the core create.
    let mut names = Vec::new();
    while names.len() < 3 {
        match tokio::time::timeout(WAIT, changes.try_next()).await?? {
            Some(kube::api::WatchEvent::Added(e) | kube::api::WatchEvent::Modified(e)) => {
                names.push(e.note.unwrap_or_default());
            }
            Some(other) => bail!("unexpected event {other:?}"),
            None => bail!("the watch ended"),
        }
    }
    assert_eq!(names, ["reconciled", "reconciled", "preempted"]);

    // events.k8s.io/v1's own rules hold for what is written through it.
    let bare: EventV1 = serde_json::from_value(json!({"metadata": {"name": "bare"}, "note": "x"}))?;
    let (code, reason, message) = api_error(
        v1.create(&PostParams::default(), &bare)
            .await
            .expect_err("invalid"),
    )?;
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
    assert!(
        message.starts_with("Event.events.k8s.io \"bare\" is invalid"),
        "{message}"
    );
    assert!(
        message.contains("reportingController: Required value"),
        "{message}"
    );
    assert!(core.get_opt("bare").await?.is_none());
    let gone = v1.get("missing").await.expect_err("absent");
    assert!(
        api_error(gone)?
            .2
            .contains("events.events.k8s.io \"missing\" not found")
    );
    v1.delete("legacy.1", &DeleteParams::default()).await?;
    assert!(core.get_opt("legacy.1").await?.is_none());
    Ok(())
}

/// Metadata-only reads, as client-go's metadata client, controller-runtime's
/// `OnlyMetadata` watches and kube-rs' metadata API ask for them with the
/// Accept header: `PartialObjectMetadata` objects, lists and watch events,
/// bookmarks included; an Accept header naming nothing the server produces
/// is a 406.
pub async fn metadata_only_reads_carry_only_metadata(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let mut labelled = job("meta-only", 2)?;
    labelled.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
    jobs.create(&PostParams::default(), &labelled).await?;

    let one = jobs.get_metadata("meta-only").await?;
    assert_eq!(
        one.types
            .as_ref()
            .map(|t| (t.api_version.as_str(), t.kind.as_str())),
        Some(("meta.k8s.io/v1", "PartialObjectMetadata"))
    );
    assert_eq!(one.metadata.labels.unwrap_or_default()["team"], "a");
    let listed = jobs
        .list_metadata(&ListParams::default().labels("team=a"))
        .await?;
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());

    // What a client-go metadata informer sends and reads.
    let path = "/apis/corral.dev/v1alpha1/namespaces/default/jobs";
    let accept = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let req = http::Request::get(path)
        .header("accept", accept)
        .body(Vec::new())?;
    let list: Value = serde_json::from_str(&ts.client.request_text(req).await?)?;
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(list["items"][0].get("spec"), None);
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("no version")?
        .to_owned();

    let req = http::Request::get(format!(
        "{path}?watch=true&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion={rv}"
    ))
    .header("accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
    .body(Vec::new())?;
    let mut lines = ts.client.request_events::<Value>(req).await?.boxed();
    match tokio::time::timeout(WAIT, lines.try_next()).await?? {
        Some(kube::api::WatchEvent::Added(o)) => {
            assert_eq!(o["kind"], "PartialObjectMetadata");
            assert_eq!(o.get("spec"), None);
        }
        other => bail!("expected the job's metadata, got {other:?}"),
    }
    match tokio::time::timeout(WAIT, lines.try_next()).await?? {
        Some(kube::api::WatchEvent::Bookmark(b)) => {
            assert_eq!(b.types.kind, "PartialObjectMetadata");
        }
        other => bail!("expected the initial-events-end bookmark, got {other:?}"),
    }

    let req = http::Request::get(path)
        .header("accept", "text/html")
        .body(Vec::new())?;
    let (code, reason, message) = api_error(
        ts.client
            .request_text(req)
            .await
            .expect_err("nothing acceptable"),
    )?;
    assert_eq!((code, reason.as_str()), (406, "NotAcceptable"), "{message}");
    Ok(())
}

/// Strategic merge patches follow each list's declared type: owner
/// references merge by uid, status conditions by type, other lists are
/// replaced; a malformed patch is a 400 and changes nothing.
pub async fn strategic_merge_patches_follow_list_types(ts: &TestServer) -> Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    let cms: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "default");
    let owner =
        |uid: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": uid, "uid": uid});
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owned",
        "ownerReferences": [owner("u1"), owner("u2")]}}))?;
    cms.create(&PostParams::default(), &cm).await?;
    let patched = cms
        .patch(
            "owned",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"ownerReferences": [
                {"uid": "u1", "$patch": "delete"},
                {"uid": "u2", "controller": true},
                owner("u3")]}})),
        )
        .await?;
    let owners: Vec<(String, Option<bool>)> = patched
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|o| (o.uid, o.controller))
        .collect();
    assert_eq!(
        owners,
        [("u2".to_string(), Some(true)), ("u3".to_string(), None)]
    );

    let nss: Api<Namespace> = Api::all(ts.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "smp"}}))?,
    )
    .await?;
    let condition = |t: &str, s: &str| json!({"type": t, "status": s});
    for conditions in [
        json!([condition("A", "True"), condition("B", "False")]),
        json!([condition("B", "True")]),
    ] {
        nss.patch_status(
            "smp",
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": conditions}})),
        )
        .await?;
    }
    let ns = nss.get("smp").await?;
    let conditions: Vec<(String, String)> = ns
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert_eq!(
        conditions,
        [
            ("A".to_string(), "True".to_string()),
            ("B".to_string(), "True".to_string())
        ]
    );

    let before = cms.get("owned").await?;
    let (code, reason, message) = api_error(
        cms.patch(
            "owned",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"ownerReferences": [{"name": "no-uid"}]}})),
        )
        .await
        .err()
        .context("a map-list item without its key was accepted")?,
    )?;
    assert_eq!((code, reason.as_str()), (400, "BadRequest"), "{message}");
    assert!(message.contains("metadata.ownerReferences"), "{message}");
    let after = cms.get("owned").await?;
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    Ok(())
}

/// A kube-runtime Controller reconciles against the server: it sees every Job
/// and writes its status through the status subresource.
#[tokio::test]
async fn a_kube_runtime_controller_reconciles_against_the_server() -> Result<()> {
    use kube::runtime::controller::{Action, Controller};

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct ReconcileError(String);

    let backend = embedded().await?;
    let ts = &backend.ts;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("c1", 1)?).await?;
    let reconcile = |job: Arc<Job>, api: Arc<Api<Job>>| async move {
        let name = job.metadata.name.clone().unwrap_or_default();
        let status =
            json!({"status": {"phase": "Active", "observedGeneration": job.metadata.generation}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .map_err(|e| ReconcileError(e.to_string()))?;
        Ok::<_, ReconcileError>(Action::await_change())
    };
    let controller = Controller::new(jobs.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(jobs.clone()),
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    jobs.create(&PostParams::default(), &job("c2", 1)?).await?;
    eventually("both jobs to be reconciled", || async {
        let list = jobs.list(&ListParams::default()).await?;
        Ok(list.items.iter().all(|j| {
            j.status.as_ref().and_then(|s| s.observed_generation) == j.metadata.generation
        }))
    })
    .await?;
    // A spec change is noticed and reconciled again.
    jobs.patch(
        "c1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"instances": 2}})),
    )
    .await?;
    eventually("the change to be reconciled", || async {
        let j = jobs.get("c1").await?;
        Ok(j.metadata.generation == Some(2)
            && j.status.and_then(|s| s.observed_generation) == Some(2))
    })
    .await?;
    handle.abort();
    Ok(())
}
