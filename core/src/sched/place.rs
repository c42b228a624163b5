//! Placement of one task: quota, then nodes.
//!
//! Fast path: the nodes where the task's role has reservations or that are
//! dedicated to it are tried first (reservations serve their role first);
//! then the pool index (free CPU per node) is walked from the smallest fit
//! upwards (bin-packing) or from the largest downwards (spread), and the first
//! node that passes every filter wins. The cost per task depends on how many
//! nodes are skipped, not on the cluster size. Only when nothing fits is every
//! node examined, to explain why.

use corral_api::Tier;
use corral_api::job::ConstraintOperator;
use corral_api::task::{PendingExplanation, PendingReason, PendingReasonKind};

use super::ports::PortMiss;
use super::res::Res;
use super::snapshot::{NodeId, NodeState, SchedTask, Snapshot};

/// How nodes are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Fill nodes up: the tightest fit first (the hardware-efficiency story).
    #[default]
    BinPack,
    /// Spread load: the emptiest node first.
    Spread,
}

/// Why a task was not placed.
#[derive(Debug, Clone, PartialEq)]
pub enum Unplaced {
    /// Its role (or an ancestor) would go over its quota limit.
    Quota {
        /// The role whose limit binds.
        role: String,
        /// The resource slot.
        resource: String,
        /// Needed (milli-units), usage included.
        needed: i64,
        /// The limit.
        limit: i64,
    },
    /// Its role (or an ancestor) would borrow more than its borrowing
    /// limit beyond its guarantee.
    Borrowing {
        /// The role whose cap binds.
        role: String,
        /// The resource slot.
        resource: String,
        /// Its regular usage with the task (milli-units).
        needed: i64,
        /// Its guarantee plus its borrowing limit.
        cap: i64,
    },
    /// The capacity left is protected for other roles' guarantees.
    Guarantee {
        /// The resource slot.
        resource: String,
        /// What the task needs beyond its own role's guarantee (milli-units).
        needed: i64,
        /// Free capacity it may use.
        available: i64,
        /// Free capacity protected for other roles' unused guarantees.
        protected: i64,
    },
    /// No node passes every filter.
    NoNode(Filtered),
    /// Lower-ranked tasks are being preempted for it; their room on `node`
    /// is held for it until they stop.
    Preempting {
        /// The node its room is held on.
        node: NodeId,
        /// The victims yet to stop (keys, sorted).
        victims: Vec<String>,
        /// The rules they were chosen by (each once).
        rules: Vec<super::preempt::Rule>,
    },
    /// Its job's gang did not fit as a whole in the cycle: what was placed
    /// of it was given back.
    Gang {
        /// The gang's size.
        size: u32,
        /// Of the job, bound before the cycle.
        bound: u32,
        /// Placed in the cycle (and given back).
        placed: u32,
        /// Why the first member that found no place did not (None: every
        /// pending member found one, too few are pending).
        first: Option<Box<Unplaced>>,
    },
}

/// How many nodes each filter ruled out (each node counted once, by the first
/// filter that rejected it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filtered {
    /// Nodes examined.
    pub nodes: u32,
    /// Unhealthy or unschedulable.
    pub unavailable: u32,
    /// Dedicated to another role, or not dedicated when the task asks for it.
    pub dedicated: u32,
    /// Not offering the runtime the task asks for.
    pub runtime: u32,
    /// Per attribute constraint (by index in the task's constraints).
    pub attribute: Vec<u32>,
    /// Already running `hostLimit` tasks of the job.
    pub host_limit: u32,
    /// Would fit only in another role's reservation.
    pub reservation: u32,
    /// Per resource slot: nodes where that slot is exhausted.
    pub exhausted: Vec<(usize, u32)>,
    /// No revocable capacity at all (revocable tasks).
    pub no_revocable: u32,
    /// Room enough, but a fixed port the task names is held there.
    pub port_taken: u32,
    /// Room enough, but too few free ports in the node's ranges.
    pub ports_exhausted: u32,
    /// A maintenance window is near, and the task is a service's.
    pub closing: u32,
}

