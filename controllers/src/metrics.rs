//! The controllers' Prometheus metrics: what the loops count as they work,
//! and the cluster as the shared caches hold it at the moment of a scrape.
//!
//! Counted by the loops (`corral_scheduler_*`, `corral_job_*`,
//! `corral_cron_*`, `corral_task_*`):
//! - `corral_scheduler_schedule_attempts_total{result}`: each task a cycle
//!   considered, `scheduled` or `unschedulable`, and each binding the server
//!   refused (`error`);
//! - `corral_scheduler_cycle_duration_seconds`, `corral_scheduler_cycle_tasks`;
//! - `corral_scheduler_pending_tasks{role,reason}` and
//!   `corral_scheduler_queue_length{role}` as the last cycle left them;
//! - `corral_scheduler_preemptions_total{rule,tier}` (the victim's tier);
//! - `corral_scheduler_binding_duration_seconds` (one bulk binding request);
//! - `corral_scheduler_holds` (nodes held for preemptors);
//! - `corral_job_reconciles_total{result}`;
//! - `corral_cron_runs_total{outcome}` (`started`, `missed`, `cancelled`);
//! - `corral_task_time_to_{assigned,starting,running}_seconds{role}`:
//!   Aurora's MTTA, MTTS and MTTR as histograms (see [`latency`]).
//!
//! Read from the caches at each scrape ([`cluster`]): capacity, allocatable,
//! allocated and used per resource, per node and for the cluster; revocable
//! capacity offered and used; each role's allocation against its quota,
//! dominant share and borrowing; tasks by role and phase; node readiness.
//!
//! Every label value comes from a fixed set or from an object an operator
//! made (roles, nodes, resource names), never from a task: a workload cannot
//! grow the series.

pub mod cluster;
pub mod latency;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::Caches;

/// Latency buckets from 1 ms to about 2 minutes.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 18)
}

/// How a task's turn in a cycle ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AttemptResult {
    /// Bound to a node.
    scheduled,
    /// Left pending.
    unschedulable,
    /// Its binding was refused.
    error,
}

/// What came of a reconcile.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReconcileResult {
    /// It finished.
    success,
    /// It failed and is retried.
    error,
}

