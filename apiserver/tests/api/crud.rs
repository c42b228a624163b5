//! Create, read, update, patch and apply: validation, conflicts,
//! generation, finalizers and the status of bad requests.

use super::*;

pub async fn jobs_are_created_read_listed_patched_and_deleted(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let created = jobs
        .create(&PostParams::default(), &job("sparkie", 1)?)
        .await?;
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    let got = jobs.get("sparkie").await?;
    assert_eq!(got.spec.instances, 1);
    assert_eq!(
        got.spec.tier,
        corral_api::Tier::Preemptible,
        "defaults are filled in"
    );
    let err = jobs
        .create(&PostParams::default(), &job("sparkie", 1)?)
        .await
        .err()
        .context("created twice")?;
    let (code, reason, message) = api_error(err)?;
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(message, "jobs.corral.dev \"sparkie\" already exists");

    jobs.create(&PostParams::default(), &job("other", 2)?)
        .await?;
    let listed = jobs
        .list(&ListParams::default().labels("team=analytics"))
        .await?;
    assert_eq!(listed.items.len(), 2);
    let paged = jobs.list(&ListParams::default().limit(1)).await?;
    assert_eq!(paged.items.len(), 1);
    let token = paged
        .metadata
        .continue_
        .clone()
        .context("no continue token")?;
    let rest = jobs
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await?;
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].metadata.name, paged.items[0].metadata.name);

    let patched = jobs
        .patch(
            "sparkie",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"instances": 3}})),
        )
        .await?;
    assert_eq!(patched.spec.instances, 3);
    assert_eq!(patched.metadata.generation, Some(2));
    let json_patched = jobs
        .patch(
            "sparkie",
            &PatchParams::default(),
            &Patch::<Value>::Json(serde_json::from_value(
                json!([{"op": "replace", "path": "/spec/priority", "value": 5}]),
            )?),
        )
        .await?;
    assert_eq!(json_patched.spec.priority, 5);

    jobs.delete("sparkie", &DeleteParams::default()).await?;
    let (code, _, message) = api_error(jobs.get("sparkie").await.err().context("still there")?)?;
    assert_eq!(code, 404);
    assert_eq!(message, "jobs.corral.dev \"sparkie\" not found");
    Ok(())
}

pub async fn invalid_objects_are_rejected_with_field_paths(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let mut bad = job("bad", 1)?;
    bad.spec
        .resources
        .0
        .insert("cpus".into(), corral_api::Quantity::from_units(0));
    bad.spec.container.image = String::new();
    let (code, reason, message) = api_error(
        jobs.create(&PostParams::default(), &bad)
            .await
            .err()
            .context("accepted")?,
    )?;
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.starts_with("Job.corral.dev \"bad\" is invalid: ["),
        "{message}"
    );
    assert!(
        message.contains("spec.resources.cpus: Invalid value: 0: must be greater than zero"),
        "{message}"
    );
    assert!(
        message.contains("spec.container.image: Required value"),
        "{message}"
    );

    let created = jobs
        .create(&PostParams::default(), &job("fixed", 1)?)
        .await?;
    let mut changed = created.clone();
    changed.spec.kind = corral_api::JobKind::Service;
    let (code, _, message) = api_error(
        jobs.replace("fixed", &PostParams::default(), &changed)
            .await
            .err()
            .context("kind changed")?,
    )?;
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.kind: Invalid value: \"service\": field is immutable")
            || message.contains("field is immutable"),
        "{message}"
    );

    // A Job names a Role that exists (its role is immutable after).
    let mut orphan = job("orphan", 1)?;
    orphan.spec.role = "nobody".into();
    let (code, _, message) = api_error(
        jobs.create(&PostParams::default(), &orphan)
            .await
            .err()
            .context("a job on a missing role was accepted")?,
    )?;
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.role: Not found: \"nobody\""),
        "{message}"
    );
    // So does a Task created directly (one of a Job's was admitted with it).
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let mut lone = task("lone", None, None)?;
    lone.spec.role = "nobody".into();
    let (code, _, message) = api_error(
        tasks
            .create(&PostParams::default(), &lone)
            .await
            .err()
            .context("a task on a missing role was accepted")?,
    )?;
    assert_eq!(code, 422);
    assert!(message.contains("spec.role"), "{message}");

    // Strict field validation, as kubectl asks for it.
    let body = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "typo"},
        "spec": {"role": "analytics", "environment": "devel", "kind": "adhoc", "instnaces": 2,
                 "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"}}});
    let req = http::Request::post(
        "/apis/corral.dev/v1alpha1/namespaces/default/jobs?fieldValidation=Strict",
    )
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body)?)?;
    let (code, reason, message) = api_error(
        ts.client
            .request_text(req)
            .await
            .err()
            .context("accepted")?,
    )?;
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        message,
        "strict decoding error: unknown field \"spec.instnaces\""
    );

    let req = http::Request::post("/apis/corral.dev/v1alpha1/namespaces/default/jobs")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())?;
    let (code, reason, _) = api_error(
        ts.client
            .request_text(req)
            .await
            .err()
            .context("accepted")?,
    )?;
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    let req = http::Request::patch("/apis/corral.dev/v1alpha1/namespaces/default/jobs/fixed")
        .header("content-type", "application/strategic-merge-patch+json")
        .body(b"{}".to_vec())?;
    let (code, _, _) = api_error(
        ts.client
            .request_text(req)
            .await
            .err()
            .context("accepted")?,
    )?;
    assert_eq!(
        code, 415,
        "strategic merge patch is not for custom resources"
    );
    let req = http::Request::get(
        "/apis/corral.dev/v1alpha1/namespaces/default/jobs?labelSelector=a%20in%20(",
    )
    .body(Vec::new())?;
    let (code, _, _) = api_error(
        ts.client
            .request_text(req)
            .await
            .err()
            .context("accepted")?,
    )?;
    assert_eq!(code, 400);
    Ok(())
}