/// True when `node` passes the filters that do not depend on free resources.
pub(crate) fn static_fit(task: &SchedTask, node: &NodeState) -> Result<(), StaticMiss> {
    if !node.usable() {
        return Err(StaticMiss::Unavailable);
    }
    if node.closing && task.long_running {
        return Err(StaticMiss::Closing);
    }
    match (&node.dedicated, &task.constraints.dedicated) {
        (Some(d), _) if d != &task.role => return Err(StaticMiss::Dedicated),
        (None, Some(_)) => return Err(StaticMiss::Dedicated),
        _ => {}
    }
    if !node.runtimes.run(task.runtime) {
        return Err(StaticMiss::Runtime);
    }
    for (i, c) in task.constraints.attributes.iter().enumerate() {
        let v = node.attributes.get(&c.name);
        let ok = match c.operator {
            ConstraintOperator::In => v.is_some_and(|v| c.values.contains(v)),
            ConstraintOperator::NotIn => v.is_none_or(|v| !c.values.contains(v)),
            ConstraintOperator::Exists => v.is_some(),
            ConstraintOperator::DoesNotExist => v.is_none(),
        };
        if !ok {
            return Err(StaticMiss::Attribute(i));
        }
    }
    if let Some(limit) = task.constraints.host_limit
        && node.per_job.get(&task.job).copied().unwrap_or(0) >= limit
    {
        return Err(StaticMiss::HostLimit);
    }
    Ok(())
}

/// Which static filter rejected a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaticMiss {
    Unavailable,
    Closing,
    Dedicated,
    Runtime,
    Attribute(usize),
    HostLimit,
}

/// What the task may use on `node`.
pub(crate) fn free_for_task(task: &SchedTask, node: &NodeState) -> Res {
    if task.tier == Tier::Revocable {
        node.free_revocable()
    } else {
        node.free_for(&task.role)
    }
}

fn fits(task: &SchedTask, node: &NodeState) -> bool {
    static_fit(task, node).is_ok()
        && free_for_task(task, node).fits(&task.request)
        && (task.ports.is_empty() || node.ports.check(&task.ports).is_ok())
}

