//! Voluntary disruptions, decided purely: whether evicting a task keeps its
//! job within its disruption budget, and what a drain does with each task
//! of its node.
//!
//! **Budget.** An instance of a job is *up* when one of its tasks is
//! available — RUNNING, and healthy if it has a health check — and not
//! recorded as evicted (an eviction's record counts its task as down until
//! its phase says so, for at most
//! [`corral_api::disruption::DISRUPTION_RECORD_SECONDS`]). The job's *down*
//! count is its instances that are not up. Evicting a task:
//! - that is not available, or whose instance has another available task
//!   (a replacement made before the break), costs nothing ([`Verdict::Free`]);
//! - otherwise is allowed while `down + 1 <= maxUnavailable`
//!   ([`Verdict::WithinBudget`]), else refused ([`Verdict::OverBudget`]).
//!
//! **Drain.** Each task still on a draining node is evicted unless its
//! replacement is on its way — due (a service instance's, for up to
//! [`REPLACEMENT_GRACE_SECONDS`]), being placed, or bound and starting —
//! in which case the drain waits for it ([`drain_step`]); a replacement
//! that found no room no longer holds the drain back, which then breaks
//! before making, within the budget.

use std::collections::BTreeMap;

use corral_api::disruption::DISRUPTION_RECORD_SECONDS;
use corral_api::{JobStatus, Task, TaskPhase};

/// One task of a job, as the budget needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The task's name.
    pub name: String,
    /// Its instance.
    pub instance: u32,
    /// RUNNING, and healthy if it has a health check.
    pub available: bool,
}

/// Job `job`'s tasks as its budget sees them.
pub fn members<'a>(job: &str, tasks: impl IntoIterator<Item = &'a Task>) -> Vec<Member> {
    tasks
        .into_iter()
        .filter_map(|t| crate::jobs::view(job, t))
        .map(|v| Member {
            available: v.healthy_since.is_some(),
            name: v.name,
            instance: v.instance,
        })
        .collect()
}

/// The evictions a job's status records: task name → when (Unix seconds).
pub fn records(status: Option<&JobStatus>) -> BTreeMap<String, i64> {
    status
        .map(|s| {
            s.disrupted_tasks
                .iter()
                .map(|(n, at)| (n.clone(), at.0.as_second()))
                .collect()
        })
        .unwrap_or_default()
}

/// The budget's verdict on evicting one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The task is down already, or its instance stays up without it.
    Free,
    /// Allowed: `down_after` of the job's instances are down after it, of
    /// `max` allowed.
    WithinBudget {
        /// Instances down once it is evicted.
        down_after: u32,
        /// The budget.
        max: u32,
    },
    /// Refused: `down` instances are down already, `max` allowed.
    OverBudget {
        /// Instances down now.
        down: u32,
        /// The budget.
        max: u32,
    },
}

impl Verdict {
    /// True when the eviction may go ahead.
    pub fn allowed(self) -> bool {
        !matches!(self, Verdict::OverBudget { .. })
    }
}

/// A job's state as the budget sees it.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    /// The job's instances.
    pub instances: u32,
    /// How many may be down at once; None: no budget.
    pub max_unavailable: Option<u32>,
    /// Its tasks.
    pub members: &'a [Member],
    /// Evictions under way: task name → when (Unix seconds).
    pub disrupted: &'a BTreeMap<String, i64>,
    /// Now, in Unix seconds.
    pub now: i64,
}

