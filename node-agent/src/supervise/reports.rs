//! The agent's status reports, written in bulk: one reporter per agent
//! gathers what happened to every task it runs and writes each task's new
//! status — all the reports that queued for it, applied in order through
//! the lifecycle state machine — many tasks in one request (a `TaskList`
//! POSTed to `namespaces/NS/taskstatuses`, each item a patch of one task's
//! status conditional on the version the agent last saw).
//!
//! One round is in flight at a time; whatever arrives meanwhile goes in the
//! next, so reports batch themselves under load and a lone report waits for
//! nothing. Per task, reports are written in the order they happened, each
//! dated when the agent learned of it. A report is kept until it is written
//! or its task is gone: a conflict re-reads the task and tries again in the
//! next round; an unreachable or overloaded server (a partition, a 429) is
//! retried with a backoff, since a lost report would make the cluster
//! believe a dead copy runs. A report about another task of the same name
//! (another uid), or one the task's phase no longer admits, is left out. An
//! end, once written (or its task gone), is forgotten by the checkpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_api::{Task, TaskPhase};
use corral_core::lifecycle;
use kube::api::Api;
use kube::core::Status;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Objects, Report, Step, is_end};
use crate::checkpoint::Checkpoints;

/// Items per request (the server takes up to 1,000).
const CHUNK: usize = 500;
/// Tasks written in one round (a few requests at once).
const ROUND: usize = 4 * CHUNK;
/// The first and the longest wait before a round that failed is retried.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where reports go: the reporter's queue.
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: mpsc::UnboundedSender<(String, Report)>,
}

impl Reporter {
    /// Starts the reporter for an agent's tasks.
    pub(crate) fn start(
        client: kube::Client,
        objects: Objects,
        checkpoints: Option<Checkpoints>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, objects, checkpoints, rx));
        Reporter { tx }
    }

    /// Queues `report` about task `key`.
    pub(crate) fn send(&self, key: &str, report: Report) {
        let _ = self.tx.send((key.to_owned(), report));
    }
}

/// What became of one task's reports in a round.
enum Outcome {
    /// Written, or nothing left to write: its reports are done.
    Done,
    /// Refused for good (the task is gone, or the write is not allowed).
    Dropped,
    /// The task changed meanwhile: read again, tried in the next round.
    Conflict,
    /// The server could not take it now: tried again after a backoff.
    Retry,
}

async fn run(
    client: kube::Client,
    objects: Objects,
    checkpoints: Option<Checkpoints>,
    mut rx: mpsc::UnboundedReceiver<(String, Report)>,
) {
    let mut pending: BTreeMap<String, Vec<Report>> = BTreeMap::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if pending.is_empty() {
            let Some((key, report)) = rx.recv().await else {
                return;
            };
            pending.entry(key).or_default().push(report);
        }
        while let Ok((key, report)) = rx.try_recv() {
            pending.entry(key).or_default().push(report);
        }
        let keys: Vec<String> = pending.keys().take(ROUND).cloned().collect();
        let outcomes = round(&client, &objects, &pending, &keys).await;
        let mut retry = false;
        for (key, outcome) in keys.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Done | Outcome::Dropped => {
                    let written = pending.remove(&key).unwrap_or_default();
                    forget_ends(checkpoints.as_ref(), &written);
                }
                Outcome::Conflict => reread(&client, &objects, &key).await,
                Outcome::Retry => retry = true,
            }
        }
        if retry {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = FIRST_BACKOFF;
        }
    }
}

/// Written (or its task gone): a copy's end need not be kept any more.
fn forget_ends(checkpoints: Option<&Checkpoints>, reports: &[Report]) {
    let Some(c) = checkpoints else {
        return;
    };
    for (step, _, _, uid) in reports {
        if let (Step::Event(event), Some(uid)) = (step, uid)
            && is_end(event)
        {
            c.clear(uid);
        }
    }
}

/// The status task `key` gets from `reports`, if it changes (the task as
/// the agent last saw it, and the new status).
fn next_status(objects: &Objects, key: &str, reports: &[Report]) -> Option<(Task, Value)> {
    let task = objects.lock().ok()?.get(key).cloned()?;
    let mut status = task.status.clone().unwrap_or_default();
    for (step, node, at, uid) in reports {
        if let (Some(want), Some(is)) = (uid.as_deref(), task.metadata.uid.as_deref())
            && want != is
        {
            continue;
        }
        match step {
            Step::Event(event) => {
                if let Err(e) = lifecycle::apply(&mut status, event, *at, &format!("agent/{node}"))
                {
                    tracing::debug!(task = %key, error = %e, "report not applicable");
                }
            }
            // Only a running copy is healthy or not.
            Step::Health { healthy, message } if status.phase() == TaskPhase::Running => {
                status.set_healthy(*healthy, message.clone(), *at);
            }
            Step::Health { .. } => {}
        }
    }
    if Some(&status) == task.status.as_ref() {
        return None;
    }
    let status = serde_json::to_value(&status).ok()?;
    Some((task, status))
}

