//! Bulk writes: a `TaskList` POSTed to `tasks` creates each item, a
//! `BindingList` POSTed to `bindings` binds each, a `TaskList` POSTed to
//! `taskstatuses` patches each one's status; every item keeps its own
//! admission, precondition, answer and watch event.

use super::*;

const TASKS: &str = "/apis/corral.dev/v1alpha1/namespaces/default/tasks";
const BINDINGS: &str = "/apis/corral.dev/v1alpha1/namespaces/default/bindings";

/// POSTs `body` to `path`; the answer, or the API error of the whole request.
async fn post(client: &Client, path: &str, body: &Value) -> kube::Result<Value> {
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("a JSON body"))
        .expect("a request");
    client.request::<Value>(req).await
}

/// Each item's code, in order.
fn codes(answer: &Value) -> Vec<u64> {
    answer["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|s| s["code"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `watch` has shown `n` events; returns (type, name) of each.
async fn events(
    watch: &mut (impl futures::Stream<Item = kube::Result<kube::api::WatchEvent<Task>>> + Unpin),
    n: usize,
) -> Result<Vec<(String, String)>> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .context("waiting for watch events")?
            .context("the watch ended")??;
        let (kind, t) = match e {
            kube::api::WatchEvent::Added(t) => ("ADDED", t),
            kube::api::WatchEvent::Modified(t) => ("MODIFIED", t),
            kube::api::WatchEvent::Deleted(t) => ("DELETED", t),
            _ => continue,
        };
        seen.push((kind.to_owned(), t.metadata.name.unwrap_or_default()));
    }
    Ok(seen)
}

pub async fn tasks_are_created_and_bound_in_bulk_each_on_its_own(ts: &TestServer) -> Result<()> {
    let client = ts.client.clone();
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    tasks
        .create(&PostParams::default(), &task("b", None, None)?)
        .await?;
    let rv = tasks
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut watch = tasks
        .watch(&kube::api::WatchParams::default(), &rv)
        .await?
        .boxed();

    // Created, already there, invalid (its field path given), created.
    let mut invalid = serde_json::to_value(task("c", None, None)?)?;
    invalid["spec"]["resources"]["cpus"] = json!("-1");
    let list = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "TaskList", "items": [
        task("a", None, None)?, task("b", None, None)?, invalid, task("d", None, None)?]});
    let answer = post(&client, TASKS, &list).await?;
    assert_eq!(codes(&answer), vec![201, 409, 422, 201], "{answer:#}");
    let items = &answer["items"];
    assert_eq!(items[0]["status"], "Success");
    assert_eq!(items[0]["details"]["name"], "a");
    assert_eq!(items[1]["reason"], "AlreadyExists");
    assert!(
        items[2]["details"]["causes"][0]["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("spec.resources")),
        "{:#}",
        items[2]
    );
    // Each created task is whole: its first status, its version as answered.
    let a = tasks.get("a").await?;
    assert_eq!(
        a.status.as_ref().map(|s| s.phase()),
        Some(corral_api::TaskPhase::Pending)
    );
    assert_eq!(
        a.metadata.resource_version.as_deref(),
        items[0]["metadata"]["resourceVersion"].as_str()
    );
    assert!(
        tasks.get_opt("c").await?.is_none(),
        "an invalid item is not stored"
    );
    let mut added = events(&mut watch, 2).await?;
    added.sort();
    assert_eq!(
        added,
        vec![("ADDED".into(), "a".into()), ("ADDED".into(), "d".into())]
    );

    // Bound: one at its version, one at a stale version (409, untouched),
    // one that does not exist (404), one without a name (422).
    let d = tasks.get("d").await?;
    let b = tasks.get("b").await?;
    let binding = |name: &str, rv: Option<&str>, node: &str| json!({"metadata": {"name": name, "resourceVersion": rv}, "target": {"kind": "Node", "name": node}});
    let list = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "BindingList", "items": [
        binding("d", d.metadata.resource_version.as_deref(), "n1"),
        binding("b", Some("1"), "n2"),
        binding("zz", None, "n1"),
        {"target": {"kind": "Node", "name": "n1"}},
        binding("a", None, "n3"),
    ]});
    let answer = post(&client, BINDINGS, &list).await?;
    assert_eq!(codes(&answer), vec![201, 409, 404, 422, 201], "{answer:#}");
    let d = tasks.get("d").await?;
    assert_eq!(d.spec.node_name.as_deref(), Some("n1"));
    assert_eq!(
        d.status.as_ref().map(|s| s.phase()),
        Some(corral_api::TaskPhase::Assigned)
    );
    assert_eq!(
        tasks.get("b").await?.metadata.resource_version,
        b.metadata.resource_version,
        "a refused binding writes nothing"
    );
    let mut modified = events(&mut watch, 2).await?;
    modified.sort();
    assert_eq!(
        modified,
        vec![
            ("MODIFIED".into(), "a".into()),
            ("MODIFIED".into(), "d".into())
        ]
    );

    // Kubernetes' single form: a Binding POSTed to bindings, answered with
    // a Success Status; binding a bound task again is a conflict.
    let one = json!({"kind": "Binding", "metadata": {"name": "b"}, "target": {"kind": "Node", "name": "n2"}});
    let answer = post(&client, BINDINGS, &one).await?;
    assert_eq!(
        (answer["status"].as_str(), answer["code"].as_u64()),
        (Some("Success"), Some(201))
    );
    let again = post(&client, BINDINGS, &one).await;
    assert!(
        matches!(&again, Err(kube::Error::Api(e)) if e.code == 409),
        "{again:?}"
    );

    // Status reports: each a conditional patch of one task's status.
    let d = tasks.get("d").await?;
    let reports = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "TaskList", "items": [
        {"metadata": {"name": "d", "resourceVersion": d.metadata.resource_version}, "status": {"phase": "STARTING"}},
        {"metadata": {"name": "b", "resourceVersion": "1"}, "status": {"phase": "STARTING"}},
        {"metadata": {"name": "zz"}, "status": {"phase": "STARTING"}},
    ]});
    let statuses = "/apis/corral.dev/v1alpha1/namespaces/default/taskstatuses";
    let answer = post(&client, statuses, &reports).await?;
    assert_eq!(codes(&answer), vec![200, 409, 404], "{answer:#}");
    let d = tasks.get("d").await?;
    assert_eq!(
        d.status.as_ref().map(|s| s.phase()),
        Some(corral_api::TaskPhase::Starting)
    );
    assert_eq!(
        d.metadata.resource_version.as_deref(),
        answer["items"][0]["metadata"]["resourceVersion"].as_str()
    );
    let one = post(
        &client,
        statuses,
        &json!({"kind": "Task", "metadata": {"name": "d"}}),
    )
    .await;
    assert!(
        matches!(&one, Err(kube::Error::Api(e)) if e.code == 400),
        "{one:?}"
    );

    // A request that cannot be read fails whole, and writes nothing.
    let items: Vec<Value> = (0..1001)
        .map(|i| {
            serde_json::to_value(task(&format!("m{i}"), None, None).expect("a task")).expect("JSON")
        })
        .collect();
    let too_many = post(&client, TASKS, &json!({"kind": "TaskList", "items": items})).await;
    assert!(
        matches!(&too_many, Err(kube::Error::Api(e)) if e.code == 422),
        "{too_many:?}"
    );
    assert!(tasks.get_opt("m0").await?.is_none());
    Ok(())
}
