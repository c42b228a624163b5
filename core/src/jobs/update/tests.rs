use proptest::prelude::*;

use super::*;
use TaskPhase::*;

const S: i64 = 1_000_000;

fn tmpl(image: &str) -> TaskTemplate {
    serde_json::from_value(serde_json::json!({"role": "web", "resources": {"cpus": 1},
        "container": {"image": image}}))
    .expect("a template")
}

fn h(t: &TaskTemplate) -> String {
    hash_of(t)
}

/// A task of instance `instance`, on the template hashed `template`; a
/// RUNNING one healthy since time 0.
fn t(instance: u32, attempt: u32, phase: TaskPhase, template: &str) -> TaskView {
    TaskView {
        name: format!("j-{instance}-{attempt}"),
        instance,
        attempt,
        phase,
        displaced: false,
        assigned: None,
        flapped: false,
        ended: phase.is_terminal().then_some(10 * S),
        template: Some(template.to_owned()),
        healthy_since: (phase == Running).then_some(0),
        leaving: false,
    }
}

#[derive(Clone)]
struct Case<'a> {
    spec: &'a TaskTemplate,
    recorded: Option<&'a TaskTemplate>,
    update: Option<&'a UpdateStatus>,
    policy: UpdateStrategy,
    request: Option<&'a str>,
    replacing: &'a [u32],
    now: i64,
}

fn run(c: &Case, tasks: &[TaskView]) -> Roll {
    let by = ByInstance::new(tasks);
    let instances = tasks.iter().map(|t| t.instance + 1).max().unwrap_or(0);
    decide(
        Input {
            instances,
            policy: &c.policy,
            spec: c.spec,
            recorded: c.recorded,
            update: c.update,
            request: c.request,
            replacing: c.replacing,
            now: c.now,
        },
        &by,
    )
}

fn batch(n: u32) -> UpdateStrategy {
    UpdateStrategy {
        batch_size: n,
        ..UpdateStrategy::default()
    }
}

#[test]
fn hashes_are_those_of_the_spec_and_stable() {
    let job: JobSpec =
        serde_json::from_value(serde_json::json!({"role": "web", "environment": "prod",
        "kind": "service", "resources": {"cpus": 1}, "container": {"image": "v1"}}))
        .expect("a spec");
    assert_eq!(template_hash(&job), h(&tmpl("v1")));
    assert_eq!(h(&tmpl("v1")).len(), 16);
    assert_ne!(h(&tmpl("v1")), h(&tmpl("v2")));
}

#[test]
fn a_changed_template_begins_an_update_that_restarts_a_batch_lowest_first() {
    let (old, new) = (tmpl("v1"), tmpl("v2"));
    let tasks: Vec<TaskView> = (0..4).map(|i| t(i, 0, Running, &h(&old))).collect();
    let c = Case {
        spec: &new,
        recorded: Some(&old),
        update: None,
        policy: batch(2),
        request: None,
        replacing: &[],
        now: 100 * S,
    };
    let r = run(&c, &tasks);
    assert_eq!(r.restart, vec!["j-0-0", "j-1-0"]);
    assert!(r.rolling && r.kill.is_empty());
    let u = r.update.expect("an update");
    assert_eq!((u.id, u.state), (1, UpdateState::RollingForward));
    assert_eq!(
        (u.from_template.clone(), u.to_template.clone()),
        (h(&old), h(&new))
    );
    assert_eq!(u.from.as_ref(), Some(&old), "kept whole for a rollback");
    let actions: Vec<(u32, InstanceAction)> =
        u.events.iter().map(|e| (e.instance, e.action)).collect();
    assert_eq!(
        actions,
        vec![(0, InstanceAction::Updating), (1, InstanceAction::Updating)]
    );
    // Nothing changes for a job whose template is the one kept.
    let same = Case {
        spec: &old,
        ..c.clone()
    };
    let r = run(&same, &tasks);
    assert!(r.update.is_none() && r.restart.is_empty() && !r.rolling);
}

