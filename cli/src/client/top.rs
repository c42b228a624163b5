//! `corral top nodes|tasks|roles`: the cluster's "allocated vs total" and
//! the containers' "used vs allocated" views.
//!
//! For nodes, allocation is summed from the tasks that hold resources
//! (ASSIGNED through KILLING); usage is what the agents measured (Task and
//! Node `status.usage`), from one list of each kind, so the numbers are
//! consistent with each other. For roles, the figures are those the role
//! status controller keeps in Role status (no list of every task).

use anyhow::Result;
use clap::ValueEnum;
use corral_api::node::Node;
use corral_api::quota::Quota;
use corral_api::resources::MilliResources;
use corral_api::role::Role;
use corral_api::task::Task;
use kube::api::{Api, ListParams};

use super::describe::{allocated, human, milli};
use super::{Ctx, print_columns, server_error};

/// What `corral top` shows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TopWhat {
    /// Per node: allocated and used against allocatable.
    Nodes,
    /// Per task: used against allocated.
    Tasks,
    /// Per role (its Role status): allocated against its quota limit and
    /// the cluster, pending, dominant share.
    Roles,
}

fn pct(part: i64, whole: i64) -> String {
    if whole <= 0 {
        "-".to_owned()
    } else {
        format!("{}%", part.saturating_mul(100) / whole)
    }
}

fn cell(r: &str, part: i64, whole: i64) -> String {
    format!(
        "{}/{} ({})",
        human(r, part),
        human(r, whole),
        pct(part, whole)
    )
}

/// The `top nodes` rows.
pub fn node_rows(nodes: &[Node], tasks: &[Task]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "CPUS ALLOCATED".to_owned(),
        "MEMORY ALLOCATED".to_owned(),
        "CPUS USED".to_owned(),
        "MEMORY USED".to_owned(),
        "TASKS".to_owned(),
    ]];
    let mut total_cap = MilliResources::default();
    let mut total_alloc = MilliResources::default();
    let mut total_used = MilliResources::default();
    let mut total_tasks = 0;
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let on: Vec<Task> = tasks
            .iter()
            .filter(|t| t.spec.node_name.as_deref() == Some(name.as_str()))
            .cloned()
            .collect();
        let st = n.status.clone().unwrap_or_default();
        let cap = milli(&st.allocatable);
        let alloc = allocated(&on);
        let used = milli(&st.usage);
        let holding = on
            .iter()
            .filter(|t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| s.phase().holds_resources())
            })
            .count();
        rows.push(vec![
            name,
            cell("cpus", alloc.get("cpus"), cap.get("cpus")),
            cell("memory", alloc.get("memory"), cap.get("memory")),
            cell("cpus", used.get("cpus"), alloc.get("cpus")),
            cell("memory", used.get("memory"), alloc.get("memory")),
            holding.to_string(),
        ]);
        total_cap = total_cap.plus(&cap);
        total_alloc = total_alloc.plus(&alloc);
        total_used = total_used.plus(&used);
        total_tasks += holding;
    }
    rows.push(vec![
        "(cluster)".to_owned(),
        cell("cpus", total_alloc.get("cpus"), total_cap.get("cpus")),
        cell("memory", total_alloc.get("memory"), total_cap.get("memory")),
        cell("cpus", total_used.get("cpus"), total_alloc.get("cpus")),
        cell(
            "memory",
            total_used.get("memory"),
            total_alloc.get("memory"),
        ),
        total_tasks.to_string(),
    ]);
    rows
}

