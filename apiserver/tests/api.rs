//! The API server in-process on 127.0.0.1:0, with TLS and a bearer token,
//! driven by kube-rs, over the embedded store and over a real etcd.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use corral_api::{Job, Task};
use corral_apiserver::pki::{Pki, Tokens};
use corral_apiserver::{Api as Server, Authn, Registry, RunningServer};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    client: Client,
    url: String,
    pki: Pki,
    _server: RunningServer,
    _dir: tempfile::TempDir,
    _etcd: Option<corral_store::testing::EtcdServer>,
}

async fn client_for(kubeconfig: &str) -> Result<Client> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
    let config =
        Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn start(
    store: Arc<dyn corral_store::Store>,
    etcd: Option<corral_store::testing::EtcdServer>,
) -> Result<TestServer> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::load_or_create(&dir.path().join("pki"), &[])?;
    let tokens = Tokens::load(&pki.token_file)?;
    let api = Server::new(store, Registry::standard());
    corral_apiserver::rest::ensure_default_namespaces(&api).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = corral_apiserver::serve(
        api,
        listener,
        Some(pki.server_config()?),
        Authn::Required(Arc::new(tokens)),
    )?;
    let url = format!("https://{}", server.local_addr);
    let client = client_for(&pki.kubeconfig(&url)).await?;
    Ok(TestServer {
        client,
        url,
        pki,
        _server: server,
        _dir: dir,
        _etcd: etcd,
    })
}

async fn embedded() -> Result<TestServer> {
    start(
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        None,
    )
    .await
}

async fn etcd() -> Result<TestServer> {
    let server =
        corral_store::testing::EtcdServer::start_with(corral_store::testing::Durability::NoFsync)?;
    let store = corral_store::etcd::EtcdStore::connect(&[server.endpoint().to_owned()]).await?;
    start(Arc::new(store), Some(server)).await
}

fn job(name: &str, instances: u32) -> Result<Job> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "labels": {"team": "analytics"}},
        "spec": {"role": "analytics", "environment": "devel", "kind": "adhoc", "instances": instances,
                 "resources": {"cpus": 1, "memory": "5120Mi", "disk": "5120Mi"},
                 "container": {"image": "docker.io/library/sparkie:image"}}
    }))?)
}

fn task(name: &str, node: Option<&str>, owner: Option<(&str, &str)>) -> Result<Task> {
    let mut v = json!({
        "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"job": "j", "role": "analytics", "instanceId": 0,
                 "resources": {"cpus": "500m", "memory": "1Gi"},
                 "container": {"image": "busybox"}}
    });
    if let Some(n) = node {
        v["spec"]["nodeName"] = json!(n);
    }
    if let Some((owner, uid)) = owner {
        v["metadata"]["ownerReferences"] = json!([{"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "name": owner, "uid": uid}]);
    }
    Ok(serde_json::from_value(v)?)
}

fn api_error(e: kube::Error) -> Result<(u16, String, String)> {
    match e {
        kube::Error::Api(s) => Ok((s.code, s.reason.clone(), s.message.clone())),
        other => bail!("expected an API error, got {other}"),
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod cases {
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
        let (code, _, message) =
            api_error(jobs.get("sparkie").await.err().context("still there")?)?;
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
        let req =
            http::Request::get("/apis/corral.dev/v1alpha1/tasks?fieldSelector=spec.bogus%3Dx")
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

    pub async fn bad_requests_get_the_right_status(ts: &TestServer) -> Result<()> {
        let send = |req: http::Request<Vec<u8>>| {
            let client = ts.client.clone();
            async move { api_error(client.request_text(req).await.err().context("accepted")?) }
        };
        let huge = vec![b' '; corral_apiserver::server::MAX_BODY_BYTES + 10];
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
        nss.delete("doomed", &DeleteParams::default()).await?;
        assert!(jobs.get_opt("inside").await?.is_none());
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

    pub async fn requests_without_credentials_are_unauthorized(ts: &TestServer) -> Result<()> {
        let kubeconfig = ts
            .pki
            .kubeconfig(&ts.url)
            .replace(&ts.pki.admin_token, "not-a-token");
        let client = client_for(&kubeconfig).await?;
        let jobs: Api<Job> = Api::namespaced(client, "default");
        let (code, reason, _) = api_error(
            jobs.list(&ListParams::default())
                .await
                .err()
                .context("listed")?,
        )?;
        assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
        Ok(())
    }

    pub async fn client_certificates_authenticate(ts: &TestServer) -> Result<()> {
        let client = client_for(&ts.pki.kubeconfig_with_client_cert(&ts.url)).await?;
        let jobs: Api<Job> = Api::namespaced(client, "default");
        jobs.create(&PostParams::default(), &job("by-cert", 1)?)
            .await?;
        assert_eq!(jobs.list(&ListParams::default()).await?.items.len(), 1);
        Ok(())
    }

    pub async fn core_kinds_work_for_clients(ts: &TestServer) -> Result<()> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let cms: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "default");
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "c1"}, "data": {"a": "1", "b": "2"}}),
        )?;
        cms.create(&PostParams::default(), &cm).await?;
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
}

