//! Guarantees: capacity protected for a role across the cluster.
//!
//! A Quota's `guarantee` is the role's (and its descendants') protected
//! share of the regular pool. What a role does not use of it is **lent**:
//! other roles may run on it (when the owner has `lendUnused` and they have
//! `borrow`); otherwise it stays free for the owner, whoever else asks.
//! Admission ([`check`]): a task's request must fit in the cluster's free
//! regular capacity minus the other roles' unused guarantees it may not
//! borrow. So the free capacity never drops below what non-lending roles
//! have yet to use of their guarantees.
//!
//! When the owner needs lent capacity back, it **reclaims** it by
//! preemption ([`reclaimable`]): a task whose role stays within its
//! guarantee may evict tasks of roles using more than their own guarantee
//! (borrowers), whatever their tier or priority, but never so many that a
//! borrower falls below its guarantee (which would let it reclaim in turn).
//!
//! Revocable tasks run on the revocable pool and have nothing to do with
//! guarantees.

use corral_api::Tier;

use super::place::Unplaced;
use super::res::{MAX_DIMS, Res};
use super::snapshot::{RoleInfo, SchedTask, Snapshot};

/// True when the task's role (with its descendants) stays within its
/// guarantee with the task placed, in every resource the guarantee names
/// (a guarantee of CPUs says nothing about memory).
pub fn within(snap: &Snapshot, task: &SchedTask) -> bool {
    let Some(info) = snap.roles.get(&task.role) else {
        return false;
    };
    if task.tier == Tier::Revocable || info.guarantee.is_zero() {
        return false;
    }
    let after = snap
        .regular_usage_with_children(&task.role)
        .plus(task.request);
    (0..MAX_DIMS)
        .filter(|&i| info.guarantee.0[i] > 0)
        .all(|i| after.0[i] <= info.guarantee.0[i])
}

/// True when guarantees concern `task` at all: it is not revocable and some
/// role has a guarantee.
fn concerned(snap: &Snapshot, task: &SchedTask) -> bool {
    task.tier != Tier::Revocable && snap.roles.values().any(|r| !r.guarantee.is_zero())
}

/// The other roles whose unused guarantee `role` may not use: all that have
/// one when it may not borrow, else those that do not lend. Its own
/// ancestors' guarantees cover it, so they never protect against it.
fn protecting<'a>(
    snap: &'a Snapshot,
    role: &str,
) -> impl Iterator<Item = (&'a String, &'a RoleInfo)> + 'a {
    let lineage = snap.ancestors(role);
    let borrows = snap.roles.get(role).is_none_or(|r| r.borrow);
    snap.roles.iter().filter(move |(name, info)| {
        !info.guarantee.is_zero() && !lineage.contains(name) && (!borrows || !info.lend_unused)
    })
}

/// The unused guarantees of the roles [`protecting`] against `role`.
pub fn protected_from(snap: &Snapshot, role: &str) -> Res {
    protecting(snap, role).fold(Res::ZERO, |acc, (name, info)| {
        acc.plus(
            info.guarantee
                .minus_floor(snap.regular_usage_with_children(name)),
        )
    })
}

/// Checks that placing `task` leaves every guarantee it must respect intact.
pub fn check(snap: &Snapshot, task: &SchedTask) -> Result<(), Unplaced> {
    if !concerned(snap, task) {
        return Ok(());
    }
    let protected = protected_from(snap, &task.role);
    if protected.is_zero() {
        return Ok(());
    }
    let open = snap
        .total()
        .minus_floor(snap.regular_used)
        .minus_floor(protected);
    match open.short(&task.request).next() {
        None => Ok(()),
        Some(i) => Err(Unplaced::Guarantee {
            resource: snap.dims.name(i).to_owned(),
            needed: task.request.0[i],
            available: open.0[i],
            protected: protected.0[i],
        }),
    }
}

/// For a task within its role's guarantee: per role id, how much each
/// borrower may give back (what it uses beyond its own guarantee). Empty
/// when the task may not reclaim.
pub fn reclaimable(snap: &Snapshot, task: &SchedTask) -> Vec<(u32, Res)> {
    if !within(snap, task) {
        return Vec::new();
    }
    let lineage = snap.ancestors(&task.role);
    snap.roles
        .iter()
        .filter(|(name, _)| !lineage.contains(name))
        .filter_map(|(name, info)| {
            let id = snap.known_role_id(name)?;
            let over = snap
                .regular_usage_with_children(name)
                .minus_floor(info.guarantee);
            (!over.is_zero()).then_some((id, over))
        })
        .chain(
            // Roles without a Quota object guarantee nothing: all they use is borrowed.
            snap.role_regular
                .iter()
                .filter(|(name, used)| {
                    !snap.roles.contains_key(*name) && !lineage.contains(name) && !used.is_zero()
                })
                .filter_map(|(name, used)| Some((snap.known_role_id(name)?, *used))),
        )
        .collect()
}

/// The guarantee check of a preemption: whether the task is admitted once
/// given victims are gone (freed capacity counts, minus what their roles'
/// protected guarantees take back).
#[derive(Debug, Clone)]
pub struct Gate {
    /// What the task asks for (zero: no constraint).
    request: Res,
    /// Free capacity open to the task now.
    open: Res,
    /// Guarantees protected from the task: (guarantee, usage, role ids
    /// counted in that usage).
    protected: Vec<(Res, Res, Vec<u32>)>,
}

impl Gate {
    /// The gate for `task` in `snap`.
    pub fn new(snap: &Snapshot, task: &SchedTask) -> Self {
        let none = Gate {
            request: Res::ZERO,
            open: Res::ZERO,
            protected: Vec::new(),
        };
        if !concerned(snap, task) {
            return none;
        }
        let protected: Vec<(Res, Res, Vec<u32>)> = protecting(snap, &task.role)
            .map(|(name, info)| {
                let members = snap
                    .role_regular
                    .keys()
                    .filter(|r| snap.descends_from(r, name))
                    .filter_map(|r| snap.known_role_id(r))
                    .collect();
                (
                    info.guarantee,
                    snap.regular_usage_with_children(name),
                    members,
                )
            })
            .collect();
        let held = protected
            .iter()
            .fold(Res::ZERO, |a, (g, u, _)| a.plus(g.minus_floor(*u)));
        if held.is_zero() {
            return none;
        }
        Gate {
            request: task.request,
            open: snap
                .total()
                .minus_floor(snap.regular_used)
                .minus_floor(held),
            protected,
        }
    }

    /// True when the task is admitted once `victims` (role id, request) are gone.
    pub fn admits(&self, victims: impl Iterator<Item = (u32, Res)> + Clone) -> bool {
        if self.request.is_zero() {
            return true;
        }
        let freed = victims.clone().fold(Res::ZERO, |a, (_, r)| a.plus(r));
        let regrown = self.protected.iter().fold(Res::ZERO, |a, (g, used, ids)| {
            let gone = victims
                .clone()
                .filter(|(role, _)| ids.contains(role))
                .fold(Res::ZERO, |a, (_, r)| a.plus(r));
            let before = g.minus_floor(*used);
            let after = g.minus_floor(used.minus_floor(gone));
            a.plus(after.minus(before))
        });
        self.open
            .plus(freed)
            .minus_floor(regrown)
            .fits(&self.request)
    }
}

/// Takes `request` out of what `left` may still give back, if it all fits.
pub fn take(left: &mut Res, request: &Res) -> bool {
    if !left.fits(request) {
        return false;
    }
    *left = left.minus(*request);
    true
}
