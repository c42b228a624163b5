//! The Aurora task state machine, as a pure function.
//!
//! [`decide`] maps `(phase, event)` to a [`Decision`]: move to a new phase,
//! stay (a legal no-op, possibly with actions, such as killing an errant copy
//! of a task that already ended), or [`Decision::Illegal`] — a pair that must
//! not happen, reported rather than silently ignored. Every pair is matched
//! explicitly; there is no catch-all arm. Side effects are returned as
//! [`Action`] values for the controllers to carry out.
//!
//! [`apply`] runs a decision on a task's status: it sets the phase, counts
//! failures, keeps the exit code and appends a timestamped task event
//! (bounded history). Time is a parameter; nothing here reads a clock.

mod moves;

pub use moves::{Reporter, movers};

use corral_api::TaskPhase::{self, *};
use corral_api::task::{FailureReason, TaskEvent, TaskStatus};

/// Something that happened to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The scheduler bound the task to a node.
    Assigned {
        /// The node.
        node: String,
    },
    /// The agent began preparing the sandbox.
    AgentStarting,
    /// The agent reports the container running.
    AgentRunning,
    /// The agent reports the container exited.
    AgentExited {
        /// Exit code (137 for OOM kills and SIGKILL).
        code: i32,
        /// Why it failed, when the agent knows more than the code says.
        failure: Option<Failure>,
    },
    /// The agent reports the container killed (after a kill request, or by itself).
    AgentKilled,
    /// State reconciliation: the task's node runs no copy of it (its
    /// container vanished without a report, e.g. with an earlier agent).
    AgentHasNoCopy,
    /// A user or controller asked to kill the task.
    KillRequested,
    /// A user asked to restart the task (kill it, then replace it).
    RestartRequested,
    /// The scheduler chose the task as a preemption victim.
    Preempted {
        /// The task it makes room for.
        by: String,
    },
    /// The task stayed ASSIGNED longer than the assign timeout.
    AssignTimeout,
    /// The task stayed STARTING longer than the start timeout.
    StartTimeout,
    /// The task's node is gone (lease expired past any partition delay).
    NodeLost,
    /// The task's node stopped heartbeating; the job waits before replacing.
    NodePartitioned,
    /// The task's node heartbeats again.
    NodeBack,
    /// The task's node is drained for maintenance.
    Drain,
    /// The instance flaps: hold the task back.
    Throttle,
    /// The hold-back period is over.
    ThrottleExpired,
}

/// What the agent knows about a failure beyond the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind of failure.
    pub reason: FailureReason,
    /// Details for humans (`image docker.io/library/x:1 is not present`).
    pub detail: String,
}

impl Failure {
    /// A failure of `reason` with `detail`.
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl Event {
    /// The container exited with `code`, nothing more known.
    pub fn exited(code: i32) -> Self {
        Event::AgentExited {
            code,
            failure: None,
        }
    }

    /// A short name for messages and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Assigned { .. } => "assigned",
            Event::AgentStarting => "agent-starting",
            Event::AgentRunning => "agent-running",
            Event::AgentExited { code: 0, .. } => "agent-exited-0",
            Event::AgentExited { .. } => "agent-exited-nonzero",
            Event::AgentKilled => "agent-killed",
            Event::AgentHasNoCopy => "agent-has-no-copy",
            Event::KillRequested => "kill-requested",
            Event::RestartRequested => "restart-requested",
            Event::Preempted { .. } => "preempted",
            Event::AssignTimeout => "assign-timeout",
            Event::StartTimeout => "start-timeout",
            Event::NodeLost => "node-lost",
            Event::NodePartitioned => "node-partitioned",
            Event::NodeBack => "node-back",
            Event::Drain => "drain",
            Event::Throttle => "throttle",
            Event::ThrottleExpired => "throttle-expired",
        }
    }
}

/// A side effect for the controllers to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The agent should start the task.
    Launch,
    /// The agent should kill the task's container (grace period, then SIGKILL).
    Kill,
    /// Create a replacement PENDING task for the same instance.
    Reschedule,
    /// Count one more failure for the instance.
    IncrementFailures,
    /// Keep the container's exit code.
    RecordExitCode(i32),
    /// Keep why the container failed.
    RecordFailure(FailureReason),
}

