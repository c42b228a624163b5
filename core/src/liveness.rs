//! Node liveness on the observer's own clock, and the disruption brake (pure).
//!
//! A node is alive while its agent keeps renewing its Lease. What counts is
//! that the lease *changed*, seen on the controller's clock, never the time
//! the agent wrote into it: a node whose clock runs behind is not declared
//! lost while it renews, and one whose clock runs ahead is still declared
//! lost once it stops (Kubernetes' node lifecycle controller does the same
//! with its probe timestamps). Times are durations since any fixed instant
//! the caller picks (a monotonic clock), so nothing here reads a clock.
//!
//! When the controller itself could not see the leases (its watch failed,
//! it just started), it [`Liveness::forgive`]s every node: a renewal it
//! missed is not the node's fault. A silence of every node at once longer
//! than a lease is read the same way (see [`Liveness::observe`]).
//!
//! The disruption brake: when many nodes go stale at once, the control
//! plane, its store or the network to it is a likelier cause than the
//! nodes, so no task is declared lost until fewer are stale ([`brake`]).

use std::collections::BTreeMap;
use std::time::Duration;

/// The default share of stale nodes past which the brake holds (Kubernetes'
/// `--unhealthy-zone-threshold`).
pub const DEFAULT_DISRUPTION_THRESHOLD: f64 = 0.55;

/// The fewest stale nodes that engage the brake: one node going quiet alone
/// is that node's trouble.
pub const MIN_STALE_FOR_BRAKE: usize = 2;

/// What the observer last saw of one node's lease.
#[derive(Debug, Clone, PartialEq)]
struct Renewal {
    /// The lease's renewal as written (any change is a renewal).
    marker: String,
    /// When the observer saw it change.
    seen_at: Duration,
    /// How long the lease lasts.
    lasts: Duration,
}

/// Every leased node's last renewal, on the observer's clock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Liveness {
    nodes: BTreeMap<String, Renewal>,
    /// When the observer last saw any node renew.
    last_renewal: Option<Duration>,
}

impl Liveness {
    /// The lease of `node` as read at `now`: `marker` is its renewal as the
    /// agent wrote it, `lasts` its duration. A node seen for the first time
    /// gets a whole lease from `now`.
    ///
    /// When no node at all was seen renewing for longer than the longest
    /// lease, the silence was the observer's (its store froze, its watch
    /// stalled without failing), not every node's at once: the first
    /// renewal seen after it forgives every node, as a watch known to have
    /// failed does. Renewals arriving one by one after such a silence
    /// would otherwise leave the last few stale, below the brake.
    pub fn observe(&mut self, node: &str, marker: &str, lasts: Duration, now: Duration) {
        let renewed = self.nodes.get(node).is_none_or(|r| r.marker != marker);
        if renewed {
            let longest = self.nodes.values().map(|r| r.lasts).max().unwrap_or(lasts);
            let silent = self
                .last_renewal
                .is_some_and(|last| now.saturating_sub(last) > longest);
            if silent {
                self.forgive(now);
            }
            self.last_renewal = Some(now);
        }
        match self.nodes.get_mut(node) {
            Some(r) if r.marker == marker => r.lasts = lasts,
            Some(r) => {
                r.marker = marker.to_owned();
                r.seen_at = now;
                r.lasts = lasts;
            }
            None => {
                self.nodes.insert(
                    node.to_owned(),
                    Renewal {
                        marker: marker.to_owned(),
                        seen_at: now,
                        lasts,
                    },
                );
            }
        }
    }

    /// Forgets the nodes for which `keep` is false (their lease is gone).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.nodes.retain(|n, _| keep(n));
    }

    /// Every node's lease counts as renewed at `now`: the observer could not
    /// see renewals for a while.
    pub fn forgive(&mut self, now: Duration) {
        for r in self.nodes.values_mut() {
            r.seen_at = now;
        }
    }

    /// Whether `node` renewed within its lease as of `now` (`None`: no lease seen).
    pub fn alive(&self, node: &str, now: Duration) -> Option<bool> {
        let r = self.nodes.get(node)?;
        Some(now.saturating_sub(r.seen_at) <= r.lasts)
    }

    /// The nodes whose lease lapsed as of `now`.
    pub fn stale(&self, now: Duration) -> impl Iterator<Item = &str> + '_ {
        self.nodes
            .iter()
            .filter(move |(_, r)| now.saturating_sub(r.seen_at) > r.lasts)
            .map(|(n, _)| n.as_str())
    }

    /// How many leased nodes are followed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node is followed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Whether the disruption brake holds with `stale` of `total` leased nodes
