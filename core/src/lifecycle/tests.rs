//! Every phase × event pair, as one table; then the actions and the status
//! bookkeeping of the paths that matter.

use super::*;

fn events() -> Vec<Event> {
    vec![
        Event::Assigned { node: "n1".into() },
        Event::AgentStarting,
        Event::AgentRunning,
        Event::exited(0),
        Event::exited(3),
        Event::AgentKilled,
        Event::AgentHasNoCopy,
        Event::KillRequested,
        Event::RestartRequested,
        Event::Preempted {
            by: "prod/web-0".into(),
        },
        Event::AssignTimeout,
        Event::StartTimeout,
        Event::NodeLost,
        Event::NodePartitioned,
        Event::NodeBack,
        Event::Drain,
        Event::Throttle,
        Event::ThrottleExpired,
    ]
}

/// Rows: phases. Columns, in order: assigned, agent-starting, agent-running,
/// exit 0, exit non-zero, agent-killed, agent-has-no-copy, kill, restart, preempt, assign timeout,
/// start timeout, node lost, node partitioned, node back, drain, throttle,
/// throttle expired. Cells: the next phase; `=` stay; `=K` stay and kill; `!` illegal.
const TABLE: &str = "
PENDING     | ASSIGNED ! ! ! ! ! ! KILLED = ! ! ! ! ! ! ! THROTTLED =
THROTTLED   | ! ! ! ! ! ! ! KILLED = ! ! ! ! ! ! ! = PENDING
ASSIGNED    | ! STARTING RUNNING FINISHED FAILED KILLED = KILLING RESTARTING PREEMPTING LOST ! LOST PARTITIONED = DRAINING ! !
STARTING    | ! = RUNNING FINISHED FAILED KILLED LOST KILLING RESTARTING PREEMPTING = LOST LOST PARTITIONED = DRAINING ! !
RUNNING     | ! ! = FINISHED FAILED KILLED LOST KILLING RESTARTING PREEMPTING = = LOST PARTITIONED = DRAINING ! !
KILLING     | ! =K =K KILLED KILLED KILLED KILLED = = = = = KILLED = = = ! !
PREEMPTING  | ! =K =K KILLED KILLED KILLED KILLED = = = = = LOST = = = ! !
RESTARTING  | ! =K =K KILLED KILLED KILLED KILLED = = = = = LOST = = = ! !
DRAINING    | ! =K =K KILLED KILLED KILLED KILLED = = = = = LOST = = = ! !
PARTITIONED | ! STARTING RUNNING FINISHED FAILED KILLED LOST KILLING RESTARTING PREEMPTING = = LOST = = DRAINING ! !
FINISHED    | ! =K =K = = = = = = ! = = = = = = ! !
FAILED      | ! =K =K = = = = = = ! = = = = = = ! !
KILLED      | ! =K =K = = = = = = ! = = = = = = ! !
LOST        | ! =K =K = = = = = = ! = = = = = = ! !
";

fn cell(d: &Decision) -> String {
    match d {
        Decision::Move { to, .. } => to.as_str().to_owned(),
        Decision::Stay { actions, .. } if actions == &[Action::Kill] => "=K".into(),
        Decision::Stay { actions, .. } if actions.is_empty() => "=".into(),
        Decision::Stay { actions, .. } => format!("={actions:?}"),
        Decision::Illegal(_) => "!".into(),
    }
}

#[test]
fn every_phase_and_event_pair_is_decided_as_the_table_says() {
    let evs = events();
    let mut rows = 0;
    for line in TABLE.lines().filter(|l| !l.trim().is_empty()) {
        let (phase, cells) = line.split_once('|').expect("row");
        let phase = TaskPhase::ALL
            .into_iter()
            .find(|p| p.as_str() == phase.trim())
            .expect("phase");
        let cells: Vec<&str> = cells.split_whitespace().collect();
        assert_eq!(cells.len(), evs.len(), "row {phase}");
        for (ev, want) in evs.iter().zip(cells) {
            assert_eq!(cell(&decide(phase, ev)), want, "{phase} × {}", ev.name());
        }
        rows += 1;
    }
    assert_eq!(rows, TaskPhase::ALL.len(), "every phase has a row");
}

#[test]
fn terminal_phases_are_never_left() {
    for phase in TaskPhase::ALL.into_iter().filter(|p| p.is_terminal()) {
        for ev in events() {
            assert!(
                !matches!(decide(phase, &ev), Decision::Move { .. }),
                "{phase} × {}",
                ev.name()
            );
        }
    }
}

#[test]
fn the_actions_of_the_main_paths() {
    let act = |p: TaskPhase, e: Event| match decide(p, &e) {
        Decision::Move { actions, .. } | Decision::Stay { actions, .. } => actions,
        Decision::Illegal(r) => panic!("{p} × {} is illegal: {r:?}", e.name()),
    };
    assert_eq!(
        act(Pending, Event::Assigned { node: "n".into() }),
        vec![Action::Launch]
    );
    assert_eq!(
        act(Running, Event::exited(1)),
        vec![Action::RecordExitCode(1), Action::IncrementFailures]
    );
    assert_eq!(
        act(Running, Event::exited(0)),
        vec![Action::RecordExitCode(0)]
    );
    assert_eq!(
        act(Running, Event::Preempted { by: "x".into() }),
        vec![Action::Kill]
    );
    assert_eq!(
        act(Preempting, Event::AgentKilled),
        vec![Action::Reschedule]
    );
    assert_eq!(
        act(Restarting, Event::AgentKilled),
        vec![Action::Reschedule]
    );
    assert_eq!(act(Draining, Event::exited(143)), vec![Action::Reschedule]);
    assert_eq!(act(Killing, Event::AgentKilled), vec![]);
    assert_eq!(
        act(Assigned, Event::AssignTimeout),
        vec![Action::Kill, Action::Reschedule]
    );
    assert_eq!(
        act(Starting, Event::StartTimeout),
        vec![Action::Kill, Action::Reschedule]
    );
    assert_eq!(act(Running, Event::NodeLost), vec![Action::Reschedule]);
    assert_eq!(act(Partitioned, Event::NodeLost), vec![Action::Reschedule]);
    assert_eq!(
        act(Lost, Event::AgentRunning),
        vec![Action::Kill],
        "an errant copy after a split is killed"
    );
}

