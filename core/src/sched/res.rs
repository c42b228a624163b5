//! Resource vectors for scheduling: exact milli-units in a fixed-size array,
//! one slot per resource name (`cpus`, `memory`, `disk`, then extended
//! resources in the order they are first seen). Copy, no allocation, so the
//! hot paths compare and add whole vectors cheaply.

use std::collections::BTreeMap;

/// The most distinct resource names a cluster may use.
pub const MAX_DIMS: usize = 8;

/// Names of the resource slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dims {
    names: Vec<String>,
}

impl Default for Dims {
    fn default() -> Self {
        Dims {
            names: vec!["cpus".into(), "memory".into(), "disk".into()],
        }
    }
}

/// A resource name that does not fit in the vector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many distinct resources (at most {MAX_DIMS}): cannot add {0:?}")]
pub struct TooManyResources(pub String);

impl Dims {
    /// The slot of `name`, adding it when new.
    pub fn slot(&mut self, name: &str) -> Result<usize, TooManyResources> {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return Ok(i);
        }
        if self.names.len() == MAX_DIMS {
            return Err(TooManyResources(name.to_owned()));
        }
        self.names.push(name.to_owned());
        Ok(self.names.len() - 1)
    }

    /// The name of slot `i`.
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).map(String::as_str).unwrap_or("?")
    }

    /// How many slots are named.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no slot is named (never: the three standard ones always are).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// A vector from a name → milli-units map.
    pub fn vector(&mut self, m: &BTreeMap<String, i64>) -> Result<Res, TooManyResources> {
        let mut r = Res::ZERO;
        for (k, v) in m {
            r.0[self.slot(k)?] = *v;
        }
        Ok(r)
    }
}

/// Amounts per slot, in milli-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Res(pub [i64; MAX_DIMS]);

impl Res {
    /// Nothing.
    pub const ZERO: Res = Res([0; MAX_DIMS]);

    /// `cpus` and `memory` only (tests, builders).
    pub fn cpu_mem(milli_cpus: i64, bytes: i64) -> Res {
        let mut r = Res::ZERO;
        r.0[0] = milli_cpus;
        r.0[1] = bytes.saturating_mul(1000);
        r
    }

    /// `self + o`.
    pub fn plus(self, o: Res) -> Res {
        let mut r = self;
        for i in 0..MAX_DIMS {
            r.0[i] = r.0[i].saturating_add(o.0[i]);
        }
        r
    }

    /// `self - o`.
    pub fn minus(self, o: Res) -> Res {
        let mut r = self;
        for i in 0..MAX_DIMS {
            r.0[i] = r.0[i].saturating_sub(o.0[i]);
        }
        r
    }

    /// The slot-wise maximum of `self - o` and zero.
    pub fn minus_floor(self, o: Res) -> Res {
        let mut r = self;
        for i in 0..MAX_DIMS {
            r.0[i] = (r.0[i].saturating_sub(o.0[i])).max(0);
        }
        r
    }

    /// The slot-wise minimum.
    pub fn min(self, o: Res) -> Res {
        let mut r = self;
        for i in 0..MAX_DIMS {
            r.0[i] = r.0[i].min(o.0[i]);
        }
        r
    }

    /// True when every slot of `req` is at most this one's.
    #[inline]
    pub fn fits(&self, req: &Res) -> bool {
        (0..MAX_DIMS).all(|i| req.0[i] <= self.0[i])
    }

    /// The slots where `req` exceeds this vector.
    pub fn short(&self, req: &Res) -> impl Iterator<Item = usize> + '_ {
        let req = *req;
        (0..MAX_DIMS).filter(move |&i| req.0[i] > self.0[i])
    }

    /// True when no slot is negative.
    pub fn non_negative(&self) -> bool {
        self.0.iter().all(|v| *v >= 0)
    }

    /// True when every slot is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|v| *v == 0)
    }

    /// The largest share `self[i] / total[i]` over slots with capacity.
    pub fn dominant_share(&self, total: &Res) -> f64 {
        (0..MAX_DIMS)
            .filter(|&i| total.0[i] > 0)
            .map(|i| self.0[i] as f64 / total.0[i] as f64)
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_add_compare_and_name_their_slots() {
        let mut dims = Dims::default();
        let gpu = dims.slot("gpus").expect("slot");
        assert_eq!((gpu, dims.name(gpu)), (3, "gpus"));
        let a = Res::cpu_mem(2000, 4);
        let b = Res::cpu_mem(500, 8);
        assert!(!a.fits(&b));
        assert_eq!(a.short(&b).collect::<Vec<_>>(), vec![1]);
        assert_eq!(a.plus(b).minus(b), a);
        assert_eq!(b.minus_floor(a).0[0], 0);
        assert!((a.dominant_share(&Res::cpu_mem(4000, 8)) - 0.5).abs() < 1e-9);
        for i in 0..(MAX_DIMS - 4) {
            dims.slot(&format!("x{i}")).expect("room");
        }
        assert!(dims.slot("one-too-many").is_err());
    }
}
