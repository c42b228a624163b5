//! Jobs → tasks, as a pure decision.
//!
//! Given a job and its tasks, [`reconcile`] says which tasks to create (one
//! per instance that has no live task and should run again), which to kill
//! (instances beyond `instances`), and the job's status counts and phase:
//! - a **service** instance whose task ended (finished, failed, killed, lost)
//!   gets a replacement, forever;
//! - an **ad-hoc** instance runs until a task finishes; a failed one is
//!   retried until the instance has failed `maxTaskFailures` times (Aurora's
//!   `max_task_failures`: 1, the default, means a failed task is not
//!   retried; 5 means five attempts; 0 is read as 1; -1: without limit); then
//!   the job is FAILED; when every instance finished, SUCCEEDED;
//! - a task lost to the infrastructure (LOST, or KILLED after a preemption,
//!   restart or drain) is always replaced and never counts as a failure.
//!
//! Requests made on the job as annotations (so they survive restarts and are
//! carried out by whichever controller runs):
//! - [`KILL_ANNOTATION`]: every live task is killed and the job ends KILLED
//!   (for good: removing the annotation does not revive it);
//! - [`RESTART_ANNOTATION`] (a timestamp): every task running since before
//!   it is restarted (RESTARTING → KILLED, then replaced like any displaced
//!   task). Tasks assigned after the timestamp are left alone, so the request
//!   is carried out once.
//!
//! A **service** instance that flaps — two or more tasks in a row that ended
//! by themselves within [`FLAP_WINDOW_SECONDS`] of running, or never ran — gets
//! its replacement held back (THROTTLED) until an exponential backoff has
//! passed since the last one ended: [`FIRST_HOLD_SECONDS`], doubling, at most
//! [`MAX_HOLD_SECONDS`] (Aurora's flapping-task penalty). The hold's end is
//! in [`JobPlan::holds`]; the controller records it on the task.
//!
//! A change of the task template rolls out a batch at a time ([`update`]).
//!
//! Cron jobs are left to the cron controller (their runs are made per tick).
//!
//! Task names are `<job>-<instance>-<attempt>`: creating by name makes each
//! decision idempotent across controller restarts.

use std::collections::BTreeMap;

use corral_api::job::{JobKind, JobPhase};

pub mod created;
mod instances;
pub mod update;
pub use created::initial_status;
pub use instances::ByInstance;
pub use update::{TEMPLATE_ANNOTATION, template_hash};

/// A task that ended by itself within this long of running flapped.
pub const FLAP_WINDOW_SECONDS: i64 = 60;
/// The hold-back after the second flap in a row; it doubles with each more.
pub const FIRST_HOLD_SECONDS: i64 = 5;
/// The longest hold-back.
pub const MAX_HOLD_SECONDS: i64 = 300;

/// Ended tasks a service instance keeps for itself at most: its current
/// run of flaps, which the flapping backoff counts (the backoff reaches its
/// cap before this many), or else its newest end.
pub const ENDED_TASKS_KEPT_PER_INSTANCE: usize = 10;

/// Ended tasks a service keeps beyond what its instances need, newest
/// first, for its history (Aurora keeps 100 ended tasks a job). Older ones
/// are deleted, so a service that runs for years, is preempted every day
/// or is scaled up and down does not fill the store: it holds at most one
/// ended task per instance, its flapping ones' runs, and these.
pub const ENDED_TASKS_KEPT_PER_JOB: usize = 100;

/// Set on a Task created held back: the RFC 3339 time its hold ends.
pub const THROTTLED_UNTIL_ANNOTATION: &str = "corral.dev/throttled-until";

/// Set on a Job (to the request's time) to kill it: `corral job kill`.
pub const KILL_ANNOTATION: &str = "corral.dev/kill-requested";
/// Set on a Job to a timestamp to restart every task older than it:
/// `corral job restart`.
pub const RESTART_ANNOTATION: &str = "corral.dev/restart-requested";
use corral_api::{Job, Task, TaskPhase};