pub async fn a_stale_resource_version_is_a_conflict_and_writes_nothing(
    ts: &TestServer,
) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let v1 = jobs.create(&PostParams::default(), &job("cas", 1)?).await?;
    let mut a = v1.clone();
    a.spec.instances = 2;
    jobs.replace("cas", &PostParams::default(), &a).await?;
    let mut b = v1.clone();
    b.spec.instances = 5;
    let (code, reason, message) = api_error(
        jobs.replace("cas", &PostParams::default(), &b)
            .await
            .err()
            .context("stale write won")?,
    )?;
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );
    assert_eq!(jobs.get("cas").await?.spec.instances, 2);
    Ok(())
}

pub async fn generation_follows_the_spec_and_no_op_writes_change_nothing(
    ts: &TestServer,
) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let v1 = jobs.create(&PostParams::default(), &job("gen", 1)?).await?;
    let same = jobs.replace("gen", &PostParams::default(), &v1).await?;
    assert_eq!(
        same.metadata.resource_version, v1.metadata.resource_version,
        "a no-op write bumped the resourceVersion"
    );
    let labelled = jobs
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await?;
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "metadata changes keep the generation"
    );
    assert_ne!(
        labelled.metadata.resource_version,
        v1.metadata.resource_version
    );
    let status = json!({"status": {"phase": "Active", "observedGeneration": 1}});
    let with_status = jobs
        .patch_status("gen", &PatchParams::default(), &Patch::Merge(status))
        .await?;
    assert_eq!(
        with_status.metadata.generation,
        Some(1),
        "status changes keep the generation"
    );
    assert_eq!(
        with_status
            .status
            .as_ref()
            .and_then(|s| s.observed_generation),
        Some(1)
    );
    // Status sent to the main resource is ignored.
    let mut main = jobs.get("gen").await?;
    main.status = None;
    main.spec.instances = 4;
    let replaced = jobs.replace("gen", &PostParams::default(), &main).await?;
    assert_eq!(replaced.metadata.generation, Some(2));
    assert!(
        replaced.status.is_some(),
        "a main-resource write dropped status"
    );
    Ok(())
}

pub async fn finalizers_hold_deletion_until_removed(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let mut j = job("fin", 1)?;
    j.metadata.finalizers = Some(vec!["corral.dev/test".into()]);
    jobs.create(&PostParams::default(), &j).await?;
    jobs.delete("fin", &DeleteParams::default()).await?;
    let marked = jobs.get("fin").await?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    jobs.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    let (code, _, _) = api_error(jobs.get("fin").await.err().context("not deleted")?)?;
    assert_eq!(code, 404);
    Ok(())
}

