//! The `tasks/eviction` subresource: an eviction within the job's
//! disruption budget takes the task through DRAINING and records it on the
//! job; one over budget is a 429 naming the budget and writes nothing;
//! evictions racing for the last unit of a budget get it once.

use corral_api::TaskPhase;
use corral_core::lifecycle::{self, Event};

use super::*;

const TASKS: &str = "/apis/corral.dev/v1alpha1/namespaces/default/tasks";

/// A service job of `instances` whose budget allows one down.
async fn budgeted_job(ts: &TestServer, name: &str, instances: u32) -> Result<Job> {
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let mut j = serde_json::to_value(job(name, instances)?)?;
    j["spec"]["kind"] = json!("service");
    j["spec"]["disruptionBudget"] = json!({"maxUnavailable": 1});
    Ok(jobs
        .create(&PostParams::default(), &serde_json::from_value(j)?)
        .await?)
}

/// Task `<job>-<i>-0` of `job`, bound to n1 and RUNNING.
async fn running_task(ts: &TestServer, job: &Job, i: u32) -> Result<String> {
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let name = format!("{job_name}-{i}-0");
    let mut t = serde_json::to_value(task(
        &name,
        None,
        Some((&job_name, job.metadata.uid.as_deref().unwrap_or_default())),
    )?)?;
    t["metadata"]["labels"] = json!({"corral.dev/job": job_name});
    t["spec"]["job"] = json!(job_name);
    t["spec"]["instanceId"] = json!(i);
    tasks
        .create(&PostParams::default(), &serde_json::from_value(t)?)
        .await?;
    post(
        &ts.client,
        &format!("{TASKS}/{name}/binding"),
        &json!({"kind": "Binding", "target": {"kind": "Node", "name": "n1"}}),
    )
    .await?;
    let mut status = tasks.get_status(&name).await?.status.unwrap_or_default();
    let now = jiff::Timestamp::now();
    for e in [Event::AgentStarting, Event::AgentRunning] {
        lifecycle::apply(&mut status, &e, now, "test").map_err(|e| anyhow!("{e}"))?;
    }
    tasks
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    Ok(name)
}

async fn post(client: &Client, path: &str, body: &Value) -> kube::Result<Value> {
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("a JSON body"))
        .expect("a request");
    client.request::<Value>(req).await
}

async fn evict(client: &Client, task: &str) -> kube::Result<Value> {
    post(
        client,
        &format!("{TASKS}/{task}/eviction"),
        &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": task, "namespace": "default"}}),
    )
    .await
}

async fn phase(ts: &TestServer, task: &str) -> Result<TaskPhase> {
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    Ok(tasks
        .get(task)
        .await?
        .status
        .map_or(TaskPhase::Pending, |s| s.phase()))
}

pub async fn evictions_honour_the_disruption_budget(ts: &TestServer) -> Result<()> {
    let web = budgeted_job(ts, "web", 3).await?;
    let mut names = Vec::new();
    for i in 0..3 {
        names.push(running_task(ts, &web, i).await?);
    }
    // A refusal as it comes (kube-rs retries a 429 for minutes).
    let client = ts.admin_without_retries().await.map_err(|e| anyhow!(e))?;
    let answer = evict(&client, &names[0]).await?;
    assert_eq!(
        (answer["status"].as_str(), answer["code"].as_u64()),
        (Some("Success"), Some(201)),
        "{answer:#}"
    );
    assert_eq!(phase(ts, &names[0]).await?, TaskPhase::Draining);
    let jobs: Api<Job> = Api::namespaced(ts.client.clone(), "default");
    let recorded = jobs.get_status("web").await?.status.unwrap_or_default();
    assert!(
        recorded.disrupted_tasks.contains_key(&names[0]),
        "{:?}",
        recorded.disrupted_tasks
    );

    // One is down: a second eviction is refused, and writes nothing.
    let before = jobs.get("web").await?.metadata.resource_version;
    let refused = evict(&client, &names[1])
        .await
        .err()
        .context("over budget")?;
    let kube::Error::Api(status) = refused else {
        bail!("expected a Status, got {refused}")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert!(
        status.message.contains("disruption budget"),
        "{}",
        status.message
    );
    assert_eq!(phase(ts, &names[1]).await?, TaskPhase::Running);
    assert_eq!(jobs.get("web").await?.metadata.resource_version, before);

    // The evicted one itself, again: nothing to do, no error.
    let again = evict(&client, &names[0]).await?;
    assert_eq!(again["code"], 201, "{again:#}");

    // A task not yet on a node has nothing to evict; a body for another
    // task is a 400.
    let tasks: Api<Task> = Api::namespaced(ts.client.clone(), "default");
    tasks
        .create(&PostParams::default(), &task("loose", None, None)?)
        .await?;
    let loose = evict(&client, "loose").await?;
    assert!(
        loose["message"]
            .as_str()
            .is_some_and(|m| m.contains("not on a node")),
        "{loose:#}"
    );
    let wrong = post(
        &client,
        &format!("{TASKS}/loose/eviction"),
        &json!({"kind": "Eviction", "metadata": {"name": "other"}}),
    )
    .await
    .err()
    .context("a body naming another task")?;
    assert_eq!(api_error(wrong)?.0, 400);
    Ok(())
}

pub async fn racing_evictions_spend_a_budget_once(ts: &TestServer) -> Result<()> {
    let api = budgeted_job(ts, "api", 4).await?;
    let mut names = Vec::new();
    for i in 0..4 {
        names.push(running_task(ts, &api, i).await?);
    }
    let client = ts.admin_without_retries().await.map_err(|e| anyhow!(e))?;
    let answers = futures::future::join_all(names.iter().map(|n| evict(&client, n))).await;
    let mut granted = 0;
    for a in answers {
        match a {
            Ok(v) if v["code"] == 201 => granted += 1,
            Ok(v) => bail!("unexpected answer {v:#}"),
            Err(e) => assert_eq!(api_error(e)?.0, 429),
        }
    }
    assert_eq!(granted, 1, "one unit of budget, one eviction");
    let mut draining = 0;
    for n in &names {
        draining += usize::from(phase(ts, n).await? == TaskPhase::Draining);
    }
    assert_eq!(draining, 1);
    Ok(())
}