/// Why a pair cannot happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IllegalReason {
    /// The task is not bound to a node, so agent and node events cannot concern it.
    NotOnANode,
    /// The task already ended; only late or errant reports can arrive.
    AlreadyEnded,
    /// The report would move the task backwards (e.g. STARTING after RUNNING).
    Backwards,
    /// The event only applies to tasks in another phase.
    WrongPhase,
}

/// What to do with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Enter `to`, carrying out `actions`.
    Move {
        /// The next phase.
        to: TaskPhase,
        /// Side effects.
        actions: Vec<Action>,
        /// What happened, for the task event.
        message: String,
    },
    /// Keep the phase (a duplicate or late report), carrying out `actions`.
    Stay {
        /// Side effects (e.g. killing an errant copy).
        actions: Vec<Action>,
        /// Why nothing changes.
        message: String,
    },
    /// The pair must not happen.
    Illegal(IllegalReason),
}

fn to(phase: TaskPhase, actions: Vec<Action>, message: impl Into<String>) -> Decision {
    Decision::Move {
        to: phase,
        actions,
        message: message.into(),
    }
}

fn stay(actions: Vec<Action>, message: impl Into<String>) -> Decision {
    Decision::Stay {
        actions,
        message: message.into(),
    }
}

fn exited(code: i32, failure: Option<&Failure>) -> Decision {
    match failure {
        None if code == 0 => to(
            Finished,
            vec![Action::RecordExitCode(0)],
            "exited with code 0",
        ),
        None => to(
            Failed,
            vec![Action::RecordExitCode(code), Action::IncrementFailures],
            format!("exited with code {code}"),
        ),
        Some(f) => to(
            Failed,
            vec![
                Action::RecordExitCode(code),
                Action::RecordFailure(f.reason),
                Action::IncrementFailures,
            ],
            format!("{} (exit code {code})", f.detail),
        ),
    }
}

