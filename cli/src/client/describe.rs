//! `corral describe` and `corral why`.
//!
//! `describe` shows a Task with its placement, resources against usage, the
//! pending explanation and the taskEvents timeline; a Job with its tasks per
//! phase, latency figures and cron bookkeeping; a Node with its capacity,
//! what its tasks hold (allocated) and what they use; any other kind as YAML.
//! `why` answers one question about a task: why it is pending, or who
//! preempted it and by which rule. The formatting is pure (`format_*`) and
//! unit-tested; the verbs only fetch.

use std::fmt::Write as _;

use anyhow::Result;
use corral_api::TaskPhase;
use corral_api::job::Job;
use corral_api::node::Node;
use corral_api::resources::{MilliResources, Resources};
use corral_api::task::{Task, TaskConditionType};
use kube::api::{Api, ListParams};

use super::{Ctx, server_error};

/// Milli-units as people read them: `1.5` cpus, `512Mi` of memory.
pub fn human(resource: &str, milli: i64) -> String {
    if resource == "cpus" {
        let v = milli as f64 / 1000.0;
        return if milli % 1000 == 0 {
            format!("{}", milli / 1000)
        } else {
            format!("{v:.2}").trim_end_matches('0').to_owned()
        };
    }
    let bytes = milli / 1000;
    for (unit, size) in [
        ("Ti", 1i64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            return if bytes % size == 0 {
                format!("{}{unit}", bytes / size)
            } else {
                format!("{v:.1}{unit}")
            };
        }
    }
    format!("{bytes}")
}

