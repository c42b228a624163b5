//! Job updates: a change of a job's task template is an update (see
//! `corral_api::update`), rolled through the instances a batch at a time,
//! gated on health, and rolled back when it fails and the policy says so.
//!
//! Every task carries the hash of the template it was made from
//! ([`TEMPLATE_ANNOTATION`]); the job's status keeps the template its
//! instances are meant to run, whole. When the spec's template differs from
//! it, an update begins (a newer change aborts the one under way). While it
//! rolls (forward to the spec's template, or back to the kept one):
//! - an instance is **done** once its live task runs the target template
//!   and has been healthy (its `Healthy` condition, or RUNNING when it has
//!   no health check) for `minHealthySeconds`; done stays done;
//! - an instance **fails** once more than `maxInstanceFailures` of its
//!   tasks on the target template failed since the update began; more than
//!   `maxFailures` failed instances fail the update: it rolls back when
//!   `rollbackOnFailure` and the old template is known, else it stops;
//! - outdated tasks not yet on a node (PENDING, THROTTLED) are killed at
//!   once; outdated tasks on a node are restarted, lowest instance first,
//!   while fewer than `batchSize` instances are in flight (their old task
//!   being killed, their new one not yet done, their replacement about to
//!   be made); with `waitForBatch`, only once none is;
//! - once every instance is done the update is rolled forward (or back),
//!   and the status keeps that template.
//!
//! Requests (pause, resume, abort, rollback) move it as a user asks, each
//! carried out once. A paused update restarts nothing; an aborted or failed
//! one leaves instances as they are. Tasks without the annotation (made
//! before it existed) count as current.

use std::collections::HashSet;

use corral_api::TaskPhase;
use corral_api::job::JobSpec;
use corral_api::update::{
    InstanceAction, InstanceEvent, MAX_EVENTS, TaskTemplate, UpdateState, UpdateStatus,
    UpdateStrategy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};

use super::{ByInstance, TaskView};

/// Set on every Task: the hash of the job's task template it was made from.
pub const TEMPLATE_ANNOTATION: &str = "corral.dev/template-hash";

/// The hash of a task template: role, resources, tier, priority, container,
/// constraints, ports, health check and fencing. Changing any of them is an
/// update; `instances`, timeouts and policies are not.
pub fn hash_of(t: &TaskTemplate) -> String {
    let mut template = serde_json::json!({
        "role": t.role, "resources": t.resources, "tier": t.tier,
        "priority": t.priority, "container": t.container, "constraints": t.constraints,
    });
    // Only when set, so that the hashes of existing jobs stay as they were.
    if t.fenced {
        template["fenced"] = serde_json::Value::Bool(true);
    }
    if !t.ports.is_empty() {
        template["ports"] = serde_json::json!(t.ports);
    }
    if let Some(hc) = &t.health_check {
        template["healthCheck"] = serde_json::json!(hc);
    }
    let digest = Sha256::digest(template.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of the template a job spec describes.
pub fn template_hash(spec: &JobSpec) -> String {
    hash_of(&spec.template())
}

/// A user's request on an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Restart nothing more until resumed.
    Pause,
    /// Go on.
    Resume,
    /// Stop here.
    Abort,
    /// Go back to the old template.
    Rollback,
}

impl Request {
    /// Reads an annotation value: the action, then (ignored here) when.
    pub fn parse(value: &str) -> Option<Request> {
        match value.split_whitespace().next()? {
            "pause" => Some(Request::Pause),
            "resume" => Some(Request::Resume),
            "abort" => Some(Request::Abort),
            "rollback" => Some(Request::Rollback),
            _ => None,
        }
    }
}

/// Which template new tasks are made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The spec's.
    Spec,
    /// The one the update rolls back to (`status.update.from`).
    Previous,
}

/// What the job's update needs now.
#[derive(Debug, Clone, PartialEq)]
pub struct Roll {
    /// Outdated tasks not yet on a node: kill them (they are replaced).
    pub kill: Vec<String>,
    /// Outdated tasks on a node to restart in this batch.
    pub restart: Vec<String>,
    /// Instances whose live task runs the target template.
    pub updated: u32,
    /// True while an update moves instances.
    pub rolling: bool,
    /// The template new tasks are made from, and its hash.
    pub target: Target,
    /// The hash new tasks carry.
    pub target_hash: String,
    /// `status.update` from now on (None: none yet).
    pub update: Option<UpdateStatus>,
    /// An update that ended (or was superseded), for the history.
    pub archived: Option<UpdateStatus>,
    /// `status.template` from now on, when it changes.
    pub template: Option<TaskTemplate>,
    /// When an instance will have been healthy long enough (Unix µs).
    pub wake: Option<i64>,
}

