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
//! - [`endpoints`]: service jobs' instances as EndpointSlices (discovery).
//! - [`reservations`]: Reservation status: in force or why not, and what of it is used.
//! - [`drain`]: drains and maintenance windows: tasks marked, replaced and
//!   evicted within their jobs' disruption budgets; Draining and
//!   Maintenance node conditions.
//! - [`jobs`]: keeps each job's tasks (instances, replacements, retries, scale-down, rolling updates) and its status.
//! - [`cache`]: one watch per kind, shared by all of them.
//! - [`bulk`]: many tasks created or bound in one request.
//! - [`client`]: Corral's own clients, over HTTP/2.
//! - [`metrics`]: what the loops count, and the cluster as the caches show it.
//! - [`leader`]: leader election, so that one process at a time runs them all ([`run_all`]).

pub mod allocation;
pub mod bulk;
pub mod cache;
pub mod client;
pub mod cron;
pub mod drain;
pub mod endpoints;
pub mod failpoints;
pub mod jobs;
pub mod leader;
pub mod lost;
mod merge;
pub mod metrics;
pub mod nodes;
pub mod pods;
pub mod reservations;
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

/// How the controllers decide, where it is a choice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Settings {
    /// Where the scheduler puts tasks first.
    pub policy: corral_core::sched::Policy,
    /// How nodes are judged (the disruption brake).
    pub nodes: nodes::Settings,
}

/// Runs every controller until `stop` turns true, all of them reading one
/// shared watch per kind (through the controllers' client), counting into
/// `metrics` (which reads the cluster's figures from their caches meanwhile).
pub async fn run_all(
    clients: Clients,
    settings: Settings,
    metrics: metrics::Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = clients.controllers;
    let caches = cache::Caches::new(client.clone(), stop.clone());
    metrics.read_from(Some(caches.clone()));
    let observer = tokio::spawn(metrics::latency::observe(caches.clone(), metrics.clone()));
    let allocation = {
        let (client, caches, stop) = (clients.scheduler, caches.clone(), stop.clone());
        let settings = allocation::Settings {
            policy: settings.policy,
            ..allocation::Settings::default()
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            allocation::run_cached(client, &caches, settings, metrics, stop).await
        })
    };
    let others = [
        tokio::spawn(jobs::run_cached(
            client.clone(),
            caches.clone(),
            metrics.clone(),
            stop.clone(),
        )),
        tokio::spawn(cron::run_cached(
            client.clone(),
            caches.clone(),
            std::sync::Arc::new(jiff::Timestamp::now),
            metrics.clone(),
            stop.clone(),
        )),
        tokio::spawn(lost::run_cached(
            client.clone(),
            caches.clone(),
            stop.clone(),
        )),
        tokio::spawn(roles::run_cached(
            client.clone(),
            caches.clone(),
            stop.clone(),
        )),
        tokio::spawn(endpoints::run_cached(
            client.clone(),
            caches.clone(),
            stop.clone(),
        )),
        tokio::spawn(pods::run_cached(
            client.clone(),
            caches.clone(),
            stop.clone(),
        )),
        tokio::spawn(reservations::run_cached(
            client.clone(),
            caches.clone(),
            stop.clone(),
        )),
        tokio::spawn(drain::run_cached(
            client.clone(),
            caches.clone(),
            stop.clone(),
        )),
        tokio::spawn(nodes::run_cached(client, caches, settings.nodes, stop)),
    ];
    for handle in std::iter::once(allocation).chain(others) {
        if let Err(e) = handle.await {
            tracing::error!(error = %e, "a controller panicked");
        }
    }
    observer.abort();
    metrics.read_from(None);
}
