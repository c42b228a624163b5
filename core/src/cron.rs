//! Cron decisions: which ticks are due at `now`, what was missed, and the
//! deterministic name of each run (so a tick creates exactly one run, even
//! across restarts: the controller creates the run by name, if absent).

use corral_api::job::{CronSpec, MissedRunPolicy, parse_schedule};

/// How late a tick may be started under `SKIP`: later than this it counts as missed.
pub const STARTING_DEADLINE_SECONDS: i64 = 120;
/// The most ticks looked at in one decision (a long outage of a frequent schedule).
const MAX_TICKS: usize = 10_000;

/// Why a schedule cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The expression does not parse.
    #[error("invalid schedule {schedule:?}: {message}")]
    Schedule {
        /// The expression.
        schedule: String,
        /// The parser's message.
        message: String,
    },
    /// The time zone is unknown.
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

/// What to do at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronPlan {
    /// The tick to start a run for now, if any.
    pub run: Option<jiff::Timestamp>,
    /// Ticks that passed without a run (counted in status).
    pub missed: u64,
    /// The newest tick at or before `now` (the next `lastScheduleTime`).
    pub last_tick: Option<jiff::Timestamp>,
    /// The next tick after `now`, for requeueing.
    pub next: Option<jiff::Timestamp>,
}

fn zone(spec: &CronSpec) -> Result<jiff::tz::TimeZone, CronError> {
    jiff::tz::TimeZone::get(&spec.timezone).map_err(|_| CronError::TimeZone(spec.timezone.clone()))
}

/// The ticks in `(after, until]`, oldest first, at most [`MAX_TICKS`] (the newest kept).
fn ticks(
    spec: &CronSpec,
    after: jiff::Timestamp,
    until: jiff::Timestamp,
) -> Result<Vec<jiff::Timestamp>, CronError> {
    let cron = parse_schedule(&spec.schedule).map_err(|e| CronError::Schedule {
        schedule: spec.schedule.clone(),
        message: e.to_string(),
    })?;
    let tz = zone(spec)?;
    let mut out = std::collections::VecDeque::new();
    let mut cursor = after.to_zoned(tz);
    loop {
        let Ok(next) = cron.find_next_occurrence(&cursor, false) else {
            break;
        };
        if next.timestamp() > until {
            break;
        }
        out.push_back(next.timestamp());
        if out.len() > MAX_TICKS {
            out.pop_front();
        }
        cursor = next;
    }
    Ok(out.into())
}