/// The decision for `event` in `phase`. Every pair is spelled out.
pub fn decide(phase: TaskPhase, event: &Event) -> Decision {
    use Decision::Illegal;
    use Event as E;
    use IllegalReason::*;
    match (phase, event) {
        // PENDING: waiting for a node.
        (Pending, E::Assigned { node }) => to(
            Assigned,
            vec![Action::Launch],
            format!("assigned to node {node}"),
        ),
        (Pending, E::KillRequested) => to(Killed, vec![], "killed before it was assigned"),
        (Pending, E::RestartRequested) => stay(vec![], "not started yet; nothing to restart"),
        (Pending, E::Throttle) => to(Throttled, vec![], "held back: the instance is flapping"),
        (Pending, E::ThrottleExpired) => stay(vec![], "not throttled"),
        (Pending, E::Preempted { .. } | E::Drain) => Illegal(NotOnANode),
        (
            Pending,
            E::AgentStarting
            | E::AgentRunning
            | E::AgentExited { .. }
            | E::AgentKilled
            | E::AgentHasNoCopy,
        ) => Illegal(NotOnANode),
        (Pending, E::AssignTimeout | E::StartTimeout) => Illegal(WrongPhase),
        (Pending, E::NodeLost | E::NodePartitioned | E::NodeBack) => Illegal(NotOnANode),

        // THROTTLED: held back before it may be scheduled again.
        (Throttled, E::ThrottleExpired) => to(Pending, vec![], "hold-back over; pending again"),
        (Throttled, E::KillRequested) => to(Killed, vec![], "killed while held back"),
        (Throttled, E::Throttle) => stay(vec![], "already held back"),
        (Throttled, E::RestartRequested) => stay(vec![], "not started yet; nothing to restart"),
        (Throttled, E::Assigned { .. }) => Illegal(WrongPhase),
        (Throttled, E::Preempted { .. } | E::Drain) => Illegal(NotOnANode),
        (
            Throttled,
            E::AgentStarting
            | E::AgentRunning
            | E::AgentExited { .. }
            | E::AgentKilled
            | E::AgentHasNoCopy,
        ) => Illegal(NotOnANode),
        (Throttled, E::AssignTimeout | E::StartTimeout) => Illegal(WrongPhase),
        (Throttled, E::NodeLost | E::NodePartitioned | E::NodeBack) => Illegal(NotOnANode),

        // ASSIGNED: bound; the agent has not reported yet.
        (Assigned, E::AgentStarting) => to(Starting, vec![], "the agent is preparing the sandbox"),
        (Assigned, E::AgentRunning) => to(Running, vec![], "running"),
        (Assigned, E::AgentExited { code, failure }) => exited(*code, failure.as_ref()),
        (Assigned, E::AgentKilled) => to(Killed, vec![], "killed by the agent"),
        // The agent may not have seen the binding yet; it starts the task then.
        (Assigned, E::AgentHasNoCopy) => stay(vec![], "not started yet"),
        (Assigned, E::KillRequested) => to(Killing, vec![Action::Kill], "kill requested"),
        (Assigned, E::RestartRequested) => to(Restarting, vec![Action::Kill], "restart requested"),
        (Assigned, E::Preempted { by }) => {
            to(Preempting, vec![Action::Kill], format!("preempted by {by}"))
        }
        (Assigned, E::AssignTimeout) => to(
            Lost,
            vec![Action::Kill, Action::Reschedule],
            "not started within the assign timeout",
        ),
        (Assigned, E::StartTimeout) => Illegal(WrongPhase),
        (Assigned, E::NodeLost) => to(Lost, vec![Action::Reschedule], "its node was lost"),
        (Assigned, E::NodePartitioned) => to(Partitioned, vec![], "its node is unreachable"),
        (Assigned, E::NodeBack) => stay(vec![], "its node is reachable"),
        (Assigned, E::Drain) => to(Draining, vec![Action::Kill], "its node is being drained"),
        (Assigned, E::Assigned { .. }) => Illegal(WrongPhase),
        (Assigned, E::Throttle | E::ThrottleExpired) => Illegal(WrongPhase),

        // STARTING: sandbox being prepared, process launching.
        (Starting, E::AgentStarting) => stay(vec![], "already starting"),
        (Starting, E::AgentRunning) => to(Running, vec![], "running"),
        (Starting, E::AgentExited { code, failure }) => exited(*code, failure.as_ref()),
        (Starting, E::AgentKilled) => to(Killed, vec![], "killed by the agent"),
        (Starting, E::AgentHasNoCopy) => to(
            Lost,
            vec![Action::Reschedule],
            "its node runs no copy of it (the container is gone)",
        ),
        (Starting, E::KillRequested) => to(Killing, vec![Action::Kill], "kill requested"),
        (Starting, E::RestartRequested) => to(Restarting, vec![Action::Kill], "restart requested"),
        (Starting, E::Preempted { by }) => {
            to(Preempting, vec![Action::Kill], format!("preempted by {by}"))
        }
        (Starting, E::StartTimeout) => to(
            Lost,
            vec![Action::Kill, Action::Reschedule],
            "not running within the start timeout",
        ),
        (Starting, E::AssignTimeout) => stay(vec![], "stale assign timeout: already starting"),
        (Starting, E::NodeLost) => to(Lost, vec![Action::Reschedule], "its node was lost"),
        (Starting, E::NodePartitioned) => to(Partitioned, vec![], "its node is unreachable"),
        (Starting, E::NodeBack) => stay(vec![], "its node is reachable"),
        (Starting, E::Drain) => to(Draining, vec![Action::Kill], "its node is being drained"),
        (Starting, E::Assigned { .. }) => Illegal(WrongPhase),
        (Starting, E::Throttle | E::ThrottleExpired) => Illegal(WrongPhase),

        // RUNNING.
        (Running, E::AgentRunning) => stay(vec![], "still running"),
        (Running, E::AgentStarting) => Illegal(Backwards),
        (Running, E::AgentExited { code, failure }) => exited(*code, failure.as_ref()),
        (Running, E::AgentKilled) => to(Killed, vec![], "killed by the agent"),
        (Running, E::AgentHasNoCopy) => to(
            Lost,
            vec![Action::Reschedule],
            "its node runs no copy of it (the container is gone)",
        ),
        (Running, E::KillRequested) => to(Killing, vec![Action::Kill], "kill requested"),
        (Running, E::RestartRequested) => to(Restarting, vec![Action::Kill], "restart requested"),
        (Running, E::Preempted { by }) => {
            to(Preempting, vec![Action::Kill], format!("preempted by {by}"))
        }
        (Running, E::AssignTimeout | E::StartTimeout) => {
            stay(vec![], "stale timeout: already running")
        }
        (Running, E::NodeLost) => to(Lost, vec![Action::Reschedule], "its node was lost"),
        (Running, E::NodePartitioned) => to(Partitioned, vec![], "its node is unreachable"),
        (Running, E::NodeBack) => stay(vec![], "its node is reachable"),
        (Running, E::Drain) => to(Draining, vec![Action::Kill], "its node is being drained"),
        (Running, E::Assigned { .. }) => Illegal(WrongPhase),
        (Running, E::Throttle | E::ThrottleExpired) => Illegal(WrongPhase),

        // KILLING, PREEMPTING, RESTARTING, DRAINING: a kill is under way. Preempted,
        // restarted and drained tasks are replaced; killed ones are not.
        (Killing, E::AgentKilled | E::AgentExited { .. } | E::AgentHasNoCopy) => {
            to(Killed, vec![], "killed")
        }
        (Preempting, E::AgentKilled | E::AgentExited { .. } | E::AgentHasNoCopy) => to(
            Killed,
            vec![Action::Reschedule],
            "killed to make room; will be rescheduled",
        ),
        (Restarting, E::AgentKilled | E::AgentExited { .. } | E::AgentHasNoCopy) => to(
            Killed,
            vec![Action::Reschedule],
            "killed for a restart; a new task replaces it",
        ),
        (Draining, E::AgentKilled | E::AgentExited { .. } | E::AgentHasNoCopy) => to(
            Killed,
            vec![Action::Reschedule],
            "drained; will be rescheduled elsewhere",
        ),
        (Killing, E::NodeLost) => to(
            Killed,
            vec![],
            "its node was lost while it was being killed",
        ),
        (Preempting | Restarting | Draining, E::NodeLost) => to(
            Lost,
            vec![Action::Reschedule],
            "its node was lost while it was being killed",
        ),
        (Killing | Preempting | Restarting | Draining, E::KillRequested) => {
            stay(vec![], "already being killed")
        }
        (
            Killing | Preempting | Restarting | Draining,
            E::RestartRequested | E::Preempted { .. } | E::Drain,
        ) => stay(vec![], "already being killed"),
        (Killing | Preempting | Restarting | Draining, E::AgentRunning | E::AgentStarting) => {
            stay(vec![Action::Kill], "still reported running; kill again")
        }
        (Killing | Preempting | Restarting | Draining, E::AssignTimeout | E::StartTimeout) => {
            stay(vec![], "stale timeout: already being killed")
        }
        (Killing | Preempting | Restarting | Draining, E::NodePartitioned | E::NodeBack) => {
            stay(vec![], "the kill completes when the agent reports")
        }
        (Killing | Preempting | Restarting | Draining, E::Assigned { .. }) => Illegal(WrongPhase),
        (Killing | Preempting | Restarting | Draining, E::Throttle | E::ThrottleExpired) => {
            Illegal(WrongPhase)
        }

        // PARTITIONED: its node is unreachable; the agent's next report decides.
        (Partitioned, E::NodeBack) => stay(
            vec![],
            "its node is reachable; waiting for the agent's report",
        ),
        (Partitioned, E::AgentRunning) => to(Running, vec![], "its node is back and it still runs"),
        (Partitioned, E::AgentStarting) => {
            to(Starting, vec![], "its node is back and it is starting")
        }
        (Partitioned, E::AgentExited { code, failure }) => exited(*code, failure.as_ref()),
        (Partitioned, E::AgentKilled) => {
            to(Killed, vec![], "killed while its node was unreachable")
        }
        (Partitioned, E::AgentHasNoCopy) => to(
            Lost,
            vec![Action::Reschedule],
            "its node is back but runs no copy of it",
        ),
        (Partitioned, E::NodeLost) => to(
            Lost,
            vec![Action::Reschedule],
            "its node stayed unreachable past the partition delay",
        ),
        (Partitioned, E::KillRequested) => to(Killing, vec![Action::Kill], "kill requested"),
        (Partitioned, E::RestartRequested) => {
            to(Restarting, vec![Action::Kill], "restart requested")
        }
        (Partitioned, E::Preempted { by }) => {
            to(Preempting, vec![Action::Kill], format!("preempted by {by}"))
        }
        (Partitioned, E::Drain) => to(Draining, vec![Action::Kill], "its node is being drained"),
        (Partitioned, E::NodePartitioned) => stay(vec![], "already partitioned"),
        (Partitioned, E::AssignTimeout | E::StartTimeout) => {
            stay(vec![], "timeouts wait for the partition to resolve")
        }
        (Partitioned, E::Assigned { .. }) => Illegal(WrongPhase),
        (Partitioned, E::Throttle | E::ThrottleExpired) => Illegal(WrongPhase),

        // Terminal phases: only late or errant reports arrive. A copy that still
        // runs after its task ended (a network split) is killed.
        (Finished | Failed | Killed | Lost, E::AgentRunning | E::AgentStarting) => stay(
            vec![Action::Kill],
            "errant copy still running after the task ended; killing it",
        ),
        (
            Finished | Failed | Killed | Lost,
            E::AgentExited { .. } | E::AgentKilled | E::AgentHasNoCopy,
        ) => stay(vec![], "late report of an ended task"),
        (Finished | Failed | Killed | Lost, E::KillRequested | E::RestartRequested) => {
            stay(vec![], "the task already ended")
        }
        (
            Finished | Failed | Killed | Lost,
            E::NodeLost | E::NodePartitioned | E::NodeBack | E::Drain,
        ) => stay(vec![], "the task already ended"),
        (Finished | Failed | Killed | Lost, E::AssignTimeout | E::StartTimeout) => {
            stay(vec![], "stale timeout: the task already ended")
        }
        (Finished | Failed | Killed | Lost, E::Assigned { .. } | E::Preempted { .. }) => {
            Illegal(AlreadyEnded)
        }
        (Finished | Failed | Killed | Lost, E::Throttle | E::ThrottleExpired) => {
            Illegal(AlreadyEnded)
        }
    }
}