/// Checks the quota limits of the task's role and its ancestors.
pub fn check_quota(snap: &Snapshot, task: &SchedTask) -> Result<(), Unplaced> {
    for role in snap.ancestors(&task.role) {
        let Some(info) = snap.roles.get(&role) else {
            continue;
        };
        let used = snap.role_usage_with_children(&role);
        let after = used.plus(task.request);
        for i in 0..super::res::MAX_DIMS {
            if info.limited[i] && after.0[i] > info.limit.0[i] {
                return Err(Unplaced::Quota {
                    role,
                    resource: snap.dims.name(i).to_owned(),
                    needed: after.0[i],
                    limit: info.limit.0[i],
                });
            }
        }
        if task.tier != Tier::Revocable {
            let regular = snap.regular_usage_with_children(&role).plus(task.request);
            for i in 0..super::res::MAX_DIMS {
                let cap = info.guarantee.0[i].saturating_add(info.borrowing_limit.0[i]);
                if info.borrow_capped[i] && regular.0[i] > cap {
                    return Err(Unplaced::Borrowing {
                        role,
                        resource: snap.dims.name(i).to_owned(),
                        needed: regular.0[i],
                        cap,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The remaining free capacity after placing `task`, as a dominant share (lower = tighter).
fn leftover(task: &SchedTask, node: &NodeState) -> f64 {
    let free = free_for_task(task, node).minus(task.request);
    let cap = if task.tier == Tier::Revocable {
        node.revocable
    } else {
        node.allocatable
    };
    free.dominant_share(&cap)
}

/// Chooses a node for `task`, or explains why none fits.
pub fn place(snap: &Snapshot, task: &SchedTask, policy: Policy) -> Result<NodeId, Unplaced> {
    check_quota(snap, task)?;
    super::guarantee::check(snap, task)?;
    // Reserved or dedicated nodes of the role first.
    if task.tier != Tier::Revocable
        && let Some(ids) = snap.role_nodes.get(&task.role)
    {
        let best = ids
            .iter()
            .copied()
            .filter(|&id| fits(task, snap.node(id)))
            .map(|id| (leftover(task, snap.node(id)), id))
            .min_by(|a, b| match policy {
                Policy::BinPack => a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)),
                Policy::Spread => b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)),
            });
        if let Some((_, id)) = best {
            return Ok(id);
        }
    }
    let index = if task.tier == Tier::Revocable {
        &snap.revocable_index
    } else {
        &snap.shared_index
    };
    let need = task.request.0[0];
    let hit = match policy {
        Policy::BinPack => index
            .range((need, 0)..)
            .map(|&(_, id)| id)
            .find(|&id| fits(task, snap.node(id))),
        Policy::Spread => index
            .range((need, 0)..)
            .rev()
            .map(|&(_, id)| id)
            .find(|&id| fits(task, snap.node(id))),
    };
    hit.ok_or_else(|| Unplaced::NoNode(filter_counts(snap, task)))
}

/// Examines every node to count what rules it out.
pub fn filter_counts(snap: &Snapshot, task: &SchedTask) -> Filtered {
    let mut f = Filtered {
        attribute: vec![0; task.constraints.attributes.len()],
        ..Default::default()
    };
    let mut exhausted = [0u32; super::res::MAX_DIMS];
    for node in &snap.nodes {
        f.nodes += 1;
        match static_fit(task, node) {
            Err(StaticMiss::Unavailable) => f.unavailable += 1,
            Err(StaticMiss::Closing) => f.closing += 1,
            Err(StaticMiss::Dedicated) => f.dedicated += 1,
            Err(StaticMiss::Runtime) => f.runtime += 1,
            Err(StaticMiss::Attribute(i)) => f.attribute[i] += 1,
            Err(StaticMiss::HostLimit) => f.host_limit += 1,
            Ok(()) => {
                if task.tier == Tier::Revocable && node.revocable.is_zero() {
                    f.no_revocable += 1;
                    continue;
                }
                let free = free_for_task(task, node);
                if free.fits(&task.request) {
                    match node.ports.check(&task.ports) {
                        Ok(()) => {}
                        Err(PortMiss::Taken(_)) => f.port_taken += 1,
                        Err(PortMiss::Exhausted { .. }) => f.ports_exhausted += 1,
                    }
                    continue;
                }
                // Would it fit if other roles' reservations were free?
                let others = node.allocatable.minus(node.used_shared).minus(
                    node.used_reserved
                        .values()
                        .fold(Res::ZERO, |a, r| a.plus(*r)),
                );
                if task.tier != Tier::Revocable && others.fits(&task.request) {
                    f.reservation += 1;
                    continue;
                }
                for i in free.short(&task.request) {
                    exhausted[i] += 1;
                }
            }
        }
    }
    f.exhausted = exhausted
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (i, *n))
        .collect();
    f
}

fn quantity(dim: &str, milli: i64) -> String {
    match dim {
        "memory" | "disk" => {
            let bytes = milli / 1000;
            if bytes % (1 << 30) == 0 {
                format!("{}Gi", bytes >> 30)
            } else if bytes % (1 << 20) == 0 {
                format!("{}Mi", bytes >> 20)
            } else {
                bytes.to_string()
            }
        }
        _ if milli % 1000 == 0 => (milli / 1000).to_string(),
        _ => format!("{milli}m"),
    }
}

/// The structured, human-readable explanation of why `task` stays pending.
pub fn explain(
    snap: &Snapshot,
    task: &SchedTask,
    why: &Unplaced,
    now: jiff::Timestamp,
) -> PendingExplanation {
    let mut reasons = Vec::new();
    match why {
        Unplaced::Quota {
            role,
            resource,
            needed,
            limit,
        } => {
            reasons.push(PendingReason {
                kind: PendingReasonKind::QuotaExceeded,
                message: format!(
                    "role {role} would use {} {resource}, over its limit of {}",
                    quantity(resource, *needed),
                    quantity(resource, *limit)
                ),
                resource: Some(resource.clone()),
                subject: Some(role.clone()),
                nodes: None,
                needed: Some(quantity(resource, *needed)),
                available: Some(quantity(resource, *limit)),
            });
        }
        Unplaced::Borrowing {
            role,
            resource,
            needed,
            cap,
        } => {
            reasons.push(PendingReason {
                kind: PendingReasonKind::BorrowingLimitExceeded,
                message: format!(
                    "role {role} would hold {} {resource} of the regular pool, over its guarantee and borrowing limit of {}",
                    quantity(resource, *needed),
                    quantity(resource, *cap)
                ),
                resource: Some(resource.clone()),
                subject: Some(role.clone()),
                nodes: None,
                needed: Some(quantity(resource, *needed)),
                available: Some(quantity(resource, *cap)),
            });
        }
        Unplaced::Guarantee {
            resource,
            needed,
            available,
            protected,
        } => {
            reasons.push(PendingReason {
                kind: PendingReasonKind::GuaranteeProtected,
                message: format!(
                    "needs {} {resource} beyond its role's guarantee; {} is free to it, {} more is kept for other roles' guarantees",
                    quantity(resource, *needed),
                    quantity(resource, *available),
                    quantity(resource, *protected)
                ),
                resource: Some(resource.clone()),
                subject: Some(task.role.clone()),
                nodes: None,
                needed: Some(quantity(resource, *needed)),
                available: Some(quantity(resource, *available)),
            });
        }
        Unplaced::Preempting {
            node,
            victims,
            rules,
        } => {
            const SHOWN: usize = 3;
            let node = snap.node(*node).name.clone();
            let mut names = victims
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if victims.len() > SHOWN {
                names.push_str(&format!(" and {} more", victims.len() - SHOWN));
            }
            let rules = rules
                .iter()
                .map(|r| r.describe())
                .collect::<Vec<_>>()
                .join(", ");
            reasons.push(PendingReason {
                kind: PendingReasonKind::PreemptionInProgress,
                message: format!(
                    "room is held on {node}; waiting for {} preempted task(s) to stop ({rules}): {names}",
                    victims.len()
                ),
                resource: None,
                subject: Some(node),
                nodes: Some(1),
                needed: None,
                available: None,
            });
        }
        Unplaced::Gang {
            size,
            bound,
            placed,
            first,
        } => {
            reasons.push(PendingReason {
                kind: PendingReasonKind::GangIncomplete,
                message: format!(
                    "its gang needs {size} instance(s) bound at once: {bound} were, and only {placed} more found room in the cycle, so none was bound"
                ),
                resource: None,
                subject: Some(task.job.clone()),
                nodes: None,
                needed: Some(size.to_string()),
                available: Some((bound + placed).to_string()),
            });
            if let Some(first) = first {
                reasons.extend(explain(snap, task, first, now).reasons);
            }
        }
        Unplaced::NoNode(f) => {
            let mut push = |kind,
                            message: String,
                            subject: Option<String>,
                            resource: Option<String>,
                            nodes: u32| {
                if nodes > 0 {
                    reasons.push(PendingReason {
                        kind,
                        message,
                        resource,
                        subject,
                        nodes: Some(nodes),
                        needed: None,
                        available: None,
                    });
                }
            };
            push(
                PendingReasonKind::NodeUnavailable,
                format!("{} node(s) unhealthy or unschedulable", f.unavailable),
                None,
                None,
                f.unavailable,
            );
            push(
                PendingReasonKind::NodeUnavailable,
                format!(
                    "{} node(s) have a maintenance window near (new services avoid them)",
                    f.closing
                ),
                Some("maintenance".into()),
                None,
                f.closing,
            );
            push(
                PendingReasonKind::ConstraintFiltered,
                format!(
                    "{} node(s) dedicated to another role (or not dedicated)",
                    f.dedicated
                ),
                Some("dedicated".into()),
                None,
                f.dedicated,
            );
            push(
                PendingReasonKind::ConstraintFiltered,
                match task.runtime {
                    Some(kind) => format!(
                        "{} node(s) do not offer the {} runtime",
                        f.runtime,
                        kind.as_str()
                    ),
                    None => format!(
                        "{} node(s) cannot run tasks that name no runtime (their default runtime is not up)",
                        f.runtime
                    ),
                },
                Some("runtime".into()),
                None,
                f.runtime,
            );
            for (i, n) in f.attribute.iter().enumerate() {
                let c = &task.constraints.attributes[i];
                push(
                    PendingReasonKind::ConstraintFiltered,
                    format!(
                        "{n} node(s) fail {} {:?} {:?}",
                        c.name, c.operator, c.values
                    ),
                    Some(c.name.clone()),
                    None,
                    *n,
                );
            }
            push(
                PendingReasonKind::ConstraintFiltered,
                format!("{} node(s) already run the job's host limit", f.host_limit),
                Some("hostLimit".into()),
                None,
                f.host_limit,
            );
            push(
                PendingReasonKind::ReservationMismatch,
                format!(
                    "{} node(s) have room only in other roles' reservations",
                    f.reservation
                ),
                None,
                None,
                f.reservation,
            );
            push(
                PendingReasonKind::InsufficientResources,
                format!("{} node(s) have no revocable capacity", f.no_revocable),
                Some("revocable".into()),
                None,
                f.no_revocable,
            );
            let fixed: Vec<String> = task.ports.iter().flatten().map(u16::to_string).collect();
            push(
                PendingReasonKind::InsufficientResources,
                format!(
                    "{} node(s) already have a task on the fixed port(s) it needs ({})",
                    f.port_taken,
                    fixed.join(", ")
                ),
                Some(fixed.join(",")),
                Some("ports".into()),
                f.port_taken,
            );
            let assigned = task.ports.iter().filter(|p| p.is_none()).count();
            push(
                PendingReasonKind::InsufficientResources,
                format!(
                    "{} node(s) have fewer than {assigned} free port(s) in their ranges",
                    f.ports_exhausted
                ),
                None,
                Some("ports".into()),
                f.ports_exhausted,
            );
            for (dim, n) in &f.exhausted {
                let name = snap.dims.name(*dim).to_owned();
                push(
                    PendingReasonKind::InsufficientResources,
                    format!(
                        "{n} node(s) lack {} {name}",
                        quantity(&name, task.request.0[*dim])
                    ),
                    None,
                    Some(name.clone()),
                    *n,
                );
            }
            if f.nodes == 0 {
                reasons.push(PendingReason {
                    kind: PendingReasonKind::NodeUnavailable,
                    message: "no nodes are registered".into(),
                    resource: None,
                    subject: None,
                    nodes: Some(0),
                    needed: None,
                    available: None,
                });
            }
        }
    }
    let summary = match why {
        Unplaced::Quota { .. }
        | Unplaced::Borrowing { .. }
        | Unplaced::Guarantee { .. }
        | Unplaced::Preempting { .. }
        | Unplaced::Gang { .. } => {
            format!(
                "pending: {}",
                reasons
                    .first()
                    .map(|r| r.message.clone())
                    .unwrap_or_default()
            )
        }
        Unplaced::NoNode(f) => format!(
            "pending: 0/{} nodes fit: {}",
            f.nodes,
            reasons
                .iter()
                .map(|r| r.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    PendingExplanation {
        summary,
        reasons,
        evaluated_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            now,
        )),
    }
}