/// Decides what a cron job does at `now`, given the last tick it handled (or
/// its creation time, before the first tick).
pub fn plan(
    spec: &CronSpec,
    last_handled: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Result<CronPlan, CronError> {
    let due = ticks(spec, last_handled, now)?;
    let next = next_tick(spec, now)?;
    let Some(&newest) = due.last() else {
        return Ok(CronPlan {
            run: None,
            missed: 0,
            last_tick: None,
            next,
        });
    };
    let older = u64::try_from(due.len() - 1).unwrap_or(u64::MAX);
    let late = now.as_second() - newest.as_second() > STARTING_DEADLINE_SECONDS;
    let (run, missed) = match (spec.missed_run_policy, late) {
        (_, false) => (Some(newest), older),
        (MissedRunPolicy::RunOnce, true) => (Some(newest), older),
        (MissedRunPolicy::Skip, true) => (None, older + 1),
    };
    Ok(CronPlan {
        run,
        missed,
        last_tick: Some(newest),
        next,
    })
}

/// The first tick after `after`.
pub fn next_tick(
    spec: &CronSpec,
    after: jiff::Timestamp,
) -> Result<Option<jiff::Timestamp>, CronError> {
    let cron = parse_schedule(&spec.schedule).map_err(|e| CronError::Schedule {
        schedule: spec.schedule.clone(),
        message: e.to_string(),
    })?;
    Ok(cron
        .find_next_occurrence(&after.to_zoned(zone(spec)?), false)
        .ok()
        .map(|z| z.timestamp()))
}

/// The name of the run for `tick`: `<job>-<minutes since the epoch>`, cut so
/// it stays a valid object name. The same tick always gives the same name.
pub fn run_name(job: &str, tick: jiff::Timestamp) -> String {
    let suffix = format!("-{}", tick.as_second().div_euclid(60));
    let keep = 63usize.saturating_sub(suffix.len());
    let base: String = job.chars().take(keep).collect();
    format!("{}{suffix}", base.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_api::job::CollisionPolicy;

    fn spec(schedule: &str, tz: &str, missed: MissedRunPolicy) -> CronSpec {
        CronSpec {
            schedule: schedule.into(),
            timezone: tz.into(),
            collision_policy: CollisionPolicy::KillExisting,
            missed_run_policy: missed,
            history_limit: 3,
        }
    }

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_tick_that_just_passed_runs_once() -> Result<(), CronError> {
        let s = spec("*/5 * * * *", "UTC", MissedRunPolicy::Skip);
        let p = plan(&s, t("2026-11-25T10:00:00Z"), t("2026-11-25T10:05:30Z"))?;
        assert_eq!(p.run, Some(t("2026-11-25T10:05:00Z")));
        assert_eq!(
            (p.missed, p.last_tick),
            (0, Some(t("2026-11-25T10:05:00Z")))
        );
        assert_eq!(p.next, Some(t("2026-11-25T10:10:00Z")));
        // Handled: the same decision later starts nothing.
        let again = plan(&s, t("2026-11-25T10:05:00Z"), t("2026-11-25T10:06:00Z"))?;
        assert_eq!((again.run, again.missed), (None, 0));
        Ok(())
    }

    #[test]
    fn an_outage_is_counted_and_the_policy_decides_the_catch_up() -> Result<(), CronError> {
        let skip = spec("0 * * * *", "UTC", MissedRunPolicy::Skip);
        let p = plan(&skip, t("2026-11-25T00:00:00Z"), t("2026-11-25T05:30:00Z"))?;
        assert_eq!(
            (p.run, p.missed),
            (None, 5),
            "five hourly ticks missed, the last one too late"
        );
        assert_eq!(p.last_tick, Some(t("2026-11-25T05:00:00Z")));
        let once = spec("0 * * * *", "UTC", MissedRunPolicy::RunOnce);
        let p = plan(&once, t("2026-11-25T00:00:00Z"), t("2026-11-25T05:30:00Z"))?;
        assert_eq!((p.run, p.missed), (Some(t("2026-11-25T05:00:00Z")), 4));
        Ok(())
    }

    #[test]
    fn schedules_are_read_in_their_time_zone() -> Result<(), CronError> {
        // 02:00 in Paris is 01:00 UTC in winter.
        let s = spec("0 2 * * *", "Europe/Paris", MissedRunPolicy::Skip);
        assert_eq!(
            next_tick(&s, t("2026-11-25T00:00:00Z"))?,
            Some(t("2026-11-25T01:00:00Z"))
        );
        assert!(matches!(
            plan(
                &spec("0 2 * * *", "Mars/Olympus", MissedRunPolicy::Skip),
                t("2026-11-25T00:00:00Z"),
                t("2026-11-26T00:00:00Z")
            ),
            Err(CronError::TimeZone(_))
        ));
        Ok(())
    }

    #[test]
    fn run_names_are_deterministic_and_valid() {
        let tick = t("2026-11-25T10:05:00Z");
        assert_eq!(
            run_name("nightly-report", tick),
            run_name("nightly-report", tick)
        );
        assert_ne!(
            run_name("nightly-report", tick),
            run_name("nightly-report", t("2026-11-25T10:10:00Z"))
        );
        let long = run_name(&"x".repeat(80), tick);
        assert!(
            long.len() <= 63 && corral_api::validation::is_dns1123_subdomain(&long),
            "{long}"
        );
    }
}
