//! `corral job kill|restart|update` and `corral events`.
//!
//! Kill and restart are requests written as annotations on the Job
//! ([`KILL_ANNOTATION`], [`RESTART_ANNOTATION`], each holding the request's
//! time); the job controller carries them out through the task state machine
//! (KILLING → KILLED; RESTARTING → KILLED → a fresh PENDING task per
//! instance), so a request survives control-plane restarts. `--wait` follows
//! the tasks until the request is done, printing progress. Requests on an
//! update under way (pause, resume, abort, rollback) are written the same
//! way ([`UPDATE_REQUEST_ANNOTATION`]: the action and its time).
//!
//! `events` merges every task's taskEvents (and v1 Events, when any) into
//! one timeline, oldest first.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use corral_api::TaskPhase;
use corral_api::job::{Job, JobPhase};
use corral_api::task::Task;
use corral_api::update::UPDATE_REQUEST_ANNOTATION;
use corral_core::jobs::{KILL_ANNOTATION, RESTART_ANNOTATION};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::{Ctx, print_columns, server_error};

/// `corral job` verbs.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Kill every task of a job (KILLING → KILLED); the job ends Killed.
    Kill(JobTarget),
    /// Restart every task of a job: each is killed and replaced by a fresh one.
    Restart(JobTarget),
    /// Pause, resume, abort or roll back the job's update under way.
    Update {
        /// What to do.
        action: UpdateAction,
        /// The job's name.
        name: String,
    },
}

/// A request on a job's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UpdateAction {
    /// Restart no more instances until resumed.
    Pause,
    /// Go on with a paused update.
    Resume,
    /// Stop the update where it is.
    Abort,
    /// Move the instances back to the job's previous template.
    Rollback,
}

impl UpdateAction {
    fn as_str(self) -> &'static str {
        match self {
            UpdateAction::Pause => "pause",
            UpdateAction::Resume => "resume",
            UpdateAction::Abort => "abort",
            UpdateAction::Rollback => "rollback",
        }
    }
}

/// Runs `corral job update ACTION JOB`: writes the request; the job
/// controller carries it out once (see `corral describe job`).
async fn update(ctx: &Ctx, action: UpdateAction, name: &str) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let job = jobs.get(name).await.map_err(server_error)?;
    let active = job
        .status
        .as_ref()
        .and_then(|s| s.update.as_ref())
        .filter(|u| !u.state.is_final());
    let Some(u) = active else {
        bail!("job {name} has no update under way");
    };
    let value = format!("{} {}", action.as_str(), jiff::Timestamp::now());
    jobs.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {UPDATE_REQUEST_ANNOTATION: value}}})),
    )
    .await
    .map_err(server_error)?;
    outln!(
        "job.corral.dev/{name} update {} {} requested",
        u.id,
        action.as_str()
    );
    Ok(())
}

/// Which job, and whether to wait.
#[derive(Debug, Args)]
pub struct JobTarget {
    /// The job's name.
    pub name: String,
    /// Wait until the request is carried out.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// Runs `corral job …`.
pub async fn run(ctx: &Ctx, cmd: &JobCommand) -> Result<()> {
    let (target, annotation, verb) = match cmd {
        JobCommand::Kill(t) => (t, KILL_ANNOTATION, "kill"),
        JobCommand::Restart(t) => (t, RESTART_ANNOTATION, "restart"),
        JobCommand::Update { action, name } => return update(ctx, *action, name).await,
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let now = jiff::Timestamp::now();
    let at = now.to_string();
    jobs.patch(
        &target.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {annotation: at}}})),
    )
    .await
    .map_err(server_error)?;
    outln!("job.corral.dev/{} {verb} requested", target.name);
    if target.wait {
        wait(
            ctx,
            &target.name,
            verb,
            now,
            Duration::from_secs(target.timeout),
        )
        .await?;
    }
    Ok(())
}