/// One task of the job, as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    /// Object name.
    pub name: String,
    /// Instance number.
    pub instance: u32,
    /// Attempt number (from the name; 0 for the first task of an instance).
    pub attempt: u32,
    /// Current phase.
    pub phase: TaskPhase,
    /// True when it ended for an infrastructure reason (lost, preempted,
    /// restarted, drained) rather than by itself.
    pub displaced: bool,
    /// When it was last assigned to a node, in Unix microseconds.
    pub assigned: Option<i64>,
    /// True when it ended by itself (finished or failed) within
    /// [`FLAP_WINDOW_SECONDS`] of running, or without ever running.
    pub flapped: bool,
    /// When it ended (its last event), in Unix microseconds, once terminal.
    pub ended: Option<i64>,
    /// The hash of the template it was made from, when recorded.
    pub template: Option<String>,
    /// Since when it has been healthy without a break (Unix µs): its
    /// `Healthy` condition's transition when it has a health check, else
    /// when it started running; None when it is not running (healthy).
    pub healthy_since: Option<i64>,
    /// True when it is to leave a node being drained (its
    /// `DisruptionTarget` condition) and has not ended: a service instance
    /// gets its replacement before it goes (make before break; see
    /// [`crate::disruption`]).
    pub leaving: bool,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// Tasks to create: (instance, attempt).
    pub create: Vec<(u32, u32)>,
    /// Of those, the ones to create held back (THROTTLED), with when their
    /// hold ends (Unix microseconds).
    pub holds: BTreeMap<(u32, u32), i64>,
    /// Tasks to kill (instances beyond the count, or all of a killed job), by name.
    pub kill: Vec<String>,
    /// Tasks to restart (older than a restart request), by name.
    pub restart: Vec<String>,
    /// Ended tasks beyond the history kept, to delete, by name.
    pub prune: Vec<String>,
    /// Instances whose live task runs the current template, and whether a
    /// rolling update is under way (None: not a job that rolls).
    pub update: Option<(u32, bool)>,
    /// The job's update: what new tasks are made from, its status, the
    /// template to keep (see [`update`]); None for jobs that do not roll.
    pub rollout: Option<update::Roll>,
    /// Tasks per phase.
    pub counts: BTreeMap<TaskPhase, u32>,
    /// Failed tasks so far.
    pub failures: u32,
    /// The job's phase.
    pub phase: JobPhase,
}

/// The name of an instance's attempt.
pub fn task_name(job: &str, instance: u32, attempt: u32) -> String {
    format!("{job}-{instance}-{attempt}")
}

/// Reads `<job>-<instance>-<attempt>` back.
pub fn parse_task_name(job: &str, name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix(job)?.strip_prefix('-')?;
    let (i, a) = rest.split_once('-')?;
    Some((i.parse().ok()?, a.parse().ok()?))
}

/// When the task was last assigned to a node (its latest ASSIGNED event).
pub fn assigned_at(t: &Task) -> Option<jiff::Timestamp> {
    t.status
        .as_ref()?
        .task_events
        .iter()
        .rev()
        .find(|e| e.status == TaskPhase::Assigned)
        .map(|e| e.timestamp.0)
}

/// The view of a task object.
pub fn view(job: &str, t: &Task) -> Option<TaskView> {
    let name = t.metadata.name.clone()?;
    let (instance, attempt) = parse_task_name(job, &name)?;
    let none = corral_api::task::TaskStatus::default();
    let status = t.status.as_ref().unwrap_or(&none);
    let phase = status.phase();
    // KILLED after PREEMPTING, RESTARTING or DRAINING is a displacement.
    let previous = status.task_events.iter().rev().nth(1).map(|e| e.status);
    let displaced = phase == TaskPhase::Lost
        || (phase == TaskPhase::Killed
            && matches!(
                previous,
                Some(TaskPhase::Preempting | TaskPhase::Restarting | TaskPhase::Draining)
            ));
    let at = |p: TaskPhase| {
        status
            .task_events
            .iter()
            .rev()
            .find(|e| e.status == p)
            .map(|e| e.timestamp.0.as_microsecond())
    };
    let ended = phase
        .is_terminal()
        .then(|| {
            status
                .task_events
                .last()
                .map(|e| e.timestamp.0.as_microsecond())
        })
        .flatten();
    let flapped = matches!(phase, TaskPhase::Finished | TaskPhase::Failed)
        && match (at(TaskPhase::Running), ended) {
            (Some(run), Some(end)) => end - run < FLAP_WINDOW_SECONDS * 1_000_000,
            _ => true,
        };
    Some(TaskView {
        name,
        instance,
        attempt,
        phase,
        displaced,
        assigned: assigned_at(t).map(|a| a.as_microsecond()),
        flapped,
        ended,
        template: t
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TEMPLATE_ANNOTATION))
            .cloned(),
        healthy_since: (phase == TaskPhase::Running)
            .then(|| match &t.spec.health_check {
                Some(_) => status
                    .conditions
                    .iter()
                    .find(|c| {
                        c.type_ == corral_api::task::TaskConditionType::Healthy
                            && c.status == corral_api::ConditionStatus::True
                    })
                    .and_then(|c| c.last_transition_time.as_ref())
                    .map(|t| t.0.as_microsecond()),
                None => at(TaskPhase::Running),
            })
            .flatten(),
        leaving: !phase.is_terminal() && status.is_disruption_target(),
    })
}

