//! Resource sets: `{cpus: 1, memory: 5120Mi, disk: 5120Mi, gpus: 1}`.
//!
//! The set is open: `cpus`, `memory` and `disk` are the well-known names, any
//! other valid name (`gpus`, `example.com/fpga`) is an extended resource. Exact
//! arithmetic happens on [`MilliResources`], which the scheduler derives once per
//! object.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::{Quantity, QuantityError};

/// CPU cores (`0.5`, `"500m"`).
pub const CPUS: &str = "cpus";
/// Memory in bytes (`5Gi`).
pub const MEMORY: &str = "memory";
/// Disk in bytes (`20Gi`).
pub const DISK: &str = "disk";

/// A set of named resource amounts, as users write it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Resources(pub BTreeMap<String, Quantity>);

impl Resources {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one resource (builder style, for tests and examples).
    pub fn with(mut self, name: &str, quantity: Quantity) -> Self {
        self.0.insert(name.to_owned(), quantity);
        self
    }

    /// The amount of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&Quantity> {
        self.0.get(name)
    }

    /// True when no resource is named.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The exact milli-unit form; the first unreadable quantity is an error.
    pub fn to_milli(&self) -> Result<MilliResources, (String, QuantityError)> {
        let mut out = BTreeMap::new();
        for (name, q) in &self.0 {
            let v = q.milli().map_err(|e| (name.clone(), e))?;
            out.insert(name.clone(), v);
        }
        Ok(MilliResources(out))
    }
}

/// Exact resource amounts in milli-units; a missing name means zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MilliResources(pub BTreeMap<String, i64>);

impl MilliResources {
    /// The amount of `name` (zero when absent).
    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// `self + other`, saturating (amounts are bounded far below `i64::MAX`).
    pub fn plus(&self, other: &Self) -> Self {
        let mut out = self.0.clone();
        for (k, v) in &other.0 {
            let e = out.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
        MilliResources(out)
    }

    /// `self - other`; may go negative, which callers read as a shortfall.
    pub fn minus(&self, other: &Self) -> Self {
        let mut out = self.0.clone();
        for (k, v) in &other.0 {
            let e = out.entry(k.clone()).or_insert(0);
            *e = e.saturating_sub(*v);
        }
        MilliResources(out)
    }

    /// The amounts as quantities: whole units as integers (`2`,
    /// `1073741824`), others in milli-units (`500m`).
    pub fn to_resources(&self) -> Resources {
        Resources(
            self.0
                .iter()
                .map(|(k, v)| {
                    let q = if v % 1000 == 0 {
                        Quantity::from_units(v / 1000)
                    } else {
                        Quantity::from_text(format!("{v}m"))
                    };
                    (k.clone(), q)
                })
                .collect(),
        )
    }

    /// True when every amount in `request` is available in `self`.
    pub fn fits(&self, request: &Self) -> bool {
        request.0.iter().all(|(k, v)| *v <= self.get(k))
    }

    /// The names whose request exceeds what `self` has, with (needed, available).
    pub fn shortfalls(&self, request: &Self) -> Vec<(String, i64, i64)> {
        request
            .0
            .iter()
            .filter(|(k, v)| **v > self.get(k))
            .map(|(k, v)| (k.clone(), *v, self.get(k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(pairs: &[(&str, i64)]) -> MilliResources {
        MilliResources(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn the_talks_job_reads_as_exact_amounts() {
        let r: Resources =
            serde_json::from_str(r#"{"cpus": 1, "memory": "5120Mi", "disk": "5120Mi"}"#)
                .expect("parse");
        let m = r.to_milli().expect("valid");
        assert_eq!(m.get(CPUS), 1000);
        assert_eq!(m.get(MEMORY), 5120 * 1024 * 1024 * 1000);
        assert_eq!(m.get("gpus"), 0);
    }

    #[test]
    fn fits_and_shortfalls_agree() {
        let free = milli(&[(CPUS, 2000), (MEMORY, 4096)]);
        let ok = milli(&[(CPUS, 2000)]);
        let too_big = milli(&[(CPUS, 500), (MEMORY, 8192), ("gpus", 1)]);
        assert!(free.fits(&ok));
        assert!(!free.fits(&too_big));
        assert_eq!(
            free.shortfalls(&too_big),
            vec![("gpus".to_string(), 1, 0), (MEMORY.to_string(), 8192, 4096)]
        );
        assert_eq!(free.minus(&ok).plus(&ok), free);
    }

    #[test]
    fn an_unreadable_amount_names_its_resource() {
        let r = Resources::new().with(CPUS, Quantity::from_text("lots"));
        assert_eq!(r.to_milli().map_err(|e| e.0), Err(CPUS.to_string()));
    }
}
