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

/// The limit (seconds) and the event of a task's timeout in `phase`, if
/// that phase has one: only ASSIGNED and STARTING do.
fn limit(phase: TaskPhase, timeouts: &Timeouts) -> Option<(u32, Event)> {
    match phase {
        TaskPhase::Assigned => Some((timeouts.assign_seconds, Event::AssignTimeout)),
        TaskPhase::Starting => Some((timeouts.start_seconds, Event::StartTimeout)),
        _ => None,
    }
}

/// Whether a task in `phase` can time out (whatever its job's timeouts):
/// a task in any other phase needs no watching for timeouts.
pub fn timed(phase: TaskPhase) -> bool {
    limit(phase, &Timeouts::default()).is_some()
}

/// The timeout event due for a task at `now`, if any.
pub fn due(status: &TaskStatus, timeouts: &Timeouts, now: jiff::Timestamp) -> Option<Event> {
    let (limit, event) = limit(status.phase(), timeouts)?;
    let since = entered(status)?;
    (now.as_second() - since.as_second() >= i64::from(limit)).then_some(event)
}

/// When the task's current timeout falls due (for requeueing), if it has one.
pub fn deadline(status: &TaskStatus, timeouts: &Timeouts) -> Option<jiff::Timestamp> {
    let (limit, _) = limit(status.phase(), timeouts)?;
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
    fn only_timed_phases_have_a_deadline_or_fall_due() {
        let t = Timeouts {
            assign_seconds: 0,
            start_seconds: 0,
        };
        for phase in TaskPhase::ALL {
            let st = TaskStatus {
                phase: Some(phase),
                task_events: vec![corral_api::task::TaskEvent {
                    timestamp: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(at(0)),
                    status: phase,
                    message: String::new(),
                    actor: "t".into(),
                }],
                ..TaskStatus::default()
            };
            let expected = matches!(phase, TaskPhase::Assigned | TaskPhase::Starting);
            assert_eq!(timed(phase), expected, "{phase:?}");
            assert_eq!(deadline(&st, &t).is_some(), expected, "{phase:?}");
            assert_eq!(due(&st, &t, at(1)).is_some(), expected, "{phase:?}");
        }
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