#[test]
fn an_instance_counts_once_healthy_long_enough_and_the_batch_waits_for_it() {
    let (old, new) = (tmpl("v1"), tmpl("v2"));
    let (ho, hn) = (h(&old), h(&new));
    let start = run(
        &Case {
            spec: &new,
            recorded: Some(&old),
            update: None,
            policy: UpdateStrategy {
                min_healthy_seconds: 5,
                ..batch(1)
            },
            request: None,
            replacing: &[],
            now: 100 * S,
        },
        &[t(0, 0, Running, &ho), t(1, 0, Running, &ho)],
    );
    let u = start.update.expect("an update");
    // Instance 0's new task has been healthy for 3 s of the 5 it needs.
    let mut fresh = t(0, 1, Running, &hn);
    fresh.healthy_since = Some(102 * S);
    let tasks = [t(0, 0, Killed, &ho), fresh.clone(), t(1, 0, Running, &ho)];
    let c = Case {
        spec: &new,
        recorded: Some(&old),
        update: Some(&u),
        policy: UpdateStrategy {
            min_healthy_seconds: 5,
            ..batch(1)
        },
        request: None,
        replacing: &[],
        now: 105 * S,
    };
    let r = run(&c, &tasks);
    assert!(r.restart.is_empty(), "instance 0 is still in flight");
    assert_eq!(r.wake, Some(107 * S));
    // Two seconds later it is done, and instance 1 goes.
    let r = run(
        &Case {
            now: 107 * S,
            ..c.clone()
        },
        &tasks,
    );
    assert_eq!(r.restart, vec!["j-1-0"]);
    let u = r.update.expect("an update");
    assert_eq!(u.done_instances, vec![0]);
    assert!(
        u.events
            .iter()
            .any(|e| e.instance == 0 && e.action == InstanceAction::Updated)
    );
    // Once instance 1 is done too, it has rolled forward and the status keeps the new template.
    let tasks = [t(0, 1, Running, &hn), t(1, 1, Running, &hn)];
    let r = run(
        &Case {
            update: Some(&u),
            now: 200 * S,
            ..c.clone()
        },
        &tasks,
    );
    let done = r.update.expect("an update");
    assert_eq!(done.state, UpdateState::RolledForward);
    assert!(done.finished_at.is_some());
    assert_eq!(r.template.as_ref(), Some(&new));
    assert!(!r.rolling);
}

#[test]
fn a_failed_update_rolls_back_with_the_same_batch_rules_and_ends_on_the_old_template() {
    let (old, new) = (tmpl("v1"), tmpl("v2"));
    let (ho, hn) = (h(&old), h(&new));
    let policy = batch(1);
    let begun = run(
        &Case {
            spec: &new,
            recorded: Some(&old),
            update: None,
            policy: policy.clone(),
            request: None,
            replacing: &[],
            now: 5 * S,
        },
        &[
            t(0, 0, Running, &ho),
            t(1, 0, Running, &ho),
            t(2, 0, Running, &ho),
        ],
    )
    .update
    .expect("an update");
    // Instance 0's new task failed (after the update began): the update fails.
    let tasks = [
        t(0, 0, Killed, &ho),
        t(0, 1, Failed, &hn),
        t(1, 0, Running, &ho),
        t(2, 0, Running, &ho),
    ];
    let c = Case {
        spec: &new,
        recorded: Some(&old),
        update: Some(&begun),
        policy: policy.clone(),
        request: None,
        replacing: &[0],
        now: 20 * S,
    };
    let r = run(&c, &tasks);
    let u = r.update.clone().expect("an update");
    assert_eq!(u.state, UpdateState::RollingBack, "{}", u.message);
    assert_eq!(
        (r.target, r.target_hash.clone()),
        (Target::Previous, ho.clone())
    );
    assert!(
        u.events
            .iter()
            .any(|e| e.instance == 0 && e.action == InstanceAction::Failed)
    );
    // Instance 0 is being replaced (from the old template): nothing else moves.
    assert!(r.restart.is_empty());
    // Back on the old template and healthy: instances 1 and 2 never moved.
    let tasks = [
        t(0, 2, Running, &ho),
        t(1, 0, Running, &ho),
        t(2, 0, Running, &ho),
    ];
    let r = run(
        &Case {
            update: Some(&u),
            replacing: &[],
            now: 30 * S,
            ..c.clone()
        },
        &tasks,
    );
    let u = r.update.expect("an update");
    assert_eq!(u.state, UpdateState::RolledBack);
    assert_eq!(r.target_hash, ho);
    assert!(r.template.is_none(), "the kept template stays the old one");
    // A later reconcile keeps it there: no new update for the same spec.
    let again = run(
        &Case {
            update: Some(&u),
            replacing: &[],
            now: 40 * S,
            ..c.clone()
        },
        &tasks,
    );
    assert_eq!(
        again.update.map(|u| (u.id, u.state)),
        Some((1, UpdateState::RolledBack))
    );
    assert!(again.restart.is_empty() && !again.rolling);
    // Without rollback, it stops where it is.
    let stops = run(
        &Case {
            policy: UpdateStrategy {
                rollback_on_failure: false,
                ..batch(1)
            },
            ..Case {
                update: Some(&begun),
                ..c.clone()
            }
        },
        &[t(0, 1, Failed, &hn), t(1, 0, Running, &ho)],
    );
    assert_eq!(stops.update.map(|u| u.state), Some(UpdateState::Failed));
    assert!(stops.restart.is_empty() && !stops.rolling);
}