/// What a cron tick came to.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CronOutcome {
    /// A run was started.
    started,
    /// A tick passed unrun (missed-run policy).
    missed,
    /// A run was not started because another was active (CANCEL_NEW).
    cancelled,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: AttemptResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    result: ReconcileResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CronLabels {
    outcome: CronOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PendingLabels {
    role: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PreemptionLabels {
    rule: &'static str,
    tier: &'static str,
}

/// Every family the controllers count into, registered once.
#[derive(Debug)]
struct Families {
    attempts: Family<AttemptLabels, Counter>,
    cycle_seconds: Histogram,
    cycle_tasks: Histogram,
    pending: Family<PendingLabels, Gauge>,
    queue: Family<RoleLabels, Gauge>,
    preemptions: Family<PreemptionLabels, Counter>,
    binding_seconds: Histogram,
    holds: Gauge,
    reconciles: Family<ReconcileLabels, Counter>,
    cron_runs: Family<CronLabels, Counter>,
    to_assigned: Family<RoleLabels, Histogram>,
    to_starting: Family<RoleLabels, Histogram>,
    to_running: Family<RoleLabels, Histogram>,
    /// Whether the pending and queue gauges show anything.
    showing_pending: AtomicBool,
}

fn latency_family() -> Family<RoleLabels, Histogram> {
    Family::new_with_constructor(|| Histogram::new(latency_buckets()))
}

struct Inner {
    families: Families,
    registry: Registry,
    /// The caches the cluster's figures are read from while the controllers
    /// run (none while this process stands by).
    caches: RwLock<Option<Arc<Caches>>>,
}

/// The controllers' metrics: cheap to clone, one per process.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every series, none observed yet.
    pub fn new() -> Self {
        let f = Families {
            attempts: Family::default(),
            cycle_seconds: Histogram::new(latency_buckets()),
            cycle_tasks: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            pending: Family::default(),
            queue: Family::default(),
            preemptions: Family::default(),
            binding_seconds: Histogram::new(latency_buckets()),
            holds: Gauge::default(),
            reconciles: Family::default(),
            cron_runs: Family::default(),
            to_assigned: latency_family(),
            to_starting: latency_family(),
            to_running: latency_family(),
            showing_pending: AtomicBool::new(false),
        };
        let mut r = Registry::with_prefix("corral");
        let s = r.sub_registry_with_prefix("scheduler");
        s.register(
            "schedule_attempts",
            "Tasks a cycle considered, by result; bindings refused count as errors",
            f.attempts.clone(),
        );
        s.register(
            "cycle_duration_seconds",
            "Time one allocation cycle took to decide",
            f.cycle_seconds.clone(),
        );
        s.register(
            "cycle_tasks",
            "Pending tasks one allocation cycle considered",
            f.cycle_tasks.clone(),
        );
        s.register(
            "pending_tasks",
            "Tasks the last cycle left pending, by role and reason",
            f.pending.clone(),
        );
        s.register(
            "queue_length",
            "Pending tasks in each role's queue at the last cycle",
            f.queue.clone(),
        );
        s.register(
            "preemptions",
            "Tasks evicted for preemptors, by rule and the victim's tier",
            f.preemptions.clone(),
        );
        s.register(
            "binding_duration_seconds",
            "Time one binding request (many bindings) took",
            f.binding_seconds.clone(),
        );
        s.register(
            "holds",
            "Nodes held for preemptors waiting on their victims",
            f.holds.clone(),
        );
        r.sub_registry_with_prefix("job").register(
            "reconciles",
            "Job controller reconciles, by result",
            f.reconciles.clone(),
        );
        r.sub_registry_with_prefix("cron").register(
            "runs",
            "Cron ticks, by what came of them",
            f.cron_runs.clone(),
        );
        let t = r.sub_registry_with_prefix("task");
        t.register(
            "time_to_assigned_seconds",
            "From a task's creation to its first ASSIGNED (MTTA), by role",
            f.to_assigned.clone(),
        );
        t.register(
            "time_to_starting_seconds",
            "From a task's creation to its first STARTING (MTTS), by role",
            f.to_starting.clone(),
        );
        t.register(
            "time_to_running_seconds",
            "From a task's creation to its first RUNNING (MTTR), by role",
            f.to_running.clone(),
        );
        // Every label set known in advance starts at zero, so that a rate
        // over it exists before the first event.
        for result in [
            AttemptResult::scheduled,
            AttemptResult::unschedulable,
            AttemptResult::error,
        ] {
            let _ = f.attempts.get_or_create(&AttemptLabels { result });
        }
        for result in [ReconcileResult::success, ReconcileResult::error] {
            let _ = f.reconciles.get_or_create(&ReconcileLabels { result });
        }
        for outcome in [
            CronOutcome::started,
            CronOutcome::missed,
            CronOutcome::cancelled,
        ] {
            let _ = f.cron_runs.get_or_create(&CronLabels { outcome });
        }
        {
            use corral_core::sched::preempt::Rule;
            for rule in [
                Rule::Revocable,
                Rule::LowerTier,
                Rule::LowerPriority,
                Rule::Reclaim,
            ] {
                for tier in [
                    corral_api::Tier::Preferred,
                    corral_api::Tier::Preemptible,
                    corral_api::Tier::Revocable,
                ] {
                    let _ = f.preemptions.get_or_create(&PreemptionLabels {
                        rule: rule_label(rule),
                        tier: tier_label(tier),
                    });
                }
            }
        }
        Metrics {
            inner: Arc::new(Inner {
                families: f,
                registry: r,
                caches: RwLock::new(None),
            }),
        }
    }

    fn f(&self) -> &Families {
        &self.inner.families
    }

    /// The cluster's figures are read from `caches` from now on; with
    /// `None`, not at all (the controllers stopped).
    pub fn read_from(&self, caches: Option<Arc<Caches>>) {
        *self
            .inner
            .caches
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = caches;
    }

    /// One allocation cycle: how long it took, how many tasks it considered
    /// and bound, and the pending it left per role and reason.
    pub fn cycle(
        &self,
        seconds: f64,
        considered: usize,
        bound: usize,
        pending: &std::collections::BTreeMap<(String, &'static str), i64>,
    ) {
        let f = self.f();
        f.cycle_seconds.observe(seconds);
        f.cycle_tasks.observe(considered as f64);
        f.attempts
            .get_or_create(&AttemptLabels {
                result: AttemptResult::scheduled,
            })
            .inc_by(bound as u64);
        f.attempts
            .get_or_create(&AttemptLabels {
                result: AttemptResult::unschedulable,
            })
            .inc_by(considered.saturating_sub(bound) as u64);
        // Roles and reasons no longer pending leave the families.
        f.pending.clear();
        f.queue.clear();
        let mut queues: std::collections::BTreeMap<&str, i64> = Default::default();
        for ((role, reason), n) in pending {
            f.pending
                .get_or_create(&PendingLabels {
                    role: role.clone(),
                    reason,
                })
                .set(*n);
            *queues.entry(role).or_default() += n;
        }
        f.showing_pending
            .store(!queues.is_empty(), Ordering::Relaxed);
        for (role, n) in queues {
            f.queue
                .get_or_create(&RoleLabels { role: role.into() })
                .set(n);
        }
    }

    /// No task is pending: the pending and queue gauges are emptied (once).
    pub fn nothing_pending(&self) {
        let f = self.f();
        if f.showing_pending.swap(false, Ordering::Relaxed) {
            f.pending.clear();
            f.queue.clear();
        }
    }

    /// One binding request answered after `seconds`, `refused` of its
    /// bindings refused.
    pub fn bound(&self, seconds: f64, refused: usize) {
        let f = self.f();
        f.binding_seconds.observe(seconds);
        if refused > 0 {
            f.attempts
                .get_or_create(&AttemptLabels {
                    result: AttemptResult::error,
                })
                .inc_by(refused as u64);
        }
    }

    /// A victim evicted under `rule`, of `tier`.
    pub fn preempted(&self, rule: &'static str, tier: &'static str) {
        self.f()
            .preemptions
            .get_or_create(&PreemptionLabels { rule, tier })
            .inc();
    }

    /// Nodes held for preemptors now.
    pub fn holds(&self, n: usize) {
        self.f().holds.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One job reconcile's result.
    pub fn reconciled(&self, result: ReconcileResult) {
        self.f()
            .reconciles
            .get_or_create(&ReconcileLabels { result })
            .inc();
    }

    /// `n` cron ticks that came to `outcome`.
    pub fn cron(&self, outcome: CronOutcome, n: u64) {
        if n > 0 {
            self.f()
                .cron_runs
                .get_or_create(&CronLabels { outcome })
                .inc_by(n);
        }
    }

    /// A task of `role` reached a phase `seconds` after its creation.
    pub fn latency(&self, phase: latency::Reached, role: &str, seconds: f64) {
        let f = self.f();
        let family = match phase {
            latency::Reached::Assigned => &f.to_assigned,
            latency::Reached::Starting => &f.to_starting,
            latency::Reached::Running => &f.to_running,
        };
        family
            .get_or_create(&RoleLabels { role: role.into() })
            .observe(seconds);
    }

    /// Appends every series (without the closing `# EOF`) to `out`: the
    /// counted ones, then the cluster's from the caches, if any.
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.inner.registry)?;
        let caches = self
            .inner
            .caches
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(caches) = caches {
            cluster::encode(out, &cluster::Figures::read(&caches))?;
        }
        Ok(())
    }

    /// The whole answer to a scrape (OpenMetrics text).
    pub fn scrape(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        self.encode(&mut out)?;
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Serves `metrics` at `GET /metrics` on `listen` over HTTPS, to clients
/// whose certificates `ca_pem` signed and whom the API server (asked through
/// `client`) lets `get` the path `/metrics` — the listener of `corral
/// controllers` when it runs apart from the API server.
pub async fn serve(
    listen: std::net::SocketAddr,
    ca_pem: &[u8],
    client: kube::Client,
    metrics: Metrics,
) -> Result<corral_endpoint::Endpoint, corral_endpoint::EndpointError> {
    use corral_endpoint::{Access, Authorizer, text};
    use http::StatusCode;
    use http_body_util::BodyExt;
    let authorizer = Arc::new(Authorizer::new(client));
    corral_endpoint::serve(listen, None, ca_pem, move |req, caller| {
        let (authorizer, metrics) = (authorizer.clone(), metrics.clone());
        async move {
            if req.method() != http::Method::GET || req.uri().path() != "/metrics" {
                return text(StatusCode::NOT_FOUND, "GET /metrics");
            }
            if !authorizer
                .allows(&caller, &Access::Path("/metrics".into()))
                .await
            {
                return text(
                    StatusCode::FORBIDDEN,
                    &format!("user {:?} may not get path /metrics", caller.user),
                );
            }
            match metrics.scrape() {
                Ok(body) => {
                    let mut r = http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(body)).boxed(),
                    );
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(CONTENT_TYPE),
                    );
                    r
                }
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding the metrics failed",
                ),
            }
        }
    })
    .await
}

