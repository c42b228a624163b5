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
//! - [`jobs`]: keeps each job's tasks (instances, replacements, retries, scale-down, rolling updates) and its status.
//! - [`leader`]: leader election, so that one process at a time runs them all ([`run_all`]).

pub mod allocation;
pub mod cron;
pub mod jobs;
pub mod leader;
pub mod lost;
pub mod nodes;
pub mod roles;

/// Runs every controller against `client` until `stop` turns true.
pub async fn run_all(
    client: kube::Client,
    policy: corral_core::sched::Policy,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let allocation = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = allocation::run(client, policy, stop).await {
                tracing::error!(error = %e, "the allocation loop stopped");
            }
        })
    };
    let others = [
        tokio::spawn(jobs::run(client.clone(), stop.clone())),
        tokio::spawn(cron::run(client.clone(), stop.clone())),
        tokio::spawn(lost::run(client.clone(), stop.clone())),
        tokio::spawn(roles::run(client.clone(), stop.clone())),
        tokio::spawn(nodes::run(client, stop)),
    ];
    for handle in std::iter::once(allocation).chain(others) {
        if let Err(e) = handle.await {
            tracing::error!(error = %e, "a controller panicked");
        }
    }
}
