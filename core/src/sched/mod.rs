//! The scheduler's pure half: a cluster snapshot updated incrementally,
//! placement with filters, reservations, quotas and weighted DRF, revocable
//! capacity, stable preemption, and explanations for pending tasks; the
//! allocator carries preemptions in progress from one cycle to the next.

pub mod allocator;
pub mod guarantee;
pub mod objects;
pub mod place;
pub mod ports;
pub mod preempt;
pub mod queue;
pub mod res;
pub mod snapshot;

pub use allocator::{Allocator, Decisions, Eviction};
pub use place::{Policy, Unplaced, explain, place};
pub use queue::{Cycle, run_cycle};
pub use res::{Dims, Res};
pub use snapshot::{NodeId, NodeState, RoleInfo, Runtimes, SchedTask, Snapshot};

#[cfg(test)]
mod tests;
