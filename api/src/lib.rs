//! The `corral.dev/v1alpha1` resource model: Role, Quota, Reservation, Job,
//! Task and Node, with their validation rules and CRD generation.
//!
//! This crate does no IO. Every kind has a spec (what users want) and a status
//! (what controllers observed); states, reasons and tiers are enums. Quantities
//! keep the form users wrote and are read exactly as milli-units.

pub mod common;
pub mod crds;
pub mod discovery;
pub mod disruption;
pub mod health;
pub mod job;
pub mod node;
pub mod object;
pub mod plan;
pub mod pods;
pub mod ports;
pub mod quantity;
pub mod quota;
pub mod reservation;
pub mod resources;
pub mod role;
pub mod task;
pub mod update;
pub mod validation;

pub use common::{API_VERSION, Condition, ConditionStatus, GROUP, SYSTEM_NAMESPACE, Tier, VERSION};
pub use job::{Job, JobKind, JobSpec, JobStatus};
pub use node::{Node, NodeSpec, NodeStatus};
pub use object::{CorralObject, DecodeError};
pub use quantity::Quantity;
pub use quota::{Quota, QuotaSpec, QuotaStatus};
pub use reservation::{Reservation, ReservationSpec, ReservationStatus};
pub use resources::Resources;
pub use role::{Role, RoleSpec, RoleStatus};
pub use task::{Task, TaskEvent, TaskPhase, TaskSpec, TaskStatus};
