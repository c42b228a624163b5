//! What-if plans, decided purely: the scheduler's own allocation cycle
//! (placement, queues, preemption with its rules) run over a copy of the
//! cluster with the planned Jobs' instances added as pending tasks, or the
//! planned Quotas in place of the roles' own. Nothing here writes anything:
//! the answer is where each instance would land, whom it would preempt
//! (by name, with the rule), what would stay pending and why, which pending
//! tasks would start, and what each role concerned would hold against its
//! quota. See `corral_api::plan`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use corral_api::plan::{PlanStatus, PlannedInstance, PlannedStart, PlannedVictim, RoleEffect};
use corral_api::resources::MilliResources;
use corral_api::{Job, Node, Quota, Reservation, Role, Task};

use crate::sched::objects::{self, TaskState};
use crate::sched::preempt::Rules;
use crate::sched::res::{Dims, MAX_DIMS, Res};
use crate::sched::{Allocator, Policy, SchedTask, Snapshot, Unplaced, explain};

/// The cluster as it is.
#[derive(Debug, Clone, Copy)]
pub struct World<'a> {
    /// Every Node.
    pub nodes: &'a [Arc<Node>],
    /// Every Reservation.
    pub reservations: &'a [Reservation],
    /// Every Role.
    pub roles: &'a [Role],
    /// Every Quota.
    pub quotas: &'a [Quota],
    /// Every Task.
    pub tasks: &'a [Arc<Task>],
}

/// The scheduler's settings a plan runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bin-pack or spread.
    pub policy: Policy,
    /// Preemption's rules.
    pub rules: Rules,
}

/// The tasks planned job `job` would make (attempt 0 of each instance),
/// as the job controller makes them.
fn planned_tasks(job: &Job) -> Vec<Task> {
    let ns = job.metadata.namespace.as_deref().unwrap_or("default");
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let s = &job.spec;
    (0..s.instances)
        .filter_map(|i| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "corral.dev/v1alpha1", "kind": "Task",
                "metadata": {"name": crate::jobs::task_name(name, i, 0), "namespace": ns,
                             "labels": {corral_api::job::JOB_KIND_LABEL: s.kind}},
                "spec": {"job": name, "role": s.role, "instanceId": i, "resources": s.resources,
                         "tier": s.tier, "priority": s.priority, "container": s.container,
                         "constraints": s.constraints, "ports": s.ports, "gang": s.gang},
            }))
            .ok()
        })
        .collect()
}

fn resources(dims: &Dims, r: &Res) -> corral_api::Resources {
    MilliResources(
        (0..dims.len().min(MAX_DIMS))
            .filter(|i| r.0[*i] != 0)
            .map(|i| (dims.name(i).to_owned(), r.0[i]))
            .collect(),
    )
    .to_resources()
}

/// The cluster as a scheduler snapshot at `now`, with `quotas` in place of
/// the roles' own and without the tasks of the jobs in `replaced`
/// (namespace, job); the pending tasks, in the scheduler's form.
fn snapshot(
    world: &World<'_>,
    quotas: &[&Quota],
    replaced: &BTreeSet<(&str, &str)>,
    now: i64,
) -> (Snapshot, Vec<SchedTask>) {
    let mut snap = Snapshot::new();
    let mut role_names: BTreeSet<String> = world
        .roles
        .iter()
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    role_names.extend(quotas.iter().map(|q| q.spec.role.clone()));
    for name in &role_names {
        let role = world
            .roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name));
        let quota = quotas.iter().find(|q| &q.spec.role == name).copied();
        let info = objects::role_info(role, quota, &mut snap.dims);
        snap.upsert_role(name, info);
    }
    for node in world.nodes {
        if let Some(state) =
            objects::node_state(node, world.reservations.iter(), &mut snap.dims, now)
        {
            snap.upsert_node(state);
        }
    }
    let mut pending = Vec::new();
    for task in world.tasks {
        let ns = task.metadata.namespace.as_deref().unwrap_or("default");
        if !replaced.is_empty() && replaced.contains(&(ns, task.spec.job.as_str())) {
            continue;
        }
        match objects::task_state(task) {
            TaskState::Pending => pending.extend(objects::sched_task(task, &mut snap.dims)),
            TaskState::Bound(node) => {
                if let (Some(id), Some(t)) = (
                    snap.node_id(&node),
                    objects::sched_task(task, &mut snap.dims),
                ) {
                    // A task bound where it no longer fits is left out,
                    // as the allocation loop leaves it.
                    let _ = snap.bind(t, id);
                }
            }
            TaskState::Ignored => {}
        }
    }
    (snap, pending)
}

