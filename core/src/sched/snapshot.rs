//! The cluster as the scheduler sees it, updated incrementally.
//!
//! Nodes with their capacity (regular and revocable), reservations per role,
//! usage and health; roles and quotas; the tasks bound to each node. Binding
//! and unbinding a task update the usage of its node, its role (and the
//! role's ancestors) and the indexes in O(log n). Invariants kept by every
//! method: no node's usage exceeds its capacity in any pool; a role's
//! reserved capacity is used by that role only.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;

use corral_api::Tier;
use corral_api::job::Constraints;
use corral_api::node::RuntimeKind;

use super::ports::NodePorts;
use super::res::{Dims, Res};

/// Index of a node in the snapshot.
pub type NodeId = u32;

/// What the scheduler knows about a task.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedTask {
    /// `namespace/name`.
    pub key: String,
    /// `namespace/job`, for host limits.
    pub job: String,
    /// The owning role.
    pub role: String,
    /// What it needs.
    pub request: Res,
    /// Its tier.
    pub tier: Tier,
    /// Its priority within the role.
    pub priority: i32,
    /// Placement constraints.
    pub constraints: Constraints,
    /// The runtime it asks for (None: the node's default).
    pub runtime: Option<RuntimeKind>,
    /// The host ports it needs, in its job's order: fixed, or (None) to be
    /// assigned from its node's ranges. A task seen bound names the ports
    /// it was assigned, all fixed.
    pub ports: Vec<Option<u16>>,
    /// When it was created (older first; youngest victims first).
    pub created: jiff::Timestamp,
    /// When it started running, if it has (minimum runtime before preemption).
    pub started: Option<jiff::Timestamp>,
    /// Its job's gang size: it is bound only in a cycle that brings its
    /// job's bound tasks to at least this many (None: placed alone).
    pub gang: Option<u32>,
    /// A service's task: long-running, it avoids nodes whose maintenance
    /// window is near.
    pub long_running: bool,
}

/// A role's place in the hierarchy and its quota.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleInfo {
    /// Weight under DRF.
    pub weight: f64,
    /// Parent role.
    pub parent: Option<String>,
    /// Hard ceiling per slot (a zero-and-unset slot means unlimited: see `limited`).
    pub limit: Res,
    /// Which slots of `limit` are set.
    pub limited: [bool; super::res::MAX_DIMS],
    /// Guaranteed capacity: protected for the role (see [`super::guarantee`]).
    pub guarantee: Res,
    /// Whether other roles may borrow the unused part of `guarantee`.
    pub lend_unused: bool,
    /// Whether this role may use other roles' unused guarantees.
    pub borrow: bool,
    /// How far beyond `guarantee` its regular usage may go, per slot
    /// (only the slots set in `borrow_capped`).
    pub borrowing_limit: Res,
    /// Which slots of `borrowing_limit` are set.
    pub borrow_capped: [bool; super::res::MAX_DIMS],
}

impl Default for RoleInfo {
    fn default() -> Self {
        RoleInfo {
            weight: 1.0,
            parent: None,
            limit: Res::ZERO,
            limited: [false; super::res::MAX_DIMS],
            guarantee: Res::ZERO,
            lend_unused: true,
            borrow: true,
            borrowing_limit: Res::ZERO,
            borrow_capped: [false; super::res::MAX_DIMS],
        }
    }
}

/// One node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// Its name.
    pub name: String,
    /// Heartbeating and able to run tasks.
    pub healthy: bool,
    /// Not cordoned / drained.
    pub schedulable: bool,
    /// Its maintenance window is near: long-running tasks avoid it (other
    /// work may still use it until its drain begins).
    pub closing: bool,
    /// Attributes for constraints.
    pub attributes: BTreeMap<String, String>,
    /// The runtimes it offers.
    pub runtimes: Runtimes,
    /// The role the node is dedicated to, if any.
    pub dedicated: Option<String>,
    /// Regular capacity.
    pub allocatable: Res,
    /// Oversubscribed capacity for revocable tasks.
    pub revocable: Res,
    /// Capacity reserved per role (static and dynamic).
    pub reserved: BTreeMap<String, Res>,
    /// Usage of each role within its reservation.
    pub used_reserved: BTreeMap<String, Res>,
    /// Usage of the unreserved regular capacity.
    pub used_shared: Res,
    /// Usage of the revocable capacity.
    pub used_revocable: Res,
    /// Tasks per job on this node (host limits).
    pub per_job: HashMap<String, u32>,
    /// Host ports offered and held.
    pub ports: NodePorts,
}

