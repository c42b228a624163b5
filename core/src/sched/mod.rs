//! The scheduler's pure half: a cluster snapshot updated incrementally,
//! placement with filters, reservations, quotas and weighted DRF, revocable
//! capacity, stable preemption, and explanations for pending tasks.

pub mod guarantee;
pub mod place;
pub mod preempt;
pub mod queue;
pub mod res;
pub mod snapshot;

pub use place::{Policy, Unplaced, explain, place};
pub use queue::{Cycle, run_cycle};
pub use res::{Dims, Res};
pub use snapshot::{NodeId, NodeState, RoleInfo, SchedTask, Snapshot};

#[cfg(test)]
mod tests;
