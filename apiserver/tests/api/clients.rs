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
