//! Objects → scheduler inputs (pure): Nodes and Reservations into node
//! states, Tasks into scheduler tasks, Roles and Quotas into role info. The
//! allocation loop and the what-if plan ([`crate::plan`]) read the cluster
//! through these, so a plan places as the scheduler does.

use super::ports::NodePorts;
use super::res::{Dims, MAX_DIMS, Res};
use super::{NodeState, RoleInfo, Runtimes, SchedTask};
use crate::reservations::{Dynamic, Verdict, decide};
use corral_api::node::{NodeConditionType, NodeReason};
use corral_api::resources::MilliResources;
use corral_api::{ConditionStatus, Node, Quota, Reservation, Resources, Role, Task, TaskPhase};

fn vector(r: &Resources, dims: &mut Dims) -> Option<Res> {
    let m = r.to_milli().ok()?;
    dims.vector(&m.0).ok()
}

/// Where a task stands for the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting to be placed.
    Pending,
    /// Holding resources on a node.
    Bound(String),
    /// Not the scheduler's concern (ended, or held back).
    Ignored,
}

/// Where `task` stands.
pub fn task_state(task: &Task) -> TaskState {
    let phase = task
        .status
        .as_ref()
        .map(|s| s.phase())
        .unwrap_or(TaskPhase::Pending);
    if task.metadata.deletion_timestamp.is_some() && task.spec.node_name.is_none() {
        return TaskState::Ignored;
    }
    // Created held back (its instance flaps) and not yet recorded THROTTLED:
    // not the scheduler's until the job controller releases it.
    let held_unrecorded = task
        .status
        .as_ref()
        .is_none_or(|s| s.task_events.is_empty())
        && task
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(crate::jobs::THROTTLED_UNTIL_ANNOTATION));
    match (&task.spec.node_name, phase) {
        (_, p) if p.is_terminal() => TaskState::Ignored,
        (None, TaskPhase::Pending) if held_unrecorded => TaskState::Ignored,
        (Some(n), _) => TaskState::Bound(n.clone()),
        (None, TaskPhase::Pending) => TaskState::Pending,
        (None, _) => TaskState::Ignored,
    }
}

/// `namespace/name`.
pub fn key_of(task: &Task) -> String {
    format!(
        "{}/{}",
        task.metadata.namespace.as_deref().unwrap_or("default"),
        task.metadata.name.as_deref().unwrap_or("")
    )
}

/// The scheduler's view of a task (None when its resources are unreadable,
/// which validation prevents).
pub fn sched_task(task: &Task, dims: &mut Dims) -> Option<SchedTask> {
    let ns = task.metadata.namespace.as_deref().unwrap_or("default");
    let created = task
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let started = task
        .status
        .as_ref()
        .and_then(|s| {
            s.task_events
                .iter()
                .find(|e| e.status == TaskPhase::Running)
        })
        .map(|e| e.timestamp.0);
    Some(SchedTask {
        key: key_of(task),
        job: format!("{ns}/{}", task.spec.job),
        role: task.spec.role.clone(),
        request: vector(&task.spec.resources, dims)?,
        tier: task.spec.tier,
        priority: task.spec.priority,
        constraints: task.spec.constraints.clone(),
        runtime: task.spec.container.runtime,
        ports: ports_of(task),
        created,
        started,
        gang: task.spec.gang.map(|g| g.min_instances).filter(|n| *n > 1),
        long_running: task
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(corral_api::job::JOB_KIND_LABEL))
            .is_some_and(|k| k == "service"),
    })
}

/// The ports a task needs, in its job's order: those its binding assigned
/// once it is bound (all fixed then), else fixed or to be assigned.
fn ports_of(task: &Task) -> Vec<Option<u16>> {
    let assigned = task
        .status
        .as_ref()
        .map(|s| s.ports.as_slice())
        .unwrap_or_default();
    task.spec
        .ports
        .iter()
        .map(|p| {
            p.port
                .or_else(|| assigned.iter().find(|a| a.name == p.name).map(|a| a.port))
        })
        .collect()
}

