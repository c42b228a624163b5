//! The rules of voluntary disruptions: a job's disruption budget and a
//! node's maintenance window.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Errors, FieldPath};
use crate::disruption::{DisruptionBudget, MaintenanceWindow};

/// The longest maintenance window, and the longest lead before one: a week.
pub const MAX_WINDOW_SECONDS: u32 = 7 * 24 * 3600;

/// A job's `spec.disruptionBudget`.
pub(super) fn budget(errs: &mut Errors, at: &FieldPath, b: &DisruptionBudget) {
    let at = at.child("maxUnavailable");
    if let Err(e) = b.max_unavailable(100) {
        let value = match &b.max_unavailable {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => format!("\"{s}\""),
        };
        errs.invalid(&at, value, e.to_string());
    }
}

/// A node's `spec.maintenance`.
pub(super) fn maintenance(errs: &mut Errors, at: &FieldPath, w: &MaintenanceWindow) {
    for (field, value, least) in [
        ("durationSeconds", w.duration_seconds, 1),
        ("drainAheadSeconds", w.drain_ahead_seconds, 0),
        ("avoidAheadSeconds", w.avoid_ahead_seconds, 0),
    ] {
        if value < least || value > MAX_WINDOW_SECONDS {
            errs.invalid(
                &at.child(field),
                value,
                format!("must be from {least} to {MAX_WINDOW_SECONDS} (a week)"),
            );
        }
    }
}
