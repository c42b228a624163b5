//! The registry of client watches: who wants which changes, indexed so
//! that a change to one node's task wakes only the watchers of that node
//! (and the general watchers of its resource). A watcher whose buffer is
//! full is dropped; its client resumes from its last resourceVersion.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Change, Entry};

/// What a watcher wants to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    /// Index of the resource in the registry.
    pub resource: usize,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only tasks bound to this node (`spec.nodeName=<node>`).
    pub node: Option<String>,
}

impl Interest {
    pub(super) fn wants(&self, c: &Change) -> bool {
        if c.resource != self.resource {
            return false;
        }
        let in_ns = |e: &Entry| self.namespace.is_none() || e.namespace == self.namespace;
        let on_node = |e: &Entry| self.node.is_none() || e.node == self.node;
        let matches = |e: &Entry| in_ns(e) && on_node(e);
        matches(&c.object) || c.prev.as_deref().is_some_and(matches)
    }
}

struct Registration {
    interest: Interest,
    tx: mpsc::Sender<Arc<Change>>,
}

#[derive(Default)]
pub(super) struct Watchers {
    next_id: u64,
    all: HashMap<u64, Registration>,
    /// Watchers of one node's tasks.
    by_node: HashMap<String, BTreeSet<u64>>,
    /// Every other watcher, per resource.
    general: HashMap<usize, BTreeSet<u64>>,
}

impl Watchers {
    /// Registers a watcher; its id unregisters it.
    pub(super) fn add(&mut self, interest: Interest, tx: mpsc::Sender<Arc<Change>>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        match &interest.node {
            Some(n) => self.by_node.entry(n.clone()).or_default().insert(id),
            None => self
                .general
                .entry(interest.resource)
                .or_default()
                .insert(id),
        };
        self.all.insert(id, Registration { interest, tx });
        id
    }

    pub(super) fn remove(&mut self, id: u64) {
        if let Some(r) = self.all.remove(&id) {
            match &r.interest.node {
                Some(n) => {
                    if let Some(set) = self.by_node.get_mut(n) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.by_node.remove(n);
                        }
                    }
                }
                None => {
                    if let Some(set) = self.general.get_mut(&r.interest.resource) {
                        set.remove(&id);
                    }
                }
            }
        }
    }

    pub(super) fn dispatch(&mut self, change: &Arc<Change>) {
        let mut targets: Vec<u64> = self
            .general
            .get(&change.resource)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for node in [
            change.object.node.as_ref(),
            change.prev.as_ref().and_then(|p| p.node.as_ref()),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(ids) = self.by_node.get(node) {
                targets.extend(ids.iter().copied());
            }
        }
        targets.sort_unstable();
        targets.dedup();
        let mut dead = Vec::new();
        for id in targets {
            if let Some(r) = self.all.get(&id)
                && r.interest.wants(change)
                && r.tx.try_send(change.clone()).is_err()
            {
                // Too slow or gone: close it; its client resumes from its last resourceVersion.
                dead.push(id);
            }
        }
        for id in dead {
            self.remove(id);
        }
    }

    /// How many watchers are registered.
    pub(super) fn len(&self) -> usize {
        self.all.len()
    }

    pub(super) fn close_all(&mut self) {
        *self = Watchers {
            next_id: self.next_id,
            ..Default::default()
        };
    }
}
