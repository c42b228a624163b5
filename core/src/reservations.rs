//! Which reservations are in force on a node, and how much of each is used.
//!
//! A node's static reservations (its agent's `--reserved`) come first; then
//! its dynamic ones, oldest first (then by name). Each is applied while
//! what the node can give tasks (`allocatable`) still holds it after those
//! applied before; one that does not fit is not applied — it reserves
//! nothing, so it never over-commits the node — and says which resource is
//! short. A reservation on a node that is not registered is not applied
//! either. The scheduler and the status writer decide with this one
//! function, so what a Reservation's status says is what placement does.

use corral_api::resources::MilliResources;

/// Whether one reservation is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// In force.
    Applied,
    /// No node of that name is registered.
    NodeNotFound,
    /// The node cannot hold it beside what is reserved before it.
    Insufficient {
        /// The resource short.
        resource: String,
        /// What it reserves of it (milli-units).
        needed: i64,
        /// What is left of it for it (milli-units).
        available: i64,
    },
}

/// One dynamic reservation, as decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dynamic<'a> {
    /// Its name.
    pub name: &'a str,
    /// When it was created (Unix seconds; older first).
    pub created: i64,
    /// What it reserves.
    pub resources: MilliResources,
}

/// The verdict on each of `dynamic` for a node offering `allocatable`
/// (None: not registered) with `fixed` reserved by its agent; in the order
/// given.
pub fn decide(
    allocatable: Option<&MilliResources>,
    fixed: &MilliResources,
    dynamic: &[Dynamic],
) -> Vec<Verdict> {
    let Some(allocatable) = allocatable else {
        return vec![Verdict::NodeNotFound; dynamic.len()];
    };
    let mut order: Vec<usize> = (0..dynamic.len()).collect();
    order.sort_by(|&a, &b| {
        (dynamic[a].created, dynamic[a].name).cmp(&(dynamic[b].created, dynamic[b].name))
    });
    let mut left = allocatable.minus(fixed);
    let mut out = vec![Verdict::Applied; dynamic.len()];
    for i in order {
        let r = &dynamic[i].resources;
        let short =
            r.0.iter()
                .find(|(name, amount)| **amount > left.get(name).max(0));
        match short {
            Some((name, amount)) => {
                out[i] = Verdict::Insufficient {
                    resource: name.clone(),
                    needed: *amount,
                    available: left.get(name).max(0),
                };
            }
            None => left = left.minus(r),
        }
    }
    out
}

/// What of `reserved` the role's tasks on the node (`held`, their total)
/// use: their total, capped by the reservation, per resource it names.
pub fn used(reserved: &MilliResources, held: &MilliResources) -> MilliResources {
    MilliResources(
        reserved
            .0
            .iter()
            .filter_map(|(name, r)| {
                let u = held.get(name).min(*r);
                (u > 0).then(|| (name.clone(), u))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn m(pairs: &[(&str, i64)]) -> MilliResources {
        MilliResources(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v * 1000))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn d<'a>(name: &'a str, created: i64, cpus: i64) -> Dynamic<'a> {
        Dynamic {
            name,
            created,
            resources: m(&[("cpus", cpus)]),
        }
    }

    #[test]
    fn reservations_apply_oldest_first_while_the_node_holds_them() {
        let node = m(&[("cpus", 8), ("memory", 16)]);
        let fixed = m(&[("cpus", 2)]);
        // 6 CPUs left: b (oldest, 4) fits, a (3) does not, c (2) does.
        let verdicts = decide(
            Some(&node),
            &fixed,
            &[d("a", 20, 3), d("b", 10, 4), d("c", 30, 2)],
        );
        assert_eq!(
            verdicts,
            vec![
                Verdict::Insufficient {
                    resource: "cpus".into(),
                    needed: 3000,
                    available: 2000
                },
                Verdict::Applied,
                Verdict::Applied,
            ]
        );
        // Same age: by name.
        let tie = decide(Some(&node), &fixed, &[d("y", 10, 4), d("x", 10, 4)]);
        assert_eq!(tie[1], Verdict::Applied);
        assert!(matches!(tie[0], Verdict::Insufficient { .. }));
        // A resource the node lacks altogether.
        let gpu = Dynamic {
            name: "g",
            created: 0,
            resources: m(&[("gpus", 1)]),
        };
        assert!(matches!(
            decide(Some(&node), &fixed, &[gpu])[0],
            Verdict::Insufficient { ref resource, available: 0, .. } if resource == "gpus"
        ));
        assert_eq!(
            decide(None, &fixed, &[d("a", 0, 1)]),
            vec![Verdict::NodeNotFound]
        );
    }

    #[test]
    fn what_is_used_is_capped_by_the_reservation() {
        let reserved = m(&[("cpus", 4), ("memory", 8)]);
        assert_eq!(
            used(&reserved, &m(&[("cpus", 6), ("disk", 1)])),
            m(&[("cpus", 4)])
        );
        assert_eq!(
            used(&reserved, &MilliResources::default()),
            MilliResources::default()
        );
    }
}
