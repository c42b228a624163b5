//! Parsing of the agent's Mesos-style flag values.

use std::collections::BTreeMap;

use corral_api::node::StaticReservation;
use corral_api::ports::PortRange;
use corral_api::{Quantity, Resources};

/// A malformed flag value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: cannot read {value:?}: {why}")]
pub struct FlagError {
    /// The flag.
    pub flag: &'static str,
    /// The offending part.
    pub value: String,
    /// Why.
    pub why: &'static str,
}

fn pairs<'a>(
    flag: &'static str,
    s: &'a str,
) -> impl Iterator<Item = Result<(&'a str, &'a str), FlagError>> + 'a {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(move |p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or(FlagError {
                    flag,
                    value: p.to_owned(),
                    why: "expected name=value",
                })
        })
}

/// `cpus=4,memory=8Gi,disk=20Gi`.
pub fn resources(s: &str) -> Result<Resources, FlagError> {
    let mut r = Resources::new();
    for p in pairs("--resources", s) {
        let (k, v) = p?;
        let q = Quantity::from_text(v);
        if q.milli().is_err() {
            return Err(FlagError {
                flag: "--resources",
                value: v.to_owned(),
                why: "not a quantity",
            });
        }
        r = r.with(k, q);
    }
    Ok(r)
}

/// What `--resources` offers: amounts, and the host ports tasks are
/// assigned from (None: not named, the default range applies).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Offer {
    /// The amounts (`cpus=4,memory=8Gi`).
    pub resources: Resources,
    /// `ports=[31000-32000,33000-33999]`, Mesos' form.
    pub ports: Option<Vec<PortRange>>,
}

/// `cpus=4,memory=8Gi,ports=[31000-32000]`: the ports, Mesos' ranges
/// resource, between brackets (commas inside them separate ranges).
pub fn offer(s: &str) -> Result<Offer, FlagError> {
    let mut rest = String::new();
    let mut ports = None;
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    for part in parts {
        match part.split_once('=') {
            Some((k, v)) if k.trim() == "ports" => ports = Some(port_ranges(v.trim())?),
            _ => {
                rest.push_str(part);
                rest.push(',');
            }
        }
    }
    Ok(Offer {
        resources: resources(&rest)?,
        ports,
    })
}

/// `[31000-32000,33000-33999]` (brackets optional; a single port as `N`).
fn port_ranges(v: &str) -> Result<Vec<PortRange>, FlagError> {
    let bad = |value: &str, why| FlagError {
        flag: "--resources",
        value: value.to_owned(),
        why,
    };
    let inner = v.strip_prefix('[').unwrap_or(v);
    let inner = inner.strip_suffix(']').unwrap_or(inner);
    let mut out = Vec::new();
    for r in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let (Ok(begin), Ok(end)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) else {
            return Err(bad(r, "expected a port range BEGIN-END (1-65535)"));
        };
        if begin == 0 || end < begin {
            return Err(bad(r, "a port range is BEGIN-END with 1 <= BEGIN <= END"));
        }
        out.push(PortRange { begin, end });
    }
    Ok(out)
}

/// `rack=r1,zone=a`.
pub fn attributes(s: &str) -> Result<BTreeMap<String, String>, FlagError> {
    pairs("--attributes", s)
        .map(|p| p.map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// `cpus(analytics)=2,memory(analytics)=2Gi`, grouped by role.
pub fn reserved(s: &str) -> Result<Vec<StaticReservation>, FlagError> {
    let mut by_role: BTreeMap<String, Resources> = BTreeMap::new();
    for p in pairs("--reserved", s) {
        let (k, v) = p?;
        let bad = || FlagError {
            flag: "--reserved",
            value: k.to_owned(),
            why: "expected resource(role)=amount",
        };
        let (res, role) = k.split_once('(').ok_or_else(bad)?;
        let role = role.strip_suffix(')').ok_or_else(bad)?;
        let q = Quantity::from_text(v);
        if q.milli().is_err() {
            return Err(FlagError {
                flag: "--reserved",
                value: v.to_owned(),
                why: "not a quantity",
            });
        }
        let e = by_role.entry(role.to_owned()).or_default();
        *e = std::mem::take(e).with(res, q);
    }
    Ok(by_role
        .into_iter()
        .map(|(role, resources)| StaticReservation { role, resources })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_style_values_parse() {
        let r = resources("cpus=4, memory=8Gi,disk=20Gi").expect("resources");
        assert_eq!(
            r.to_milli().expect("milli").get("memory"),
            8 * (1 << 30) * 1000
        );
        assert_eq!(
            attributes("rack=r1,zone=a")
                .expect("attributes")
                .get("zone")
                .map(String::as_str),
            Some("a")
        );
        let rs = reserved("cpus(analytics)=2,memory(analytics)=2Gi,cpus(web)=1").expect("reserved");
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].role, "analytics");
        assert_eq!(rs[0].resources.0.len(), 2);
        assert!(resources("cpus").is_err());
        assert!(resources("cpus=lots").is_err());
        assert!(reserved("cpus=2").is_err());
        assert!(reserved("cpus(web=2").is_err());
    }

    #[test]
    fn port_ranges_ride_along_with_the_resources() {
        let o = offer("cpus=4,ports=[31000-32000, 40000-40009],memory=1Gi").expect("offer");
        assert_eq!(o.resources.0.len(), 2);
        assert_eq!(
            o.ports,
            Some(vec![
                PortRange {
                    begin: 31000,
                    end: 32000
                },
                PortRange {
                    begin: 40000,
                    end: 40009
                }
            ])
        );
        assert_eq!(offer("cpus=4").expect("offer").ports, None);
        assert_eq!(offer("ports=[]").expect("offer").ports, Some(vec![]));
        assert_eq!(
            offer("ports=8080").expect("offer").ports,
            Some(vec![PortRange {
                begin: 8080,
                end: 8080
            }])
        );
        for bad in [
            "ports=[2-1]",
            "ports=[0-10]",
            "ports=[a-b]",
            "ports=[1-70000]",
            "cpus=4,ports",
        ] {
            assert!(offer(bad).is_err(), "{bad}");
        }
    }
}