#[test]
fn requests_pause_resume_abort_and_roll_back_once_each() {
    let (old, new) = (tmpl("v1"), tmpl("v2"));
    let (ho, hn) = (h(&old), h(&new));
    let tasks = [
        t(0, 1, Running, &hn),
        t(1, 0, Running, &ho),
        t(2, 0, Running, &ho),
    ];
    let base = run(
        &Case {
            spec: &new,
            recorded: Some(&old),
            update: None,
            policy: batch(1),
            request: None,
            replacing: &[],
            now: S,
        },
        &tasks,
    )
    .update
    .expect("an update");
    let step = |u: &UpdateStatus, request: &str| {
        run(
            &Case {
                spec: &new,
                recorded: Some(&old),
                update: Some(u),
                policy: batch(1),
                request: Some(request),
                replacing: &[],
                now: 2 * S,
            },
            &tasks,
        )
    };
    let paused = step(&base, "pause 2026-12-07T10:00:00Z");
    let p = paused.update.clone().expect("an update");
    assert_eq!(p.state, UpdateState::Paused);
    assert!(paused.restart.is_empty() && paused.rolling);
    // The same request again changes nothing; a new one is carried out.
    assert_eq!(
        step(&p, "pause 2026-12-07T10:00:00Z")
            .update
            .map(|u| u.state),
        Some(UpdateState::Paused)
    );
    let resumed = step(&p, "resume 2026-12-07T10:01:00Z");
    assert_eq!(
        resumed.update.as_ref().map(|u| u.state),
        Some(UpdateState::RollingForward)
    );
    assert_eq!(resumed.restart, vec!["j-1-0"]);
    let aborted = step(&p, "abort 2026-12-07T10:02:00Z");
    let a = aborted.update.expect("an update");
    assert_eq!(a.state, UpdateState::Aborted);
    assert!(a.finished_at.is_some() && aborted.restart.is_empty() && !aborted.rolling);
    // A request made before the update began was for an earlier one.
    let stale = step(&base, "abort 1970-01-01T00:00:00Z");
    assert_eq!(
        stale.update.map(|u| u.state),
        Some(UpdateState::RollingForward)
    );
    let back = step(&base, "rollback 2026-12-07T10:03:00Z");
    assert_eq!(back.update.map(|u| u.state), Some(UpdateState::RollingBack));
    assert_eq!(back.target_hash, ho);
    assert_eq!(back.restart, vec!["j-0-1"], "instance 0 goes back first");
}

#[test]
fn a_newer_change_supersedes_the_update_under_way() {
    let (old, new, newer) = (tmpl("v1"), tmpl("v2"), tmpl("v3"));
    let tasks = [t(0, 0, Running, &h(&old)), t(1, 0, Running, &h(&old))];
    let first = run(
        &Case {
            spec: &new,
            recorded: Some(&old),
            update: None,
            policy: batch(1),
            request: None,
            replacing: &[],
            now: S,
        },
        &tasks,
    )
    .update
    .expect("an update");
    let r = run(
        &Case {
            spec: &newer,
            recorded: Some(&old),
            update: Some(&first),
            policy: batch(1),
            request: None,
            replacing: &[],
            now: 2 * S,
        },
        &tasks,
    );
    let archived = r.archived.expect("the first, archived");
    assert_eq!((archived.id, archived.state), (1, UpdateState::Aborted));
    assert!(archived.message.contains("superseded by update 2"));
    let u = r.update.expect("the second");
    assert_eq!(
        (u.id, u.to_template.clone(), u.from_template.clone()),
        (2, h(&newer), h(&old))
    );
}