/// Follows the job's tasks until the request is done, printing each change.
async fn wait(
    ctx: &Ctx,
    job: &str,
    verb: &str,
    since: jiff::Timestamp,
    timeout: Duration,
) -> Result<()> {
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let deadline = Instant::now() + timeout;
    let cfg = watcher::Config::default().labels(&format!("corral.dev/job={job}"));
    let mut stream = std::pin::pin!(watcher(tasks.clone(), cfg).applied_objects());
    let mut last = String::new();
    loop {
        let all = tasks
            .list(&ListParams::default().labels(&format!("corral.dev/job={job}")))
            .await
            .map_err(server_error)?
            .items;
        let instances = jobs.get(job).await.map_err(server_error)?;
        let done = match verb {
            "kill" => {
                instances.status.as_ref().and_then(|s| s.phase) == Some(JobPhase::Killed)
                    && all
                        .iter()
                        .all(|t| t.status.as_ref().is_some_and(|s| s.phase().is_terminal()))
            }
            _ => restarted(&all, since),
        };
        let summary = progress(&all);
        if summary != last {
            eprintln!("  {summary}");
            last = summary;
        }
        if done {
            outln!("job.corral.dev/{job} {verb} done");
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out waiting for the {verb} of job {job}");
        }
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Err(e))) => bail!("watching the job's tasks: {e}"),
            Ok(None) => bail!("the watch of the job's tasks ended"),
            _ => {}
        }
    }
}

/// True when every task that was live when the restart was asked for
/// (assigned before `since`, not ended before it) has ended, and the job
/// runs as many tasks assigned since (RUNNING, or finished) as it ran then.
/// Counting tasks rather than instances keeps the wait finite where some
/// instances could not run before either (three instances with a host limit
/// of one on a one-machine cluster: whichever instance takes the freed slot
/// restores the job).
fn restarted(tasks: &[Task], since: jiff::Timestamp) -> bool {
    let assigned = corral_core::jobs::assigned_at;
    let phase = |t: &Task| t.status.clone().unwrap_or_default().phase();
    let ended = |t: &Task| {
        t.status.as_ref().and_then(|s| {
            s.task_events
                .iter()
                .find(|e| e.status.is_terminal())
                .map(|e| e.timestamp.0)
        })
    };
    let old: Vec<&Task> = tasks
        .iter()
        .filter(|t| assigned(t).is_some_and(|a| a < since) && ended(t).is_none_or(|e| e >= since))
        .collect();
    let old_live = old.iter().any(|t| !phase(t).is_terminal());
    let fresh = tasks
        .iter()
        .filter(|t| {
            assigned(t).is_some_and(|a| a >= since)
                && matches!(phase(t), TaskPhase::Running | TaskPhase::Finished)
        })
        .count();
    !old_live && fresh >= old.len().max(1)
}

