//! The cluster's figures, read from the shared caches at each scrape (so a
//! node or role that is gone leaves no series behind), and written in the
//! OpenMetrics text format:
//! - per node: `corral_node_resource_{capacity,allocatable,revocable,allocated,used}`
//!   `{node,resource,unit}` and `corral_node_ready{node}`;
//! - for the cluster: `corral_cluster_resource_{capacity,allocatable,allocated,used}`
//!   `{resource,unit}` over every node, and
//!   `corral_cluster_revocable_{offered,allocated}{resource,unit}`;
//! - per role: `corral_role_resource_{allocated,pending}` (its Role status,
//!   descendants included), `corral_role_resource_{guarantee,limit,borrowed}`
//!   (its Quota), `corral_role_dominant_share{role}`;
//! - `corral_tasks{role,phase}`, `corral_jobs{namespace,phase}`;
//! - `corral_job_update_state{namespace,job,state}` (1, for each job whose
//!   last update is on record, in that update's state: `RolledBack`
//!   says a rollout failed its health checks and was undone).
//!
//! Quantities are in base units, with a `unit` label as kube-state-metrics
//! gives them: `core` for cpus, `byte` for memory and disk, `integer` else.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use corral_api::node::NodeConditionType;
use corral_api::resources::MilliResources;
use corral_api::{ConditionStatus, Job, Node, Quota, Resources, Role, Task, TaskPhase, Tier};
use rustc_hash::FxHashMap;

use crate::cache::Caches;

/// One node's figures.
#[derive(Debug, Default)]
pub struct NodeFigures {
    name: String,
    ready: bool,
    capacity: MilliResources,
    allocatable: MilliResources,
    revocable: MilliResources,
    allocated: MilliResources,
    used: MilliResources,
}

/// One role's figures.
#[derive(Debug, Default)]
pub struct RoleFigures {
    name: String,
    allocated: MilliResources,
    pending: MilliResources,
    guarantee: Option<MilliResources>,
    limit: Option<MilliResources>,
    borrowed: Option<MilliResources>,
    dominant_share: Option<f64>,
}

/// Everything one scrape shows of the cluster.
#[derive(Debug, Default)]
pub struct Figures {
    nodes: Vec<NodeFigures>,
    roles: Vec<RoleFigures>,
    tasks: BTreeMap<(String, &'static str), u64>,
    jobs: BTreeMap<(String, String), u64>,
    updates: Vec<(String, String, String)>,
    revocable_allocated: MilliResources,
}

fn milli(r: &Resources) -> MilliResources {
    // An unreadable quantity was refused on write; none is shown here.
    r.to_milli().unwrap_or_default()
}

fn add(into: &mut MilliResources, r: &MilliResources) {
    for (name, v) in &r.0 {
        add_one(into, name, *v);
    }
}

/// Adds `v` of `name` (no allocation once `name` is there).
fn add_one(into: &mut MilliResources, name: &str, v: i64) {
    match into.0.get_mut(name) {
        Some(x) => *x += v,
        None => {
            into.0.insert(name.to_owned(), v);
        }
    }
}

/// The objects the figures are read from (the caches' at one moment).
#[derive(Debug, Default)]
pub struct Objects {
    /// Nodes.
    pub nodes: Vec<Arc<Node>>,
    /// Tasks.
    pub tasks: Vec<Arc<Task>>,
    /// Jobs.
    pub jobs: Vec<Arc<Job>>,
    /// Roles.
    pub roles: Vec<Arc<Role>>,
    /// Quotas.
    pub quotas: Vec<Arc<Quota>>,
}

impl Objects {
    /// What the caches hold now.
    pub fn of(caches: &Caches) -> Objects {
        Objects {
            nodes: caches.nodes().store().state(),
            tasks: caches.tasks().store().state(),
            jobs: caches.jobs().store().state(),
            roles: caches.roles().store().state(),
            quotas: caches.quotas().store().state(),
        }
    }
}

impl Figures {
    /// The figures as the caches hold them now.
    pub fn read(caches: &Caches) -> Figures {
        Figures::of(&Objects::of(caches))
    }

