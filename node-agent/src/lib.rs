//! `corral agent`: Corral's node agent (the Mesos agent / kubelet role).
//!
//! - [`runtime`]: the `ContainerRuntime` trait and its runtimes: containerd,
//!   plain processes in cgroups, and simulation.
//! - [`agent`]: registration, lease heartbeats, and the agent loop.
//! - [`supervise`]: launches, kills, status reports, state reconciliation
//!   and fencing.
//! - [`usage`]: usage sampling and the revocable-capacity estimate.
//! - [`logs`]: the HTTPS endpoint the API server proxies task logs from,
//!   which also serves the agent's metrics.
//! - [`metrics`]: what the agent counts, and each task given against used.
//! - [`sandbox_gc`]: ended tasks' sandboxes and output removed after a
//!   delay that shrinks as the disk fills.
//! - [`log_rotation`]: task output rotated by size.
//! - [`disk`]: tasks' `disk` resource enforced by measurement.
//! - [`health`]: health probes (HTTP, TCP, a command in the task).
//! - [`ports`]: a task's assigned host ports in its environment and
//!   `$(VAR)` expansion in its command and arguments.
//! - [`flags`]: the Mesos-style flag values (`cpus=4,memory=8Gi`,
//!   `cpus(analytics)=2`, `rack=r1,zone=a`).
//!
//! Only the agent links container runtimes (containerd-client lives here and
//! nowhere else).

pub mod agent;
pub mod checkpoint;
pub mod disk;
pub mod flags;
pub mod health;
pub mod join;
pub mod log_rotation;
pub mod logs;
pub mod metrics;
pub mod ports;
pub mod references;
pub mod runtime;
pub mod sandbox_gc;
pub mod secrets;
pub mod supervise;
pub mod usage;