/// `RUNNING=2 KILLING=1`.
fn progress(tasks: &[Task]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        *counts
            .entry(t.status.clone().unwrap_or_default().phase())
            .or_insert(0) += 1;
    }
    counts
        .iter()
        .map(|(p, n)| format!("{p}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `corral events` options.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only this object's events (`task/NAME` or `job/NAME`).
    #[arg(long = "for")]
    pub for_object: Option<String>,
}

/// Runs `corral events`.
pub async fn events(ctx: &Ctx, args: &EventsArgs) -> Result<()> {
    let (tasks_api, core_api): (Api<Task>, Api<CoreEvent>) = if args.all_namespaces {
        (Api::all(ctx.client.clone()), Api::all(ctx.client.clone()))
    } else {
        (
            Api::namespaced(ctx.client.clone(), &ctx.namespace),
            Api::namespaced(ctx.client.clone(), &ctx.namespace),
        )
    };
    let filter = match args.for_object.as_deref().map(|f| f.split_once('/')) {
        None => None,
        Some(Some((kind, name))) => Some((ctx.resolve_kind(kind)?.kind, name.to_owned())),
        Some(None) => bail!("--for takes KIND/NAME"),
    };
    let tasks = tasks_api
        .list(&ListParams::default())
        .await
        .map_err(server_error)?
        .items;
    // (time, namespace, object, status, actor, message)
    let mut rows: Vec<(jiff::Timestamp, [String; 5])> = Vec::new();
    for t in &tasks {
        let name = t.metadata.name.clone().unwrap_or_default();
        let keep = match &filter {
            None => true,
            Some(("Task", n)) => *n == name,
            Some(("Job", n)) => *n == t.spec.job,
            Some(_) => false,
        };
        if !keep {
            continue;
        }
        for e in t
            .status
            .as_ref()
            .map(|s| s.task_events.as_slice())
            .unwrap_or(&[])
        {
            rows.push((
                e.timestamp.0,
                [
                    t.metadata.namespace.clone().unwrap_or_default(),
                    format!("task/{name}"),
                    e.status.to_string(),
                    e.actor.clone(),
                    e.message.clone(),
                ],
            ));
        }
    }
    for e in core_api
        .list(&ListParams::default())
        .await
        .map_err(server_error)?
        .items
    {
        let obj = &e.involved_object;
        let keep = match &filter {
            None => true,
            Some((kind, n)) => obj.kind.as_deref() == Some(*kind) && obj.name.as_deref() == Some(n),
        };
        let when = e
            .last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let (true, Some(when)) = (keep, when) else {
            continue;
        };
        rows.push((
            when,
            [
                e.metadata.namespace.clone().unwrap_or_default(),
                format!(
                    "{}/{}",
                    obj.kind.clone().unwrap_or_default().to_lowercase(),
                    obj.name.clone().unwrap_or_default()
                ),
                e.reason.clone().unwrap_or_default(),
                e.source
                    .as_ref()
                    .and_then(|s| s.component.clone())
                    .or(e.reporting_component.clone())
                    .unwrap_or_default(),
                e.message.clone().unwrap_or_default(),
            ],
        ));
    }
    if rows.is_empty() {
        eprintln!("No events found.");
        return Ok(());
    }
    rows.sort_by_key(|(t, _)| *t);
    let mut out = vec![
        ["TIME", "NAMESPACE", "OBJECT", "STATUS", "ACTOR", "MESSAGE"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
    ];
    for (t, cols) in rows {
        let mut row = vec![t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()];
        row.extend(cols);
        if !args.all_namespaces {
            row.remove(1);
        }
        out.push(row);
    }
    if !args.all_namespaces {
        out[0].remove(1);
    }
    print_columns(&out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(instance: u32, assigned: &str, phase: &str) -> Task {
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": format!("j-{instance}-x"), "namespace": "ns"},
            "spec": {"job": "j", "role": "r", "instanceId": instance, "resources": {"cpus": 1},
                     "container": {"image": "x"}},
            "status": {"phase": phase, "taskEvents": [
                {"timestamp": assigned, "status": "ASSIGNED", "message": "", "actor": "scheduler"}]}}))
        .expect("task")
    }

    #[test]
    fn a_restart_is_done_when_every_task_live_at_the_request_is_replaced() -> Result<()> {
        let since: jiff::Timestamp = "2026-11-30T10:00:00Z".parse()?;
        let old = task(0, "2026-11-30T09:00:00Z", "KILLED");
        let new = task(0, "2026-11-30T10:00:01Z", "RUNNING");
        assert!(restarted(&[old.clone(), new.clone()], since));
        let old_live = task(0, "2026-11-30T09:00:00Z", "RESTARTING");
        assert!(!restarted(&[old_live, new.clone()], since));
        let mut pending = task(0, "2026-11-30T10:00:01Z", "PENDING");
        pending.status = None;
        assert!(!restarted(&[old.clone(), pending.clone()], since));
        // One machine, three instances, a host limit of one: instance 0 ran
        // and was restarted; instance 1, pending until then, took the slot.
        let took_the_slot = task(1, "2026-11-30T10:00:02Z", "RUNNING");
        assert!(restarted(
            &[old.clone(), pending.clone(), took_the_slot],
            since
        ));
        // Two ran before: two must run again.
        let other_old = task(2, "2026-11-30T09:00:00Z", "KILLED");
        assert!(!restarted(&[old, other_old, new, pending], since));
        Ok(())
    }
}
