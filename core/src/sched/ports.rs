//! A node's host ports as the scheduler keeps them: the ranges its agent
//! offers and the ports its tasks hold.
//!
//! A task names its ports in order, each fixed (`Some(9090)`) or to be
//! assigned (`None`). It fits a node when none of its fixed ports is held
//! there and the node's ranges have enough free ports for the rest; placing
//! it takes them all at once (fixed ones first, then free ones from the
//! ranges, next-fit from where the last assignment ended, so a port just
//! given back is not handed out again at once). A fixed port may lie outside
//! the ranges (as a Kubernetes `hostPort` does); it is held all the same, so
//! no two tasks on a node ever hold one port.

use std::collections::BTreeSet;

use corral_api::ports::PortRange;

/// Why a task's ports do not fit a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMiss {
    /// A fixed port it names is held by another task.
    Taken(u16),
    /// Its ranges have fewer free ports than it needs assigned.
    Exhausted {
        /// Ports it needs assigned.
        needed: u32,
        /// Free ports in the node's ranges.
        free: u32,
    },
}

/// One node's ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePorts {
    /// Offered ranges, sorted and merged.
    ranges: Vec<PortRange>,
    /// Ports held by its tasks (in or out of the ranges).
    used: BTreeSet<u16>,
    /// Free ports in the ranges.
    free: u32,
    /// Where the next assignment starts looking.
    cursor: u16,
}

/// `ranges` sorted, with empty ones dropped and overlapping or adjacent
/// ones merged.
fn normalized(ranges: &[PortRange]) -> Vec<PortRange> {
    let mut sorted: Vec<PortRange> = ranges.iter().copied().filter(|r| !r.is_empty()).collect();
    sorted.sort_by_key(|r| r.begin);
    let mut out: Vec<PortRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if u32::from(r.begin) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

impl NodePorts {
    /// A node offering `ranges`, with no port held.
    pub fn new(ranges: &[PortRange]) -> Self {
        let ranges = normalized(ranges);
        let free = ranges.iter().map(PortRange::len).sum();
        let cursor = ranges.first().map_or(0, |r| r.begin);
        NodePorts {
            ranges,
            used: BTreeSet::new(),
            free,
            cursor,
        }
    }

    /// The same node offering `ranges` now, its held ports still held.
    pub fn reoffered(&self, ranges: &[PortRange]) -> Self {
        let mut next = NodePorts::new(ranges);
        next.free -= self.used.iter().filter(|&&p| next.in_ranges(p)).count() as u32;
        next.used = self.used.clone();
        if next.in_ranges(self.cursor) {
            next.cursor = self.cursor;
        }
        next
    }

    /// The ranges offered.
    pub fn ranges(&self) -> &[PortRange] {
        &self.ranges
    }

    /// Free ports in the ranges.
    pub fn free(&self) -> u32 {
        self.free
    }

    /// True when `port` is held.
    pub fn is_used(&self, port: u16) -> bool {
        self.used.contains(&port)
    }

    fn in_ranges(&self, port: u16) -> bool {
        self.ranges.iter().any(|r| r.contains(port))
    }

    /// Whether ports `need` (fixed or to assign, in order) fit here.
    pub fn check(&self, need: &[Option<u16>]) -> Result<(), PortMiss> {
        let mut fixed_in_ranges = 0u32;
        let mut dynamic = 0u32;
        for (i, p) in need.iter().enumerate() {
            match *p {
                // Named twice (validation refuses it) is held once: taken.
                Some(p) if self.used.contains(&p) || need[..i].contains(&Some(p)) => {
                    return Err(PortMiss::Taken(p));
                }
                Some(p) => fixed_in_ranges += u32::from(self.in_ranges(p)),
                None => dynamic += 1,
            }
        }
        let free = self.free - fixed_in_ranges.min(self.free);
        if dynamic > free {
            return Err(PortMiss::Exhausted {
                needed: dynamic,
                free,
            });
        }
        Ok(())
    }

    /// Takes ports `need` (see [`NodePorts::check`]): the host ports, in the
    /// order asked; nothing is taken when they do not fit.
    pub fn take(&mut self, need: &[Option<u16>]) -> Result<Vec<u16>, PortMiss> {
        self.check(need)?;
        for p in need.iter().flatten() {
            self.hold(*p);
        }
        let mut out = Vec::with_capacity(need.len());
        for p in need {
            let port = match *p {
                Some(p) => p,
                None => {
                    // `check` counted enough free ports in the ranges.
                    let Some(p) = self.next_free() else {
                        self.release(&out);
                        return Err(PortMiss::Exhausted { needed: 1, free: 0 });
                    };
                    self.hold(p);
                    self.cursor = p.checked_add(1).unwrap_or(p);
                    p
                }
            };
            out.push(port);
        }
        Ok(out)
    }

    fn hold(&mut self, port: u16) {
        if self.used.insert(port) && self.in_ranges(port) {
            self.free -= 1;
        }
    }

    /// Gives `ports` back.
    pub fn release(&mut self, ports: &[u16]) {
        for &p in ports {
            if self.used.remove(&p) && self.in_ranges(p) {
                self.free += 1;
            }
        }
    }

    /// The first free port in the ranges at or after the cursor, wrapping.
    fn next_free(&self) -> Option<u16> {
        let after = self.ranges.iter().filter_map(|r| {
            let start = r.begin.max(self.cursor);
            (start <= r.end).then_some((start, r.end))
        });
        let before = self.ranges.iter().filter_map(|r| {
            let end = r.end.min(self.cursor.saturating_sub(1));
            (r.begin <= end && self.cursor > 0).then_some((r.begin, end))
        });
        after
            .chain(before)
            .find_map(|(from, to)| (from..=to).find(|p| !self.used.contains(p)))
    }
}

#[cfg(test)]
mod tests;
