//! `corral why TASK`: why a task is where it is — a pending task's
//! explanation as the scheduler wrote it, a preempted task's preemptor —
//! and, for a pending task, its place in its role's queue: how many of the
//! role's pending tasks come before it (in the scheduler's own order:
//! tier, priority, age) and the weighted dominant share its role waits on
//! beside the others' (the role with the smallest goes next).

use std::fmt::Write as _;

use anyhow::Result;
use corral_api::{Role, Task, TaskPhase};
use corral_core::sched::queue::queue_order;
use kube::api::{Api, ListParams};

use super::describe::format_why;
use super::{Ctx, server_error};

fn key(t: &Task) -> String {
    format!(
        "{}/{}",
        t.metadata.namespace.as_deref().unwrap_or("default"),
        t.metadata.name.as_deref().unwrap_or_default()
    )
}

fn created(t: &Task) -> jiff::Timestamp {
    t.metadata
        .creation_timestamp
        .as_ref()
        .map_or(jiff::Timestamp::UNIX_EPOCH, |c| c.0)
}

/// The queue lines for pending `task` among `peers` (every pending task of
/// its role, it included) with the Roles' shares.
pub fn format_queue(task: &Task, peers: &[Task], roles: &[Role]) -> String {
    let role = &task.spec.role;
    let mut queue: Vec<&Task> = peers.iter().filter(|p| &p.spec.role == role).collect();
    let keys: Vec<String> = queue.iter().map(|t| key(t)).collect();
    let mut order: Vec<usize> = (0..queue.len()).collect();
    order.sort_by(|a, b| {
        let (x, y) = (queue[*a], queue[*b]);
        queue_order(x.spec.tier, x.spec.priority, created(x), &keys[*a]).cmp(&queue_order(
            y.spec.tier,
            y.spec.priority,
            created(y),
            &keys[*b],
        ))
    });
    let own = key(task);
    let position = order
        .iter()
        .position(|i| keys[*i] == own)
        .map_or(1, |p| p + 1);
    queue = order.iter().map(|i| queue[*i]).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  queue: {position} of {} pending in role {role} (tier {}, priority {}; higher tiers, then higher priorities, then older tasks go first)",
        queue.len(),
        serde_json::to_value(task.spec.tier)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        task.spec.priority,
    );
    let mut shares: Vec<(String, f64)> = roles
        .iter()
        .filter_map(|r| Some((r.metadata.name.clone()?, r.status.as_ref()?.dominant_share?)))
        .collect();
    shares.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    match shares.iter().find(|(n, _)| n == role) {
        Some((_, share)) => {
            let lower: Vec<String> = shares
                .iter()
                .take_while(|(n, _)| n != role)
                .map(|(n, s)| format!("{n} {s:.3}"))
                .collect();
            let _ = writeln!(
                out,
                "  share: role {role} waits at a weighted dominant share of {share:.3}; {}",
                if lower.is_empty() {
                    "no role is below it, so it goes first in each cycle".to_owned()
                } else {
                    format!("roles below it go first: {}", lower.join(", "))
                }
            );
        }
        None => {
            let _ = writeln!(out, "  share: role {role} has no share recorded yet");
        }
    }
    out
}

/// Runs `corral why TASK`.
pub async fn run(ctx: &Ctx, task: &str) -> Result<()> {
    let api: Api<Task> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let t = api.get(task).await.map_err(server_error)?;
    let mut text = format_why(&t);
    if t.status
        .as_ref()
        .is_none_or(|s| s.phase() == TaskPhase::Pending)
    {
        let all: Api<Task> = Api::all(ctx.client.clone());
        let pending: Vec<Task> = all
            .list(&ListParams::default())
            .await
            .map_err(server_error)?
            .items
            .into_iter()
            .filter(|p| {
                p.spec.role == t.spec.role
                    && p.spec.node_name.is_none()
                    && p.status
                        .as_ref()
                        .is_none_or(|s| s.phase() == TaskPhase::Pending)
            })
            .collect();
        let roles: Api<Role> = Api::all(ctx.client.clone());
        let roles = roles
            .list(&ListParams::default())
            .await
            .map_err(server_error)?
            .items;
        text.push_str(&format_queue(&t, &pending, &roles));
    }
    out!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task(name: &str, tier: &str, priority: i32, created: &str) -> Task {
        serde_json::from_value(json!({
            "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": "a", "creationTimestamp": created},
            "spec": {"job": "j", "role": "analytics", "instanceId": 0, "tier": tier, "priority": priority,
                     "resources": {"cpus": 1}, "container": {"image": "x"}},
        }))
        .expect("task")
    }

    fn role(name: &str, share: f64) -> Role {
        serde_json::from_value(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role",
            "metadata": {"name": name}, "spec": {}, "status": {"dominantShare": share}}))
        .expect("role")
    }

    #[test]
    fn a_pending_task_is_told_its_place_and_the_share_it_waits_on() {
        let me = task("me", "preemptible", 0, "2026-12-07T10:00:00Z");
        let peers = vec![
            task("older", "preemptible", 0, "2026-12-07T09:00:00Z"),
            task("urgent", "preemptible", 5, "2026-12-07T11:00:00Z"),
            task("preferred", "preferred", 0, "2026-12-07T12:00:00Z"),
            task("newer", "preemptible", 0, "2026-12-07T11:00:00Z"),
            me.clone(),
        ];
        let roles = [role("web", 0.1), role("analytics", 0.4), role("batch", 0.7)];
        let text = format_queue(&me, &peers, &roles);
        assert!(
            text.contains("queue: 4 of 5 pending in role analytics"),
            "{text}"
        );
        assert!(
            text.contains("share of 0.400; roles below it go first: web 0.100"),
            "{text}"
        );
        let text = format_queue(&me, &peers, &[role("analytics", 0.0)]);
        assert!(text.contains("no role is below it"), "{text}");
    }
}