/// What the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Instances `0..instances`.
    pub instances: u32,
    /// The policy.
    pub policy: &'a UpdateStrategy,
    /// The spec's template.
    pub spec: &'a TaskTemplate,
    /// `status.template`.
    pub recorded: Option<&'a TaskTemplate>,
    /// `status.update`.
    pub update: Option<&'a UpdateStatus>,
    /// The request annotation's value.
    pub request: Option<&'a str>,
    /// Instances about to get a new task anyway, in ascending order.
    pub replacing: &'a [u32],
    /// Now, Unix µs.
    pub now: i64,
}

fn time(us: i64) -> Time {
    Time(jiff::Timestamp::from_microsecond(us).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

fn event(u: &mut UpdateStatus, instance: u32, action: InstanceAction, now: i64, message: &str) {
    u.events.push(InstanceEvent {
        instance,
        action,
        time: Time(
            jiff::Timestamp::from_second(now / 1_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        ),
        message: message.to_owned(),
    });
    let excess = u.events.len().saturating_sub(MAX_EVENTS);
    u.events.drain(..excess);
}

fn finish(u: &mut UpdateStatus, state: UpdateState, now: i64, message: String) {
    u.state = state;
    u.finished_at = Some(time(now));
    u.message = message;
}

/// Begins the update that the spec's template asks for, if it asks for
/// one; the one under way is superseded (archived, aborted).
fn begin(
    input: &Input,
    spec_hash: &str,
    outdated_live: bool,
    roll: &mut Roll,
) -> Option<UpdateStatus> {
    let current = input.update.cloned();
    let recorded_hash = input.recorded.map(hash_of);
    let wanted = match (&current, &recorded_hash) {
        (Some(u), _) => u.to_template != spec_hash,
        (None, Some(h)) => h != spec_hash,
        // A job from before templates were kept, with tasks of another.
        (None, None) => outdated_live,
    };
    if !wanted {
        return current;
    }
    let id = current.as_ref().map_or(1, |u| u.id + 1);
    if let Some(mut old) = current {
        if !old.state.is_final() {
            finish(
                &mut old,
                UpdateState::Aborted,
                input.now,
                format!("superseded by update {id}"),
            );
        }
        roll.archived = Some(old);
    }
    Some(UpdateStatus {
        id,
        from_template: recorded_hash.unwrap_or_default(),
        to_template: spec_hash.to_owned(),
        from: input.recorded.cloned(),
        state: UpdateState::RollingForward,
        started_at: time(input.now),
        finished_at: None,
        done_instances: Vec::new(),
        failed_instances: Vec::new(),
        events: Vec::new(),
        request: None,
        rolling_back_since: None,
        message: format!("rolling forward to {spec_hash}"),
    })
}

/// Turns `u` back towards its old template, from `now`.
fn turn_back(u: &mut UpdateStatus, now: i64, message: String) {
    u.state = UpdateState::RollingBack;
    u.done_instances.clear();
    u.failed_instances.clear();
    u.rolling_back_since = Some(time(now));
    u.message = message;
}

/// Carries out a user's request, once (and only on the update under way
/// when it was made).
fn requested(u: &mut UpdateStatus, value: &str, now: i64) {
    if u.request.as_deref() == Some(value) {
        return;
    }
    u.request = Some(value.to_owned());
    // A request made before this update began was meant for an earlier one.
    let made = value
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    if made.is_some_and(|t| t < u.started_at.0) {
        return;
    }
    use UpdateState::*;
    let next = match (Request::parse(value), u.state) {
        (Some(Request::Pause), RollingForward) => Some(Paused),
        (Some(Request::Pause), RollingBack) => Some(RollBackPaused),
        (Some(Request::Resume), Paused) => Some(RollingForward),
        (Some(Request::Resume), RollBackPaused) => Some(RollingBack),
        (Some(Request::Abort), RollingForward | RollingBack | Paused | RollBackPaused) => {
            Some(Aborted)
        }
        (Some(Request::Rollback), RollingForward | Paused) if u.from.is_some() => Some(RollingBack),
        _ => None,
    };
    match next {
        Some(Aborted) => finish(u, Aborted, now, "aborted on request".into()),
        Some(RollingBack) if !u.state.is_rollback() => {
            turn_back(u, now, "rolling back on request".into());
        }
        Some(s) => {
            u.state = s;
            u.message = format!("{s:?} on request");
        }
        None => u.message = format!("request {value:?} does not apply to a {:?} update", u.state),
    }
}

/// The target template's hash for update `u` (None: the spec's).
fn target_of(u: Option<&UpdateStatus>) -> Target {
    match u {
        Some(u) if u.state.is_rollback() && u.from.is_some() => Target::Previous,
        _ => Target::Spec,
    }
}

/// Decides the next step of the job's update; see the module doc.
pub fn decide(input: Input, by_instance: &ByInstance) -> Roll {
    debug_assert!(
        input.replacing.is_sorted(),
        "replacing is searched by bisection"
    );
    let spec_hash = hash_of(input.spec);
    let mut roll = Roll {
        kill: Vec::new(),
        restart: Vec::new(),
        updated: 0,
        rolling: false,
        target: Target::Spec,
        target_hash: spec_hash.clone(),
        update: None,
        archived: None,
        template: None,
        wake: None,
    };
    if input.recorded.is_none() {
        // First sight: the spec's template is the one to run.
        roll.template = Some(input.spec.clone());
    }
    let outdated_live = by_instance
        .tasks()
        .any(|t| !t.phase.is_terminal() && t.template.as_deref().is_some_and(|h| h != spec_hash));
    let mut update = begin(&input, &spec_hash, outdated_live, &mut roll);
    if let Some(u) = update.as_mut() {
        // Looked up by binary search below: kept sorted, as it is written.
        u.done_instances.sort_unstable();
        u.done_instances.dedup();
    }
    if let (Some(u), Some(value)) = (update.as_mut(), input.request) {
        requested(u, value, input.now);
    }
    // Evaluated twice at most: once more after a failure turns it back.
    for _ in 0..2 {
        roll.target = target_of(update.as_ref());
        roll.target_hash = match (roll.target, &update) {
            (Target::Previous, Some(u)) => u.from_template.clone(),
            _ => spec_hash.clone(),
        };
        let Some(u) = update.as_mut().filter(|u| !u.state.is_final()) else {
            break;
        };
        let target = roll.target_hash.clone();
        let turned = evaluate(u, &input, by_instance, &target, &mut roll);
        if !turned {
            break;
        }
    }
    if let Some(u) = &update {
        match u.state {
            UpdateState::RolledForward if input.recorded != Some(input.spec) => {
                roll.template = Some(input.spec.clone());
            }
            _ => {}
        }
    }
    // Restarts and kills, only while it rolls.
    let rolls = update.as_ref().is_some_and(|u| {
        matches!(
            u.state,
            UpdateState::RollingForward | UpdateState::RollingBack
        )
    });
    roll.rolling = update.as_ref().is_some_and(|u| !u.state.is_final());
    let mut in_flight = 0u32;
    let mut candidates = Vec::new();
    let min_healthy = i64::from(input.policy.min_healthy_seconds) * 1_000_000;
    for instance in 0..input.instances {
        // The newest live task: a replacement made before its
        // predecessor leaves a draining node speaks for the instance.
        let live = by_instance
            .get(instance)
            .iter()
            .filter(|t| !t.phase.is_terminal())
            .max_by_key(|t| t.attempt);
        let Some(t) = live else {
            in_flight += u32::from(input.replacing.binary_search(&instance).is_ok());
            continue;
        };
        let current = t.template.as_deref().is_none_or(|h| h == roll.target_hash);
        if current {
            roll.updated += 1;
            let done = update
                .as_ref()
                .is_some_and(|u| u.done_instances.binary_search(&instance).is_ok())
                || t.healthy_since
                    .is_some_and(|s| s + min_healthy <= input.now);
            in_flight += u32::from(!done);
            continue;
        }
        if !rolls {
            continue;
        }
        match t.phase {
            TaskPhase::Pending | TaskPhase::Throttled => roll.kill.push(t.name.clone()),
            TaskPhase::Assigned
            | TaskPhase::Starting
            | TaskPhase::Running
            | TaskPhase::Partitioned => candidates.push((instance, t.name.clone())),
            // Being killed already (the update's restart, or a preemption).
            _ => in_flight += 1,
        }
    }
    if rolls {
        let batch = input.policy.batch_size.max(1);
        let room = if input.policy.wait_for_batch && in_flight > 0 {
            0
        } else {
            batch.saturating_sub(in_flight)
        };
        let room = usize::try_from(room).unwrap_or(0);
        if let Some(u) = update.as_mut() {
            let action = if u.state.is_rollback() {
                InstanceAction::RollingBack
            } else {
                InstanceAction::Updating
            };
            for (instance, name) in candidates.into_iter().take(room) {
                event(u, instance, action, input.now, &name);
                roll.restart.push(name);
            }
        }
    }
    roll.update = update;
    roll
}

/// Records which instances are done and which failed; fails, turns back or
/// completes the update. True when it turned back (evaluate again).
fn evaluate(
    u: &mut UpdateStatus,
    input: &Input,
    by_instance: &ByInstance,
    target: &str,
    roll: &mut Roll,
) -> bool {
    let policy = input.policy;
    // Failures count from when it began (or began rolling back).
    let started = u
        .rolling_back_since
        .as_ref()
        .unwrap_or(&u.started_at)
        .0
        .as_microsecond();
    let min_healthy = i64::from(policy.min_healthy_seconds) * 1_000_000;
    let back = u.state.is_rollback();
    let mut failed: HashSet<u32> = u.failed_instances.iter().copied().collect();
    for instance in 0..input.instances {
        let tasks = by_instance.get(instance);
        let on_target = |t: &&&TaskView| t.template.as_deref().is_none_or(|h| h == target);
        let failures = tasks
            .iter()
            .filter(on_target)
            .filter(|t| t.phase == TaskPhase::Failed && t.ended.is_some_and(|e| e >= started))
            .count();
        if failures > policy.max_instance_failures as usize && failed.insert(instance) {
            u.failed_instances.push(instance);
            let msg = format!("{failures} task(s) on {target} failed");
            event(u, instance, InstanceAction::Failed, input.now, &msg);
        }
        let Err(at) = u.done_instances.binary_search(&instance) else {
            continue;
        };
        let Some(live) = tasks
            .iter()
            .filter(on_target)
            .filter(|t| !t.phase.is_terminal())
            .max_by_key(|t| t.attempt)
        else {
            continue;
        };
        match live.healthy_since {
            Some(since) if since + min_healthy <= input.now => {
                u.done_instances.insert(at, instance);
                let action = if back {
                    InstanceAction::RolledBack
                } else {
                    InstanceAction::Updated
                };
                event(u, instance, action, input.now, &live.name);
            }
            Some(since) => {
                let at = since + min_healthy;
                roll.wake = Some(roll.wake.map_or(at, |w| w.min(at)));
            }
            None => {}
        }
    }
    let failed = u.failed_instances.len();
    if failed > policy.max_failures as usize
        && matches!(
            u.state,
            UpdateState::RollingForward | UpdateState::RollingBack
        )
    {
        let why = format!(
            "{failed} instance(s) failed, more than the {} allowed",
            policy.max_failures
        );
        if !back && policy.rollback_on_failure && u.from.is_some() {
            let message = format!("{why}: rolling back to {}", u.from_template);
            turn_back(u, input.now, message);
            return true;
        }
        let state = UpdateState::Failed;
        let what = if back { "rollback" } else { "update" };
        finish(u, state, input.now, format!("the {what} failed: {why}"));
        return false;
    }
    if u.done_instances.len() >= input.instances as usize
        && matches!(
            u.state,
            UpdateState::RollingForward | UpdateState::RollingBack
        )
    {
        let (state, what) = if back {
            (UpdateState::RolledBack, "rolled back to")
        } else {
            (UpdateState::RolledForward, "rolled forward to")
        };
        finish(u, state, input.now, format!("{what} {target}"));
    }
    false
}

#[cfg(test)]
mod tests;
