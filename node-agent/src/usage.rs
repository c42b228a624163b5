//! Usage sampling and the revocable estimate.
//!
//! Reads each running task's CPU time and memory from its runtime, turns CPU
//! time into a rate between two samples, and writes each task's
//! `status.usage` and the node's sum. With oversubscription on, it also
//! estimates the node's revocable capacity (Mesos's resource estimator):
//! a fraction of what non-revocable tasks were allocated but left idle; and
//! when that estimate shrinks below what revocable tasks hold, says which of
//! them to evict (Mesos's QoS controller).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use corral_api::{Node, Task};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::runtime::ContainerRuntime;

/// Per task: CPU in use (cores, from the CPU time used since the last
/// sample) and memory in use; the node's sum under `""`.
pub(crate) fn sample_usage(
    runtimes: &[Arc<dyn ContainerRuntime>],
    tasks: &HashMap<String, (usize, String)>,
    last_cpu: &mut HashMap<String, (u64, tokio::time::Instant)>,
) -> BTreeMap<String, (u64, u64)> {
    let now = tokio::time::Instant::now();
    let mut out = BTreeMap::new();
    let (mut node_cpu, mut node_mem) = (0u64, 0u64);
    for (key, (idx, _)) in tasks {
        let Some(u) = runtimes[*idx].usage(key) else {
            continue;
        };
        // CPU is a rate: a task is reported from its second reading on.
        let Some(milli_cores) = last_cpu.get(key).map(|(prev, at)| {
            let elapsed = now.duration_since(*at).as_nanos().max(1);
            let used = u128::from(u.cpu_nanos.saturating_sub(*prev));
            u64::try_from(used * 1000 / elapsed).unwrap_or(u64::MAX)
        }) else {
            last_cpu.insert(key.clone(), (u.cpu_nanos, now));
            continue;
        };
        last_cpu.insert(key.clone(), (u.cpu_nanos, now));
        node_cpu += milli_cores;
        node_mem += u.memory_bytes;
        out.insert(key.clone(), (milli_cores, u.memory_bytes));
    }
    last_cpu.retain(|k, _| tasks.contains_key(k));
    if !tasks.is_empty() || !out.is_empty() {
        out.insert(String::new(), (node_cpu, node_mem));
    }
    out
}

fn usage_json(milli_cores: u64, memory: u64) -> serde_json::Value {
    json!({"cpus": format!("{milli_cores}m"), "memory": memory})
}

/// One measured task, for the revocable estimate: (allocated, used) per resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskUse {
    /// CPU in milli-cores.
    pub cpu_milli: (i64, u64),
    /// Memory in bytes.
    pub memory_bytes: (i64, u64),
    /// Whether it runs on revocable capacity itself.
    pub revocable: bool,
}

/// The revocable capacity to offer, as (CPU milli-cores, memory bytes):
/// `factor` of what non-revocable tasks were allocated but did not use
/// (Mesos's resource estimator). Revocable tasks are the first to go when
/// the node's own tasks need the capacity back.
pub fn revocable_estimate(tasks: impl Iterator<Item = TaskUse>, factor: f64) -> (u64, u64) {
    let slack = |(alloc, used): (i64, u64)| u64::try_from(alloc).unwrap_or(0).saturating_sub(used);
    let (cpu, mem) = tasks
        .filter(|t| !t.revocable)
        .fold((0u64, 0u64), |(c, m), t| {
            (c + slack(t.cpu_milli), m + slack(t.memory_bytes))
        });
    let f = factor.clamp(0.0, 1.0);
    (
        (cpu as f64 * f).floor() as u64,
        (mem as f64 * f).floor() as u64,
    )
}

fn revocable_json((cpu, mem): (u64, u64)) -> serde_json::Value {
    json!({"cpus": format!("{cpu}m"), "memory": mem})
}

