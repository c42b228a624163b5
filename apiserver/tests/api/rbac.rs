//! RBAC enforced, with several identities: two teams bound to `edit` in
//! their own namespaces, a node's credential, and the administrator
//! (`system:masters`). Run over both stores.

use super::*;

use corral_api::Quota;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};

const USERS: &[(&str, &str, &[&str])] = &[
    ("alice-token", "alice", &["team-a"]),
    ("bob-token", "bob", &["team-b"]),
    ("node-token", "system:node:n1", &["system:nodes"]),
    ("nobody-token", "nobody", &[]),
    ("lena-token", "lena", &["team-a-admins"]),
];

/// A job in `ns` on the Corral role named like the namespace.
fn job_in(ns: &str, name: &str) -> Result<Job> {
    job_on(ns, name, ns)
}

fn job_on(ns: &str, name: &str, role: &str) -> Result<Job> {
    let mut j = job(name, 1)?;
    j.metadata.namespace = Some(ns.to_owned());
    j.spec.role = role.to_owned();
    Ok(j)
}

/// Waits for `attempt` to be allowed: a binding takes effect once the
/// authorizer has it, so 403s are retried until then; any other error ends it.
async fn once_allowed<T, F, Fut>(what: &str, mut attempt: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<kube::Result<T>>>,
{
    corral_apiserver::testing::eventually(what, || {
        let next = attempt();
        async move {
            match next.await? {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 403 => Ok(false),
                Err(e) => Err(anyhow!("{e}")),
            }
        }
    })
    .await
    .with_context(|| what.to_owned())
}

/// The refusal's code and message, or a panic naming what was allowed.
fn forbidden<T: std::fmt::Debug>(r: kube::Result<T>, what: &str) -> String {
    match r {
        Err(kube::Error::Api(e)) if e.code == 403 => e.message,
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

async fn teams_are_kept_apart(ts: TestServer) -> Result<()> {
    let admin = ts.client.clone();
    ts.roles(&["team-a", "team-b"])
        .await
        .map_err(|e| anyhow!(e))?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    for ns in ["team-a", "team-b"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
        let rb: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "team-edit", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": ns}]}))?;
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &rb)
            .await?;
        // Each team may use its own Corral role (edit grants none).
        let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
            "metadata": {"name": "use-role", "namespace": ns},
            "rules": [{"apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": [ns], "verbs": ["use"]}]}))?;
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &role)
            .await?;
        let rb: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "use-role", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "use-role"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": ns}]}))?;
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &rb)
            .await?;
    }
    let alice = ts.client_as("alice-token").await.map_err(|e| anyhow!(e))?;
    let jobs_a: Api<Job> = Api::namespaced(alice.clone(), "team-a");
    // The binding takes effect once the authorizer has it (milliseconds).
    once_allowed("alice creating a job in her namespace", || async {
        Ok(jobs_a
            .create(&PostParams::default(), &job_in("team-a", "etl")?)
            .await)
    })
    .await?;
    jobs_a.get("etl").await?;
    // Another team's role (its quota, its tier) is not hers to spend (and a
    // job's role is immutable: no job moves onto it later).
    let msg = forbidden(
        jobs_a
            .create(
                &PostParams::default(),
                &job_on("team-a", "borrow", "team-b")?,
            )
            .await,
        "alice running a job on team-b's role",
    );
    assert!(msg.contains("cannot use role \"team-b\""), "{msg}");
    // Her own role, but privileged: that is a grant of its own.
    let mut as_root = job_in("team-a", "as-root")?;
    as_root.spec.container.user = Some("root".into());
    let msg = forbidden(
        jobs_a.create(&PostParams::default(), &as_root).await,
        "alice running a job as root",
    );
    assert!(
        msg.contains("cannot run privileged tasks (as root, or unconfined) with role \"team-a\""),
        "{msg}"
    );
    // So is running without the seccomp filter.
    let mut unconfined = job_in("team-a", "unconfined")?;
    unconfined.spec.container.seccomp_profile = Some(corral_api::job::SeccompProfile::Unconfined);
    let msg = forbidden(
        jobs_a.create(&PostParams::default(), &unconfined).await,
        "alice running a job without the seccomp filter",
    );
    assert!(msg.contains("subresource privileged"), "{msg}");
    let mut as_app = job_in("team-a", "as-app")?;
    as_app.spec.container.user = Some("1000:1000".into());
    jobs_a.create(&PostParams::default(), &as_app).await?;
    let privileged_grant: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": {"name": "privileged-role", "namespace": "team-a"},
        "rules": [{"apiGroups": ["corral.dev"], "resources": ["roles/privileged"], "resourceNames": ["team-a"], "verbs": ["use"]}]}))?;
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), "team-a")
        .create(&PostParams::default(), &privileged_grant)
        .await?;
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "privileged-role", "namespace": "team-a"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "privileged-role"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "team-a"}]}))?;
    Api::<RoleBinding>::namespaced(admin.clone(), "team-a")
        .create(&PostParams::default(), &rb)
        .await?;
    once_allowed("alice running a job as root once granted", || async {
        Ok(jobs_a.create(&PostParams::default(), &as_root).await)
    })
    .await?;
    jobs_a.create(&PostParams::default(), &unconfined).await?;
    // Discovery is every caller's; the metrics are the monitors'.
    let get = |path: &'static str| {
        let alice = alice.clone();
        async move {
            alice
                .request_text(http::Request::get(path).body(Vec::new())?)
                .await
                .map_err(anyhow::Error::from)
        }
    };
    get("/apis").await?;
    get("/openapi/v3").await?;
    let metrics = get("/metrics").await;
    assert!(
        metrics
            .as_ref()
            .is_err_and(|e| e.to_string().contains("cannot get path \"/metrics\"")),
        "{metrics:?}"
    );
    // The preferred (production) tier only on a role granted a Quota.
    let mut prod = job_in("team-a", "prod")?;
    prod.spec.tier = corral_api::Tier::Preferred;
    let refused = jobs_a.create(&PostParams::default(), &prod).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("spec.tier")),
        "{refused:?}"
    );
    Api::<Quota>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-a"}, "spec": {"role": "team-a", "limit": {"cpus": 8}}}))?,
        )
        .await?;
    jobs_a.create(&PostParams::default(), &prod).await?;
    // Her own job stays hers to change.
    jobs_a
        .patch(
            "etl",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"stage": "nightly"}}})),
        )
        .await?;
    Api::<Secret>::namespaced(alice.clone(), "team-a")
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "db"}, "stringData": {"password": "x"}}),
            )?,
        )
        .await?;

    // Nothing of team b's, nothing cluster-wide, no task phases, no RBAC.
    let msg = forbidden(
        Api::<Job>::namespaced(alice.clone(), "team-b")
            .create(&PostParams::default(), &job_in("team-b", "etl")?)
            .await,
        "alice creating a job in team-b",
    );
    assert_eq!(
        msg,
        "jobs.corral.dev is forbidden: User \"alice\" cannot create resource \"jobs\" in API group \"corral.dev\" in the namespace \"team-b\""
    );
    let bob = ts.client_as("bob-token").await.map_err(|e| anyhow!(e))?;
    forbidden(
        Api::<Secret>::namespaced(bob.clone(), "team-a")
            .get("db")
            .await,
        "bob reading team-a's secret",
    );
    forbidden(
        Api::<Job>::namespaced(bob.clone(), "team-a")
            .list(&ListParams::default())
            .await,
        "bob listing team-a's jobs",
    );
    forbidden(
        Api::<Quota>::all(alice.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "team-a"}, "spec": {"role": "team-a", "limit": {"cpus": 1000}}}))?,
            )
            .await,
        "alice writing a quota",
    );
    let tasks_a: Api<Task> = Api::namespaced(alice.clone(), "team-a");
    forbidden(
        tasks_a
            .patch_status(
                "etl-0-0",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "FINISHED"}})),
            )
            .await,
        "alice writing a task phase",
    );
    forbidden(
        tasks_a.create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "sneaky", "namespace": "team-a"},
            "spec": {"job": "etl", "role": "team-a", "instanceId": 0, "resources": {"cpus": 1, "memory": "64Mi"}, "container": {"image": "x"}}}))?)
            .await,
        "alice creating a task past the scheduler",
    );
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}))?;
    forbidden(
        Api::<ClusterRoleBinding>::all(alice.clone())
            .create(&PostParams::default(), &crb)
            .await,
        "alice making herself cluster-admin",
    );
    // No binding at all: nothing.
    let nobody = ts.client_as("nobody-token").await.map_err(|e| anyhow!(e))?;
    forbidden(
        Api::<Job>::namespaced(nobody, "team-a")
            .list(&ListParams::default())
            .await,
        "an identity without bindings",
    );

    // A namespace administrator grants access there, never more than she holds.
    Api::<RoleBinding>::namespaced(admin.clone(), "team-a")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "admins", "namespace": "team-a"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "team-a-admins"}]}))?,
        )
        .await?;
    let lena = ts.client_as("lena-token").await.map_err(|e| anyhow!(e))?;
    let lena_bindings: Api<RoleBinding> = Api::namespaced(lena.clone(), "team-a");
    let bind = |name: &str, role: &str| -> Result<RoleBinding> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "team-a"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]}))?)
    };
    once_allowed("lena binding view in her namespace", || async {
        Ok(lena_bindings
            .create(&PostParams::default(), &bind("bob-views", "view")?)
            .await)
    })
    .await?;
    let msg = forbidden(
        lena_bindings
            .create(&PostParams::default(), &bind("bob-rules", "cluster-admin")?)
            .await,
        "lena binding cluster-admin",
    );
    assert!(
        msg.starts_with("user \"lena\" is attempting to grant RBAC permissions not currently held"),
        "{msg}"
    );
    forbidden(
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(lena.clone(), "team-a")
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "phases", "namespace": "team-a"},
                    "rules": [{"apiGroups": ["corral.dev"], "resources": ["tasks/status"], "verbs": ["patch"]}]}))?,
            )
            .await,
        "lena creating a role with powers she lacks",
    );
    forbidden(
        Api::<RoleBinding>::namespaced(lena, "team-b")
            .create(&PostParams::default(), &bind("bob-views", "view")?)
            .await,
        "lena granting access in another namespace",
    );

    // Only a binder binds; a node reports on the tasks bound to it, and
    // does nothing else.
    let tasks: Api<Task> = Api::namespaced(admin.clone(), "team-a");
    tasks
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "etl-0-0", "namespace": "team-a"},
            "spec": {"job": "etl", "role": "team-a", "instanceId": 0, "resources": {"cpus": 1, "memory": "64Mi"}, "container": {"image": "x"}}}))?)
        .await?;
    let binding = json!({"kind": "Binding", "target": {"kind": "Node", "name": "n1"}});
    forbidden(
        Api::<Task>::namespaced(alice.clone(), "team-a")
            .create_subresource::<_, Task>("binding", "etl-0-0", &PostParams::default(), &binding)
            .await,
        "a team binding its task to a node",
    );
    let bulk = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "BindingList",
                      "items": [{"metadata": {"name": "etl-0-0"}, "target": {"kind": "Node", "name": "n1"}}]});
    let bulk_request = || {
        http::Request::post("/apis/corral.dev/v1alpha1/namespaces/team-a/bindings")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&bulk).expect("JSON"))
            .expect("a request")
    };
    forbidden(
        alice.request::<Value>(bulk_request()).await,
        "a team binding its tasks in bulk",
    );
    forbidden(
        Api::<Task>::namespaced(alice.clone(), "team-a")
            .patch_status(
                "etl-0-0",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "KILLED"}})),
            )
            .await,
        "a team writing a task's phase",
    );
    let placed = tasks
        .patch(
            "etl-0-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "n1"}})),
        )
        .await;
    assert!(
        matches!(&placed, Err(kube::Error::Api(e)) if e.code == 422),
        "a plain write binds nothing, even the administrator's: {placed:?}"
    );
    let bound: Task = tasks
        .create_subresource("binding", "etl-0-0", &PostParams::default(), &binding)
        .await?;
    assert_eq!(
        bound.status.map(|s| s.phase()),
        Some(corral_api::TaskPhase::Assigned)
    );
    let node = ts.client_as("node-token").await.map_err(|e| anyhow!(e))?;
    forbidden(
        node.request::<Value>(bulk_request()).await,
        "a node binding tasks in bulk",
    );
    let node_tasks: Api<Task> = Api::namespaced(node.clone(), "team-a");
    node_tasks.get("etl-0-0").await?;
    node_tasks
        .patch_status(
            "etl-0-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "STARTING"}})),
        )
        .await?;
    // Status reports in bulk: each item authorized as its own patch would
    // be — the node reports on the task bound to it, on no other; a team
    // on none.
    tasks
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "etl-0-1", "namespace": "team-a"},
            "spec": {"job": "etl", "role": "team-a", "instanceId": 1, "resources": {"cpus": 1, "memory": "64Mi"}, "container": {"image": "x"}}}))?)
        .await?;
    let reports = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "TaskList", "items": [
        {"metadata": {"name": "etl-0-0"}, "status": {"phase": "RUNNING"}},
        {"metadata": {"name": "etl-0-1"}, "status": {"phase": "STARTING"}}]});
    let reports_request = || {
        http::Request::post("/apis/corral.dev/v1alpha1/namespaces/team-a/taskstatuses")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&reports).expect("JSON"))
            .expect("a request")
    };
    let codes = |answer: &Value| -> Vec<u64> {
        answer["items"]
            .as_array()
            .map(|i| i.iter().filter_map(|s| s["code"].as_u64()).collect())
            .unwrap_or_default()
    };
    let alice_reports: Value = alice.request(reports_request()).await?;
    assert_eq!(codes(&alice_reports), vec![403, 403], "{alice_reports:#}");
    let node_reports: Value = node.request(reports_request()).await?;
    assert_eq!(codes(&node_reports), vec![200, 403], "{node_reports:#}");
    assert_eq!(
        tasks.get("etl-0-0").await?.status.map(|s| s.phase()),
        Some(corral_api::TaskPhase::Running)
    );
    assert_eq!(
        tasks.get("etl-0-1").await?.status.map(|s| s.phase()),
        Some(corral_api::TaskPhase::Pending)
    );
    forbidden(
        Api::<Job>::namespaced(node.clone(), "team-a")
            .create(&PostParams::default(), &job_in("team-a", "node-job")?)
            .await,
        "a node creating a job",
    );
    forbidden(
        Api::<Secret>::namespaced(node, "team-a").get("db").await,
        "a node reading a secret no task of its uses",
    );

    // Components ask about others with a SubjectAccessReview.
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let sar = |user: &str, group: &str, ns: &str| -> Result<SubjectAccessReview> {
        Ok(serde_json::from_value(
            json!({"spec": {"user": user, "groups": [group],
            "resourceAttributes": {"verb": "create", "group": "corral.dev", "resource": "jobs", "namespace": ns}}}),
        )?)
    };
    let reviews: Api<SubjectAccessReview> = Api::all(admin.clone());
    let yes = reviews
        .create(&PostParams::default(), &sar("alice", "team-a", "team-a")?)
        .await?;
    assert_eq!(yes.status.map(|s| s.allowed), Some(true));
    let no = reviews
        .create(&PostParams::default(), &sar("alice", "team-a", "team-b")?)
        .await?;
    assert_eq!(no.status.map(|s| s.allowed), Some(false));
    forbidden(
        Api::<SubjectAccessReview>::all(bob.clone())
            .create(&PostParams::default(), &sar("alice", "team-a", "team-a")?)
            .await,
        "bob asking about alice",
    );

    // The administrator may do everything.
    Api::<Secret>::namespaced(admin.clone(), "team-a")
        .get("db")
        .await?;
    Api::<ClusterRoleBinding>::all(admin)
        .create(&PostParams::default(), &crb)
        .await?;
    ts.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn teams_are_kept_apart_over_the_embedded_store() -> Result<()> {
    let store = Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let ts = TestServer::start_rbac(store, USERS)
        .await
        .map_err(|e| anyhow!(e))?;
    teams_are_kept_apart(ts).await
}

