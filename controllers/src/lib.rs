//! Corral's reconcile loops. Each one gathers state from watches through the
//! API server (never the store), decides with `corral-core`, and applies its
//! decisions as API writes; all state lives in objects, so a restarted loop
//! carries on where it stopped.
//!
//! - [`allocation`]: binds PENDING tasks to nodes.
//! - [`nodes`]: node liveness from agent leases; tasks on lost nodes go LOST or PARTITIONED.
//! - [`lost`]: tasks stuck ASSIGNED or STARTING past their timeout become LOST.
//! - [`cron`]: one run per schedule tick, exactly once, with collision and missed-run policies.
//! - [`roles`]: Role status: allocated, pending, dominant share and latency figures.
//! - [`jobs`]: keeps each job's tasks (instances, replacements, retries, scale-down) and its status.

pub mod allocation;
pub mod cron;
pub mod jobs;
pub mod lost;
pub mod nodes;
pub mod roles;