/// Why [`apply`] refused an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} is not possible in phase {phase}: {reason:?}")]
pub struct IllegalTransition {
    /// The phase the task was in.
    pub phase: TaskPhase,
    /// The event's name.
    pub event: &'static str,
    /// Why.
    pub reason: IllegalReason,
}

/// Applies `event` to a task's status at `now` on behalf of `actor`: sets the
/// phase, counts failures, keeps the exit code, appends a task event (also for
/// a stay that carries actions), and returns the actions to carry out.
pub fn apply(
    status: &mut TaskStatus,
    event: &Event,
    now: jiff::Timestamp,
    actor: &str,
) -> Result<Vec<Action>, IllegalTransition> {
    let phase = status.phase();
    match decide(phase, event) {
        Decision::Illegal(reason) => Err(IllegalTransition {
            phase,
            event: event.name(),
            reason,
        }),
        Decision::Stay { actions, message } => {
            if !actions.is_empty() {
                record(status, phase, message, now, actor);
            }
            Ok(actions)
        }
        Decision::Move {
            to,
            actions,
            message,
        } => {
            for a in &actions {
                match a {
                    Action::IncrementFailures => {
                        status.failure_count = status.failure_count.saturating_add(1)
                    }
                    Action::RecordExitCode(c) => status.exit_code = Some(*c),
                    Action::RecordFailure(r) => status.failure_reason = Some(*r),
                    Action::Launch | Action::Kill | Action::Reschedule => {}
                }
            }
            status.phase = Some(to);
            status.message = Some(message.clone());
            if to != Pending {
                status.explanation = None;
            }
            record(status, to, message, now, actor);
            Ok(actions)
        }
    }
}

/// The status of a task just created: PENDING, with its first task event
/// (Aurora's history starts at PENDING).
pub fn created(message: String, now: jiff::Timestamp, actor: &str) -> TaskStatus {
    let mut status = TaskStatus {
        phase: Some(Pending),
        message: Some(message.clone()),
        ..TaskStatus::default()
    };
    record(&mut status, Pending, message, now, actor);
    status
}

fn record(
    status: &mut TaskStatus,
    phase: TaskPhase,
    message: String,
    now: jiff::Timestamp,
    actor: &str,
) {
    status.push_event(TaskEvent {
        timestamp: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
        status: phase,
        message,
        actor: actor.to_owned(),
    });
}

#[cfg(test)]
mod tests;