fn at(second: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + second).expect("time")
}

#[test]
fn applying_a_life_records_each_step() -> Result<(), IllegalTransition> {
    let mut st = TaskStatus::default();
    apply(
        &mut st,
        &Event::Assigned { node: "n1".into() },
        at(0),
        "scheduler",
    )?;
    apply(&mut st, &Event::AgentStarting, at(1), "agent/n1")?;
    apply(&mut st, &Event::AgentRunning, at(2), "agent/n1")?;
    apply(&mut st, &Event::AgentRunning, at(3), "agent/n1")?;
    let actions = apply(&mut st, &Event::exited(2), at(4), "agent/n1")?;
    assert_eq!(
        actions,
        vec![Action::RecordExitCode(2), Action::IncrementFailures]
    );
    assert_eq!(st.phase(), Failed);
    assert_eq!(st.failure_count, 1);
    assert_eq!(st.exit_code, Some(2));
    let phases: Vec<TaskPhase> = st.task_events.iter().map(|e| e.status).collect();
    assert_eq!(
        phases,
        vec![Assigned, Starting, Running, Failed],
        "a duplicate report adds no event"
    );
    assert_eq!(st.task_events[3].actor, "agent/n1");
    assert_eq!(st.task_events[3].message, "exited with code 2");
    assert_eq!(st.task_events[0].timestamp.0, at(0));
    let err = apply(
        &mut st,
        &Event::Assigned { node: "n2".into() },
        at(5),
        "scheduler",
    )
    .expect_err("illegal");
    assert_eq!(err.reason, IllegalReason::AlreadyEnded);
    assert_eq!(st.phase(), Failed, "an illegal event changes nothing");
    Ok(())
}

#[test]
fn history_stays_bounded() -> Result<(), IllegalTransition> {
    let mut st = TaskStatus::default();
    apply(
        &mut st,
        &Event::Assigned { node: "n1".into() },
        at(0),
        "scheduler",
    )?;
    apply(&mut st, &Event::AgentRunning, at(1), "agent/n1")?;
    for i in 0..100 {
        apply(
            &mut st,
            &Event::NodePartitioned,
            at(2 + 2 * i),
            "node-controller",
        )?;
        apply(&mut st, &Event::AgentRunning, at(3 + 2 * i), "agent/n1")?;
    }
    assert_eq!(st.task_events.len(), corral_api::task::MAX_TASK_EVENTS);
    assert_eq!(st.phase(), Running);
    Ok(())
}

proptest::proptest! {
    /// Any sequence of events leaves a task in a phase it could reach, never panics,
    /// and illegal events never change anything.
    #[test]
    fn random_event_sequences_keep_the_invariants(seq in proptest::collection::vec(0usize..17, 0..60)) {
        let evs = events();
        let mut st = TaskStatus::default();
        for (i, idx) in seq.into_iter().enumerate() {
            let before = st.clone();
            match apply(&mut st, &evs[idx], at(i as i64), "test") {
                Err(_) => proptest::prop_assert_eq!(&st, &before),
                Ok(_) => {
                    if before.phase().is_terminal() {
                        proptest::prop_assert_eq!(st.phase(), before.phase());
                    }
                }
            }
            proptest::prop_assert!(st.task_events.len() <= corral_api::task::MAX_TASK_EVENTS);
        }
    }
}

#[test]
fn a_failure_the_agent_explains_keeps_its_reason_and_detail() -> Result<(), IllegalTransition> {
    use corral_api::task::FailureReason;
    for (phase, reason, detail) in [
        (
            Running,
            FailureReason::OutOfMemory,
            "killed for exceeding its memory limit of 64Mi",
        ),
        (
            Assigned,
            FailureReason::ImageNotFound,
            "image docker.io/library/nope:latest is not present",
        ),
    ] {
        let mut st = TaskStatus {
            phase: Some(phase),
            ..TaskStatus::default()
        };
        let event = Event::AgentExited {
            code: 137,
            failure: Some(Failure::new(reason, detail)),
        };
        let actions = apply(&mut st, &event, at(1), "agent/n1")?;
        assert!(actions.contains(&Action::RecordFailure(reason)));
        assert_eq!(st.phase(), Failed);
        assert_eq!(st.failure_reason, Some(reason));
        assert_eq!(st.failure_count, 1);
        assert_eq!(
            st.message.as_deref(),
            Some(format!("{detail} (exit code 137)").as_str())
        );
    }
    Ok(())
}

#[test]
fn a_created_task_starts_its_history_at_pending() {
    let now = jiff::Timestamp::UNIX_EPOCH;
    let st = created("created for instance 0".into(), now, "job-controller");
    assert_eq!(st.phase, Some(Pending));
    assert_eq!(st.task_events.len(), 1);
    assert_eq!(st.task_events[0].status, Pending);
    assert_eq!(st.task_events[0].actor, "job-controller");
    assert_eq!(st.task_events[0].message, "created for instance 0");
}
