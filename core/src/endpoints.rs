//! Where a service job's instances are reached: its EndpointSlices
//! (`discovery.k8s.io/v1`), decided from its tasks.
//!
//! Every task bound to a node with a known address is an endpoint (from
//! ASSIGNED until it ends), with Kubernetes' three conditions: `serving`
//! when it runs and passes its health check (or has none), `terminating`
//! while it is being killed, and `ready` when serving and not terminating.
//! A slice's ports apply to all its endpoints, so tasks are grouped by the
//! host ports they were assigned (and by the kind of address): each group
//! is one slice, or several of at most [`MAX_PER_SLICE`] endpoints. A slice
//! is named after its job and a hash of its group, so the same tasks give
//! the same slices whoever decides and however often.

use std::collections::BTreeMap;

use corral_api::ports::TaskPort;
use sha2::{Digest, Sha256};

/// The most endpoints put in one slice (Kubernetes' default).
pub const MAX_PER_SLICE: usize = 100;

/// What a slice's addresses are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressType {
    /// IPv4 addresses.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
    /// Host names.
    Fqdn,
}

impl AddressType {
    /// The type of `address`.
    pub fn of(address: &str) -> Self {
        match address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => AddressType::Ipv4,
            Ok(std::net::IpAddr::V6(_)) => AddressType::Ipv6,
            Err(_) => AddressType::Fqdn,
        }
    }

    /// Its name in an EndpointSlice (`IPv4`).
    pub fn as_str(self) -> &'static str {
        match self {
            AddressType::Ipv4 => "IPv4",
            AddressType::Ipv6 => "IPv6",
            AddressType::Fqdn => "FQDN",
        }
    }
}

/// A task as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The task's name.
    pub task: String,
    /// Its uid.
    pub uid: Option<String>,
    /// Its node.
    pub node: String,
    /// Its node's address.
    pub address: String,
    /// Its host ports.
    pub ports: Vec<TaskPort>,
    /// It runs and passes its health check (or has none); kept while it
    /// is being killed if it did before.
    pub serving: bool,
    /// It is being killed.
    pub terminating: bool,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The member it stands for.
    pub member: Member,
    /// Serving and not terminating.
    pub ready: bool,
}

/// One slice to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// Its name: `<job>-<hash>`, `-<n>` added for the n-th further slice
    /// of a group.
    pub name: String,
    /// What its addresses are.
    pub address_type: AddressType,
    /// The ports every endpoint serves.
    pub ports: Vec<TaskPort>,
    /// Its endpoints, by task name.
    pub endpoints: Vec<Endpoint>,
}

/// The hash naming a group: 8 hex digits of its address type and ports.
fn group_hash(address_type: AddressType, ports: &[TaskPort]) -> String {
    let mut h = Sha256::new();
    h.update(address_type.as_str());
    for p in ports {
        h.update(b"\0");
        h.update(p.name.as_bytes());
        h.update(b":");
        h.update(p.port.to_string());
    }
    h.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The slices of job `job` with `members` (any order); none without members.
pub fn slices(job: &str, members: Vec<Member>) -> Vec<Slice> {
    let mut groups: BTreeMap<(AddressType, Vec<TaskPort>), Vec<Member>> = BTreeMap::new();
    for m in members {
        let mut ports = m.ports.clone();
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        groups
            .entry((AddressType::of(&m.address), ports))
            .or_default()
            .push(m);
    }
    let mut out = Vec::new();
    for ((address_type, ports), mut members) in groups {
        members.sort_by(|a, b| a.task.cmp(&b.task));
        let hash = group_hash(address_type, &ports);
        for (n, chunk) in members.chunks(MAX_PER_SLICE).enumerate() {
            let name = match n {
                0 => format!("{job}-{hash}"),
                n => format!("{job}-{hash}-{n}"),
            };
            out.push(Slice {
                name,
                address_type,
                ports: ports.clone(),
                endpoints: chunk
                    .iter()
                    .map(|m| Endpoint {
                        ready: m.serving && !m.terminating,
                        member: m.clone(),
                    })
                    .collect(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
