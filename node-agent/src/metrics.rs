//! The agent's Prometheus metrics, served at `GET /metrics` on its HTTPS
//! endpoint (the one the API server reads logs from; see [`crate::logs`]),
//! to callers RBAC lets `get` the path `/metrics` (group
//! `system:monitoring` in the bootstrap policy):
//! - the talk's container view, per task on this node:
//!   `corral_agent_task_resource_allocated` and
//!   `corral_agent_task_resource_used` `{namespace,task,role,resource,unit}`
//!   (cpus and memory as last sampled, disk — sandbox and writable layer —
//!   as last measured), to find tasks that ask for more than they use;
//! - `corral_agent_container_start_duration_seconds{runtime}` (from the
//!   launch to the runtime's answer) and
//!   `corral_agent_container_starts_total{runtime,result}`;
//! - `corral_agent_runtime_healthy{runtime}` (1 while its health check passes);
//! - `corral_agent_health_probes_total{result}`;
//! - `corral_agent_tasks` (tasks this agent runs or watches over).
//!
//! Per-task series are bounded by the tasks bound to this node, and go with
//! them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use corral_api::node::RuntimeKind;

/// The media type of a scrape's answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a start ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum StartResult {
    /// The runtime started it.
    success,
    /// The runtime (or what it needed first) failed.
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    runtime: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StartLabels {
    runtime: &'static str,
    result: StartResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    result: &'static str,
}

/// One task's figures: what it was given and what it used, per resource
/// (milli-units).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFigures {
    /// Its role.
    pub role: String,
    /// What it was given.
    pub allocated: BTreeMap<String, i64>,
    /// What it used at the last sample.
    pub used: BTreeMap<String, i64>,
}

#[derive(Debug, Default)]
struct Moment {
    /// `namespace/name` → figures.
    tasks: BTreeMap<String, TaskFigures>,
    /// Each runtime's health.
    runtimes: Vec<(RuntimeKind, bool)>,
}

struct Inner {
    registry: Registry,
    starts: Family<StartLabels, Counter>,
    start_seconds: Family<RuntimeLabels, Histogram>,
    probes: Family<ProbeLabels, Counter>,
    tasks: Gauge,
    moment: Mutex<Moment>,
}