/// The runtimes a node offers, as its agent reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtimes {
    /// The ones its agent set up; empty when not reported (any task fits).
    pub offered: Vec<RuntimeKind>,
    /// The one that runs tasks that name none (the first its agent names).
    pub default: Option<RuntimeKind>,
}

impl Runtimes {
    /// Whether a task asking for `wanted` (None: the node's default) can
    /// run on the node. A simulated node stands in for any runtime.
    pub fn run(&self, wanted: Option<RuntimeKind>) -> bool {
        if self.offered.is_empty() || self.offered.contains(&RuntimeKind::Simulated) {
            return true;
        }
        match wanted.or(self.default) {
            Some(kind) => self.offered.contains(&kind),
            None => true,
        }
    }
}

impl NodeState {
    /// A healthy, schedulable node with `allocatable` capacity.
    pub fn new(name: &str, allocatable: Res) -> Self {
        NodeState {
            name: name.to_owned(),
            healthy: true,
            schedulable: true,
            closing: false,
            attributes: BTreeMap::new(),
            runtimes: Runtimes::default(),
            dedicated: None,
            allocatable,
            revocable: Res::ZERO,
            reserved: BTreeMap::new(),
            used_reserved: BTreeMap::new(),
            used_shared: Res::ZERO,
            used_revocable: Res::ZERO,
            per_job: HashMap::default(),
            ports: NodePorts::default(),
        }
    }

    /// Regular capacity not reserved for any role.
    pub fn unreserved(&self) -> Res {
        let reserved = self.reserved.values().fold(Res::ZERO, |a, r| a.plus(*r));
        self.allocatable.minus_floor(reserved)
    }

    /// Unreserved capacity still free.
    pub fn free_shared(&self) -> Res {
        self.unreserved().minus(self.used_shared)
    }

    /// What `role` may still use here: free unreserved capacity plus its own free reservation.
    pub fn free_for(&self, role: &str) -> Res {
        let own = self.reserved.get(role).copied().unwrap_or(Res::ZERO);
        let used = self.used_reserved.get(role).copied().unwrap_or(Res::ZERO);
        self.free_shared().plus(own.minus(used))
    }

    /// Revocable capacity still free.
    pub fn free_revocable(&self) -> Res {
        self.revocable.minus(self.used_revocable)
    }

    /// True when new tasks may be placed here.
    pub fn usable(&self) -> bool {
        self.healthy && self.schedulable
    }
}

/// Where a bound task's resources came from, to give them back exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The task.
    pub task: SchedTask,
    /// Its node.
    pub node: NodeId,
    /// The part taken from its role's reservation.
    pub from_reserved: Res,
    /// True when it runs on revocable capacity.
    pub revocable: bool,
    /// The host ports it holds, in the order its task names them.
    pub ports: Vec<u16>,
}

/// A bound task, packed for the preemption scan: plain numbers, contiguous
/// per node, so scanning thousands of nodes touches no scattered memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Lite {
    /// The task key (dereferenced only for chosen victims and exact ties).
    pub key: std::sync::Arc<str>,
    /// Interned role id.
    pub role: u32,
    /// Tier rank (revocable 0 … preferred 2).
    pub tier_rank: u8,
    /// Priority.
    pub priority: i32,
    /// Creation time, seconds.
    pub created: i64,
    /// Start time, seconds, if started.
    pub started: Option<i64>,
    /// Its request.
    pub request: Res,
    /// The part of it taken from its role's reservation.
    pub from_reserved: Res,
    /// True for holds (never victims).
    pub hold: bool,
    /// True while the scheduler's binding of it is not yet known to have
    /// landed (never a victim: it may still be PENDING in the store).
    pub in_flight: bool,
}

/// Why a change to the snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// No node of that name.
    #[error("no node {0:?}")]
    UnknownNode(String),
    /// The task is already bound.
    #[error("task {0:?} is already bound")]
    AlreadyBound(String),
    /// The node cannot hold the task.
    #[error("task {task:?} does not fit on node {node:?}")]
    DoesNotFit {
        /// The task.
        task: String,
        /// The node.
        node: String,
    },
}