/// The scheduler's view of a node at `now` (Unix seconds), with the
/// dynamic reservations on it.
pub fn node_state<'a>(
    node: &Node,
    reservations: impl Iterator<Item = &'a Reservation>,
    dims: &mut Dims,
    now: i64,
) -> Option<NodeState> {
    let name = node.metadata.name.clone()?;
    let status = node.status.clone().unwrap_or_default();
    let allocatable = if status.allocatable.is_empty() {
        &status.total
    } else {
        &status.allocatable
    };
    let mut n = NodeState::new(&name, vector(allocatable, dims)?);
    n.revocable = vector(&status.revocable, dims).unwrap_or(Res::ZERO);
    n.attributes = node.spec.attributes.clone();
    n.runtimes = Runtimes {
        offered: status.runtimes.clone(),
        default: status.default_runtime,
    };
    n.ports = NodePorts::new(&status.port_ranges);
    // Cordoned or draining: no new work; a maintenance window near: no
    // new services.
    n.schedulable = !node.spec.closed(now);
    n.closing = node.spec.window_near(now);
    n.healthy = status
        .conditions
        .iter()
        .any(|c| c.type_ == NodeConditionType::Ready && c.status == ConditionStatus::True)
        && !status.conditions.iter().any(|c| {
            c.type_ == NodeConditionType::Ready && c.reason == NodeReason::HeartbeatExpired
        });
    for r in &status.static_reservations {
        if let Some(v) = vector(&r.resources, dims) {
            let e = n.reserved.entry(r.role.clone()).or_default();
            *e = e.plus(v);
        }
    }
    // Only the reservations the node holds (see `core::reservations`).
    let on: Vec<&Reservation> = reservations.filter(|r| r.spec.node == name).collect();
    for (r, verdict) in verdicts(Some(node), &on) {
        if verdict != Verdict::Applied {
            continue;
        }
        if let Some(v) = vector(&r.spec.resources, dims) {
            let e = n.reserved.entry(r.spec.role.clone()).or_default();
            *e = e.plus(v);
        }
    }
    Some(n)
}

/// Whether each of `on` (the dynamic reservations of one node) is in
/// force on `node` (None: not registered).
pub fn verdicts<'a>(
    node: Option<&Node>,
    on: &[&'a Reservation],
) -> Vec<(&'a Reservation, Verdict)> {
    let status = node.and_then(|n| n.status.as_ref());
    let allocatable = node.map(|_| {
        let s = status.cloned().unwrap_or_default();
        let r = if s.allocatable.is_empty() {
            s.total
        } else {
            s.allocatable
        };
        r.to_milli().unwrap_or_default()
    });
    let fixed = status
        .map(|s| {
            s.static_reservations
                .iter()
                .filter_map(|r| r.resources.to_milli().ok())
                .fold(MilliResources::default(), |a, r| a.plus(&r))
        })
        .unwrap_or_default();
    let dynamic: Vec<Dynamic> = on
        .iter()
        .map(|r| Dynamic {
            name: r.metadata.name.as_deref().unwrap_or_default(),
            created: r
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            resources: r.spec.resources.to_milli().unwrap_or_default(),
        })
        .collect();
    let decided = decide(allocatable.as_ref(), &fixed, &dynamic);
    on.iter().copied().zip(decided).collect()
}

/// A role's weight, parent and quota.
pub fn role_info(role: Option<&Role>, quota: Option<&Quota>, dims: &mut Dims) -> RoleInfo {
    let mut info = RoleInfo {
        weight: role.map(|r| r.spec.weight).unwrap_or(1.0),
        parent: role.and_then(|r| r.spec.parent.clone()),
        ..Default::default()
    };
    if let Some(q) = quota {
        if let Some(l) = vector(&q.spec.limit, dims) {
            info.limit = l;
            let mut limited = [false; MAX_DIMS];
            if let Ok(m) = q.spec.limit.to_milli() {
                for name in m.0.keys() {
                    if let Ok(i) = dims.slot(name) {
                        limited[i] = true;
                    }
                }
            }
            info.limited = limited;
        }
        if let Some(g) = vector(&q.spec.guarantee, dims) {
            info.guarantee = g;
        }
        info.lend_unused = q.spec.lend_unused;
        info.borrow = q.spec.borrow;
        if let Some(b) = vector(&q.spec.borrowing_limit, dims) {
            info.borrowing_limit = b;
            if let Ok(m) = q.spec.borrowing_limit.to_milli() {
                for name in m.0.keys() {
                    if let Ok(i) = dims.slot(name) {
                        info.borrow_capped[i] = true;
                    }
                }
            }
        }
    }
    info
}