#[test]
fn a_job_from_before_templates_were_kept_rolls_but_cannot_roll_back() {
    let new = tmpl("v2");
    let tasks = [
        t(0, 0, Running, "0000000000000000"),
        t(1, 0, Running, &h(&new)),
    ];
    let c = Case {
        spec: &new,
        recorded: None,
        update: None,
        policy: batch(1),
        request: None,
        replacing: &[],
        now: S,
    };
    let r = run(&c, &tasks);
    assert_eq!(r.template.as_ref(), Some(&new), "recorded from now on");
    let u = r.update.clone().expect("an update");
    assert!(u.from.is_none());
    assert_eq!(r.restart, vec!["j-0-0"]);
    let failed = run(
        &Case {
            update: Some(&u),
            now: 20 * S,
            ..c.clone()
        },
        &[t(0, 1, Failed, &h(&new)), t(1, 0, Running, &h(&new))],
    );
    assert_eq!(failed.update.map(|u| u.state), Some(UpdateState::Failed));
}

proptest! {
    /// An update (good or bad) simulated step by step: no more instances
    /// are down (not running healthy) than the batch allows, forward or
    /// back; a good one ends rolled forward, a bad one rolled back with
    /// every instance on the old template.
    #[test]
    fn never_more_instances_down_than_the_batch(
        instances in 1u32..7,
        size in 1u32..4,
        wait in any::<bool>(),
        bad in any::<bool>(),
        slow in prop::collection::vec(any::<bool>(), 64),
    ) {
        let (old, new) = (tmpl("v1"), tmpl("v2"));
        let policy = UpdateStrategy { batch_size: size, wait_for_batch: wait, ..UpdateStrategy::default() };
        let mut tasks: Vec<TaskView> = (0..instances).map(|i| t(i, 0, Running, &h(&old))).collect();
        let mut update: Option<UpdateStatus> = None;
        let mut recorded = old.clone();
        let mut now = 10 * S;
        for step in 0..64 {
            let r = run(&Case { spec: &new, recorded: Some(&recorded), update: update.as_ref(), policy: policy.clone(), request: None, replacing: &[], now }, &tasks);
            if let Some(tpl) = &r.template { recorded = tpl.clone(); }
            update = r.update.clone();
            // Restarts: the old task ends, a new one from the target starts.
            for name in r.restart.iter().chain(&r.kill) {
                let Some(i) = tasks.iter().position(|t| &t.name == name) else { continue };
                let (instance, attempt) = (tasks[i].instance, tasks[i].attempt);
                tasks[i].phase = Killed;
                tasks[i].healthy_since = None;
                tasks[i].ended = Some(now);
                let next = tasks.iter().filter(|t| t.instance == instance).map(|t| t.attempt).max().unwrap_or(attempt) + 1;
                tasks.push(TaskView { healthy_since: None, ended: None, ..t(instance, next, Starting, &r.target_hash) });
            }
            now += S;
            // Starting tasks run (or, bad and new, fail and are replaced).
            let mut replaced = Vec::new();
            for task in tasks.iter_mut().filter(|t| t.phase == Starting) {
                if slow[step % slow.len()] && task.instance % 2 == 0 { continue; }
                if bad && task.template.as_deref() == Some(h(&new).as_str()) {
                    task.phase = Failed;
                    task.ended = Some(now);
                    replaced.push((task.instance, task.attempt + 1));
                } else {
                    task.phase = Running;
                    task.healthy_since = Some(now);
                }
            }
            let target = match update.as_ref() {
                Some(u) if u.state.is_rollback() => h(&old),
                _ => h(&new),
            };
            for (instance, attempt) in replaced {
                tasks.push(TaskView { healthy_since: None, ended: None, ..t(instance, attempt, Starting, &target) });
            }
            let down = (0..instances)
                .filter(|i| !tasks.iter().any(|t| t.instance == *i && t.phase == Running))
                .count() as u32;
            prop_assert!(down <= size, "step {}: {} instances down, batch {}", step, down, size);
            now += S;
        }
        let u = update.expect("an update");
        if bad {
            prop_assert_eq!(u.state, UpdateState::RolledBack, "{}", u.message);
        } else {
            prop_assert_eq!(u.state, UpdateState::RolledForward, "{}", u.message);
        }
        let want = if bad { h(&old) } else { h(&new) };
        for i in 0..instances {
            let live: Vec<&TaskView> = tasks.iter().filter(|t| t.instance == i && !t.phase.is_terminal()).collect();
            prop_assert_eq!(live.len(), 1);
            prop_assert_eq!(live[0].template.as_deref(), Some(want.as_str()));
        }
    }
}