pub async fn server_side_apply_creates_then_updates(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let pp = PatchParams::apply("corral-test");
    let applied = serde_json::to_value(job("ssa", 1)?)?;
    let created = jobs.patch("ssa", &pp, &Patch::Apply(&applied)).await?;
    assert_eq!(created.spec.instances, 1);
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, vec!["corral-test"]);
    let mut again = applied.clone();
    again["spec"]["instances"] = json!(4);
    let updated = jobs.patch("ssa", &pp, &Patch::Apply(&again)).await?;
    assert_eq!(updated.spec.instances, 4);
    let req = http::Request::patch("/apis/corral.dev/v1alpha1/namespaces/default/jobs/ssa")
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&again)?)?;
    let (code, _, message) = api_error(
        ts.client
            .request_text(req)
            .await
            .err()
            .context("accepted")?,
    )?;
    assert_eq!(code, 422);
    assert!(
        message.contains("fieldManager: Required value: is required for apply patch"),
        "{message}"
    );
    Ok(())
}

pub async fn bad_requests_get_the_right_status(ts: &TestServer) -> Result<()> {
    let send = |req: http::Request<Vec<u8>>| {
        let client = ts.client.clone();
        async move { api_error(client.request_text(req).await.err().context("accepted")?) }
    };
    let huge = vec![b' '; corral_apiserver::transport::server::MAX_BODY_BYTES + 10];
    let (code, reason, _) = send(
        http::Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", "application/json")
            .body(huge)?,
    )
    .await?;
    assert_eq!((code, reason.as_str()), (413, "RequestEntityTooLarge"));
    let (code, _, message) = send(
        http::Request::get("/apis/corral.dev/v1alpha1/namespaces/default/widgets")
            .body(Vec::new())?,
    )
    .await?;
    assert_eq!(
        (code, message.as_str()),
        (404, "the server could not find the requested resource")
    );
    let (code, _, _) =
        send(http::Request::get("/apis/corral.dev/v9/jobs").body(Vec::new())?).await?;
    assert_eq!(code, 404);
    let wrong_kind = serde_json::to_vec(
        &json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task", "metadata": {"name": "x"}}),
    )?;
    let (code, _, message) = send(
        http::Request::post("/apis/corral.dev/v1alpha1/namespaces/default/jobs")
            .header("content-type", "application/json")
            .body(wrong_kind)?,
    )
    .await?;
    assert_eq!(code, 400, "{message}");
    let (code, _, _) = send(
        http::Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", "application/yaml")
            .body(b"data: [unclosed".to_vec())?,
    )
    .await?;
    assert_eq!(code, 400);
    let (code, _, _) = send(
        http::Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", "text/plain")
            .body(b"hi".to_vec())?,
    )
    .await?;
    assert_eq!(code, 415);
    let (code, _, _) = send(
        http::Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", "application/vnd.kubernetes.protobuf")
            .body(b"k8s\0\xff".to_vec())?,
    )
    .await?;
    assert_eq!(code, 400);
    let bad_patch = b"[{\"op\":\"explode\"}]".to_vec();
    jobs_fixture(ts).await?;
    let (code, _, _) = send(
        http::Request::patch("/apis/corral.dev/v1alpha1/namespaces/default/jobs/fixture")
            .header("content-type", "application/json-patch+json")
            .body(bad_patch)?,
    )
    .await?;
    assert_eq!(code, 400);
    Ok(())
}

async fn jobs_fixture(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("fixture", 1)?)
        .await?;
    Ok(())
}