/// The whole cluster.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Resource slot names.
    pub dims: Dims,
    pub(crate) nodes: Vec<NodeState>,
    by_name: HashMap<String, NodeId>,
    pub(crate) bound: HashMap<String, Binding>,
    pub(crate) on_node: Vec<BTreeSet<String>>,
    /// Bound tasks per node, packed for the preemption scan.
    pub(crate) lite: Vec<Vec<Lite>>,
    /// Interned role names.
    role_ids: HashMap<String, u32>,
    /// Regular-pool index: (free unreserved CPU, node) of usable, non-dedicated nodes.
    pub(crate) shared_index: BTreeSet<(i64, NodeId)>,
    shared_key: Vec<Option<i64>>,
    /// Revocable-pool index: (free revocable CPU, node) of usable nodes.
    pub(crate) revocable_index: BTreeSet<(i64, NodeId)>,
    revocable_key: Vec<Option<i64>>,
    /// Each node's share of `usable_total` (its allocatable while usable).
    total_key: Vec<Option<Res>>,
    /// Regular capacity of usable nodes, kept up to date by `reindex_pools`.
    usable_total: Res,
    /// Nodes a role has reservations on or is dedicated to.
    pub(crate) role_nodes: HashMap<String, BTreeSet<NodeId>>,
    /// Roles and quotas.
    pub roles: HashMap<String, RoleInfo>,
    /// Usage per role (its own tasks, not its children's).
    pub(crate) role_usage: HashMap<String, Res>,
    /// Usage of the regular (non-revocable) pool per role (its own tasks).
    pub(crate) role_regular: HashMap<String, Res>,
    /// Usage of the regular pool by all tasks.
    pub(crate) regular_used: Res,
    /// Bound tasks per job (`namespace/job`), for gangs.
    job_bound: HashMap<String, u32>,
}

