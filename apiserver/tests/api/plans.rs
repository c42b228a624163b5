//! PlanReview: the what-if kind. A plan over the cluster the server holds
//! names where each instance would land and which running tasks it would
//! preempt (by name, with the rule), and creates nothing; a plan of an
//! invalid job is a 422 with the field path under `spec.jobs[i]`.

use super::*;

const TASKS: &str = "/apis/corral.dev/v1alpha1/namespaces/default/tasks";
const PLANS: &str = "/apis/corral.dev/v1alpha1/planreviews";

async fn post(client: &Client, path: &str, body: &Value) -> kube::Result<Value> {
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("a JSON body"))
        .expect("a request");
    client.request::<Value>(req).await
}

/// A preemptible task of role analytics bound to `node` and RUNNING since
/// long ago (past the preemption's minimum runtime).
async fn long_running(ts: &TestServer, name: &str, node: &str, cpus: i64) -> Result<()> {
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let mut t = serde_json::to_value(task(name, None, None)?)?;
    t["spec"]["resources"] = json!({"cpus": cpus, "memory": "1Gi"});
    tasks
        .create(&PostParams::default(), &serde_json::from_value(t)?)
        .await?;
    post(
        &ts.client,
        &format!("{TASKS}/{name}/binding"),
        &json!({"kind": "Binding", "target": {"kind": "Node", "name": node}}),
    )
    .await?;
    let mut status = tasks.get_status(name).await?.status.unwrap_or_default();
    let long_ago: jiff::Timestamp = "2026-01-01T00:00:00Z".parse()?;
    for e in [
        corral_core::lifecycle::Event::AgentStarting,
        corral_core::lifecycle::Event::AgentRunning,
    ] {
        corral_core::lifecycle::apply(&mut status, &e, long_ago, "test")
            .map_err(|e| anyhow!("{e}"))?;
    }
    tasks
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    Ok(())
}

pub async fn a_plan_names_placements_and_victims_and_creates_nothing(
    ts: &TestServer,
) -> Result<()> {
    ts.roles(&["web"]).await.map_err(|e| anyhow!(e))?;
    corral_apiserver::testing::simulated_node(&ts.client, "n1", 4)
        .await
        .map_err(|e| anyhow!(e))?;
    corral_apiserver::testing::simulated_node(&ts.client, "n2", 2)
        .await
        .map_err(|e| anyhow!(e))?;
    long_running(ts, "etl-0-0", "n1", 3).await?;
    let tasks: Api<Task> = Api::all(ts.client.clone());
    let jobs: Api<Job> = Api::all(ts.client.clone());
    let before = (
        tasks.list(&ListParams::default()).await?.items.len(),
        jobs.list(&ListParams::default()).await?.items.len(),
    );
    let plan = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "PlanReview", "spec": {"jobs": [
        {"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "api", "namespace": "default"},
         "spec": {"role": "web", "environment": "prod", "kind": "service", "instances": 3, "tier": "preferred",
                  "resources": {"cpus": 2, "memory": "1Gi"}, "container": {"image": "web"}}}]}});
    let answer = post(&ts.client, PLANS, &plan).await?;
    let status = &answer["status"];
    assert_eq!(answer["kind"], "PlanReview");
    assert_eq!(status["nodes"], 2, "{answer:#}");
    let instances = status["instances"].as_array().context("instances")?;
    assert_eq!(instances.len(), 3, "{answer:#}");
    assert_eq!(instances[0]["node"], "n2", "{answer:#}");
    assert_eq!(instances[1]["node"], "n1");
    assert_eq!(
        instances[1]["preempts"],
        json!([{"task": "default/etl-0-0", "role": "analytics", "rule": "lower tier"}])
    );
    assert!(
        instances[2]["pending"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("pending")),
        "{answer:#}"
    );
    let after = (
        tasks.list(&ListParams::default()).await?.items.len(),
        jobs.list(&ListParams::default()).await?.items.len(),
    );
    assert_eq!(before, after, "a plan creates nothing");

    // An invalid job: 422 on its field, under spec.jobs[0].
    let mut bad = plan.clone();
    bad["spec"]["jobs"][0]["spec"]["instances"] = json!(0);
    bad["spec"]["jobs"][0]["spec"]["resources"]["cpus"] = json!(-1);
    let refused = post(&ts.client, PLANS, &bad)
        .await
        .err()
        .context("an invalid job is refused")?;
    let (code, _, message) = api_error(refused)?;
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.jobs[0].spec.resources.cpus"),
        "{message}"
    );
    Ok(())
}
