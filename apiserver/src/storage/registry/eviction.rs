//! The `eviction` subresource of Tasks (Kubernetes' `pods/eviction` is the
//! model): a voluntary disruption that honours the task's job's disruption
//! budget. A POST of an `Eviction` either takes the task through DRAINING
//! (its agent kills it, and the job controller replaces it elsewhere) and
//! is answered 201, or is refused with 429 and the budget's standing, and
//! nothing is written. Drains — Corral's own and any other tool's — evict
//! through here.
//!
//! The budget is judged by `core::disruption` over the job read from the
//! store and its tasks read from the watch cache at least as new as the
//! job. Before the task is touched, the eviction is recorded in the Job's
//! `status.disruptedTasks` in a write conditional on the job's version it
//! judged: two evictions of one job racing (on one API server or two)
//! cannot both spend the last unit of the budget — the loser re-reads and
//! is judged again, seeing the winner's record. A record counts its task
//! as down until the cache shows it down, or for at most two minutes.
//!
//! A task that is not bound yet, or is already leaving or ended, has
//! nothing to evict: answered 201 without a write. A task of no job, or of
//! a job without a budget, is evicted without a record.

use corral_api::task::TaskStatus;
use corral_core::disruption::{self, Budget, Verdict};
use corral_core::lifecycle;
use serde_json::{Value, json};

use super::{Api, ListQuery, WriteOptions, meta_str, parse_rv};
use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::storage::selectors::{FieldSelector, LabelSelector};

/// How often an eviction that lost a race on its job's record is judged again.
const ATTEMPTS: usize = 5;

/// True for the kinds with an `eviction` subresource: Corral's Task.
pub fn is_evictable(desc: &ResourceDesc) -> bool {
    desc.group == "corral.dev" && desc.kind == "Task"
}

/// What an eviction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evicted {
    /// The task was moved to DRAINING.
    Draining,
    /// Nothing was left to evict (not bound, leaving or ended).
    NothingToDo(String),
}

/// Checks an Eviction body for task `task` (400 when it names another task
/// or is not an Eviction).
fn parse(task: &str, body: &Value) -> Result<(), ApiError> {
    match body["kind"].as_str() {
        None | Some("Eviction") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "the eviction subresource takes an Eviction, not a {other}"
            )));
        }
    }
    match meta_str(body, "name") {
        Some(n) if !n.is_empty() && n != task => Err(ApiError::BadRequest(format!(
            "name in URL does not match name in Eviction object ({n} is not {task})"
        ))),
        _ => Ok(()),
    }
}

fn status_of(task: &Value) -> Result<TaskStatus, ApiError> {
    match task.get("status") {
        Some(s) if !s.is_null() => serde_json::from_value(s.clone())
            .map_err(|e| ApiError::Internal(format!("a stored task's status is unreadable: {e}"))),
        _ => Ok(TaskStatus::default()),
    }
}

