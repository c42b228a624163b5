//! Parsing of the agent's Mesos-style flag values.

use std::collections::BTreeMap;

use corral_api::node::StaticReservation;
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
}