/// `cpus=1 memory=5Gi disk=5Gi`.
pub fn resources_line(r: &Resources) -> String {
    let m = milli(r);
    if m.0.is_empty() {
        return "<none>".to_owned();
    }
    m.0.iter()
        .map(|(k, v)| format!("{k}={}", human(k, *v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resources as milli-units; a quantity that does not parse counts as zero.
pub fn milli(r: &Resources) -> MilliResources {
    MilliResources(
        r.0.iter()
            .map(|(k, q)| (k.clone(), q.milli().unwrap_or(0)))
            .collect(),
    )
}

/// `used of allocated (pct%)` per resource of `allocated`.
pub fn used_vs(used: &MilliResources, of: &MilliResources) -> String {
    of.0.iter()
        .map(|(k, total)| {
            let u = used.get(k);
            let pct = if *total > 0 {
                format!(" ({}%)", u.saturating_mul(100) / total)
            } else {
                String::new()
            };
            format!("{k} {} of {}{pct}", human(k, u), human(k, *total))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn field(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<14}{value}", format!("{name}:"));
}

fn time_of(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A task, described.
pub fn format_task(t: &Task) -> String {
    let mut out = String::new();
    let st = t.status.clone().unwrap_or_default();
    field(
        &mut out,
        "Name",
        t.metadata.name.as_deref().unwrap_or_default(),
    );
    field(
        &mut out,
        "Namespace",
        t.metadata.namespace.as_deref().unwrap_or_default(),
    );
    field(
        &mut out,
        "Job",
        format!("{} (instance {})", t.spec.job, t.spec.instance_id),
    );
    field(&mut out, "Role", &t.spec.role);
    field(
        &mut out,
        "Tier",
        format!(
            "{} (priority {})",
            serde_plain(&t.spec.tier),
            t.spec.priority
        ),
    );
    field(
        &mut out,
        "Node",
        t.spec.node_name.as_deref().unwrap_or("<none>"),
    );
    if let Some(ip) = &st.host_ip {
        field(&mut out, "Host IP", ip);
    }
    if !st.ports.is_empty() {
        let ports: Vec<String> = st
            .ports
            .iter()
            .map(|p| format!("{}={}", p.name, p.port))
            .collect();
        field(&mut out, "Ports", ports.join(", "));
    }
    field(&mut out, "Phase", st.phase());
    if let Some(m) = &st.message {
        field(&mut out, "Message", m);
    }
    if let Some(code) = st.exit_code {
        field(&mut out, "Exit code", code);
    }
    if let Some(r) = st.failure_reason {
        field(&mut out, "Failure", serde_plain(&r));
    }
    field(&mut out, "Failures", st.failure_count);
    field(&mut out, "Image", &t.spec.container.image);
    if !t.spec.container.command.is_empty() || !t.spec.container.args.is_empty() {
        let all: Vec<&str> = t
            .spec
            .container
            .command
            .iter()
            .chain(&t.spec.container.args)
            .map(String::as_str)
            .collect();
        field(&mut out, "Command", all.join(" "));
    }
    field(&mut out, "Resources", resources_line(&t.spec.resources));
    if let Some(u) = &st.usage {
        field(
            &mut out,
            "Usage",
            used_vs(&milli(u), &milli(&t.spec.resources)),
        );
    }
    if let Some(e) = &st.explanation {
        let _ = writeln!(out, "Pending:\n  {}", e.summary);
        for r in &e.reasons {
            let _ = writeln!(out, "  - {}", r.message);
        }
    }
    if !st.conditions.is_empty() {
        let _ = writeln!(out, "Conditions:");
        let mut rows = vec![vec![
            "TYPE".into(),
            "STATUS".into(),
            "REASON".into(),
            "MESSAGE".into(),
        ]];
        for c in &st.conditions {
            rows.push(vec![
                serde_plain(&c.type_),
                serde_plain(&c.status),
                serde_plain(&c.reason),
                c.message.clone(),
            ]);
        }
        indent_table(&mut out, &rows);
    }
    let _ = writeln!(out, "Events:");
    if st.task_events.is_empty() {
        let _ = writeln!(out, "  <none>");
    } else {
        let mut rows = vec![vec![
            "TIME".into(),
            "STATUS".into(),
            "ACTOR".into(),
            "MESSAGE".into(),
        ]];
        for e in &st.task_events {
            rows.push(vec![
                time_of(&e.timestamp),
                e.status.to_string(),
                e.actor.clone(),
                e.message.clone(),
            ]);
        }
        indent_table(&mut out, &rows);
    }
    out
}

fn indent_table(out: &mut String, rows: &[Vec<String>]) {
    let widths = super::column_widths(rows);
    for r in rows {
        let _ = writeln!(out, "  {}", super::format_row(r, &widths));
    }
}

/// An enum's serialized name (`preemptible`, `OutOfMemory`).
fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A job and its tasks, described.
pub fn format_job(j: &Job, tasks: &[Task]) -> String {
    let mut out = String::new();
    let st = j.status.clone().unwrap_or_default();
    field(
        &mut out,
        "Name",
        j.metadata.name.as_deref().unwrap_or_default(),
    );
    field(
        &mut out,
        "Namespace",
        j.metadata.namespace.as_deref().unwrap_or_default(),
    );
    field(&mut out, "Kind", serde_plain(&j.spec.kind));
    field(&mut out, "Role", &j.spec.role);
    field(&mut out, "Environment", &j.spec.environment);
    field(
        &mut out,
        "Tier",
        format!(
            "{} (priority {})",
            serde_plain(&j.spec.tier),
            j.spec.priority
        ),
    );
    field(&mut out, "Instances", j.spec.instances);
    field(
        &mut out,
        "Resources",
        format!("{} per task", resources_line(&j.spec.resources)),
    );
    field(&mut out, "Image", &j.spec.container.image);
    if !j.spec.ports.is_empty() {
        let ports: Vec<String> = j
            .spec
            .ports
            .iter()
            .map(|p| match p.port {
                Some(n) => format!("{}={n}", p.name),
                None => format!("{} (assigned)", p.name),
            })
            .collect();
        field(&mut out, "Ports", ports.join(", "));
    }
    if let Some(c) = &j.spec.cron {
        field(
            &mut out,
            "Schedule",
            format!("{} ({})", c.schedule, c.timezone),
        );
    }
    field(
        &mut out,
        "Phase",
        st.phase
            .map(|p| serde_plain(&p))
            .unwrap_or_else(|| "<none>".into()),
    );
    let counts: Vec<String> = st.tasks.iter().map(|(p, n)| format!("{p}={n}")).collect();
    field(
        &mut out,
        "Tasks",
        if counts.is_empty() {
            "<none>".to_owned()
        } else {
            counts.join(" ")
        },
    );
    field(&mut out, "Failures", st.failures);
    if let Some(l) = &st.latency {
        for (name, s) in [
            ("MTTA", &l.time_to_assigned),
            ("MTTS", &l.time_to_starting),
            ("MTTR", &l.time_to_running),
        ] {
            if let Some(s) = s {
                field(
                    &mut out,
                    name,
                    format!(
                        "median {} ms, p99 {} ms ({} tasks)",
                        s.median_millis, s.p99_millis, s.samples
                    ),
                );
            }
        }
    }
    if let Some(c) = &st.cron {
        field(
            &mut out,
            "Cron runs",
            format!(
                "started {}, cancelled {}, missed {}",
                c.runs_started, c.runs_cancelled, c.runs_missed
            ),
        );
    }
    if let Some(u) = &st.update {
        format_update(&mut out, u, &st.update_history);
    }
    let _ = writeln!(out, "Task list:");
    let mut rows = vec![vec![
        "NAME".into(),
        "PHASE".into(),
        "NODE".into(),
        "MESSAGE".into(),
    ]];
    for t in tasks {
        let st = t.status.clone().unwrap_or_default();
        rows.push(vec![
            t.metadata.name.clone().unwrap_or_default(),
            st.phase().to_string(),
            t.spec.node_name.clone().unwrap_or_else(|| "<none>".into()),
            st.message.unwrap_or_default(),
        ]);
    }
    if rows.len() == 1 {
        let _ = writeln!(out, "  <none>");
    } else {
        indent_table(&mut out, &rows);
    }
    out
}

/// The job's update and its history, as `describe job` shows them.
fn format_update(
    out: &mut String,
    u: &corral_api::update::UpdateStatus,
    history: &[corral_api::update::UpdateStatus],
) {
    field(
        out,
        "Update",
        format!(
            "{} {} ({} → {}), started {}{}",
            u.id,
            serde_plain(&u.state),
            u.from_template,
            u.to_template,
            u.started_at.0,
            u.finished_at
                .as_ref()
                .map(|t| format!(", ended {}", t.0))
                .unwrap_or_default()
        ),
    );
    if !u.message.is_empty() {
        field(out, "Update message", &u.message);
    }
    let list = |v: &[u32]| {
        if v.is_empty() {
            "<none>".to_owned()
        } else {
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    field(
        out,
        "Update instances",
        format!(
            "done {}; failed {}",
            list(&u.done_instances),
            list(&u.failed_instances)
        ),
    );
    const SHOWN: usize = 10;
    if !u.events.is_empty() {
        let _ = writeln!(out, "Update events (latest {SHOWN}):");
        let mut rows = vec![vec![
            "TIME".into(),
            "INSTANCE".into(),
            "ACTION".into(),
            "MESSAGE".into(),
        ]];
        let skip = u.events.len().saturating_sub(SHOWN);
        for e in &u.events[skip..] {
            rows.push(vec![
                e.time.0.to_string(),
                e.instance.to_string(),
                serde_plain(&e.action),
                e.message.clone(),
            ]);
        }
        indent_table(out, &rows);
    }
    for h in history {
        field(
            out,
            "Earlier update",
            format!(
                "{} {} ({} → {}): {}",
                h.id,
                serde_plain(&h.state),
                h.from_template,
                h.to_template,
                h.message
            ),
        );
    }
}

/// What the tasks holding resources on a node add up to.
pub fn allocated(tasks: &[Task]) -> MilliResources {
    tasks
        .iter()
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.phase().holds_resources())
        })
        .fold(MilliResources::default(), |acc, t| {
            acc.plus(&milli(&t.spec.resources))
        })
}

/// A node, with what its tasks hold and use, described.
pub fn format_node(n: &Node, tasks: &[Task]) -> String {
    let mut out = String::new();
    let st = n.status.clone().unwrap_or_default();
    field(
        &mut out,
        "Name",
        n.metadata.name.as_deref().unwrap_or_default(),
    );
    let attrs: Vec<String> = n
        .spec
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    field(
        &mut out,
        "Attributes",
        if attrs.is_empty() {
            "<none>".into()
        } else {
            attrs.join(",")
        },
    );
    field(&mut out, "Unschedulable", n.spec.unschedulable);
    let runtimes: Vec<String> = st.runtimes.iter().map(serde_plain).collect();
    field(&mut out, "Runtimes", runtimes.join(","));
    for c in &st.conditions {
        field(
            &mut out,
            &serde_plain(&c.type_),
            format!(
                "{} ({}) {}",
                serde_plain(&c.status),
                serde_plain(&c.reason),
                c.message
            ),
        );
    }
    field(&mut out, "Total", resources_line(&st.total));
    field(&mut out, "Allocatable", resources_line(&st.allocatable));
    if !st.revocable.is_empty() {
        field(&mut out, "Revocable", resources_line(&st.revocable));
    }
    for r in &st.static_reservations {
        field(
            &mut out,
            "Reserved",
            format!("{} for role {}", resources_line(&r.resources), r.role),
        );
    }
    let alloc = allocated(tasks);
    let cap = milli(&st.allocatable);
    field(&mut out, "Allocated", used_vs(&alloc, &cap));
    if !st.usage.is_empty() {
        field(&mut out, "Used", used_vs(&milli(&st.usage), &alloc));
    }
    let _ = writeln!(out, "Tasks:");
    let mut rows = vec![vec![
        "NAMESPACE".into(),
        "NAME".into(),
        "PHASE".into(),
        "ROLE".into(),
        "RESOURCES".into(),
    ]];
    for t in tasks.iter().filter(|t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.phase().holds_resources())
    }) {
        rows.push(vec![
            t.metadata.namespace.clone().unwrap_or_default(),
            t.metadata.name.clone().unwrap_or_default(),
            t.status.clone().unwrap_or_default().phase().to_string(),
            t.spec.role.clone(),
            resources_line(&t.spec.resources),
        ]);
    }
    if rows.len() == 1 {
        let _ = writeln!(out, "  <none>");
    } else {
        indent_table(&mut out, &rows);
    }
    out
}

/// Why a task is where it is: pending (the explanation), preempted (who,
/// and by which rule), or neither.
pub fn format_why(t: &Task) -> String {
    let mut out = String::new();
    let name = t.metadata.name.as_deref().unwrap_or_default();
    let st = t.status.clone().unwrap_or_default();
    let phase = st.phase();
    let preempted = st
        .conditions
        .iter()
        .find(|c| c.type_ == TaskConditionType::Preempted);
    let preempt_event = st
        .task_events
        .iter()
        .rev()
        .find(|e| e.status == TaskPhase::Preempting);
    match (phase, preempted, preempt_event) {
        (TaskPhase::Pending | TaskPhase::Throttled, _, _) => {
            let _ = writeln!(out, "task {name} is {phase}");
            match &st.explanation {
                Some(e) => {
                    let _ = writeln!(out, "  {}", e.summary);
                    for r in &e.reasons {
                        let mut line = format!("  - {}", r.message);
                        if let (Some(n), Some(a)) = (&r.needed, &r.available) {
                            let _ = write!(line, " (needed {n}, available {a})");
                        }
                        if let Some(n) = r.nodes {
                            let _ = write!(line, " [{n} nodes]");
                        }
                        let _ = writeln!(out, "{line}");
                    }
                }
                None => {
                    let _ = writeln!(out, "  the scheduler has not evaluated it yet");
                }
            }
        }
        (_, cond, Some(ev)) if cond.is_some() || phase == TaskPhase::Preempting => {
            let _ = writeln!(out, "task {name} is {phase}: it was preempted");
            let _ = writeln!(out, "  at {} by {}", time_of(&ev.timestamp), ev.actor);
            let msg = cond
                .map(|c| c.message.as_str())
                .unwrap_or(ev.message.as_str());
            let _ = writeln!(out, "  {msg}");
        }
        _ => {
            let _ = writeln!(
                out,
                "task {name} is {phase}{}",
                t.spec
                    .node_name
                    .as_deref()
                    .map(|n| format!(" on node {n}"))
                    .unwrap_or_default()
            );
            if let Some(e) = st.task_events.last() {
                let _ = writeln!(
                    out,
                    "  last event: {} {} by {}: {}",
                    time_of(&e.timestamp),
                    e.status,
                    e.actor,
                    e.message
                );
            }
            let _ = writeln!(out, "  it is neither pending nor preempted");
        }
    }
    out
}

/// Runs `corral describe KIND NAME…`.
pub async fn describe(ctx: &Ctx, kind: &str, names: &[String]) -> Result<()> {
    let desc = ctx.resolve_kind(kind)?;
    let ns = ctx.namespace.as_str();
    let mut first = true;
    for name in names {
        if !first {
            outln!();
        }
        first = false;
        let text = match (desc.group, desc.kind) {
            ("corral.dev", "Task") => {
                let api: Api<Task> = Api::namespaced(ctx.client.clone(), ns);
                format_task(&api.get(name).await.map_err(server_error)?)
            }
            ("corral.dev", "Job") => {
                let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
                let job = jobs.get(name).await.map_err(server_error)?;
                let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), ns);
                let mut owned = tasks
                    .list(&ListParams::default().labels(&format!("corral.dev/job={name}")))
                    .await
                    .map_err(server_error)?
                    .items;
                owned.sort_by_key(|t| {
                    (
                        t.spec.instance_id,
                        t.metadata.creation_timestamp.clone().map(|c| c.0),
                    )
                });
                let mut text = format_job(&job, &owned);
                if job.spec.kind == corral_api::JobKind::Service {
                    let slices = super::endpoints::slices_of(ctx, name).await?;
                    text.push_str("Endpoints:\n");
                    for line in super::endpoints::format_endpoints(&slices).lines() {
                        let _ = writeln!(text, "  {line}");
                    }
                }
                text
            }
            ("corral.dev", "Node") => {
                let nodes: Api<Node> = Api::all(ctx.client.clone());
                let node = nodes.get(name).await.map_err(server_error)?;
                let tasks: Api<Task> = Api::all(ctx.client.clone());
                let on = tasks
                    .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
                    .await
                    .map_err(server_error)?
                    .items;
                format_node(&node, &on)
            }
            _ => {
                let api = ctx.api(&desc, Some(ns));
                let obj = api.get(name).await.map_err(server_error)?;
                serde_saphyr::to_string(&obj)?
            }
        };
        out!("{text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(status: serde_json::Value) -> Task {
        serde_json::from_value(json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": "batch-0-0", "namespace": "analytics"},
            "spec": {"job": "batch", "role": "analytics", "instanceId": 0,
                     "resources": {"cpus": 1, "memory": "5Gi"}, "container": {"image": "testbox"},
                     "nodeName": "n1"},
            "status": status,
        }))
        .expect("task")
    }

    #[test]
    fn quantities_read_as_people_write_them() {
        assert_eq!(human("cpus", 1500), "1.5");
        assert_eq!(human("cpus", 2000), "2");
        assert_eq!(human("cpus", 250), "0.25");
        assert_eq!(human("memory", 5 * 1024 * 1024 * 1024 * 1000), "5Gi");
        assert_eq!(human("memory", 1536 * 1024 * 1000), "1.5Mi");
        assert_eq!(human("disk", 512_000), "512");
    }

    #[test]
    fn a_described_task_shows_its_timeline_and_usage() {
        let t = task(
            json!({"phase": "RUNNING", "usage": {"cpus": "0.5", "memory": "1Gi"},
            "taskEvents": [
                {"timestamp": "2026-11-30T10:00:00.000000Z", "status": "PENDING", "message": "created", "actor": "job-controller"},
                {"timestamp": "2026-11-30T10:00:01.000000Z", "status": "ASSIGNED", "message": "bound to n1", "actor": "scheduler"}]}),
        );
        let text = format_task(&t);
        assert!(text.contains("Phase:        RUNNING"), "{text}");
        assert!(
            text.contains("Usage:        cpus 0.5 of 1 (50%), memory 1Gi of 5Gi (20%)"),
            "{text}"
        );
        assert!(
            text.contains("2026-11-30T10:00:01.000Z   ASSIGNED   scheduler"),
            "{text}"
        );
    }

    #[test]
    fn why_explains_pending_and_preempted_tasks() {
        let pending = task(
            json!({"phase": "PENDING", "explanation": {"summary": "no node fits",
            "reasons": [{"kind": "InsufficientResources", "message": "memory exhausted", "resource": "memory", "nodes": 3}]}}),
        );
        let text = format_why(&pending);
        assert!(
            text.contains("no node fits") && text.contains("memory exhausted [3 nodes]"),
            "{text}"
        );
        let preempted = task(json!({"phase": "PREEMPTING",
            "conditions": [{"type": "Preempted", "status": "True", "reason": "PreemptedByHigherPriority",
                            "message": "preempted by web/api-0-0 (preferred > preemptible)"}],
            "taskEvents": [{"timestamp": "2026-11-30T10:00:00.000000Z", "status": "PREEMPTING", "message": "x", "actor": "scheduler"}]}));
        let text = format_why(&preempted);
        assert!(text.contains("it was preempted"), "{text}");
        assert!(
            text.contains("preempted by web/api-0-0 (preferred > preemptible)"),
            "{text}"
        );
        let running = task(json!({"phase": "RUNNING"}));
        assert!(format_why(&running).contains("neither pending nor preempted"));
    }

    #[test]
    fn a_node_sums_what_its_tasks_hold() {
        let a = task(json!({"phase": "RUNNING"}));
        let b = task(json!({"phase": "FINISHED"}));
        let sum = allocated(&[a.clone(), a, b]);
        assert_eq!(sum.get("cpus"), 2000);
    }
}