macro_rules! suite {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() -> Result<()> {
                    let ts = super::$backend().await?;
                    cases::$name(&ts).await
                }
            )*
        }
    };
}

suite!(embedded:
    discovery_finds_every_kind,
    jobs_are_created_read_listed_patched_and_deleted,
    invalid_objects_are_rejected_with_field_paths,
    a_stale_resource_version_is_a_conflict_and_writes_nothing,
    generation_follows_the_spec_and_no_op_writes_change_nothing,
    finalizers_hold_deletion_until_removed,
    watch_sees_additions_changes_and_deletions,
    tasks_are_selected_by_node_name,
    server_side_apply_creates_then_updates,
    deleting_an_owner_collects_its_dependents,
    foreground_deletion_waits_for_dependents,
    bad_requests_get_the_right_status,
    deleting_a_namespace_removes_its_contents,
    requests_without_credentials_are_unauthorized,
    client_certificates_authenticate,
    core_kinds_work_for_clients,
);

suite!(etcd:
    jobs_are_created_read_listed_patched_and_deleted,
    a_stale_resource_version_is_a_conflict_and_writes_nothing,
    generation_follows_the_spec_and_no_op_writes_change_nothing,
    watch_sees_additions_changes_and_deletions,
    tasks_are_selected_by_node_name,
    deleting_an_owner_collects_its_dependents,
);

/// Authorization is its own layer: a refusing authorizer turns writes into 403s.
#[tokio::test]
async fn an_authorizer_can_refuse_requests() -> Result<()> {
    #[derive(Debug)]
    struct ReadOnly;
    impl corral_apiserver::Authorizer for ReadOnly {
        fn allows(
            &self,
            _: &corral_apiserver::auth::User,
            a: &corral_apiserver::auth::Attributes,
        ) -> bool {
            matches!(a.verb, "get" | "list" | "watch")
        }
    }
    let dir = tempfile::tempdir()?;
    let pki = Pki::load_or_create(&dir.path().join("pki"), &[])?;
    let api = Server::new(
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?),
        Registry::standard(),
    );
    corral_apiserver::rest::ensure_default_namespaces(&api).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = corral_apiserver::serve_with_authorizer(
        api,
        listener,
        Some(pki.server_config()?),
        Authn::Required(Arc::new(Tokens::load(&pki.token_file)?)),
        Arc::new(ReadOnly),
    )?;
    let client = client_for(&pki.kubeconfig(&format!("https://{}", server.local_addr))).await?;
    let jobs: Api<Job> = Api::namespaced(client, "default");
    assert!(jobs.list(&ListParams::default()).await?.items.is_empty());
    let (code, reason, message) = api_error(
        jobs.create(&PostParams::default(), &job("nope", 1)?)
            .await
            .err()
            .context("created")?,
    )?;
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert!(
        message.contains("User \"corral-admin\" cannot create resource \"jobs\""),
        "{message}"
    );
    server.shutdown().await;
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

    let ts = embedded().await?;
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