impl Budget<'_> {
    /// True when the record of an eviction of `name` still counts.
    fn recorded(&self, name: &str) -> bool {
        self.disrupted
            .get(name)
            .is_some_and(|at| self.now < at + DISRUPTION_RECORD_SECONDS)
    }

    fn counts_up(&self, m: &Member) -> bool {
        m.available && !self.recorded(&m.name)
    }

    /// Instances up, of `0..instances`.
    fn up(&self) -> u32 {
        let mut up: Vec<u32> = self
            .members
            .iter()
            .filter(|m| m.instance < self.instances && self.counts_up(m))
            .map(|m| m.instance)
            .collect();
        up.sort_unstable();
        up.dedup();
        u32::try_from(up.len()).unwrap_or(u32::MAX)
    }

    /// Instances down now.
    pub fn down(&self) -> u32 {
        self.instances.saturating_sub(self.up())
    }

    /// How many more instances voluntary disruptions may take down now
    /// (None: no budget, any number).
    pub fn disruptions_allowed(&self) -> Option<u32> {
        self.max_unavailable
            .map(|max| max.saturating_sub(self.down()))
    }

    /// The verdict on evicting task `name` (a task the budget does not
    /// know is judged free: it is not one of the job's instances).
    pub fn judge(&self, name: &str) -> Verdict {
        let Some(target) = self.members.iter().find(|m| m.name == name) else {
            return Verdict::Free;
        };
        if target.instance >= self.instances || !self.counts_up(target) {
            return Verdict::Free;
        }
        let covered = self
            .members
            .iter()
            .any(|m| m.name != name && m.instance == target.instance && self.counts_up(m));
        if covered {
            return Verdict::Free;
        }
        let Some(max) = self.max_unavailable else {
            return Verdict::Free;
        };
        let down = self.down();
        if down < max {
            Verdict::WithinBudget {
                down_after: down + 1,
                max,
            }
        } else {
            Verdict::OverBudget { down, max }
        }
    }

    /// The records still worth keeping once `name` is added at `now`: the
    /// ones that still count, of tasks that are not down by their phase
    /// (`ended` says which have ended or are being killed).
    pub fn records_after(&self, name: &str, ended: impl Fn(&str) -> bool) -> BTreeMap<String, i64> {
        let mut kept: BTreeMap<String, i64> = self
            .disrupted
            .iter()
            .filter(|(n, _)| self.recorded(n) && !ended(n))
            .map(|(n, at)| (n.clone(), *at))
            .collect();
        kept.insert(name.to_owned(), self.now);
        kept
    }
}

/// How long a drain waits for a service instance's replacement to be
/// made (the job controller makes it once the task is marked as leaving)
/// before it breaks before making.
pub const REPLACEMENT_GRACE_SECONDS: i64 = 30;

/// Where a draining task's replacement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// None is made for it: not a service instance.
    NotMade,
    /// A service instance's, not made yet, `waited` seconds after the task
    /// was marked as leaving.
    Due {
        /// Seconds since the task was marked.
        waited: i64,
    },
    /// Created and waiting for the scheduler's first word.
    Placing,
    /// The scheduler found no room for it.
    Unplaceable,
    /// Bound, and not yet available.
    Starting,
    /// Available elsewhere.
    Available,
}

impl Replacement {
    /// How a replacement task in `phase`, `available` or not, whose
    /// scheduler said it does not fit (`unplaceable`), stands.
    pub fn of(phase: TaskPhase, available: bool, unplaceable: bool) -> Replacement {
        match phase {
            _ if available => Replacement::Available,
            TaskPhase::Pending | TaskPhase::Throttled if unplaceable => Replacement::Unplaceable,
            TaskPhase::Pending | TaskPhase::Throttled => Replacement::Placing,
            TaskPhase::Assigned | TaskPhase::Starting | TaskPhase::Running => Replacement::Starting,
            _ => Replacement::Unplaceable,
        }
    }
}

/// What a drain does with one task on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// Nothing: it is leaving already (being killed) or has ended.
    Leaving,
    /// Evict it (the budget, judged by whoever serves the eviction, may
    /// still refuse).
    Evict,
    /// Wait for its replacement, which is on its way.
    AwaitReplacement,
}

/// The drain's step for a task in `phase` whose replacement stands as
/// `replacement`.
pub fn drain_step(phase: TaskPhase, replacement: Replacement) -> DrainStep {
    if phase.is_terminal() || phase.is_being_killed() {
        return DrainStep::Leaving;
    }
    match replacement {
        Replacement::Due { waited } if waited < REPLACEMENT_GRACE_SECONDS => {
            DrainStep::AwaitReplacement
        }
        Replacement::Placing | Replacement::Starting => DrainStep::AwaitReplacement,
        Replacement::NotMade
        | Replacement::Due { .. }
        | Replacement::Unplaceable
        | Replacement::Available => DrainStep::Evict,
    }
}

#[cfg(test)]
mod tests;