/// Writes the reports of `keys`, each task's in one item; one outcome per key.
async fn round(
    client: &kube::Client,
    objects: &Objects,
    pending: &BTreeMap<String, Vec<Report>>,
    keys: &[String],
) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = keys.iter().map(|_| Outcome::Done).collect();
    // Per namespace: (index in `keys`, the task as seen, its new status).
    let mut writes: BTreeMap<&str, Vec<(usize, Task, Value)>> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let Some((ns, _)) = key.split_once('/') else {
            outcomes[i] = Outcome::Dropped;
            continue;
        };
        let reports = pending.get(key).map_or(&[][..], Vec::as_slice);
        if let Some((task, status)) = next_status(objects, key, reports) {
            writes.entry(ns).or_default().push((i, task, status));
        }
    }
    let requests = writes
        .iter()
        .flat_map(|(ns, items)| items.chunks(CHUNK).map(move |chunk| (*ns, chunk)));
    let answers = futures::future::join_all(
        requests.map(|(ns, chunk)| async move { (chunk, write(client, ns, chunk).await) }),
    )
    .await;
    for (chunk, answer) in answers {
        match answer {
            Ok(statuses) => {
                for ((i, task, status), answer) in chunk.iter().zip(statuses) {
                    outcomes[*i] = settle(objects, &keys[*i], task, status, &answer);
                }
            }
            Err(e) => {
                // Unreachable (a partition) or overloaded: kept, retried.
                tracing::debug!(error = %e, tasks = chunk.len(), "writing task statuses failed; retrying");
                for (i, _, _) in chunk {
                    outcomes[*i] = Outcome::Retry;
                }
            }
        }
    }
    outcomes
}

/// POSTs one request of status reports; each item's answer, in order.
async fn write(
    client: &kube::Client,
    ns: &str,
    chunk: &[(usize, Task, Value)],
) -> Result<Vec<Status>, kube::Error> {
    let items: Vec<Value> = chunk
        .iter()
        .map(|(_, task, status)| {
            json!({"metadata": {"name": task.metadata.name, "resourceVersion": task.metadata.resource_version},
                   "status": status})
        })
        .collect();
    let body = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "TaskList", "items": items});
    let req = http::Request::post(format!(
        "/apis/corral.dev/v1alpha1/namespaces/{ns}/taskstatuses"
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?)
    .map_err(kube::Error::HttpError)?;
    let answer: Value = client.request(req).await?;
    let statuses: Vec<Status> = answer
        .get("items")
        .cloned()
        .and_then(|items| serde_json::from_value(items).ok())
        .unwrap_or_default();
    if statuses.len() != chunk.len() {
        return Err(kube::Error::Service(
            format!(
                "{} status reports were answered with {} results",
                chunk.len(),
                statuses.len()
            )
            .into(),
        ));
    }
    Ok(statuses)
}

/// What one item's answer means for its task's reports; a written status
/// is kept as the agent's view of the task until the watch brings it.
fn settle(objects: &Objects, key: &str, task: &Task, status: &Value, answer: &Status) -> Outcome {
    match answer.code {
        200..=299 => {
            let mut written = task.clone();
            written.status = serde_json::from_value(status.clone()).ok();
            written.metadata.resource_version = answer
                .metadata
                .as_ref()
                .and_then(|m| m.resource_version.clone());
            if let Ok(mut o) = objects.lock() {
                // Unless the watch brought a later version meanwhile.
                let version = |t: &Task| {
                    t.metadata
                        .resource_version
                        .as_deref()
                        .and_then(|v| v.parse::<i64>().ok())
                };
                let seen = o.get(key).and_then(version);
                if seen.is_none_or(|seen| version(&written).is_some_and(|w| w >= seen)) {
                    o.insert(key.to_owned(), written);
                }
            }
            Outcome::Done
        }
        404 => Outcome::Dropped,
        409 => Outcome::Conflict,
        429 | 500.. => Outcome::Retry,
        _ => {
            tracing::warn!(task = %key, error = %answer.message, "writing the task status was refused");
            Outcome::Dropped
        }
    }
}

/// Reads task `key` again after a conflict, so its next round starts from
/// what the store holds.
async fn reread(client: &kube::Client, objects: &Objects, key: &str) {
    let Some((ns, name)) = key.split_once('/') else {
        return;
    };
    let api: Api<Task> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(fresh)) => {
            if let Ok(mut o) = objects.lock() {
                o.insert(key.to_owned(), fresh);
            }
        }
        // Its next write is answered 404, and its reports dropped.
        Ok(None) => {}
        Err(e) => tracing::debug!(task = %key, error = %e, "re-reading a task failed"),
    }
}
