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

/// The identities the controllers act as: the scheduler (the allocation
/// loop) and the rest, each with only what it uses when `corral server`
/// gives them their own (`system:corral-scheduler`,
/// `system:corral-controller-manager`); one client serves both otherwise.
#[derive(Clone)]
pub struct Clients {
    /// The allocation loop's.
    pub scheduler: kube::Client,
    /// Every other controller's, and leader election's.
    pub controllers: kube::Client,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Clients {
    /// One client for every controller.
    pub fn one(client: kube::Client) -> Self {
        Clients {
            scheduler: client.clone(),
            controllers: client,
        }
    }
}

/// Runs every controller until `stop` turns true.
pub async fn run_all(
    clients: Clients,
    policy: corral_core::sched::Policy,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = clients.controllers;
    let allocation = {
        let (client, stop) = (clients.scheduler, stop.clone());
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
