//! Named host ports (Mesos' `ports` resource, Aurora's `thermos.ports`).
//!
//! A job names the ports its tasks listen on (`ports: [{name: http}, {name:
//! admin, port: 9090}]`); a name without a number is assigned, when the task
//! is placed, from the ranges its node offers (`Node.status.portRanges`). The
//! scheduler writes the assignment with the binding (`Task.status.ports`),
//! and the task reads it from its environment: `PORT_HTTP`, and `PORT0`,
//! `PORT1`, … in the order the job names them (Marathon's convention).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most ports one task may name.
pub const MAX_PORTS: usize = 16;

/// The range an agent offers when its operator names none: outside Linux's
/// ephemeral range (32768–60999), as Mesos' default is.
pub const DEFAULT_RANGE: PortRange = PortRange {
    begin: 31000,
    end: 32000,
};

/// A host port a task needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PortSpec {
    /// Its name (`http`): lower-case letters, digits and `-`, at most 15
    /// characters (an IANA service name, as Kubernetes' named ports), unique
    /// in the job. The task reads it as `PORT_HTTP`.
    pub name: String,
    /// A fixed host port. Absent: one is assigned from its node's ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A port assigned to a task on its node.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct TaskPort {
    /// The name the job gave it.
    pub name: String,
    /// The host port.
    pub port: u16,
}

/// Host ports `begin..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PortRange {
    /// The first port.
    pub begin: u16,
    /// The last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// How many ports it holds (0 when `end < begin`).
    pub fn len(&self) -> u32 {
        (u32::from(self.end) + 1).saturating_sub(u32::from(self.begin))
    }

    /// True when it holds no port.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `port` is in it.
    pub fn contains(&self, port: u16) -> bool {
        (self.begin..=self.end).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.begin, self.end)
    }
}

/// The environment variable a port is read from: `PORT_` and its name in
/// upper case, `-` as `_` (`admin-grpc` → `PORT_ADMIN_GRPC`).
pub fn env_name(port: &str) -> String {
    let mut out = String::with_capacity(5 + port.len());
    out.push_str("PORT_");
    out.extend(port.chars().map(|c| {
        if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
    out
}

/// True for a port name: `[a-z0-9]([-a-z0-9]*[a-z0-9])?` with at least one
/// letter, no `--`, at most 15 characters (Kubernetes' IANA_SVC_NAME).
pub fn is_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_the_service_name_rule() {
        for (name, ok) in [
            ("http", true),
            ("admin-grpc", true),
            ("h2c", true),
            ("a", true),
            ("", false),
            ("80", false),
            ("-http", false),
            ("http-", false),
            ("ht--tp", false),
            ("HTTP", false),
            ("http_alt", false),
            ("abcdefghijklmnop", false),
            ("abcdefghijklmno", true),
        ] {
            assert_eq!(is_port_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn env_names_are_upper_case_with_underscores() {
        assert_eq!(env_name("http"), "PORT_HTTP");
        assert_eq!(env_name("admin-grpc"), "PORT_ADMIN_GRPC");
        assert_eq!(env_name("h2c"), "PORT_H2C");
    }

    #[test]
    fn ranges_count_their_ports() {
        assert_eq!(DEFAULT_RANGE.len(), 1001);
        let r = PortRange { begin: 9, end: 8 };
        assert!(r.is_empty());
        assert!(!r.contains(9));
        assert!(DEFAULT_RANGE.contains(31000) && DEFAULT_RANGE.contains(32000));
    }
}