/// Writes each task's `status.usage` and the node's `status.usage` (and its
/// revocable CPU, when oversubscription is on).
pub(crate) async fn write_usage(
    client: kube::Client,
    node: String,
    usage: BTreeMap<String, (u64, u64)>,
    revocable: Option<(u64, u64)>,
) {
    let pp = PatchParams::default();
    if usage.is_empty()
        && let Some(r) = revocable
    {
        // No measured task: the whole revocable estimate is zero.
        let nodes: Api<Node> = Api::all(client.clone());
        let patch = json!({"status": {"revocable": revocable_json(r)}});
        if let Err(e) = nodes.patch_status(&node, &pp, &Patch::Merge(patch)).await {
            tracing::debug!(error = %e, "writing revocable capacity failed");
        }
    }
    for (key, (cpu, mem)) in &usage {
        let mut patch = json!({"status": {"usage": usage_json(*cpu, *mem)}});
        if key.is_empty()
            && let Some(r) = revocable
        {
            patch["status"]["revocable"] = revocable_json(r);
        }
        let result = if key.is_empty() {
            let nodes: Api<Node> = Api::all(client.clone());
            nodes
                .patch_status(&node, &pp, &Patch::Merge(patch))
                .await
                .map(|_| ())
        } else if let Some((ns, name)) = key.split_once('/') {
            let tasks: Api<Task> = Api::namespaced(client.clone(), ns);
            tasks
                .patch_status(name, &pp, &Patch::Merge(patch))
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::debug!(object = %key, error = %e, "writing usage failed");
        }
    }
}

/// A revocable task running here, for the QoS decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocableTask {
    /// Task key.
    pub key: String,
    /// Allocated CPU, milli-cores.
    pub cpu_milli: u64,
    /// Allocated memory, bytes.
    pub memory_bytes: u64,
    /// When it was created (Unix seconds): the youngest go first.
    pub created: i64,
}

/// The QoS controller: which revocable tasks to evict, youngest first, so
/// that what the rest hold fits in the revocable capacity now estimated
/// (CPU milli-cores, memory bytes). The node's own tasks are taking their
/// idle share back.
pub fn qos_evictions(tasks: &[RevocableTask], estimate: (u64, u64)) -> Vec<String> {
    let mut by_age: Vec<&RevocableTask> = tasks.iter().collect();
    by_age.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.key.cmp(&b.key)));
    let (mut cpu, mut mem) = tasks.iter().fold((0u64, 0u64), |(c, m), t| {
        (c + t.cpu_milli, m + t.memory_bytes)
    });
    let mut out = Vec::new();
    for t in by_age {
        if cpu <= estimate.0 && mem <= estimate.1 {
            break;
        }
        cpu -= t.cpu_milli;
        mem -= t.memory_bytes;
        out.push(t.key.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_youngest_revocable_tasks_go_until_the_rest_fit_the_estimate() {
        let t = |key: &str, cpu, mem, created| RevocableTask {
            key: key.into(),
            cpu_milli: cpu,
            memory_bytes: mem,
            created,
        };
        let tasks = [
            t("old", 500, 100, 1),
            t("mid", 500, 100, 2),
            t("new", 500, 100, 3),
        ];
        assert!(qos_evictions(&tasks, (1500, 300)).is_empty(), "all fit");
        assert_eq!(qos_evictions(&tasks, (1000, 300)), vec!["new"]);
        assert_eq!(qos_evictions(&tasks, (600, 300)), vec!["new", "mid"]);
        assert_eq!(
            qos_evictions(&tasks, (1500, 150)),
            vec!["new", "mid"],
            "memory counts too"
        );
        assert_eq!(qos_evictions(&tasks, (0, 0)).len(), 3);
        assert!(qos_evictions(&[], (0, 0)).is_empty());
    }

    use super::*;

    #[test]
    fn revocable_capacity_is_a_fraction_of_what_non_revocable_tasks_leave_idle() {
        let t = |cpu: (i64, u64), mem: (i64, u64), revocable| TaskUse {
            cpu_milli: cpu,
            memory_bytes: mem,
            revocable,
        };
        let tasks = [
            t((2000, 500), (1000, 200), false),
            t((1000, 1200), (100, 300), false),
            t((1000, 0), (1000, 0), true),
        ];
        // 1500 m and 800 B idle in the first; the second uses more than it
        // holds (nothing idle); revocable tasks add no slack.
        assert_eq!(revocable_estimate(tasks.into_iter(), 0.5), (750, 400));
        assert_eq!(revocable_estimate(tasks.into_iter(), 1.0), (1500, 800));
        assert_eq!(
            revocable_estimate(tasks.into_iter(), 7.0),
            (1500, 800),
            "clamped to 1"
        );
        assert_eq!(revocable_estimate(std::iter::empty(), 0.5), (0, 0));
    }
}