/// A preemption rule as a label value.
pub fn rule_label(rule: corral_core::sched::preempt::Rule) -> &'static str {
    use corral_core::sched::preempt::Rule;
    match rule {
        Rule::Revocable => "Revocable",
        Rule::LowerTier => "LowerTier",
        Rule::LowerPriority => "LowerPriority",
        Rule::Reclaim => "Reclaim",
    }
}

/// A tier as a label value (as the API spells it).
pub fn tier_label(tier: corral_api::Tier) -> &'static str {
    use corral_api::Tier;
    match tier {
        Tier::Preferred => "preferred",
        Tier::Preemptible => "preemptible",
        Tier::Revocable => "revocable",
    }
}

/// The media type of a scrape's answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_gauges_follow_the_last_cycle_and_empty_when_nothing_waits() {
        let m = Metrics::new();
        // Counters of known labels are there from the start, at zero.
        let text = m.scrape().expect("scrape");
        assert!(text.contains(
            r#"corral_scheduler_preemptions_total{rule="Reclaim",tier="preemptible"} 0"#
        ));
        assert!(text.contains(r#"corral_cron_runs_total{outcome="missed"} 0"#));
        let pending = [(("web".to_owned(), "QuotaExceeded"), 2)].into();
        m.cycle(0.004, 5, 3, &pending);
        let text = m.scrape().expect("scrape");
        for line in [
            r#"corral_scheduler_pending_tasks{role="web",reason="QuotaExceeded"} 2"#,
            r#"corral_scheduler_queue_length{role="web"} 2"#,
            r#"corral_scheduler_schedule_attempts_total{result="scheduled"} 3"#,
            r#"corral_scheduler_schedule_attempts_total{result="unschedulable"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        m.nothing_pending();
        let text = m.scrape().expect("scrape");
        assert!(!text.contains("corral_scheduler_pending_tasks{"), "{text}");
        assert!(!text.contains("corral_scheduler_queue_length{"), "{text}");
    }
}