/// stale: at least [`MIN_STALE_FOR_BRAKE`] of them, and more than
/// `threshold` of all (a threshold of 1 or more never brakes).
pub fn brake(stale: usize, total: usize, threshold: f64) -> bool {
    #[allow(clippy::cast_precision_loss)] // node counts are far below 2^52
    let over = stale as f64 > threshold * total as f64;
    stale >= MIN_STALE_FOR_BRAKE && over
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(40);

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_lease_counts_from_when_its_change_was_seen_not_what_it_says() {
        // The agent's clock is five minutes behind or ahead: the marker's
        // value never matters, only that it changes.
        for marker in ["2026-12-06T21:55:00Z", "2026-12-06T22:05:00Z"] {
            let mut l = Liveness::default();
            l.observe("a", marker, LEASE, s(100));
            assert_eq!(l.alive("a", s(140)), Some(true));
            assert_eq!(l.alive("a", s(141)), Some(false));
            // A renewal seen later extends it from then.
            l.observe("a", &format!("{marker}+1"), LEASE, s(130));
            assert_eq!(l.alive("a", s(170)), Some(true));
            // The same marker read again is no renewal.
            l.observe("a", &format!("{marker}+1"), LEASE, s(160));
            assert_eq!(l.alive("a", s(171)), Some(false));
        }
    }

    #[test]
    fn unknown_nodes_have_no_verdict_and_gone_ones_are_forgotten() {
        let mut l = Liveness::default();
        assert_eq!(l.alive("a", s(0)), None);
        l.observe("a", "1", LEASE, s(0));
        l.observe("b", "1", LEASE, s(0));
        l.retain(|n| n == "b");
        assert_eq!(l.alive("a", s(1)), None);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn forgiving_gives_every_node_a_whole_lease_again() {
        let mut l = Liveness::default();
        l.observe("a", "1", LEASE, s(0));
        l.observe("b", "1", LEASE, s(30));
        assert_eq!(l.stale(s(60)).collect::<Vec<_>>(), vec!["a"]);
        l.forgive(s(60));
        assert_eq!(l.stale(s(100)).count(), 0);
        assert_eq!(l.stale(s(101)).collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn a_silence_of_every_node_is_the_observers_and_is_forgiven() {
        let mut l = Liveness::default();
        for n in ["a", "b", "c"] {
            l.observe(n, "1", LEASE, s(0));
        }
        // Nothing at all for two leases (a frozen store), then the
        // renewals come back one at a time.
        l.observe("a", "2", LEASE, s(80));
        l.observe("b", "2", LEASE, s(81));
        assert_eq!(l.stale(s(82)).count(), 0, "c is given a whole lease too");
        // c never renews: it is stale a lease after the silence ended.
        l.observe("a", "3", LEASE, s(100));
        l.observe("b", "3", LEASE, s(100));
        assert_eq!(l.stale(s(121)).collect::<Vec<_>>(), vec!["c"]);
        // One node quiet while others renew is that node's trouble.
        let mut l = Liveness::default();
        l.observe("a", "1", LEASE, s(0));
        l.observe("b", "1", LEASE, s(0));
        for t in (10..=80).step_by(10) {
            l.observe("a", &t.to_string(), LEASE, s(t));
        }
        assert_eq!(l.stale(s(81)).collect::<Vec<_>>(), vec!["b"]);
    }

    #[test]
    fn the_brake_holds_only_when_many_nodes_go_stale_at_once() {
        let t = DEFAULT_DISRUPTION_THRESHOLD;
        for (stale, total, threshold, braked) in [
            (0, 0, t, false),
            (1, 1, t, false), // one node alone: its own trouble
            (1, 100, t, false),
            (2, 2, t, true),
            (2, 3, t, true),
            (2, 4, t, false), // half is not more than 55 %
            (55, 100, t, false),
            (56, 100, t, true),
            (5000, 5000, t, true),
            (5000, 5000, 1.0, false), // disabled
            (2, 4, 0.0, true),
        ] {
            assert_eq!(
                brake(stale, total, threshold),
                braked,
                "{stale} of {total} stale, threshold {threshold}"
            );
        }
    }
}