/// A Job's `/scale` subresource: what `kubectl scale` and autoscalers use.
pub async fn jobs_scale_through_their_scale_subresource(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("scaled", 1)?)
        .await?;
    let scale = jobs.get_scale("scaled").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    let scaled = jobs
        .patch_scale(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await?;
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(4));
    let job = jobs.get("scaled").await?;
    assert_eq!(job.spec.instances, 4);
    assert_eq!(job.metadata.generation, Some(2), "a scale is a spec change");
    assert_eq!(
        scaled.metadata.resource_version,
        job.metadata.resource_version
    );
    // A stale resourceVersion in a replaced Scale is a conflict.
    let stale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "scaled", "resourceVersion": scale.metadata.resource_version},
        "spec": {"replicas": 2}});
    let (code, _, _) = api_error(
        jobs.replace_scale(
            "scaled",
            &PostParams::default(),
            &serde_json::from_value(stale)?,
        )
        .await
        .err()
        .context("a stale scale was written")?,
    )?;
    assert_eq!(code, 409);
    let (code, _, message) = api_error(
        jobs.patch_scale(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await
        .err()
        .context("negative replicas were accepted")?,
    )?;
    assert_eq!(code, 422);
    assert!(message.contains("spec.replicas"), "{message}");
    // The Job's own rules apply to what the scale writes.
    let (code, _, message) = api_error(
        jobs.patch_scale(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": corral_api::job::MAX_INSTANCES + 1}})),
        )
        .await
        .err()
        .context("too many instances were accepted")?,
    )?;
    assert_eq!(code, 422);
    assert!(message.contains("spec.instances"), "{message}");
    assert_eq!(jobs.get("scaled").await?.spec.instances, 4);
    // Kinds without one have no scale subresource.
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let (code, _, _) = api_error(
        tasks
            .get_scale("anything")
            .await
            .err()
            .context("a task scale was served")?,
    )?;
    assert_eq!(code, 404);
    Ok(())
}

/// `resourceVersionMatch`: an Exact list is the collection as it was at
/// that version; NotOlderThan a version the store has not reached is a 504
/// that client-go recognises; misuse is a 422 naming the option.
pub async fn lists_match_resource_versions(ts: &TestServer) -> Result<()> {
    use kube::api::VersionMatch;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let first = jobs
        .create(&PostParams::default(), &job("versioned", 1)?)
        .await?;
    let at_create = first.metadata.resource_version.clone().context("rv")?;
    jobs.patch(
        "versioned",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"instances": 4}})),
    )
    .await?;
    let exact = |rv: &str| ListParams::default().at(rv).matching(VersionMatch::Exact);
    let then = jobs.list(&exact(&at_create)).await?;
    assert_eq!(
        then.metadata.resource_version.as_deref(),
        Some(at_create.as_str())
    );
    assert_eq!(
        then.items
            .iter()
            .map(|j| j.spec.instances)
            .collect::<Vec<_>>(),
        vec![1],
        "the job as it was when created"
    );
    let now = jobs.list(&ListParams::default()).await?;
    let latest = now.metadata.resource_version.clone().context("rv")?;
    assert_eq!(now.items[0].spec.instances, 4);
    let not_older = jobs
        .list(
            &ListParams::default()
                .at(&latest)
                .matching(VersionMatch::NotOlderThan),
        )
        .await?;
    assert_eq!(not_older.items[0].spec.instances, 4);

    // A version from the future (without kube-rs's retries of a 504).
    let once: Api<Job> = Api::namespaced(
        client_without_retries(&ts.pki.kubeconfig(&ts.url)).await?,
        "default",
    );
    let ahead = (latest.parse::<i64>()? + 1000).to_string();
    for params in [
        exact(&ahead),
        ListParams::default()
            .at(&ahead)
            .matching(VersionMatch::NotOlderThan),
    ] {
        let err = once
            .list(&params)
            .await
            .err()
            .context("listed the future")?;
        let (code, reason, message) = api_error(err)?;
        assert_eq!((code, reason.as_str()), (504, "Timeout"));
        assert!(
            message.starts_with("Too large resource version"),
            "{message}"
        );
    }

    // A watch cannot resume from there either (it would skip changes).
    let (code, reason, _) = api_error(
        once.watch(&kube::api::WatchParams::default(), &ahead)
            .await
            .err()
            .context("watched from the future")?,
    )?;
    assert_eq!((code, reason.as_str()), (504, "Timeout"));

    // Misuse.
    for query in [
        "resourceVersionMatch=Exact",
        "resourceVersionMatch=Exact&resourceVersion=0",
        "resourceVersionMatch=Sometime&resourceVersion=1",
    ] {
        let req = http::Request::get(format!(
            "/apis/corral.dev/v1alpha1/namespaces/default/jobs?{query}"
        ))
        .body(Vec::new())?;
        let (code, reason, message) = api_error(
            ts.client
                .request_text(req)
                .await
                .err()
                .context("misuse accepted")?,
        )?;
        assert_eq!(
            (code, reason.as_str()),
            (422, "Invalid"),
            "{query}: {message}"
        );
        assert!(message.contains("resourceVersionMatch"), "{message}");
    }
    Ok(())
}

