//! Corral's pure decisions: no IO, no tokio, no clock (time is a parameter).
//!
//! - [`lifecycle`]: the Aurora task state machine.
//! - [`jobs`]: which tasks a job needs (instances, replacements, retries).
//! - [`latency`]: MTTA / MTTS / MTTR figures from task events.
//! - [`cron`]: which cron ticks are due, and the deterministic name of each run.
//! - [`nodes`]: what a lost or returning node means for its tasks (LOST, PARTITIONED).
//! - [`liveness`]: node liveness from lease renewals on the observer's clock; the disruption brake.
//! - [`reconcile`]: a node's running copies against its bound tasks (errant copies, lost ones).
//! - [`roles`]: Role status figures (allocated, pending, dominant share, latency).
//! - [`timeouts`]: Aurora's transient-state timeouts (ASSIGNED/STARTING → LOST).
//! - [`sched`]: placement, quotas, DRF, reservations, preemption, explanations.

pub mod cron;
pub mod disruption;
pub mod endpoints;
pub mod health;
pub mod jobs;
pub mod latency;
pub mod lifecycle;
pub mod liveness;
pub mod nodes;
pub mod plan;
pub mod pods;
pub mod reconcile;
pub mod reservations;
pub mod roles;
pub mod sched;
pub mod timeouts;