/// When a service instance's next task may run, if it flaps: two or more of
/// its newest tasks in a row flapped (displacements do not count).
/// `history` is the instance's group, in attempt order.
fn hold_until(history: &[&TaskView]) -> Option<i64> {
    let flaps = history
        .iter()
        .rev()
        .take_while(|t| t.flapped && !t.displaced)
        .count();
    if flaps < 2 {
        return None;
    }
    let exponent = u32::try_from(flaps - 2).unwrap_or(u32::MAX).min(16);
    let hold = FIRST_HOLD_SECONDS
        .saturating_mul(1i64 << exponent)
        .min(MAX_HOLD_SECONDS);
    Some(history.last()?.ended? + hold * 1_000_000)
}

/// Decides what the job needs now.
pub fn reconcile(job: &Job, tasks: &[TaskView], now: i64) -> JobPlan {
    let s = &job.spec;
    let mut plan = JobPlan {
        create: Vec::new(),
        holds: BTreeMap::new(),
        kill: Vec::new(),
        restart: Vec::new(),
        prune: Vec::new(),
        update: None,
        rollout: None,
        counts: BTreeMap::new(),
        failures: 0,
        phase: JobPhase::Active,
    };
    for t in tasks {
        *plan.counts.entry(t.phase).or_default() += 1;
        if t.phase == TaskPhase::Failed {
            plan.failures += 1;
        }
    }
    let by_instance = ByInstance::new(tasks);
    let annotation = |k: &str| job.metadata.annotations.as_ref().and_then(|a| a.get(k));
    if job.status.as_ref().and_then(|st| st.phase) == Some(JobPhase::Killed)
        || annotation(KILL_ANNOTATION).is_some()
        || job.metadata.deletion_timestamp.is_some()
    {
        plan.phase = JobPhase::Killed;
        plan.kill = tasks
            .iter()
            .filter(|t| !t.phase.is_terminal())
            .map(|t| t.name.clone())
            .collect();
        return plan;
    }
    // Cron jobs' runs are made by the cron controller, tick by tick.
    if s.kind == JobKind::Cron {
        return plan;
    }
    // A restart request: every task assigned before it goes RESTARTING
    // (tasks still pending then will start fresh anyway).
    if let Some(at) = annotation(RESTART_ANNOTATION).and_then(|v| v.parse::<jiff::Timestamp>().ok())
    {
        plan.restart = tasks
            .iter()
            .filter(|t| {
                matches!(
                    t.phase,
                    TaskPhase::Assigned | TaskPhase::Starting | TaskPhase::Running
                ) && t.assigned.is_some_and(|a| a < at.as_microsecond())
            })
            .map(|t| t.name.clone())
            .collect();
    }
    let (mut finished, mut exhausted) = (0u32, false);
    for instance in 0..s.instances {
        let history = by_instance.get(instance);
        // A service's task on a draining node no longer covers its
        // instance: its replacement is made before it goes.
        let moving = |t: &TaskView| s.kind == JobKind::Service && t.leaving;
        let live = history.iter().any(|t| !t.phase.is_terminal() && !moving(t));
        let next_attempt = history.iter().map(|t| t.attempt + 1).max().unwrap_or(0);
        if live {
            continue;
        }
        let Some(last) = history.iter().max_by_key(|t| t.attempt) else {
            plan.create.push((instance, 0));
            continue;
        };
        let failed = history
            .iter()
            .filter(|t| t.phase == TaskPhase::Failed)
            .count();
        let replace = match (s.kind, last.phase) {
            (JobKind::Service, _) => true,
            (_, TaskPhase::Finished) => {
                finished += 1;
                false
            }
            (_, TaskPhase::Failed) => {
                // Aurora: the instance is failed once it has failed
                // `max_task_failures` times.
                let allowed = s.max_task_failures < 0
                    || failed < usize::try_from(s.max_task_failures).unwrap_or(0);
                if !allowed {
                    exhausted = true;
                }
                allowed
            }
            _ => last.displaced || last.phase == TaskPhase::Killed,
        };
        if replace {
            plan.create.push((instance, next_attempt));
            if s.kind == JobKind::Service
                && let Some(until) = hold_until(history)
            {
                plan.holds.insert((instance, next_attempt), until);
            }
        }
    }
    // A template change rolls through the instances a batch at a time.
    let replacing: Vec<u32> = plan.create.iter().map(|(i, _)| *i).collect();
    let mut policy = s.update.clone().unwrap_or_default();
    // An update is a voluntary disruption: its batch never takes down
    // more than the job's disruption budget (but at least one, so that a
    // budget of 0 does not freeze the job's template).
    if let Some(max) = s
        .disruption_budget
        .as_ref()
        .and_then(|b| b.max_unavailable(s.instances).ok())
    {
        policy.batch_size = policy.batch_size.min(max.max(1));
    }
    let spec_template = s.template();
    let status = job.status.as_ref();
    let roll = update::decide(
        update::Input {
            instances: s.instances,
            policy: &policy,
            spec: &spec_template,
            recorded: status.and_then(|st| st.template.as_deref()),
            update: status.and_then(|st| st.update.as_deref()),
            request: annotation(corral_api::update::UPDATE_REQUEST_ANNOTATION).map(String::as_str),
            replacing: &replacing,
            now,
        },
        &by_instance,
    );
    plan.kill.extend(roll.kill.iter().cloned());
    for name in &roll.restart {
        if !plan.restart.contains(name) {
            plan.restart.push(name.clone());
        }
    }
    plan.update = Some((roll.updated, roll.rolling));
    plan.rollout = Some(roll);
    // A service instance keeps what it needs (its newest end, or its run
    // of flaps); the job keeps a bounded history besides.
    if s.kind == JobKind::Service {
        let mut history: Vec<&TaskView> = Vec::new();
        for (instance, tasks) in by_instance.iter() {
            // Newest first: each group is in attempt order.
            let ended = tasks.iter().rev().filter(|t| t.phase.is_terminal());
            let needed = if instance < s.instances {
                let flaps = ended
                    .clone()
                    .take_while(|t| t.flapped && !t.displaced)
                    .count();
                flaps.clamp(1, ENDED_TASKS_KEPT_PER_INSTANCE)
            } else {
                0
            };
            history.extend(ended.skip(needed));
        }
        history.sort_by_key(|t| {
            (
                std::cmp::Reverse(t.ended),
                t.instance,
                std::cmp::Reverse(t.attempt),
            )
        });
        plan.prune.extend(
            history
                .into_iter()
                .skip(ENDED_TASKS_KEPT_PER_JOB)
                .map(|t| t.name.clone()),
        );
    }
    for (instance, history) in by_instance.iter() {
        if instance >= s.instances {
            plan.kill.extend(
                history
                    .iter()
                    .filter(|t| !t.phase.is_terminal())
                    .map(|t| t.name.clone()),
            );
            continue;
        }
        // A replacement made for a drain that was called off: the
        // instance keeps its oldest staying task (the group is in
        // attempt order), the newer ones go.
        let staying = history
            .iter()
            .filter(|t| !t.phase.is_terminal() && !t.phase.is_being_killed() && !t.leaving);
        for extra in staying.skip(1) {
            if !plan.kill.contains(&extra.name) {
                plan.kill.push(extra.name.clone());
            }
        }
    }
    if s.kind != JobKind::Service {
        if exhausted {
            plan.phase = JobPhase::Failed;
            plan.create.clear();
        } else if s.instances > 0 && finished == s.instances {
            plan.phase = JobPhase::Succeeded;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(job: &Job, tasks: &[TaskView]) -> JobPlan {
        reconcile(job, tasks, 0)
    }
    use serde_json::json;

    fn job(kind: &str, instances: u32, max_failures: i32) -> Job {
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "j", "namespace": "default"},
            "spec": {"role": "r", "environment": "prod", "kind": kind, "instances": instances, "maxTaskFailures": max_failures,
                     "resources": {"cpus": 1, "memory": "1Gi"}, "container": {"image": "busybox"}}}))
        .expect("job")
    }

    fn t(instance: u32, attempt: u32, phase: TaskPhase) -> TaskView {
        TaskView {
            name: task_name("j", instance, attempt),
            instance,
            attempt,
            phase,
            displaced: phase == TaskPhase::Lost,
            assigned: Some(1_000_000_000),
            flapped: false,
            ended: None,
            template: None,
            healthy_since: None,
            leaving: false,
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(
            parse_task_name("web-api", &task_name("web-api", 3, 7)),
            Some((3, 7))
        );
        assert_eq!(parse_task_name("web", "web-api-1-0"), None);
    }

    #[test]
    fn a_new_job_gets_one_task_per_instance() {
        let p = plan_of(&job("service", 3, 1), &[]);
        assert_eq!(p.create, vec![(0, 0), (1, 0), (2, 0)]);
        assert_eq!(p.phase, JobPhase::Active);
    }

    #[test]
    fn service_instances_are_replaced_whatever_ended_them() {
        let tasks = [
            t(0, 0, TaskPhase::Finished),
            t(1, 0, TaskPhase::Failed),
            t(2, 0, TaskPhase::Running),
            t(3, 4, TaskPhase::Killed),
        ];
        let p = plan_of(&job("service", 4, 1), &tasks);
        assert_eq!(p.create, vec![(0, 1), (1, 1), (3, 5)]);
        assert_eq!((p.failures, p.phase), (1, JobPhase::Active));
    }

    #[test]
    fn adhoc_retries_until_max_task_failures_then_fails() {
        // Aurora's testFailedTaskIncrementsFailureCount: with 1 (the
        // default) the first failure fails the job.
        let p = plan_of(&job("adhoc", 1, 1), &[t(0, 0, TaskPhase::Failed)]);
        assert_eq!(
            (p.create.clone(), p.phase, p.failures),
            (vec![], JobPhase::Failed, 1),
            "maxTaskFailures 1: a failed task is not retried"
        );
        let p = plan_of(&job("adhoc", 1, 2), &[t(0, 0, TaskPhase::Failed)]);
        assert_eq!(
            (p.create.clone(), p.phase),
            (vec![(0, 1)], JobPhase::Active),
            "maxTaskFailures 2: a second attempt"
        );
        let p = plan_of(
            &job("adhoc", 1, 2),
            &[t(0, 0, TaskPhase::Failed), t(0, 1, TaskPhase::Failed)],
        );
        assert_eq!((p.create.clone(), p.phase), (vec![], JobPhase::Failed));
        // maxTaskFailures 5: five attempts, the fifth failure is final.
        let five: Vec<_> = (0..4).map(|a| t(0, a, TaskPhase::Failed)).collect();
        assert_eq!(plan_of(&job("adhoc", 1, 5), &five).create, vec![(0, 4)]);
        let five: Vec<_> = (0..5).map(|a| t(0, a, TaskPhase::Failed)).collect();
        assert_eq!(plan_of(&job("adhoc", 1, 5), &five).phase, JobPhase::Failed);
        let p = plan_of(&job("adhoc", 1, 0), &[t(0, 0, TaskPhase::Failed)]);
        assert_eq!(p.phase, JobPhase::Failed, "maxTaskFailures 0 is read as 1");
        let p = plan_of(
            &job("adhoc", 1, -1),
            &[
                t(0, 0, TaskPhase::Failed),
                t(0, 1, TaskPhase::Failed),
                t(0, 2, TaskPhase::Failed),
            ],
        );
        assert_eq!(p.create, vec![(0, 3)], "-1 retries forever");
    }

    #[test]
    fn adhoc_succeeds_when_every_instance_finished_and_lost_tasks_are_replaced_free() {
        let p = plan_of(
            &job("adhoc", 2, 1),
            &[t(0, 0, TaskPhase::Finished), t(1, 0, TaskPhase::Lost)],
        );
        assert_eq!(
            (p.create.clone(), p.failures, p.phase),
            (vec![(1, 1)], 0, JobPhase::Active)
        );
        let p = plan_of(
            &job("adhoc", 2, 1),
            &[
                t(0, 0, TaskPhase::Finished),
                t(1, 0, TaskPhase::Lost),
                t(1, 1, TaskPhase::Finished),
            ],
        );
        assert_eq!((p.create.clone(), p.phase), (vec![], JobPhase::Succeeded));
    }

    #[test]
    fn scaling_down_kills_the_extra_instances() {
        let tasks = [
            t(0, 0, TaskPhase::Running),
            t(1, 0, TaskPhase::Running),
            t(2, 0, TaskPhase::Pending),
        ];
        let p = plan_of(&job("service", 1, 1), &tasks);
        assert_eq!(p.kill, vec![task_name("j", 1, 0), task_name("j", 2, 0)]);
        assert!(p.create.is_empty());
        assert_eq!(p.counts.get(&TaskPhase::Running), Some(&2));
    }

    fn with_annotation(mut j: Job, k: &str, v: &str) -> Job {
        j.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(k.to_owned(), v.to_owned());
        j
    }

    #[test]
    fn a_kill_request_kills_every_live_task_and_ends_the_job() {
        let j = with_annotation(
            job("service", 2, 1),
            KILL_ANNOTATION,
            "2026-11-30T10:00:00Z",
        );
        let tasks = [
            t(0, 0, TaskPhase::Running),
            t(1, 0, TaskPhase::Finished),
            t(1, 1, TaskPhase::Pending),
        ];
        let p = plan_of(&j, &tasks);
        assert_eq!(p.phase, JobPhase::Killed);
        assert_eq!(p.kill, vec![task_name("j", 0, 0), task_name("j", 1, 1)]);
        assert!(p.create.is_empty(), "a killed job gets no replacements");
    }

    #[test]
    fn a_restart_request_restarts_started_tasks_older_than_it_once() {
        // Tasks in `t` were assigned at 1000 s; the request is later.
        let j = with_annotation(
            job("service", 3, 1),
            RESTART_ANNOTATION,
            "1970-01-01T00:20:00Z",
        );
        let mut newer = t(2, 1, TaskPhase::Running);
        newer.assigned = Some(1_300_000_000);
        let tasks = [
            t(0, 0, TaskPhase::Running),
            t(1, 0, TaskPhase::Pending),
            newer,
        ];
        let p = plan_of(&j, &tasks);
        assert_eq!(
            p.restart,
            vec![task_name("j", 0, 0)],
            "pending tasks and tasks assigned since are left alone"
        );
        assert!(
            p.create.is_empty(),
            "nothing is replaced before the restart kills it"
        );
        // Once the old task is KILLED after RESTARTING, it is displaced and replaced.
        let mut killed = t(0, 0, TaskPhase::Killed);
        killed.displaced = true;
        let mut newer = t(2, 1, TaskPhase::Running);
        newer.assigned = Some(1_300_000_000);
        let p = plan_of(&j, &[killed, t(1, 0, TaskPhase::Pending), newer]);
        assert_eq!(p.create, vec![(0, 1)]);
        assert!(p.restart.is_empty());
        let p = plan_of(
            &with_annotation(job("service", 1, 1), RESTART_ANNOTATION, "not a time"),
            &[t(0, 0, TaskPhase::Running)],
        );
        assert!(
            p.restart.is_empty(),
            "an unreadable request restarts nothing"
        );
    }

    fn flapped(instance: u32, attempt: u32, ended_s: i64) -> TaskView {
        let mut v = t(instance, attempt, TaskPhase::Failed);
        v.flapped = true;
        v.ended = Some(ended_s * 1_000_000);
        v
    }

    #[test]
    fn a_flapping_service_instance_is_held_back_with_a_growing_backoff() {
        let j = job("service", 1, 1);
        // One quick failure: replaced at once.
        let p = plan_of(&j, &[flapped(0, 0, 100)]);
        assert_eq!((p.create.clone(), p.holds.len()), (vec![(0, 1)], 0));
        // Two in a row: held 5 s after the last ended; three: 10 s.
        let p = plan_of(&j, &[flapped(0, 0, 100), flapped(0, 1, 110)]);
        assert_eq!(p.holds.get(&(0, 2)), Some(&115_000_000));
        let p = plan_of(
            &j,
            &[flapped(0, 0, 100), flapped(0, 1, 110), flapped(0, 2, 130)],
        );
        assert_eq!(p.holds.get(&(0, 3)), Some(&140_000_000));
        // Capped at five minutes.
        let many: Vec<TaskView> = (0..20)
            .map(|a| flapped(0, a, 1000 + i64::from(a)))
            .collect();
        assert_eq!(
            p_hold(&j, &many),
            Some((1019 + MAX_HOLD_SECONDS) * 1_000_000)
        );
        // A task that ran long enough resets the count.
        let mut fine = t(0, 1, TaskPhase::Failed);
        fine.ended = Some(200_000_000);
        let p = plan_of(&j, &[flapped(0, 0, 100), fine, flapped(0, 2, 300)]);
        assert!(p.holds.is_empty());
        // Ad-hoc retries are bounded by maxTaskFailures instead.
        let p = plan_of(
            &job("adhoc", 1, -1),
            &[flapped(0, 0, 100), flapped(0, 1, 110)],
        );
        assert!(p.holds.is_empty());
    }

    fn p_hold(j: &Job, tasks: &[TaskView]) -> Option<i64> {
        plan_of(j, tasks).holds.values().next().copied()
    }

    #[test]
    fn a_service_keeps_a_bounded_number_of_ended_tasks_of_instances_scaled_away() {
        // Scaled from 300 instances to 2: instances 2..300 each left one
        // killed task, ended one after the other.
        let mut tasks: Vec<TaskView> = (0..300)
            .map(|i| {
                let mut k = t(i, 0, TaskPhase::Killed);
                k.ended = Some(i64::from(i) * 1000);
                k
            })
            .collect();
        for task in tasks.iter_mut().take(2) {
            task.phase = TaskPhase::Running;
            task.ended = None;
        }
        let p = plan_of(&job("service", 2, 1), &tasks);
        let mut pruned = p.prune.clone();
        pruned.sort();
        let mut want: Vec<String> = (2..200).map(|i| task_name("j", i, 0)).collect();
        want.sort();
        assert_eq!(pruned, want, "the 100 that ended last stay");
        // Within the bound, nothing of theirs goes.
        let p = plan_of(&job("service", 2, 1), &tasks[..102]);
        assert!(p.prune.is_empty(), "{:?}", p.prune);
    }

    #[test]
    fn a_service_keeps_its_instances_needs_and_a_bounded_history() {
        // Instance 0: 150 ended tasks (each preempted a minute after the
        // one before), then a live one; instance 1: one ended task.
        let mut tasks: Vec<TaskView> = (0..150)
            .map(|a| {
                let mut k = t(0, a, TaskPhase::Killed);
                k.displaced = true;
                k.ended = Some(i64::from(a) * 60_000_000);
                k
            })
            .collect();
        tasks.push(t(0, 150, TaskPhase::Running));
        tasks.push(t(1, 0, TaskPhase::Finished));
        let p = plan_of(&job("service", 2, 1), &tasks);
        let mut pruned = p.prune.clone();
        pruned.sort();
        // Instance 0 keeps attempt 149, instance 1 its only end; of the
        // rest the job keeps the 100 that ended last (attempts 49-148).
        let mut want: Vec<String> = (0..49).map(|a| task_name("j", 0, a)).collect();
        want.sort();
        assert_eq!(pruned, want);
        // A flapping instance keeps its run of flaps, which the backoff counts.
        let flaps: Vec<TaskView> = (0..12).map(|a| flapped(0, a, 100 + i64::from(a))).collect();
        let p = plan_of(&job("service", 1, 1), &flaps);
        assert!(p.prune.is_empty(), "{:?}", p.prune);
        assert_eq!(p.holds.len(), 1, "still held back");
        // Ad-hoc history is what maxTaskFailures counts: it is never pruned.
        let p = plan_of(&job("adhoc", 1, -1), &tasks[..150]);
        assert!(p.prune.is_empty());
    }
}

#[cfg(test)]
mod drain_tests;
