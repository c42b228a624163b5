//! What requests do to the store: the per-kind verbs (`registry`, as
//! Kubernetes names per-resource storage), the watch cache and watches,
//! admission and schema checks, server-side apply, patches, selectors, the
//! JSON object helpers they share, and the store's upkeep (`lifecycle`:
//! compaction and Event expiry).

pub mod admission;
pub mod cache;
pub mod lifecycle;
pub mod objects;
pub mod patch;
pub mod registry;
pub mod schema_check;
pub mod selectors;
pub mod ssa;
pub mod watch;
