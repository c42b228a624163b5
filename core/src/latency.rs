//! Scheduling latency (Aurora's MTTA, MTTS, MTTR) from task events.
//!
//! For each task, the time from its creation to its first ASSIGNED, STARTING
//! and RUNNING event; tasks that never reached a phase are not counted for it
//! (a PENDING task is not counted until assigned). Figures are the median and
//! the 99th percentile (nearest rank), in milliseconds. Computed from events
//! before they are pruned, then kept in Job and Role status.

use corral_api::TaskPhase;
use corral_api::common::{LatencyFigures, LatencySummary};
use corral_api::task::TaskEvent;

/// One task's creation time and history.
#[derive(Debug, Clone, Copy)]
pub struct TaskHistory<'a> {
    /// When the task was created (PENDING).
    pub created: jiff::Timestamp,
    /// Its task events.
    pub events: &'a [TaskEvent],
}

impl<'a> TaskHistory<'a> {
    /// A task object's history (None until it has a creation time).
    pub fn of(task: &'a corral_api::Task) -> Option<Self> {
        Some(TaskHistory {
            created: task.metadata.creation_timestamp.as_ref()?.0,
            events: task
                .status
                .as_ref()
                .map(|s| s.task_events.as_slice())
                .unwrap_or(&[]),
        })
    }
}

fn first(events: &[TaskEvent], phase: TaskPhase) -> Option<jiff::Timestamp> {
    events
        .iter()
        .find(|e| e.status == phase)
        .map(|e| e.timestamp.0)
}

/// The median and p99 of `samples` (milliseconds); `None` when empty.
/// Two selections, not a sort: linear in the samples.
pub fn summarize(mut samples: Vec<u64>) -> Option<LatencySummary> {
    if samples.is_empty() {
        return None;
    }
    let n = samples.len();
    let rank = |p: f64| ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
    let (median, p99) = (rank(0.5), rank(0.99));
    // Everything before p99's rank is no greater than it, so the median's
    // rank (never above p99's) is found among those.
    let (below, p99_value, _) = samples.select_nth_unstable(p99);
    let p99_value = *p99_value;
    let median_value = match below.len() {
        len if median < len => *below.select_nth_unstable(median).1,
        _ => p99_value,
    };
    Some(LatencySummary {
        median_millis: median_value,
        p99_millis: p99_value,
        samples: u32::try_from(n).unwrap_or(u32::MAX),
    })
}

/// One task's times from creation to its first ASSIGNED, STARTING and
/// RUNNING event, in milliseconds (None: not reached).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Time to ASSIGNED.
    pub assigned: Option<u64>,
    /// Time to STARTING.
    pub starting: Option<u64>,
    /// Time to RUNNING.
    pub running: Option<u64>,
}

impl TaskHistory<'_> {
    /// This task's times to each phase.
    pub fn sample(&self) -> Sample {
        let since = |at: jiff::Timestamp| {
            let ms = at.as_millisecond() - self.created.as_millisecond();
            u64::try_from(ms.max(0)).unwrap_or(0)
        };
        Sample {
            assigned: first(self.events, TaskPhase::Assigned).map(since),
            starting: first(self.events, TaskPhase::Starting).map(since),
            running: first(self.events, TaskPhase::Running).map(since),
        }
    }
}

/// The latency figures of a set of tasks.
pub fn figures<'a>(tasks: impl IntoIterator<Item = TaskHistory<'a>>) -> LatencyFigures {
    figures_of(tasks.into_iter().map(|t| t.sample()))
}

/// The latency figures of a set of tasks' samples.
pub fn figures_of(samples: impl IntoIterator<Item = Sample>) -> LatencyFigures {
    let (mut assigned, mut starting, mut running) = (Vec::new(), Vec::new(), Vec::new());
    for s in samples {
        assigned.extend(s.assigned);
        starting.extend(s.starting);
        running.extend(s.running);
    }
    LatencyFigures {
        time_to_assigned: summarize(assigned),
        time_to_starting: summarize(starting),
        time_to_running: summarize(running),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn at(ms: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(1_800_000_000_000 + ms).expect("time")
    }

    fn ev(phase: TaskPhase, ms: i64) -> TaskEvent {
        TaskEvent {
            timestamp: MicroTime(at(ms)),
            status: phase,
            message: String::new(),
            actor: "t".into(),
        }
    }

    #[test]
    fn medians_and_p99_per_phase_counting_only_tasks_that_got_there() {
        let a = vec![
            ev(TaskPhase::Assigned, 100),
            ev(TaskPhase::Starting, 300),
            ev(TaskPhase::Running, 700),
        ];
        let b = vec![ev(TaskPhase::Assigned, 200), ev(TaskPhase::Running, 1200)];
        let pending: Vec<TaskEvent> = vec![];
        let f = figures([
            TaskHistory {
                created: at(0),
                events: &a,
            },
            TaskHistory {
                created: at(0),
                events: &b,
            },
            TaskHistory {
                created: at(0),
                events: &pending,
            },
        ]);
        let mtta = f.time_to_assigned.expect("mtta");
        assert_eq!(
            (mtta.median_millis, mtta.p99_millis, mtta.samples),
            (100, 200, 2)
        );
        let mtts = f.time_to_starting.expect("mtts");
        assert_eq!((mtts.median_millis, mtts.samples), (300, 1));
        let mttr = f.time_to_running.expect("mttr");
        assert_eq!((mttr.median_millis, mttr.p99_millis), (700, 1200));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = summarize((1..=100).collect()).expect("summary");
        assert_eq!((s.median_millis, s.p99_millis, s.samples), (50, 99, 100));
        assert_eq!(summarize(vec![]), None);
        let one = summarize(vec![7]).expect("one");
        assert_eq!((one.median_millis, one.p99_millis), (7, 7));
    }

    proptest::proptest! {
        /// The selections give the nearest ranks of the sorted samples.
        #[test]
        fn summarize_is_the_nearest_rank_of_the_sorted_samples(
            samples in proptest::collection::vec(0u64..50, 1..300)
        ) {
            let mut sorted = samples.clone();
            sorted.sort_unstable();
            let n = sorted.len();
            let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
            let s = summarize(samples).expect("summary");
            proptest::prop_assert_eq!(
                (s.median_millis, s.p99_millis, s.samples as usize),
                (rank(0.5), rank(0.99), n)
            );
        }
    }
}