    /// The figures of `o`.
    pub fn of(o: &Objects) -> Figures {
        let mut f = Figures::default();
        let mut nodes: Vec<NodeFigures> = Vec::with_capacity(o.nodes.len());
        for node in &o.nodes {
            let mut n = NodeFigures {
                name: node.metadata.name.clone().unwrap_or_default(),
                ..NodeFigures::default()
            };
            if let Some(s) = &node.status {
                n.ready = s.conditions.iter().any(|c| {
                    c.type_ == NodeConditionType::Ready && c.status == ConditionStatus::True
                });
                n.capacity = milli(&s.total);
                n.allocatable = milli(if s.allocatable.is_empty() {
                    &s.total
                } else {
                    &s.allocatable
                });
                n.revocable = milli(&s.revocable);
                n.used = milli(&s.usage);
            }
            nodes.push(n);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let index: FxHashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        // Per node, what its tasks hold, by resource number (`dims`).
        let mut dims: FxHashMap<&str, usize> = FxHashMap::default();
        let mut allocated: Vec<Vec<i64>> = vec![Vec::new(); nodes.len()];
        let mut tasks: FxHashMap<(&str, &'static str), u64> = FxHashMap::default();
        for task in &o.tasks {
            let phase = task
                .status
                .as_ref()
                .map_or(TaskPhase::Pending, |s| s.phase());
            *tasks
                .entry((task.spec.role.as_str(), phase.as_str()))
                .or_default() += 1;
            if !phase.holds_resources() {
                continue;
            }
            let Some(&i) = task.spec.node_name.as_deref().and_then(|n| index.get(n)) else {
                continue;
            };
            let revocable = task.spec.tier == Tier::Revocable;
            for (name, q) in &task.spec.resources.0 {
                // An unreadable quantity was refused on write.
                let Ok(v) = q.milli() else { continue };
                let next = dims.len();
                let d = *dims.entry(name.as_str()).or_insert(next);
                let node = &mut allocated[i];
                if node.len() <= d {
                    node.resize(d + 1, 0);
                }
                node[d] += v;
                if revocable {
                    add_one(&mut f.revocable_allocated, name, v);
                }
            }
        }
        let names: Vec<(&str, usize)> = dims.into_iter().collect();
        f.tasks = tasks
            .into_iter()
            .map(|((role, phase), n)| ((role.to_owned(), phase), n))
            .collect();
        for (n, a) in nodes.iter_mut().zip(allocated) {
            for (name, d) in &names {
                if let Some(v) = a.get(*d) {
                    add_one(&mut n.allocated, name, *v);
                }
            }
        }
        f.nodes = nodes;
        for job in &o.jobs {
            let ns = job.metadata.namespace.clone().unwrap_or_default();
            let status = job.status.as_ref();
            let phase = status
                .and_then(|s| s.phase)
                .map_or("Unknown".into(), |p| format!("{p:?}"));
            *f.jobs.entry((ns.clone(), phase)).or_default() += 1;
            if let Some(u) = status.and_then(|s| s.update.as_ref()) {
                let name = job.metadata.name.clone().unwrap_or_default();
                f.updates.push((ns, name, format!("{:?}", u.state)));
            }
        }
        let quotas: FxHashMap<&str, &Arc<Quota>> =
            o.quotas.iter().map(|q| (q.spec.role.as_str(), q)).collect();
        for role in &o.roles {
            let name = role.metadata.name.clone().unwrap_or_default();
            let status = role.status.clone().unwrap_or_default();
            let quota = quotas.get(name.as_str());
            f.roles.push(RoleFigures {
                allocated: milli(&status.allocated),
                pending: milli(&status.pending),
                guarantee: quota.map(|q| milli(&q.spec.guarantee)),
                limit: quota.map(|q| milli(&q.spec.limit)),
                borrowed: quota
                    .and_then(|q| q.status.as_ref())
                    .map(|s| milli(&s.borrowed)),
                dominant_share: status.dominant_share,
                name,
            });
        }
        f
    }
}

/// The unit a resource is counted in, as kube-state-metrics names it.
pub fn unit(resource: &str) -> &'static str {
    match resource {
        corral_api::resources::CPUS | "cpu" => "core",
        corral_api::resources::MEMORY | corral_api::resources::DISK => "byte",
        _ => "integer",
    }
}

/// Writes `s` as a label value (backslash, quote and newline escaped).
fn escaped(out: &mut String, s: &str) {
    if !s.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A gauge family being written.
struct Gauges<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Gauges<'a> {
    fn new(out: &'a mut String, name: &'static str, help: &str) -> Result<Self, std::fmt::Error> {
        writeln!(out, "# HELP {name} {help}.")?;
        writeln!(out, "# TYPE {name} gauge")?;
        Ok(Gauges { out, name })
    }

    /// One sample with `labels` (names and values).
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> std::fmt::Result {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escaped(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        writeln!(self.out, " {value:?}")
    }

    /// One sample per resource of `r`, with `labels` before the resource's.
    fn resources(&mut self, labels: &[(&str, &str)], r: &MilliResources) -> std::fmt::Result {
        for (name, v) in &r.0 {
            self.out.push_str(self.name);
            self.out.push('{');
            for (k, v) in labels {
                self.out.push_str(k);
                self.out.push_str("=\"");
                escaped(self.out, v);
                self.out.push_str("\",");
            }
            self.out.push_str("resource=\"");
            escaped(self.out, name);
            self.out.push_str("\",unit=\"");
            self.out.push_str(unit(name));
            writeln!(self.out, "\"}} {:?}", *v as f64 / 1000.0)?;
        }
        Ok(())
    }
}

/// Writes `f` to `out` (OpenMetrics text, no `# EOF`).
pub fn encode(out: &mut String, f: &Figures) -> std::fmt::Result {
    type NodeField = fn(&NodeFigures) -> &MilliResources;
    let node_fields: [(&'static str, &'static str, &'static str, NodeField); 5] = [
        (
            "corral_node_resource_capacity",
            "corral_cluster_resource_capacity",
            "What the node has (its agent's report)",
            |n| &n.capacity,
        ),
        (
            "corral_node_resource_allocatable",
            "corral_cluster_resource_allocatable",
            "What the node offers to tasks",
            |n| &n.allocatable,
        ),
        (
            "corral_node_resource_revocable",
            "corral_cluster_revocable_offered",
            "Revocable (oversubscribed) capacity the node offers",
            |n| &n.revocable,
        ),
        (
            "corral_node_resource_allocated",
            "corral_cluster_resource_allocated",
            "What the tasks bound to the node hold",
            |n| &n.allocated,
        ),
        (
            "corral_node_resource_used",
            "corral_cluster_resource_used",
            "What the node's tasks use (its agent's sample)",
            |n| &n.used,
        ),
    ];
    for (node_name, cluster_name, help, field) in node_fields {
        let mut total = MilliResources::default();
        let mut g = Gauges::new(out, node_name, help)?;
        for n in &f.nodes {
            g.resources(&[("node", &n.name)], field(n))?;
            add(&mut total, field(n));
        }
        let mut g = Gauges::new(out, cluster_name, &format!("{help}, over every node"))?;
        g.resources(&[], &total)?;
    }
    let mut g = Gauges::new(
        out,
        "corral_node_ready",
        "1 while the node's agent is Ready",
    )?;
    for n in &f.nodes {
        g.sample(&[("node", &n.name)], if n.ready { 1.0 } else { 0.0 })?;
    }
    let mut g = Gauges::new(
        out,
        "corral_cluster_revocable_allocated",
        "What revocable-tier tasks hold",
    )?;
    g.resources(&[], &f.revocable_allocated)?;
    type RoleField = fn(&RoleFigures) -> Option<&MilliResources>;
    let role_fields: [(&'static str, &'static str, RoleField); 5] = [
        (
            "corral_role_resource_allocated",
            "What the role's tasks hold, descendants included",
            |r| Some(&r.allocated),
        ),
        (
            "corral_role_resource_pending",
            "What the role's pending tasks ask for, descendants included",
            |r| Some(&r.pending),
        ),
        (
            "corral_role_resource_guarantee",
            "The role's quota guarantee",
            |r| r.guarantee.as_ref(),
        ),
        (
            "corral_role_resource_limit",
            "The role's quota limit",
            |r| r.limit.as_ref(),
        ),
        (
            "corral_role_resource_borrowed",
            "What the role holds beyond its guarantee",
            |r| r.borrowed.as_ref(),
        ),
    ];
    for (name, help, field) in role_fields {
        let mut g = Gauges::new(out, name, help)?;
        for r in &f.roles {
            if let Some(v) = field(r) {
                g.resources(&[("role", &r.name)], v)?;
            }
        }
    }
    let mut g = Gauges::new(
        out,
        "corral_role_dominant_share",
        "The role's weighted dominant share of the cluster",
    )?;
    for r in &f.roles {
        if let Some(s) = r.dominant_share {
            g.sample(&[("role", &r.name)], s)?;
        }
    }
    let mut g = Gauges::new(out, "corral_tasks", "Tasks by role and phase")?;
    for ((role, phase), n) in &f.tasks {
        g.sample(&[("role", role), ("phase", phase)], *n as f64)?;
    }
    let mut g = Gauges::new(out, "corral_jobs", "Jobs by namespace and phase")?;
    for ((ns, phase), n) in &f.jobs {
        g.sample(&[("namespace", ns), ("phase", phase)], *n as f64)?;
    }
    let mut g = Gauges::new(
        out,
        "corral_job_update_state",
        "1 in the state of each job's last update on record",
    )?;
    for (ns, job, state) in &f.updates {
        g.sample(&[("namespace", ns), ("job", job), ("state", state)], 1.0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, i64)]) -> MilliResources {
        MilliResources(pairs.iter().map(|(k, v)| ((*k).into(), *v)).collect())
    }

    #[test]
    fn figures_are_written_in_base_units_with_escaped_labels() -> std::fmt::Result {
        let f = Figures {
            nodes: vec![NodeFigures {
                name: "n\"1".into(),
                ready: true,
                capacity: m(&[("cpus", 4000), ("memory", 8_000)]),
                allocated: m(&[("cpus", 1500)]),
                ..NodeFigures::default()
            }],
            roles: vec![RoleFigures {
                name: "eng".into(),
                allocated: m(&[("cpus", 1500)]),
                limit: Some(m(&[("cpus", 2000)])),
                dominant_share: Some(0.375),
                ..RoleFigures::default()
            }],
            tasks: [(("eng".to_owned(), "RUNNING"), 3)].into(),
            jobs: [(("prod".to_owned(), "Active".to_owned()), 2)].into(),
            updates: vec![("prod".into(), "web".into(), "RolledBack".into())],
            revocable_allocated: MilliResources::default(),
        };
        let mut out = String::new();
        encode(&mut out, &f)?;
        for line in [
            "# TYPE corral_node_resource_capacity gauge",
            r#"corral_node_resource_capacity{node="n\"1",resource="cpus",unit="core"} 4.0"#,
            r#"corral_node_resource_capacity{node="n\"1",resource="memory",unit="byte"} 8.0"#,
            r#"corral_cluster_resource_allocated{resource="cpus",unit="core"} 1.5"#,
            r#"corral_node_ready{node="n\"1"} 1.0"#,
            r#"corral_role_resource_limit{role="eng",resource="cpus",unit="core"} 2.0"#,
            r#"corral_role_dominant_share{role="eng"} 0.375"#,
            r#"corral_tasks{role="eng",phase="RUNNING"} 3.0"#,
            r#"corral_jobs{namespace="prod",phase="Active"} 2.0"#,
            r#"corral_job_update_state{namespace="prod",job="web",state="RolledBack"} 1.0"#,
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line} missing from:\n{out}"
            );
        }
        // No guarantee, no series.
        assert!(!out.contains("corral_role_resource_guarantee{"));
        Ok(())
    }
}
