//! The status a Task is born with. The API server gives every new Task its
//! status in the create itself (as Kubernetes gives a new Pod its phase), so
//! no second write records it: PENDING with its first task event, or
//! THROTTLED when the job controller created it held back (the
//! [`super::THROTTLED_UNTIL_ANNOTATION`] names a time still to come).

use corral_api::task::{PendingExplanation, PendingReason, PendingReasonKind, TaskStatus};

use super::FLAP_WINDOW_SECONDS;
use crate::lifecycle;

/// The status of a task created for `instance` at `now` by `actor`;
/// `hold_until` is the value of its [`super::THROTTLED_UNTIL_ANNOTATION`], if any.
pub fn initial_status(
    instance: u32,
    hold_until: Option<&str>,
    now: jiff::Timestamp,
    actor: &str,
) -> TaskStatus {
    let mut status = lifecycle::created(format!("created for instance {instance}"), now, actor);
    let hold = hold_until
        .and_then(|v| v.parse::<jiff::Timestamp>().ok())
        .filter(|until| *until > now);
    if let Some(until) = hold {
        hold_back(&mut status, until, now, actor);
    }
    status
}

/// Moves a just-created `status` to THROTTLED until `until`, explained.
fn hold_back(status: &mut TaskStatus, until: jiff::Timestamp, now: jiff::Timestamp, actor: &str) {
    if lifecycle::apply(status, &lifecycle::Event::Throttle, now, actor).is_err() {
        return;
    }
    let why = format!(
        "held back until {until}: the instance's last tasks ended within {FLAP_WINDOW_SECONDS} s of running"
    );
    if let Some(last) = status.task_events.last_mut() {
        last.message = why.clone();
    }
    status.message = Some(why.clone());
    status.explanation = Some(PendingExplanation {
        summary: why.clone(),
        reasons: vec![PendingReason {
            kind: PendingReasonKind::Throttled,
            message: why,
            resource: None,
            subject: None,
            nodes: None,
            needed: None,
            available: None,
        }],
        evaluated_at: None,
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use corral_api::TaskPhase;

    use super::super::THROTTLED_UNTIL_ANNOTATION;
    use super::*;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("in range")
    }

    #[test]
    fn a_task_is_born_pending_or_held_back() {
        let hold = |until: &str| -> BTreeMap<String, String> {
            [(THROTTLED_UNTIL_ANNOTATION.to_owned(), until.to_owned())].into()
        };
        type Annotations = Option<BTreeMap<String, String>>;
        let cases: [(&str, Annotations, TaskPhase, usize); 5] = [
            ("no annotations", None, TaskPhase::Pending, 1),
            (
                "a hold still to come",
                Some(hold("2027-01-01T00:01:40Z")),
                TaskPhase::Throttled,
                2,
            ),
            (
                "a hold already over",
                Some(hold("2027-01-01T00:00:00Z")),
                TaskPhase::Pending,
                1,
            ),
            (
                "an unreadable hold",
                Some(hold("soon")),
                TaskPhase::Pending,
                1,
            ),
            (
                "other annotations",
                Some([("a".to_owned(), "b".to_owned())].into()),
                TaskPhase::Pending,
                1,
            ),
        ];
        let now: jiff::Timestamp = "2027-01-01T00:00:10Z".parse().expect("a time");
        for (what, annotations, phase, events) in cases {
            let hold_until = annotations
                .as_ref()
                .and_then(|a| a.get(THROTTLED_UNTIL_ANNOTATION))
                .map(String::as_str);
            let s = initial_status(3, hold_until, now, "corral-apiserver");
            assert_eq!(s.phase(), phase, "{what}");
            assert_eq!(s.task_events.len(), events, "{what}");
            assert_eq!(s.task_events[0].message, "created for instance 3", "{what}");
            assert_eq!(
                s.explanation.is_some(),
                phase == TaskPhase::Throttled,
                "{what}"
            );
        }
        assert_eq!(
            initial_status(0, None, at(5), "a").task_events[0].actor,
            "a"
        );
    }
}
