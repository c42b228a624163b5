//! Pods as the tasks they become, under RBAC: a Pod is admitted only when
//! its task could be, by its creator (its role's `use`, the role existing,
//! the preferred tier on a role with a Quota, one container, run once);
//! it is made Pending, held by the task finalizer, labelled with its
//! namespace's default role; its spec does not change. What Spark's
//! Kubernetes backend touches besides Pods works: a WebSocket watch is
//! answered 503 at once (never upgraded or streamed), unserved resources
//! are 404 to anyone, Services and claims are listed and deleted but never
//! made, and a Pod's log is its task's.

use super::*;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::rbac::v1::{Role as RbacRole, RoleBinding};

const USERS: &[(&str, &str, &[&str])] = &[
    ("alice-token", "alice", &["team-a"]),
    ("bob-token", "bob", &["team-b"]),
];

fn pod(name: &str, extra: Value) -> Result<Pod> {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"],
                 "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}}}]}
    });
    json_patch_merge(&mut v, extra);
    Ok(serde_json::from_value(v)?)
}

fn json_patch_merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                json_patch_merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

fn code<T: std::fmt::Debug>(r: &kube::Result<T>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(_) => 0,
    }
}

/// Field paths of a 422.
fn fields<T: std::fmt::Debug>(r: &kube::Result<T>) -> Vec<String> {
    match r {
        Err(kube::Error::Api(s)) => s
            .details
            .as_ref()
            .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn setup(ts: &TestServer) -> Result<()> {
    let admin = ts.client.clone();
    ts.roles(&["analytics", "other"])
        .await
        .map_err(|e| anyhow!(e))?;
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-a",
                "annotations": {"corral.dev/default-role": "analytics"}}}))?,
        )
        .await?;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "team-a");
    for group in ["team-a", "team-b"] {
        bindings
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": format!("{group}-edit")},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]}))?,
            )
            .await?;
    }
    Api::<RbacRole>::namespaced(admin.clone(), "team-a")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "use-analytics"},
                "rules": [{"apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["analytics"], "verbs": ["use"]}]}))?,
        )
        .await?;
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "use-analytics"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "use-analytics"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "team-a"}]}))?,
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn pods_are_admitted_as_their_tasks_would_be() -> Result<()> {
    let store = Arc::new(corral_store::embedded::EmbeddedStore::in_memory()?);
    let ts = TestServer::start_rbac(store, USERS)
        .await
        .map_err(|e| anyhow!(e))?;
    setup(&ts).await?;
    let alice = ts.client_as("alice-token").await.map_err(|e| anyhow!(e))?;
    let bob = ts.client_as("bob-token").await.map_err(|e| anyhow!(e))?;
    let as_alice: Api<Pod> = Api::namespaced(alice.clone(), "team-a");
    let as_bob: Api<Pod> = Api::namespaced(bob.clone(), "team-a");
    let as_admin: Api<Pod> = Api::namespaced(ts.client.clone(), "team-a");

    // Made Pending, held, run once, under the namespace's default role.
    let made = as_alice
        .create(&PostParams::default(), &pod("p1", json!({}))?)
        .await?;
    assert_eq!(
        made.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert_eq!(
        made.metadata.finalizers.as_deref(),
        Some(&["corral.dev/task".to_owned()][..])
    );
    assert_eq!(
        made.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("corral.dev/role"))
            .map(String::as_str),
        Some("analytics")
    );
    assert_eq!(
        made.spec.as_ref().and_then(|s| s.restart_policy.as_deref()),
        Some("Never")
    );

    // Refused as the task would be, on the Pod's fields.
    let refused = as_bob
        .create(&PostParams::default(), &pod("p2", json!({}))?)
        .await;
    assert_eq!(
        code(&refused),
        403,
        "bob may not use role analytics: {refused:?}"
    );
    assert!(format!("{refused:?}").contains("use"), "{refused:?}");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "two containers",
            json!({"spec": {"containers": [
                {"name": "a", "image": "busybox", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "b", "image": "busybox", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}),
            "spec.containers",
        ),
        (
            "restarts",
            json!({"spec": {"restartPolicy": "Always"}}),
            "spec.restartPolicy",
        ),
        (
            "a role that does not exist",
            json!({"metadata": {"labels": {"corral.dev/role": "nosuch"}}}),
            "metadata.labels[corral.dev/role]",
        ),
        (
            "a node of its own choosing",
            json!({"spec": {"nodeName": "n1"}}),
            "spec.nodeName",
        ),
        (
            "production without a quota",
            json!({"metadata": {"labels": {"corral.dev/tier": "preferred"}}}),
            "metadata.labels[corral.dev/tier]",
        ),
    ];
    for (name, extra, field) in cases {
        let r = as_admin
            .create(&PostParams::default(), &pod("bad", extra)?)
            .await;
        assert_eq!(code(&r), 422, "{name}: {r:?}");
        assert!(
            fields(&r).iter().any(|f| f == field),
            "{name}: {:?}",
            fields(&r)
        );
    }
    assert!(
        as_admin.get_opt("bad").await?.is_none(),
        "nothing refused was made"
    );

    // A Pod's spec stays; its labels may change.
    let changed = as_alice
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "main", "image": "alpine"}]}}),
            ),
        )
        .await;
    assert_eq!(code(&changed), 422, "{changed:?}");
    let placed = as_alice
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "n1"}})),
        )
        .await;
    assert_eq!(
        code(&placed),
        422,
        "only to the node its task is bound to: {placed:?}"
    );
    as_alice
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"spark-exec-inactive": "true"}}})),
        )
        .await?;

    // Field and label selectors Spark lists with.
    let listed = as_alice
        .list(
            &ListParams::default()
                .fields("status.phase=Pending")
                .labels("spark-exec-inactive in (true),corral.dev/role!=other"),
        )
        .await?;
    assert_eq!(listed.items.len(), 1);

    // Services and claims: listed and deleted (none), never made.
    let services: Api<Service> = Api::namespaced(alice.clone(), "team-a");
    let svc = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "driver"}, "spec": {"ports": [{"port": 7078}]}}),
            )?,
        )
        .await;
    assert_eq!(code(&svc), 422, "{svc:?}");
    let deleted = services
        .delete_collection(
            &DeleteParams::background(),
            &ListParams::default().labels("spark-app-selector=x"),
        )
        .await;
    assert!(deleted.is_ok(), "{deleted:?}");

    // A resource nobody serves is 404 to a tenant, not 403.
    let req =
        http::Request::get("/api/v1/namespaces/team-a/replicationcontrollers").body(Vec::new())?;
    let unserved = alice.request_text(req).await;
    assert_eq!(code(&unserved), 404, "{unserved:?}");

    // A watch asked for over WebSocket is answered at once, never upgraded.
    let req =
        http::Request::get("/api/v1/namespaces/team-a/pods?watch=true&allowWatchBookmarks=true")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Vec::new())?;
    let ws = tokio::time::timeout(Duration::from_secs(10), alice.request_text(req))
        .await
        .context("a WebSocket watch must be answered at once")?;
    assert_eq!(code(&ws), 503, "{ws:?}");

    // A Pod's log is its task's: this one is not on a node yet.
    let req = http::Request::get("/api/v1/namespaces/team-a/pods/p1/log?container=main")
        .body(Vec::new())?;
    let log = alice.request_text(req).await;
    assert_eq!(code(&log), 400, "{log:?}");
    assert!(format!("{log:?}").contains("waiting to start"), "{log:?}");

    // Deleting it leaves it held until its task has ended (no controller
    // runs here, so it stays).
    as_alice.delete("p1", &DeleteParams::background()).await?;
    assert!(
        as_alice
            .get("p1")
            .await?
            .metadata
            .deletion_timestamp
            .is_some()
    );
    ts.shutdown().await;
    Ok(())
}