/// The `top tasks` rows (tasks holding resources only).
pub fn task_rows(tasks: &[Task], with_namespace: bool) -> Vec<Vec<String>> {
    let mut header = vec![];
    if with_namespace {
        header.push("NAMESPACE".to_owned());
    }
    header.extend(
        ["NAME", "NODE", "PHASE", "CPUS USED", "MEMORY USED"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    let mut rows = vec![header];
    for t in tasks {
        let st = t.status.clone().unwrap_or_default();
        if !st.phase().holds_resources() {
            continue;
        }
        let alloc = milli(&t.spec.resources);
        let used = st.usage.as_ref().map(milli).unwrap_or_default();
        let mut row = vec![];
        if with_namespace {
            row.push(t.metadata.namespace.clone().unwrap_or_default());
        }
        row.extend([
            t.metadata.name.clone().unwrap_or_default(),
            t.spec.node_name.clone().unwrap_or_default(),
            st.phase().to_string(),
            cell("cpus", used.get("cpus"), alloc.get("cpus")),
            cell("memory", used.get("memory"), alloc.get("memory")),
        ]);
        rows.push(row);
    }
    rows
}

/// The `top roles` rows: per role, as its Role status says (the role
/// status controller's figures, descendants included): allocated cpus and
/// memory against the cluster's allocatable and its quota's limit (when it
/// has one), what its pending tasks ask for, and its dominant share.
pub fn role_rows(nodes: &[Node], roles: &[Role], quotas: &[Quota]) -> Vec<Vec<String>> {
    let cluster = nodes.iter().fold(MilliResources::default(), |acc, n| {
        acc.plus(&milli(&n.status.clone().unwrap_or_default().allocatable))
    });
    let mut rows = vec![
        [
            "ROLE",
            "CPUS",
            "MEMORY",
            "CPUS OF LIMIT",
            "MEMORY OF LIMIT",
            "PENDING",
            "SHARE",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>(),
    ];
    let mut roles: Vec<&Role> = roles.iter().collect();
    roles.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for role in roles {
        let name = role.metadata.name.clone().unwrap_or_default();
        let status = role.status.clone().unwrap_or_default();
        let alloc = milli(&status.allocated);
        let pending = milli(&status.pending);
        let limit = quotas
            .iter()
            .find(|q| q.spec.role == name)
            .map(|q| milli(&q.spec.limit));
        let of_limit = |r: &str| match &limit {
            Some(l) if l.0.contains_key(r) => cell(r, alloc.get(r), l.get(r)),
            _ => "-".to_owned(),
        };
        let pending = if pending.0.values().all(|v| *v == 0) {
            "-".to_owned()
        } else {
            format!(
                "{} cpus, {}",
                human("cpus", pending.get("cpus")),
                human("memory", pending.get("memory"))
            )
        };
        rows.push(vec![
            name,
            cell("cpus", alloc.get("cpus"), cluster.get("cpus")),
            cell("memory", alloc.get("memory"), cluster.get("memory")),
            of_limit("cpus"),
            of_limit("memory"),
            pending,
            status
                .dominant_share
                .map_or("-".to_owned(), |s| format!("{:.1}%", s * 100.0)),
        ]);
    }
    rows
}

/// Runs `corral top`.
pub async fn run(ctx: &Ctx, what: TopWhat, all_namespaces: bool) -> Result<()> {
    let lp = ListParams::default();
    let tasks = || async {
        let api: Api<Task> = if all_namespaces || !matches!(what, TopWhat::Tasks) {
            Api::all(ctx.client.clone())
        } else {
            Api::namespaced(ctx.client.clone(), &ctx.namespace)
        };
        api.list(&lp).await.map_err(server_error).map(|l| l.items)
    };
    let nodes = || async {
        Api::<Node>::all(ctx.client.clone())
            .list(&lp)
            .await
            .map_err(server_error)
            .map(|l| l.items)
    };
    let rows = match what {
        TopWhat::Tasks => task_rows(&tasks().await?, all_namespaces),
        TopWhat::Nodes => node_rows(&nodes().await?, &tasks().await?),
        // From Role status: no list of every task.
        TopWhat::Roles => {
            let roles = Api::<Role>::all(ctx.client.clone())
                .list(&lp)
                .await
                .map_err(server_error)?
                .items;
            let quotas = Api::<Quota>::all(ctx.client.clone())
                .list(&lp)
                .await
                .map_err(server_error)?
                .items;
            role_rows(&nodes().await?, &roles, &quotas)
        }
    };
    print_columns(&rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpus: u32, mem: &str, used_cpus: &str) -> Node {
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node", "metadata": {"name": name},
            "spec": {}, "status": {"allocatable": {"cpus": cpus, "memory": mem}, "usage": {"cpus": used_cpus, "memory": "512Mi"}}}))
        .expect("node")
    }

    fn task(name: &str, role: &str, node: Option<&str>, phase: &str, cpus: f64) -> Task {
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"job": "j", "role": role, "instanceId": 0, "resources": {"cpus": cpus, "memory": "1Gi"},
                     "container": {"image": "x"}, "nodeName": node},
            "status": {"phase": phase, "usage": {"cpus": "0.25", "memory": "256Mi"}}}))
        .expect("task")
    }

    #[test]
    fn nodes_show_allocated_of_allocatable_and_used_of_allocated() {
        let nodes = [node("n1", 4, "8Gi", "0.5")];
        let tasks = [
            task("a", "web", Some("n1"), "RUNNING", 1.0),
            task("b", "web", Some("n1"), "RUNNING", 1.0),
            task("c", "web", Some("n1"), "FINISHED", 1.0),
        ];
        let rows = node_rows(&nodes, &tasks);
        assert_eq!(rows[1][0], "n1");
        assert_eq!(rows[1][1], "2/4 (50%)");
        assert_eq!(rows[1][2], "2Gi/8Gi (25%)");
        assert_eq!(rows[1][3], "0.5/2 (25%)");
        assert_eq!(rows[1][5], "2");
        assert_eq!(rows.last().map(|r| r[0].as_str()), Some("(cluster)"));
    }

    #[test]
    fn roles_show_their_status_against_limit_and_cluster() {
        let nodes = [node("n1", 4, "8Gi", "0"), node("n2", 4, "8Gi", "0")];
        let role = |name: &str, status: serde_json::Value| -> Role {
            serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role",
                "metadata": {"name": name}, "spec": {}, "status": status}))
            .expect("role")
        };
        let roles = [
            role("web", json!({})),
            role(
                "analytics",
                json!({"allocated": {"cpus": 2, "memory": "1Gi"}, "pending": {"cpus": 2, "memory": "1Gi"},
                       "dominantShare": 0.25}),
            ),
        ];
        let quota: Quota =
            serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Quota",
            "metadata": {"name": "q", "namespace": "analytics"},
            "spec": {"role": "analytics", "limit": {"cpus": 4}}}))
            .expect("quota");
        let rows = role_rows(&nodes, &roles, &[quota]);
        assert_eq!(rows[1][0], "analytics");
        assert_eq!(rows[1][1], "2/8 (25%)");
        assert_eq!(rows[1][3], "2/4 (50%)");
        assert_eq!(rows[1][4], "-");
        assert_eq!(rows[1][5], "2 cpus, 1Gi");
        assert_eq!(rows[1][6], "25.0%");
        assert_eq!(rows[2][0], "web");
        assert_eq!(rows[2][1], "0/8 (0%)");
        assert_eq!(rows[2][5], "-");
    }

    #[test]
    fn tasks_show_used_of_allocated() {
        let rows = task_rows(&[task("a", "web", Some("n1"), "RUNNING", 1.0)], false);
        assert_eq!(rows[1][3], "0.25/1 (25%)");
        assert_eq!(rows[1][4], "256Mi/1Gi (25%)");
    }
}