#[tokio::test]
async fn teams_are_kept_apart_over_etcd() -> Result<()> {
    let server =
        corral_store::testing::EtcdServer::start_with(corral_store::testing::Durability::NoFsync)?;
    let store = corral_store::etcd::EtcdStore::connect(&[server.endpoint().to_owned()]).await?;
    let ts = TestServer::start_rbac(Arc::new(store), USERS)
        .await
        .map_err(|e| anyhow!(e))?;
    teams_are_kept_apart(ts).await
}

/// A restarted server decides by the bindings it finds in the store, with
/// no change to them.
#[tokio::test]
async fn a_restarted_server_keeps_the_policy_it_finds() -> Result<()> {
    let store: Arc<dyn corral_store::Store> =
        Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let first = TestServer::start_rbac(store.clone(), USERS)
        .await
        .map_err(|e| anyhow!(e))?;
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "team-edit", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "team-a"}]}))?;
    Api::<RoleBinding>::namespaced(first.client.clone(), "default")
        .create(&PostParams::default(), &rb)
        .await?;
    first.shutdown().await;

    let second = TestServer::start_rbac(store, USERS)
        .await
        .map_err(|e| anyhow!(e))?;
    let alice = second
        .client_as("alice-token")
        .await
        .map_err(|e| anyhow!(e))?;
    let jobs: Api<Job> = Api::namespaced(alice, "default");
    once_allowed("alice listing jobs after the restart", || async {
        Ok(jobs.list(&ListParams::default()).await)
    })
    .await?;
    second.shutdown().await;
    Ok(())
}