/// A write outside `/registry/` (another program sharing the etcd) does not
/// hold consistent reads back: the watch cache never sees it, and learns
/// from the store's progress report that nothing it watches changed. Before,
/// every consistent list waited 3 s for the cache, then read the store.
pub async fn writes_outside_the_registry_do_not_hold_reads_back(ts: &TestServer) -> Result<()> {
    let cache = ts.api.cache.clone().context("no watch cache")?;
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    jobs.create(&PostParams::default(), &job("before", 1)?)
        .await?;
    let foreign = ts
        .api
        .store
        .create("/another-program/key", b"x".to_vec())
        .await?;
    // A store that reports progress moves the cache on; over one that
    // cannot (etcd before 3.4.31 and 3.5.13) the list reads the store.
    assert_eq!(
        cache.wait_for(foreign.mod_revision, WAIT).await,
        ts.api.store.reports_progress(),
        "the cache's wait for the store's revision {}",
        foreign.mod_revision
    );
    let started = std::time::Instant::now();
    let listed = jobs.list(&ListParams::default()).await?;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the list took {:?}",
        started.elapsed()
    );
    let rv: i64 = listed
        .metadata
        .resource_version
        .context("list RV")?
        .parse()?;
    assert!(rv >= foreign.mod_revision, "listed at {rv}");
    assert_eq!(listed.items.len(), 1);
    Ok(())
}

/// A Task is created with its first status in the same write: PENDING with
/// its first task event, THROTTLED when created held back, ASSIGNED when
/// created bound; a status the creator sent is not taken.
pub async fn a_task_is_created_with_its_first_status(ts: &TestServer) -> Result<()> {
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let mut sent = task("born", None, None)?;
    sent.status = Some(serde_json::from_value(
        json!({"phase": "RUNNING", "taskEvents": []}),
    )?);
    let created = tasks.create(&PostParams::default(), &sent).await?;
    let status = created.status.context("no status on create")?;
    assert_eq!(status.phase(), corral_api::TaskPhase::Pending);
    assert_eq!(status.task_events.len(), 1);
    assert_eq!(status.task_events[0].message, "created for instance 0");
    // What the create answered is what is stored, at the version it named.
    let read = tasks.get("born").await?;
    assert_eq!(
        read.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(read.status.map(|s| s.task_events.len()), Some(1));

    let mut held = task("held", None, None)?;
    held.metadata.annotations = Some(
        [(
            corral_core::jobs::THROTTLED_UNTIL_ANNOTATION.to_owned(),
            "2999-01-01T00:00:00Z".to_owned(),
        )]
        .into(),
    );
    let held = tasks.create(&PostParams::default(), &held).await?;
    let status = held.status.context("no status on create")?;
    assert_eq!(status.phase(), corral_api::TaskPhase::Throttled);
    assert!(status.explanation.is_some());

    let bound = tasks
        .create(&PostParams::default(), &task("bound", Some("n1"), None)?)
        .await?;
    let status = bound.status.context("no status on create")?;
    assert_eq!(status.phase(), corral_api::TaskPhase::Assigned);
    assert_eq!(bound.spec.node_name.as_deref(), Some("n1"));
    Ok(())
}

/// A task whose controlling owner is a Job is created only while that Job
/// exists, with the uid it names, and is not being deleted.
pub async fn a_task_is_created_only_for_a_job_that_exists(ts: &TestServer) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let owned = |name: &str, job: &str, uid: &str| -> Result<Task> {
        let mut t = task(name, None, None)?;
        t.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Job", "name": job, "uid": uid,
            "controller": true, "blockOwnerDeletion": true}))?]);
        Ok(t)
    };
    let job = jobs
        .create(&PostParams::default(), &job("owner", 1)?)
        .await?;
    let uid = job.metadata.uid.context("no uid")?;
    tasks
        .create(&PostParams::default(), &owned("owner-0-0", "owner", &uid)?)
        .await?;
    for (name, job, uid) in [
        ("gone-0-0", "gone", uid.as_str()),
        ("other-0-0", "owner", "another-uid"),
    ] {
        let (code, _, message) = api_error(
            tasks
                .create(&PostParams::default(), &owned(name, job, uid)?)
                .await
                .err()
                .context("a task for a job that is not there was created")?,
        )?;
        assert_eq!(code, 422, "{message}");
        assert!(message.contains("metadata.ownerReferences"), "{message}");
    }
    Ok(())
}