/// The agent's metrics; cheap to clone.
#[derive(Clone)]
pub struct AgentMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Every series, none observed yet.
    pub fn new() -> Self {
        let starts = Family::<StartLabels, Counter>::default();
        let start_seconds = Family::<RuntimeLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        let probes = Family::<ProbeLabels, Counter>::default();
        // Known label sets start at zero, so that a rate over them exists
        // before the first event.
        for result in ["passed", "failed"] {
            let _ = probes.get_or_create(&ProbeLabels { result });
        }
        let tasks = Gauge::default();
        let mut registry = Registry::with_prefix("corral_agent");
        registry.register(
            "container_starts",
            "Task starts asked of a runtime, by runtime and result",
            starts.clone(),
        );
        registry.register(
            "container_start_duration_seconds",
            "From a task's launch to its runtime's answer",
            start_seconds.clone(),
        );
        registry.register(
            "health_probes",
            "Health probes run, by result (passed or failed)",
            probes.clone(),
        );
        registry.register(
            "tasks",
            "Tasks this agent runs or watches over",
            tasks.clone(),
        );
        AgentMetrics {
            inner: Arc::new(Inner {
                registry,
                starts,
                start_seconds,
                probes,
                tasks,
                moment: Mutex::new(Moment::default()),
            }),
        }
    }

    fn moment(&self) -> std::sync::MutexGuard<'_, Moment> {
        self.inner
            .moment
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A start on `runtime` answered after `seconds`.
    pub fn started(&self, runtime: RuntimeKind, seconds: f64, result: StartResult) {
        let runtime = runtime.as_str();
        self.inner
            .starts
            .get_or_create(&StartLabels { runtime, result })
            .inc();
        if result == StartResult::success {
            self.inner
                .start_seconds
                .get_or_create(&RuntimeLabels { runtime })
                .observe(seconds);
        }
    }

    /// A health probe passed or failed.
    pub fn probed(&self, passed: bool) {
        let result = if passed { "passed" } else { "failed" };
        self.inner
            .probes
            .get_or_create(&ProbeLabels { result })
            .inc();
    }

    /// The tasks on this node now, each with what it was given and its
    /// latest CPU and memory sample (the disk figure is kept from the last
    /// measurement).
    pub fn tasks(&self, now: BTreeMap<String, TaskFigures>) {
        self.inner
            .tasks
            .set(i64::try_from(now.len()).unwrap_or(i64::MAX));
        let mut m = self.moment();
        let mut now = now;
        for (key, f) in now.iter_mut() {
            if let Some(disk) = m
                .tasks
                .get(key)
                .and_then(|old| old.used.get(corral_api::resources::DISK))
            {
                f.used.insert(corral_api::resources::DISK.into(), *disk);
            }
        }
        m.tasks = now;
    }

    /// Disk use measured for these tasks (bytes).
    pub fn disk_used(&self, used: &[(String, u64)]) {
        let mut m = self.moment();
        for (key, bytes) in used {
            if let Some(f) = m.tasks.get_mut(key) {
                f.used.insert(
                    corral_api::resources::DISK.into(),
                    i64::try_from(*bytes)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(1000),
                );
            }
        }
    }

    /// Each runtime's health now (its start counters shown from zero).
    pub fn runtimes(&self, health: Vec<(RuntimeKind, bool)>) {
        for (kind, _) in &health {
            let runtime = kind.as_str();
            for result in [StartResult::success, StartResult::error] {
                let _ = self
                    .inner
                    .starts
                    .get_or_create(&StartLabels { runtime, result });
            }
            let _ = self
                .inner
                .start_seconds
                .get_or_create(&RuntimeLabels { runtime });
        }
        self.moment().runtimes = health;
    }

    /// The whole answer to a scrape (OpenMetrics text).
    pub fn scrape(&self) -> Result<String, std::fmt::Error> {
        use std::fmt::Write;
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.inner.registry)?;
        let m = self.moment();
        writeln!(
            out,
            "# HELP corral_agent_runtime_healthy 1 while the runtime's health check passes."
        )?;
        writeln!(out, "# TYPE corral_agent_runtime_healthy gauge")?;
        for (kind, healthy) in &m.runtimes {
            writeln!(
                out,
                "corral_agent_runtime_healthy{{runtime=\"{}\"}} {}",
                kind.as_str(),
                u8::from(*healthy)
            )?;
        }
        type Pick = fn(&TaskFigures) -> &BTreeMap<String, i64>;
        let families: [(&str, &str, Pick); 2] = [
            (
                "corral_agent_task_resource_allocated",
                "What the task was given",
                |f| &f.allocated,
            ),
            (
                "corral_agent_task_resource_used",
                "What the task used at the last sample",
                |f| &f.used,
            ),
        ];
        for (name, help, pick) in families {
            writeln!(out, "# HELP {name} {help}.")?;
            writeln!(out, "# TYPE {name} gauge")?;
            for (key, f) in &m.tasks {
                let (ns, task) = key.split_once('/').unwrap_or(("", key));
                for (resource, v) in pick(f) {
                    writeln!(
                        out,
                        "{name}{{namespace=\"{}\",task=\"{}\",role=\"{}\",resource=\"{}\",unit=\"{}\"}} {:?}",
                        escape(ns),
                        escape(task),
                        escape(&f.role),
                        escape(resource),
                        unit(resource),
                        *v as f64 / 1000.0
                    )?;
                }
            }
        }
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The unit a resource is counted in, as kube-state-metrics names it.
fn unit(resource: &str) -> &'static str {
    match resource {
        corral_api::resources::CPUS => "core",
        corral_api::resources::MEMORY | corral_api::resources::DISK => "byte",
        _ => "integer",
    }
}

/// A label value with backslash, quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_shows_each_task_given_against_used() -> std::fmt::Result {
        let m = AgentMetrics::new();
        m.runtimes(vec![(RuntimeKind::Process, true)]);
        m.started(RuntimeKind::Process, 0.02, StartResult::success);
        m.probed(false);
        let fig = |alloc: i64, used: i64| TaskFigures {
            role: "web".into(),
            allocated: [("cpus".into(), alloc), ("memory".into(), 64_000_000 * 1000)].into(),
            used: [("cpus".into(), used)].into(),
        };
        m.tasks([("prod/a-0".to_owned(), fig(2000, 250))].into());
        m.disk_used(&[("prod/a-0".into(), 4096)]);
        // The disk figure outlives the next CPU sample.
        m.tasks([("prod/a-0".to_owned(), fig(2000, 500))].into());
        let text = m.scrape()?;
        for line in [
            r#"corral_agent_task_resource_allocated{namespace="prod",task="a-0",role="web",resource="cpus",unit="core"} 2.0"#,
            r#"corral_agent_task_resource_allocated{namespace="prod",task="a-0",role="web",resource="memory",unit="byte"} 64000000.0"#,
            r#"corral_agent_task_resource_used{namespace="prod",task="a-0",role="web",resource="cpus",unit="core"} 0.5"#,
            r#"corral_agent_task_resource_used{namespace="prod",task="a-0",role="web",resource="disk",unit="byte"} 4096.0"#,
            r#"corral_agent_runtime_healthy{runtime="process"} 1"#,
            r#"corral_agent_container_starts_total{runtime="process",result="success"} 1"#,
            r#"corral_agent_container_start_duration_seconds_count{runtime="process"} 1"#,
            r#"corral_agent_health_probes_total{result="failed"} 1"#,
            "corral_agent_tasks 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
        // A task gone leaves no series.
        m.tasks(BTreeMap::new());
        assert!(!m.scrape()?.contains("a-0"));
        Ok(())
    }
}