/// Why there is nothing to evict in a task whose status is `status`, if so.
fn nothing_to_evict(task: &Value, status: &TaskStatus) -> Option<String> {
    let phase = status.phase();
    if phase.is_terminal() {
        return Some(format!("the task has ended ({phase})"));
    }
    if phase.is_being_killed() {
        return Some(format!("the task is leaving already ({phase})"));
    }
    let bound = task["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    (!bound).then(|| format!("the task is not on a node ({phase})"))
}

impl Api {
    /// Evicts task `name` as an `Eviction` body asks: see the module doc.
    pub async fn evict(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        body: &Value,
        opts: &WriteOptions,
    ) -> Result<Evicted, ApiError> {
        if !is_evictable(desc) {
            return Err(ApiError::PathNotFound);
        }
        parse(name, body)?;
        // The server's own writes: the request was authorized as an
        // eviction, which is all it may do.
        let own = WriteOptions {
            requester: None,
            binding: false,
            ..opts.clone()
        };
        for _ in 0..ATTEMPTS {
            let task = self.get(desc, ns, name).await?;
            if let Some(why) = nothing_to_evict(&task, &status_of(&task)?) {
                return Ok(Evicted::NothingToDo(why));
            }
            let job = task["metadata"]["labels"][corral_api::job::JOB_LABEL]
                .as_str()
                .map(str::to_owned);
            if let Some(job) = job {
                match self.record(ns, &job, name, &own).await {
                    Ok(()) => {}
                    Err(ApiError::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            return self.drain(desc, ns, name, &own).await;
        }
        Err(ApiError::Conflict {
            resource: desc.group_resource(),
            name: name.to_owned(),
            message: "the task's job changed under every attempt to judge its budget; try again"
                .into(),
        })
    }

    /// Judges evicting `task` against job `job`'s budget and records it in
    /// the job's status (a Conflict when the job changed since it was read).
    async fn record(
        &self,
        ns: Option<&str>,
        job: &str,
        task: &str,
        opts: &WriteOptions,
    ) -> Result<(), ApiError> {
        let (Some(jobs), Some(tasks)) = (
            self.registry.find("corral.dev", "v1alpha1", "jobs"),
            self.registry.find("corral.dev", "v1alpha1", "tasks"),
        ) else {
            return Err(ApiError::Internal("jobs or tasks are not served".into()));
        };
        let stored = match self.get(&jobs, ns, job).await {
            Ok(j) => j,
            // The job is gone: its tasks go with it, no budget to keep.
            Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let revision = parse_rv(meta_str(&stored, "resourceVersion").unwrap_or("0"))?;
        let parsed: corral_api::Job = serde_json::from_value(stored)
            .map_err(|e| ApiError::Internal(format!("a stored job is unreadable: {e}")))?;
        let Some(max) = parsed
            .spec
            .disruption_budget
            .as_ref()
            .map(|b| b.max_unavailable(parsed.spec.instances))
            .transpose()
            .map_err(|e| ApiError::Internal(format!("job {job}'s budget: {e}")))?
        else {
            return Ok(());
        };
        // Its tasks, at least as new as the job read.
        let q = ListQuery {
            labels: LabelSelector::parse(&format!("{}={job}", corral_api::job::JOB_LABEL))
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            fields: FieldSelector::default(),
            limit: 0,
            continue_token: None,
            resource_version: Some(revision.to_string()),
            exact: false,
        };
        let page = self.list(&tasks, ns, &q).await?;
        let decoded: Vec<corral_api::Task> = page
            .items
            .iter()
            .filter_map(|e| serde_json::from_slice(&e.json).ok())
            .collect();
        let members = disruption::members(job, &decoded);
        let disrupted = disruption::records(parsed.status.as_ref());
        let now = jiff::Timestamp::now();
        let budget = Budget {
            instances: parsed.spec.instances,
            max_unavailable: Some(max),
            members: &members,
            disrupted: &disrupted,
            now: now.as_second(),
        };
        match budget.judge(task) {
            Verdict::OverBudget { down, max } => {
                return Err(ApiError::DisruptionBudget {
                    name: task.to_owned(),
                    cause: format!(
                        "job {job} allows {max} of its {} instance(s) down at once and {down} \
                         are down",
                        parsed.spec.instances
                    ),
                });
            }
            // Down already and not covering anyone: nothing to record.
            Verdict::Free if !members.iter().any(|m| m.name == task && m.available) => {
                return Ok(());
            }
            Verdict::Free | Verdict::WithinBudget { .. } => {}
        }
        let ended = |n: &str| !members.iter().any(|m| m.name == n && m.available);
        let kept = budget.records_after(task, ended);
        let kept: serde_json::Map<String, Value> = kept
            .into_iter()
            .map(|(n, at)| {
                let t = jiff::Timestamp::from_second(at).unwrap_or(now);
                (n, json!(t.to_string()))
            })
            .collect();
        self.modify(
            &jobs,
            ns,
            job,
            Some(revision),
            opts,
            move |current| {
                let mut next = current.clone();
                next["status"]["disruptedTasks"] = Value::Object(kept.clone());
                Ok(next)
            },
            true,
            "Update",
        )
        .await
        .map(|_| ())
    }

    /// Moves task `name` to DRAINING (its newest version; nothing when it
    /// left meanwhile).
    async fn drain(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        opts: &WriteOptions,
    ) -> Result<Evicted, ApiError> {
        let left = std::sync::Mutex::new(None::<String>);
        let written = self
            .modify(
                desc,
                ns,
                name,
                None,
                opts,
                |current| {
                    let mut status = status_of(current)?;
                    if let Some(why) = nothing_to_evict(current, &status) {
                        if let Ok(mut l) = left.lock() {
                            *l = Some(why);
                        }
                        return Ok(current.clone());
                    }
                    lifecycle::apply(
                        &mut status,
                        &lifecycle::Event::Drain,
                        jiff::Timestamp::now(),
                        "eviction",
                    )
                    .map_err(|e| ApiError::Conflict {
                        resource: desc.group_resource(),
                        name: name.to_owned(),
                        message: format!("a {} task cannot be evicted ({e})", status.phase()),
                    })?;
                    let mut next = current.clone();
                    next["status"] = serde_json::to_value(&status)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    Ok(next)
                },
                true,
                "Update",
            )
            .await;
        let left = left.lock().ok().and_then(|mut l| l.take());
        match (written, left) {
            (_, Some(why)) => Ok(Evicted::NothingToDo(why)),
            (Ok(_), None) => Ok(Evicted::Draining),
            (Err(e), None) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use corral_api::TaskPhase;

    use super::*;

    #[test]
    fn bodies_name_their_task_or_none() {
        assert!(parse("t", &json!({"kind": "Eviction", "metadata": {"name": "t"}})).is_ok());
        assert!(parse("t", &json!({"apiVersion": "policy/v1", "kind": "Eviction"})).is_ok());
        assert!(matches!(
            parse("t", &json!({"kind": "Eviction", "metadata": {"name": "u"}})),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse("t", &json!({"kind": "Binding"})),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn only_bound_tasks_that_are_not_leaving_are_evicted() {
        let task = |node: &str| json!({"spec": {"nodeName": node}});
        let with = |phase: TaskPhase| TaskStatus {
            phase: Some(phase),
            ..TaskStatus::default()
        };
        assert_eq!(
            nothing_to_evict(&task("n1"), &with(TaskPhase::Running)),
            None
        );
        assert_eq!(
            nothing_to_evict(&task("n1"), &with(TaskPhase::Assigned)),
            None
        );
        assert!(nothing_to_evict(&task(""), &with(TaskPhase::Pending)).is_some());
        assert!(nothing_to_evict(&task("n1"), &with(TaskPhase::Draining)).is_some());
        assert!(nothing_to_evict(&task("n1"), &with(TaskPhase::Finished)).is_some());
    }
}
