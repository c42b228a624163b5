//! Transient-state timeouts (Aurora's): a task ASSIGNED longer than the
//! assign timeout, or STARTING longer than the start timeout, is lost.

use corral_api::TaskPhase;
use corral_api::job::Timeouts;
use corral_api::task::TaskStatus;

use crate::lifecycle::Event;

/// When the task entered its current phase (its newest task event for it).
pub fn entered(status: &TaskStatus) -> Option<jiff::Timestamp> {
    let phase = status.phase();
    status
        .task_events
        .iter()
        .rev()
        .find(|e| e.status == phase)
        .map(|e| e.timestamp.0)
}

/// The timeout event due for a task at `now`, if any.
pub fn due(status: &TaskStatus, timeouts: &Timeouts, now: jiff::Timestamp) -> Option<Event> {
    let (limit, event) = match status.phase() {
        TaskPhase::Assigned => (timeouts.assign_seconds, Event::AssignTimeout),
        TaskPhase::Starting => (timeouts.start_seconds, Event::StartTimeout),
        _ => return None,
    };
    let since = entered(status)?;
    (now.as_second() - since.as_second() >= i64::from(limit)).then_some(event)
}

/// When the task's current timeout falls due (for requeueing), if it has one.
pub fn deadline(status: &TaskStatus, timeouts: &Timeouts) -> Option<jiff::Timestamp> {
    let limit = match status.phase() {
        TaskPhase::Assigned => timeouts.assign_seconds,
        TaskPhase::Starting => timeouts.start_seconds,
        _ => return None,
    };
    let since = entered(status)?;
    jiff::Timestamp::from_second(since.as_second() + i64::from(limit)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{self, Event as E};

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    #[test]
    fn assigned_and_starting_tasks_time_out_others_never()
    -> Result<(), lifecycle::IllegalTransition> {
        let t = Timeouts {
            assign_seconds: 10,
            start_seconds: 30,
        };
        let mut st = TaskStatus::default();
        assert_eq!(
            due(&st, &t, at(1000)),
            None,
            "pending tasks have no timeout"
        );
        lifecycle::apply(
            &mut st,
            &E::Assigned { node: "n1".into() },
            at(0),
            "scheduler",
        )?;
        assert_eq!(due(&st, &t, at(9)), None);
        assert_eq!(due(&st, &t, at(10)), Some(E::AssignTimeout));
        assert_eq!(deadline(&st, &t), Some(at(10)));
        lifecycle::apply(&mut st, &E::AgentStarting, at(5), "agent")?;
        assert_eq!(
            due(&st, &t, at(34)),
            None,
            "the start timeout counts from STARTING"
        );
        assert_eq!(due(&st, &t, at(35)), Some(E::StartTimeout));
        lifecycle::apply(&mut st, &E::AgentRunning, at(6), "agent")?;
        assert_eq!(due(&st, &t, at(10_000)), None);
        Ok(())
    }
}
