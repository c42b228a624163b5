//! Node liveness and its effect on tasks (pure).
//!
//! A node whose agent stops renewing its Lease is lost once the lease
//! lapses (on the controller's clock: [`crate::liveness`]). Its tasks are then LOST at once, or PARTITIONED first when their
//! job's partition policy asks to wait (`delaySeconds`), or indefinitely when
//! the policy says not to reschedule; a PARTITIONED task is LOST once the
//! delay has passed. When the lease is renewed again, the node is back, and
//! the agent's next report decides its tasks' fate.

use corral_api::TaskPhase;
use corral_api::job::PartitionPolicy;
use corral_api::task::TaskStatus;

use crate::lifecycle::Event;
use crate::timeouts::entered;

/// The event a task on an unreachable node is due at `now`, if any.
pub fn on_lost_node(
    status: &TaskStatus,
    policy: &PartitionPolicy,
    now: jiff::Timestamp,
) -> Option<Event> {
    let phase = status.phase();
    if phase.is_terminal() || phase == TaskPhase::Pending || phase == TaskPhase::Throttled {
        return None;
    }
    if phase == TaskPhase::Partitioned {
        let since = entered(status)?;
        let waited = now.as_second() - since.as_second();
        return (policy.reschedule && waited >= i64::from(policy.delay_seconds))
            .then_some(Event::NodeLost);
    }
    if policy.reschedule && policy.delay_seconds == 0 {
        Some(Event::NodeLost)
    } else {
        Some(Event::NodePartitioned)
    }
}

/// The event a task on a node that came back is due, if any.
pub fn on_node_back(status: &TaskStatus) -> Option<Event> {
    (status.phase() == TaskPhase::Partitioned).then_some(Event::NodeBack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn running() -> TaskStatus {
        let mut st = TaskStatus::default();
        lifecycle::apply(&mut st, &Event::Assigned { node: "n1".into() }, at(0), "s")
            .expect("assign");
        lifecycle::apply(&mut st, &Event::AgentRunning, at(1), "a").expect("run");
        st
    }

    #[test]
    fn tasks_on_a_lost_node_follow_their_partition_policy() {
        let now_lost = PartitionPolicy {
            reschedule: true,
            delay_seconds: 0,
        };
        let wait = PartitionPolicy {
            reschedule: true,
            delay_seconds: 30,
        };
        let never = PartitionPolicy {
            reschedule: false,
            delay_seconds: 0,
        };
        let st = running();
        assert_eq!(on_lost_node(&st, &now_lost, at(10)), Some(Event::NodeLost));
        assert_eq!(
            on_lost_node(&st, &wait, at(10)),
            Some(Event::NodePartitioned)
        );
        assert_eq!(
            on_lost_node(&st, &never, at(10)),
            Some(Event::NodePartitioned)
        );
        let mut partitioned = st.clone();
        lifecycle::apply(&mut partitioned, &Event::NodePartitioned, at(10), "n")
            .expect("partition");
        assert_eq!(on_lost_node(&partitioned, &wait, at(39)), None);
        assert_eq!(
            on_lost_node(&partitioned, &wait, at(40)),
            Some(Event::NodeLost)
        );
        assert_eq!(
            on_lost_node(&partitioned, &never, at(10_000)),
            None,
            "never rescheduled"
        );
        assert_eq!(on_node_back(&partitioned), Some(Event::NodeBack));
        assert_eq!(on_node_back(&st), None);
    }
}
