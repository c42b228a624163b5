//! Failpoints for fault tests with real processes: `CORRAL_FAILPOINTS=a,b`
//! makes the process abort (no clean-up, no lease released: as a crash or
//! a kill -9 would) when it reaches a point named in the list. Unset, as
//! in every deployment, a point costs one look at a value read once.
//!
//! Points:
//! - `cron-run-created`: the cron controller created a tick's run and has
//!   not yet recorded the tick in the job's status.

use std::sync::OnceLock;

/// The variable naming the points to abort at.
pub const VARIABLE: &str = "CORRAL_FAILPOINTS";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(VARIABLE)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Aborts the process if point `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|p| p == name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}