/// Plans `jobs` and `quotas` over `world` at `now` (see the module doc).
pub fn plan(
    world: &World<'_>,
    jobs: &[Job],
    quotas: &[Quota],
    settings: Settings,
    now: jiff::Timestamp,
) -> PlanStatus {
    // The planned quotas replace the roles' own.
    let planned_roles: BTreeSet<&str> = quotas.iter().map(|q| q.spec.role.as_str()).collect();
    let in_force: Vec<&Quota> = world
        .quotas
        .iter()
        .filter(|q| !planned_roles.contains(q.spec.role.as_str()))
        .chain(quotas.iter())
        .collect();
    // The planned jobs replace any of the same name (their tasks go).
    let replaced: BTreeSet<(&str, &str)> = jobs
        .iter()
        .map(|j| {
            (
                j.metadata.namespace.as_deref().unwrap_or("default"),
                j.metadata.name.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    let (mut snap, mut pending) = snapshot(world, &in_force, &replaced, now.as_second());
    let existing: BTreeSet<String> = pending.iter().map(|t| t.key.clone()).collect();
    let mut instances: BTreeMap<String, (String, u32)> = BTreeMap::new();
    for job in jobs {
        for t in planned_tasks(job) {
            if let Some(mut st) = objects::sched_task(&t, &mut snap.dims) {
                st.created = now;
                instances.insert(st.key.clone(), (st.job.clone(), t.spec.instance_id));
                pending.push(st);
            }
        }
    }
    let mut concerned: BTreeSet<String> = jobs.iter().map(|j| j.spec.role.clone()).collect();
    concerned.extend(planned_roles.iter().map(|r| (*r).to_owned()));
    let before: BTreeMap<String, Res> = snap
        .roles
        .keys()
        .map(|r| (r.clone(), snap.role_usage_with_children(r)))
        .collect();
    let mut alloc = Allocator::new(settings.policy, settings.rules);
    let decisions = alloc.cycle(&mut snap, pending, now);
    // A quota plan also shows every role that would hold more than its
    // guarantee: what a role within its own may reclaim from.
    if !quotas.is_empty() {
        let borrowers: Vec<String> = snap
            .roles
            .iter()
            .filter(|(name, info)| {
                let used = snap.regular_usage_with_children(name);
                (0..MAX_DIMS).any(|i| info.guarantee.0[i] > 0 && used.0[i] > info.guarantee.0[i])
            })
            .map(|(name, _)| name.clone())
            .collect();
        for b in borrowers {
            concerned.insert(b);
        }
    }
    let mut out = PlanStatus {
        nodes: u32::try_from(snap.node_count()).unwrap_or(u32::MAX),
        ..PlanStatus::default()
    };
    let node_name = |snap: &Snapshot, id| snap.node(id).name.clone();
    let mut victims: BTreeMap<&str, Vec<PlannedVictim>> = BTreeMap::new();
    for e in &decisions.evictions {
        victims
            .entry(e.preemptor.as_str())
            .or_default()
            .push(PlannedVictim {
                task: e.victim.key.clone(),
                role: e.victim.role.clone(),
                rule: e.victim.rule.describe().to_owned(),
            });
    }
    for (key, node) in &decisions.bound {
        match instances.get(key) {
            Some((job, instance)) => out.instances.push(PlannedInstance {
                job: job.clone(),
                instance: *instance,
                node: Some(node_name(&snap, *node)),
                ..PlannedInstance::default()
            }),
            None if existing.contains(key) => out.started.push(PlannedStart {
                task: key.clone(),
                node: node_name(&snap, *node),
            }),
            None => {}
        }
    }
    for (task, why) in &decisions.pending {
        let Some((job, instance)) = instances.get(&task.key) else {
            continue;
        };
        let mut p = PlannedInstance {
            job: job.clone(),
            instance: *instance,
            ..PlannedInstance::default()
        };
        match why {
            Unplaced::Preempting { node, .. } => {
                p.node = Some(node_name(&snap, *node));
                p.preempts = victims.remove(task.key.as_str()).unwrap_or_default();
            }
            other => p.pending = Some(explain(&snap, task, other, now)),
        }
        out.instances.push(p);
    }
    out.instances
        .sort_by(|a, b| (a.job.as_str(), a.instance).cmp(&(b.job.as_str(), b.instance)));
    for role in &concerned {
        out.roles
            .push(effect(&snap, role, before.get(role).unwrap_or(&Res::ZERO)));
    }
    out
}

/// Role `role`'s standing after the plan, against its quota (`before`:
/// what it held before). What it holds is counted as its limit counts it
/// (every tier, its children included); what it borrows, as guarantees
/// count it (the regular pool). Over a lowered limit, the tasks beyond it
/// are named, newest first, as many as would have to go to fit it.
fn effect(snap: &Snapshot, role: &str, before: &Res) -> RoleEffect {
    let info = snap.roles.get(role).cloned().unwrap_or_default();
    let after = snap.role_usage_with_children(role);
    let regular = snap.regular_usage_with_children(role);
    let limit = Res(std::array::from_fn(|i| {
        if info.limited[i] { info.limit.0[i] } else { 0 }
    }));
    let over: Vec<usize> = (0..MAX_DIMS)
        .filter(|i| info.limited[*i] && after.0[*i] > info.limit.0[*i])
        .collect();
    let mut beyond = Vec::new();
    if !over.is_empty() {
        let mut mine: Vec<&super::sched::snapshot::Binding> = snap
            .bound
            .values()
            .filter(|b| {
                !b.task.key.starts_with(super::sched::preempt::HOLD_PREFIX)
                    && snap.descends_from(&b.task.role, role)
            })
            .collect();
        mine.sort_by(|a, b| (b.task.created, &b.task.key).cmp(&(a.task.created, &a.task.key)));
        let mut left = after;
        for b in mine {
            if over.iter().all(|i| left.0[*i] <= info.limit.0[*i]) {
                break;
            }
            left = left.minus(b.task.request);
            beyond.push(b.task.key.clone());
        }
    }
    let reclaimable: Vec<String> = (0..MAX_DIMS)
        .filter(|i| info.guarantee.0[*i] > 0 && regular.0[*i] > info.guarantee.0[*i])
        .map(|i| snap.dims.name(i).to_owned())
        .collect();
    RoleEffect {
        role: role.to_owned(),
        before: resources(&snap.dims, before),
        after: resources(&snap.dims, &after),
        limit: resources(&snap.dims, &limit),
        guarantee: resources(&snap.dims, &info.guarantee),
        over_limit: over.iter().map(|i| snap.dims.name(*i).to_owned()).collect(),
        beyond_limit: beyond,
        reclaimable,
    }
}

#[cfg(test)]
mod tests;
