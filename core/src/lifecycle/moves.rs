//! Who may move a task from one phase to another: the state machine read
//! backwards, for a server that guards status writes.
//!
//! A status write names only the phase it ends in, not the event that took
//! the task there. [`movers`] answers from [`decide`]: a move is possible
//! when some event makes it, and whoever reports such an event may write
//! it. The agent on the task's node reports what happens to its copy; the
//! scheduler binds and preempts; the controllers decide the rest (kills,
//! timeouts, node loss, throttling).

use corral_api::TaskPhase;

use super::{Decision, Event, decide};

/// Who reports an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reporter {
    /// The scheduler: bindings and preemptions.
    Scheduler,
    /// The agent of the task's node: starting, running, exits, kills, a
    /// copy that vanished.
    Agent,
    /// The other controllers: kill and restart requests, timeouts, node
    /// liveness, drains, throttling.
    Controller,
}

impl Event {
    /// Who reports this event.
    pub fn reporter(&self) -> Reporter {
        match self {
            Event::Assigned { .. } | Event::Preempted { .. } => Reporter::Scheduler,
            Event::AgentStarting
            | Event::AgentRunning
            | Event::AgentExited { .. }
            | Event::AgentKilled
            | Event::AgentHasNoCopy => Reporter::Agent,
            Event::KillRequested
            | Event::RestartRequested
            | Event::AssignTimeout
            | Event::StartTimeout
            | Event::NodeLost
            | Event::NodePartitioned
            | Event::NodeBack
            | Event::Drain
            | Event::Throttle
            | Event::ThrottleExpired => Reporter::Controller,
        }
    }
}

/// One event of every kind (and of every outcome an exit can have).
fn every_event() -> [Event; 20] {
    use corral_api::task::FailureReason;
    [
        Event::Assigned {
            node: String::new(),
        },
        Event::AgentStarting,
        Event::AgentRunning,
        Event::exited(0),
        Event::exited(1),
        Event::AgentExited {
            code: 137,
            failure: Some(super::Failure::new(FailureReason::OutOfMemory, "")),
        },
        Event::AgentKilled,
        Event::AgentHasNoCopy,
        Event::KillRequested,
        Event::RestartRequested,
        Event::Preempted { by: String::new() },
        Event::AssignTimeout,
        Event::StartTimeout,
        Event::NodeLost,
        Event::NodePartitioned,
        Event::NodeBack,
        Event::Drain,
        Event::Throttle,
        Event::ThrottleExpired,
        Event::exited(143),
    ]
}

/// Who may move a task from `from` to `to`, in order and without
/// repeats; empty when no event makes that move. A task that stays in its
/// phase needs no mover: this is for changes of phase.
pub fn movers(from: TaskPhase, to: TaskPhase) -> Vec<Reporter> {
    let mut who: Vec<Reporter> = every_event()
        .iter()
        .filter(|e| matches!(decide(from, e), Decision::Move { to: t, .. } if t == to))
        .map(Event::reporter)
        .collect();
    who.sort();
    who.dedup();
    who
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskPhase::*;

    #[test]
    fn each_move_belongs_to_whoever_reports_its_events() {
        let cases: &[(TaskPhase, TaskPhase, &[Reporter])] = &[
            (Pending, Assigned, &[Reporter::Scheduler]),
            (Assigned, Starting, &[Reporter::Agent]),
            (Starting, Running, &[Reporter::Agent]),
            (Running, Finished, &[Reporter::Agent]),
            (Running, Failed, &[Reporter::Agent]),
            (Running, Killing, &[Reporter::Controller]),
            (Running, Preempting, &[Reporter::Scheduler]),
            (Killing, Killed, &[Reporter::Agent, Reporter::Controller]),
            (Pending, Killed, &[Reporter::Controller]),
            (Running, Partitioned, &[Reporter::Controller]),
            // Nobody moves a task out of an ended phase, or backwards.
            (Finished, Running, &[]),
            (Killed, Pending, &[]),
            (Running, Starting, &[]),
            (Pending, Running, &[]),
            (Running, Assigned, &[]),
        ];
        for (from, to, want) in cases {
            assert_eq!(movers(*from, *to), *want, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn every_event_kind_is_sampled() {
        // A new event kind must be added to `every_event`, or its moves
        // would be refused by the server's guard.
        let names: std::collections::BTreeSet<&str> =
            every_event().iter().map(Event::name).collect();
        assert_eq!(names.len(), 18, "{names:?}");
    }
}