impl Snapshot {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many of job `job`'s tasks (`namespace/job`) are bound.
    pub fn bound_of_job(&self, job: &str) -> u32 {
        self.job_bound.get(job).copied().unwrap_or(0)
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> &NodeState {
        &self.nodes[id as usize]
    }

    /// The id of node `name`.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The binding of a task, if bound.
    pub fn binding(&self, task: &str) -> Option<&Binding> {
        self.bound.get(task)
    }

    /// The tasks bound to a node.
    pub fn tasks_on(&self, id: NodeId) -> impl Iterator<Item = &Binding> {
        self.on_node[id as usize]
            .iter()
            .filter_map(|k| self.bound.get(k))
    }

    /// Total regular capacity of usable nodes.
    pub fn total(&self) -> Res {
        self.usable_total
    }

    fn reindex(&mut self, id: NodeId) {
        self.reindex_pools(id);
        self.reindex_roles(id);
    }

    /// Re-keys a node in the pool indexes after its usage changed.
    fn reindex_pools(&mut self, id: NodeId) {
        let i = id as usize;
        if let Some(k) = self.shared_key[i].take() {
            self.shared_index.remove(&(k, id));
        }
        if let Some(k) = self.revocable_key[i].take() {
            self.revocable_index.remove(&(k, id));
        }
        if let Some(r) = self.total_key[i].take() {
            self.usable_total = self.usable_total.minus(r);
        }
        let n = &self.nodes[i];
        if n.usable() {
            self.usable_total = self.usable_total.plus(n.allocatable);
            self.total_key[i] = Some(n.allocatable);
            if n.dedicated.is_none() {
                let k = n.free_shared().0[0];
                self.shared_index.insert((k, id));
                self.shared_key[i] = Some(k);
            }
            if !n.revocable.is_zero() {
                let k = n.free_revocable().0[0];
                self.revocable_index.insert((k, id));
                self.revocable_key[i] = Some(k);
            }
        }
    }

    /// Re-files a node under the roles it serves after its description changed.
    fn reindex_roles(&mut self, id: NodeId) {
        let i = id as usize;
        let n = &self.nodes[i];
        let roles: Vec<String> = n
            .reserved
            .keys()
            .cloned()
            .chain(n.dedicated.clone())
            .collect();
        for set in self.role_nodes.values_mut() {
            set.remove(&id);
        }
        if self.nodes[i].usable() {
            for r in roles {
                self.role_nodes.entry(r).or_default().insert(id);
            }
        }
    }

    /// Adds or replaces a node's description (capacity, reservations, health,
    /// attributes), keeping the tasks bound to it.
    pub fn upsert_node(&mut self, mut node: NodeState) -> NodeId {
        node.dedicated = node
            .attributes
            .get(corral_api::node::DEDICATED_ATTRIBUTE)
            .cloned()
            .or(node.dedicated);
        let id = match self.by_name.get(&node.name) {
            Some(&id) => {
                let old = &self.nodes[id as usize];
                node.used_reserved = old.used_reserved.clone();
                node.used_shared = old.used_shared;
                node.used_revocable = old.used_revocable;
                node.per_job = old.per_job.clone();
                node.ports = old.ports.reoffered(node.ports.ranges());
                self.nodes[id as usize] = node;
                id
            }
            None => {
                let id = NodeId::try_from(self.nodes.len()).unwrap_or(NodeId::MAX);
                self.by_name.insert(node.name.clone(), id);
                self.nodes.push(node);
                self.on_node.push(BTreeSet::new());
                self.lite.push(Vec::new());
                self.shared_key.push(None);
                self.revocable_key.push(None);
                self.total_key.push(None);
                id
            }
        };
        self.reindex(id);
        id
    }

    /// The interned id of a role name.
    pub fn role_id(&mut self, role: &str) -> u32 {
        let next = u32::try_from(self.role_ids.len()).unwrap_or(u32::MAX);
        *self.role_ids.entry(role.to_owned()).or_insert(next)
    }

    /// The interned id of a role name, if it was seen.
    pub fn known_role_id(&self, role: &str) -> Option<u32> {
        self.role_ids.get(role).copied()
    }

    /// Marks a node healthy or not.
    pub fn set_health(&mut self, name: &str, healthy: bool) -> Result<(), SnapshotError> {
        let id = self
            .node_id(name)
            .ok_or_else(|| SnapshotError::UnknownNode(name.to_owned()))?;
        self.nodes[id as usize].healthy = healthy;
        self.reindex(id);
        Ok(())
    }

    /// Records a role (weight, parent, quota).
    pub fn upsert_role(&mut self, name: &str, info: RoleInfo) {
        self.roles.insert(name.to_owned(), info);
    }

    /// The role's usage including its descendants'.
    pub fn role_usage_with_children(&self, role: &str) -> Res {
        self.role_usage
            .iter()
            .filter(|(r, _)| self.descends_from(r, role))
            .fold(Res::ZERO, |acc, (_, u)| acc.plus(*u))
    }

    /// The role's use of the regular pool, including its descendants'.
    pub fn regular_usage_with_children(&self, role: &str) -> Res {
        self.role_regular
            .iter()
            .filter(|(r, _)| self.descends_from(r, role))
            .fold(Res::ZERO, |acc, (_, u)| acc.plus(*u))
    }

    /// True when `role` is `ancestor` or one of its descendants (without
    /// allocating: this runs for every role on every placement decision).
    pub fn descends_from(&self, role: &str, ancestor: &str) -> bool {
        let mut cur = role;
        // Deeper than any sane tree: a cycle in `parent` ends the walk.
        for _ in 0..64 {
            if cur == ancestor {
                return true;
            }
            match self.roles.get(cur).and_then(|r| r.parent.as_deref()) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    }

    /// `role` and its ancestors, nearest first.
    pub fn ancestors(&self, role: &str) -> Vec<String> {
        let mut out = vec![role.to_owned()];
        let mut cur = role.to_owned();
        while let Some(p) = self.roles.get(&cur).and_then(|r| r.parent.clone()) {
            if out.contains(&p) {
                break;
            }
            out.push(p.clone());
            cur = p;
        }
        out
    }

    /// Binds `task` to node `node` (the caller checked feasibility with
    /// [`super::place`]); takes from the role's reservation first.
    pub fn bind(&mut self, task: SchedTask, node: NodeId) -> Result<(), SnapshotError> {
        if self.bound.contains_key(&task.key) {
            return Err(SnapshotError::AlreadyBound(task.key));
        }
        let n = &mut self.nodes[node as usize];
        let revocable = task.tier == Tier::Revocable;
        let fits = if revocable {
            n.free_revocable().fits(&task.request)
        } else {
            n.free_for(&task.role).fits(&task.request)
        };
        let ports = if !fits {
            None
        } else if task.ports.is_empty() {
            Some(Vec::new())
        } else {
            n.ports.take(&task.ports).ok()
        };
        let Some(ports) = ports else {
            return Err(SnapshotError::DoesNotFit {
                task: task.key,
                node: n.name.clone(),
            });
        };
        let mut from_reserved = Res::ZERO;
        if revocable {
            n.used_revocable = n.used_revocable.plus(task.request);
        } else {
            let own = n.reserved.get(&task.role).copied().unwrap_or(Res::ZERO);
            let used = n
                .used_reserved
                .get(&task.role)
                .copied()
                .unwrap_or(Res::ZERO);
            from_reserved = task.request.min(own.minus_floor(used));
            if !from_reserved.is_zero() {
                let e = n.used_reserved.entry(task.role.clone()).or_default();
                *e = e.plus(from_reserved);
            }
            n.used_shared = n.used_shared.plus(task.request.minus(from_reserved));
        }
        *n.per_job.entry(task.job.clone()).or_default() += 1;
        *self.job_bound.entry(task.job.clone()).or_default() += 1;
        let usage = self.role_usage.entry(task.role.clone()).or_default();
        *usage = usage.plus(task.request);
        if !revocable {
            let regular = self.role_regular.entry(task.role.clone()).or_default();
            *regular = regular.plus(task.request);
            self.regular_used = self.regular_used.plus(task.request);
        }
        self.on_node[node as usize].insert(task.key.clone());
        let role = self.role_id(&task.role);
        self.lite[node as usize].push(Lite {
            key: std::sync::Arc::from(task.key.as_str()),
            role,
            tier_rank: task.tier.rank(),
            priority: task.priority,
            created: task.created.as_second(),
            started: task.started.map(|t| t.as_second()),
            request: task.request,
            from_reserved,
            hold: task.key.starts_with(super::preempt::HOLD_PREFIX),
            in_flight: false,
        });
        self.bound.insert(
            task.key.clone(),
            Binding {
                task,
                node,
                from_reserved,
                revocable,
                ports,
            },
        );
        self.reindex_pools(node);
        Ok(())
    }

    /// Marks a bound task's binding as written but not yet seen in the store
    /// (`true`) or as seen (`false`). Tasks in flight are never victims.
    /// Returns false when the task is not bound.
    pub fn set_in_flight(&mut self, key: &str, in_flight: bool) -> bool {
        let Some(node) = self.bound.get(key).map(|b| b.node) else {
            return false;
        };
        match self.lite[node as usize].iter_mut().find(|l| &*l.key == key) {
            Some(l) => {
                l.in_flight = in_flight;
                true
            }
            None => false,
        }
    }

    /// True when `key` is bound and its binding is in flight.
    pub fn in_flight(&self, key: &str) -> bool {
        self.bound.get(key).is_some_and(|b| {
            self.lite[b.node as usize]
                .iter()
                .any(|l| &*l.key == key && l.in_flight)
        })
    }

    /// Unbinds a task (it ended, or was evicted), giving its resources back.
    pub fn unbind(&mut self, key: &str) -> Option<Binding> {
        let b = self.bound.remove(key)?;
        let n = &mut self.nodes[b.node as usize];
        if b.revocable {
            n.used_revocable = n.used_revocable.minus(b.task.request);
        } else {
            if let Some(e) = n.used_reserved.get_mut(&b.task.role) {
                *e = e.minus(b.from_reserved);
            }
            n.used_shared = n.used_shared.minus(b.task.request.minus(b.from_reserved));
        }
        n.ports.release(&b.ports);
        if let Some(c) = n.per_job.get_mut(&b.task.job) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                n.per_job.remove(&b.task.job);
            }
        }
        if let Some(c) = self.job_bound.get_mut(&b.task.job) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.job_bound.remove(&b.task.job);
            }
        }
        if let Some(u) = self.role_usage.get_mut(&b.task.role) {
            *u = u.minus(b.task.request);
        }
        if !b.revocable {
            if let Some(u) = self.role_regular.get_mut(&b.task.role) {
                *u = u.minus(b.task.request);
            }
            self.regular_used = self.regular_used.minus(b.task.request);
        }
        self.on_node[b.node as usize].remove(key);
        let lite = &mut self.lite[b.node as usize];
        if let Some(i) = lite.iter().position(|l| &*l.key == key) {
            lite.swap_remove(i);
        }
        self.reindex_pools(b.node);
        Some(b)
    }

    /// True when no node's usage exceeds its capacity and no reservation is
    /// over-used (checked by tests and debug assertions).
    pub fn consistent(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.free_shared().non_negative()
                && n.free_revocable().non_negative()
                && n.reserved.iter().all(|(r, cap)| {
                    cap.minus(n.used_reserved.get(r).copied().unwrap_or(Res::ZERO))
                        .non_negative()
                })
                && n.used_reserved.keys().all(|r| n.reserved.contains_key(r))
        }) && self.usable_total
            == self
                .nodes
                .iter()
                .filter(|n| n.usable())
                .fold(Res::ZERO, |a, n| a.plus(n.allocatable))
            && self.regular_used
                == self
                    .role_regular
                    .values()
                    .fold(Res::ZERO, |a, u| a.plus(*u))
    }
}
