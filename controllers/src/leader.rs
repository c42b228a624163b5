//! Leader election: only one process runs the controllers at a time.
//!
//! Candidates compete for the Lease [`LEASE_NAME`] in [`LEASE_NAMESPACE`]
//! (coordination.k8s.io/v1, as kube-controller-manager does). Writes are
//! conditional on the resourceVersion read, so two candidates never both
//! take the lease. The holder renews it every `renew_every`; a candidate
//! takes it over once its record (holder and renew time) has not changed
//! for the lease duration **by the candidate's own clock** (as client-go
//! does), so clock skew between machines does not matter.
//!
//! The leader runs the controllers with their own stop switch. If it cannot
//! renew for two thirds of the lease duration, or finds another holder, it
//! stops them — before anyone else may take over — and campaigns again. On
//! shutdown it stops them and releases the lease, so a standby takes over
//! at once. Nothing is kept but the Lease itself.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

/// The namespace of the controllers' lease.
pub use corral_api::SYSTEM_NAMESPACE as LEASE_NAMESPACE;
/// The controllers' lease.
pub const LEASE_NAME: &str = "corral-controllers";

/// How a candidate takes part.
#[derive(Debug, Clone)]
pub struct Election {
    /// This candidate's name (host and process).
    pub identity: String,
    /// How long a lease lasts unrenewed.
    pub lease: Duration,
    /// How often the leader renews (and candidates retry).
    pub renew_every: Duration,
}

impl Election {
    /// A 15 s lease renewed every 2 s (kube-controller-manager's defaults
    /// are 15 s and 2 s of retry).
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            lease: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// What a candidate may do with the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody holds it (none, released, or expired): take it.
    Free,
    /// It is ours: renew it.
    Mine,
    /// Someone else holds it.
    Held(String),
}

/// The claim on a lease held by `holder`, whose record has not changed for
/// `unchanged_for` by our clock, with duration `lease`.
pub fn claim(holder: Option<&str>, me: &str, unchanged_for: Duration, lease: Duration) -> Claim {
    match holder.filter(|h| !h.is_empty()) {
        None => Claim::Free,
        Some(h) if h == me => Claim::Mine,
        Some(_) if unchanged_for >= lease => Claim::Free,
        Some(h) => Claim::Held(h.to_owned()),
    }
}

fn micro_now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// One candidate's view of the lease record.
struct Observer {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Instant,
}

impl Observer {
    /// Notes the record read now; returns how long it has not changed.
    fn observe(&mut self, lease: &Lease) -> Duration {
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Some((spec.holder_identity, spec.renew_time));
        if record != self.record {
            self.record = record;
            self.since = Instant::now();
        }
        self.since.elapsed()
    }
}

/// Why a lease write failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// An API call failed.
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    /// The lease could not be built.
    #[error("bad lease: {0}")]
    Lease(#[from] serde_json::Error),
}

/// One attempt to take or keep the lease; true when we hold it afterwards.
async fn try_hold(
    leases: &Api<Lease>,
    e: &Election,
    seen: &mut Observer,
) -> Result<bool, LeaderError> {
    let seconds = i32::try_from(e.lease.as_secs().max(1)).unwrap_or(15);
    let Some(mut lease) = leases.get_opt(LEASE_NAME).await? else {
        let fresh: Lease = serde_json::from_value(json!({
            "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": e.identity, "leaseDurationSeconds": seconds,
                     "acquireTime": micro_now(), "renewTime": micro_now(), "leaseTransitions": 0},
        }))?;
        return match leases.create(&PostParams::default(), &fresh).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(err)) if err.code == 409 => Ok(false),
            Err(err) => Err(err.into()),
        };
    };
    let unchanged_for = seen.observe(&lease);
    let spec = lease.spec.get_or_insert_with(Default::default);
    let decision = claim(
        spec.holder_identity.as_deref(),
        &e.identity,
        unchanged_for,
        spec.lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(e.lease, Duration::from_secs),
    );
    match decision {
        Claim::Held(_) => return Ok(false),
        Claim::Mine => {}
        Claim::Free => {
            spec.holder_identity = Some(e.identity.clone());
            spec.acquire_time = Some(micro_now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
    }
    spec.lease_duration_seconds = Some(seconds);
    spec.renew_time = Some(micro_now());
    // Conditional on the version read: of two candidates, one wins.
    match leases
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(written) => {
            seen.observe(&written);
            Ok(true)
        }
        Err(kube::Error::Api(err)) if err.code == 409 => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Gives the lease up (on shutdown), so that a standby takes over at once.
async fn release(leases: &Api<Lease>, e: &Election) {
    let Ok(Some(mut lease)) = leases.get_opt(LEASE_NAME).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(micro_now());
    if let Err(err) = leases
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        tracing::debug!(error = %err, "releasing the controllers' lease failed");
    }
}

async fn ensure_namespace(client: &kube::Client) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value::<Namespace>(json!({"metadata": {"name": LEASE_NAMESPACE}}));
    if let Ok(ns) = ns
        && let Err(kube::Error::Api(e)) = nss.create(&PostParams::default(), &ns).await
        && e.code != 409
    {
        tracing::debug!(error = %e, "creating the leader-election namespace failed");
    }
}

/// Campaigns for the lease until `stop`, running `controllers` (given their
/// own stop switch) whenever this candidate leads.
pub async fn run_elected<F, Fut>(
    client: kube::Client,
    election: Election,
    mut stop: watch::Receiver<bool>,
    controllers: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    ensure_namespace(&client).await;
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut seen = Observer {
        record: None,
        since: Instant::now(),
    };
    let deadline = election.lease * 2 / 3;
    let mut ticker = tokio::time::interval(election.renew_every);
    loop {
        // Campaign.
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => {}
            }
            match try_hold(&leases, &election, &mut seen).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "campaigning for the controllers' lease failed")
                }
            }
        }
        tracing::info!(identity = %election.identity, "leading: starting the controllers");
        let (run_tx, run_rx) = watch::channel(false);
        let running = tokio::spawn(controllers(run_rx));
        let mut renewed = Instant::now();
        let shutting_down = loop {
            tokio::select! {
                _ = stop.changed() => break true,
                _ = ticker.tick() => {
                    match try_hold(&leases, &election, &mut seen).await {
                        Ok(true) => renewed = Instant::now(),
                        Ok(false) => {
                            tracing::warn!("another candidate holds the controllers' lease");
                            break false;
                        }
                        Err(e) => tracing::warn!(error = %e, "renewing the controllers' lease failed"),
                    }
                    if renewed.elapsed() >= deadline {
                        tracing::warn!("could not renew the controllers' lease in time");
                        break false;
                    }
                }
            }
        };
        let _ = run_tx.send(true);
        if let Err(e) = running.await {
            tracing::warn!(error = %e, "the controllers panicked");
        }
        if shutting_down {
            release(&leases, &election).await;
            return;
        }
        tracing::warn!(identity = %election.identity, "lost leadership: controllers stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_when_free_or_unrenewed_for_its_duration() {
        let lease = Duration::from_secs(15);
        let s = Duration::from_secs;
        assert_eq!(claim(None, "a", s(0), lease), Claim::Free);
        assert_eq!(claim(Some(""), "a", s(0), lease), Claim::Free, "released");
        assert_eq!(claim(Some("a"), "a", s(100), lease), Claim::Mine);
        assert_eq!(claim(Some("b"), "a", s(14), lease), Claim::Held("b".into()));
        assert_eq!(claim(Some("b"), "a", s(15), lease), Claim::Free);
    }
}
