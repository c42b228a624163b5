//! Health flipping: a task's probe results, one at a time, into what its
//! agent does (Aurora's health checker, Kubernetes' probe thresholds).
//!
//! A task starts not healthy. `successThreshold` passes in a row make it
//! healthy; `failureThreshold` failures in a row make it fail its check,
//! healthy before or not, after which it is killed: nothing further is
//! decided for it. A pass resets the failures and a failure the passes, so
//! only runs count.

/// What one result changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    /// Nothing to report.
    Same,
    /// It became healthy.
    Healthy,
    /// It was healthy and failed a probe: no longer healthy (not yet killed).
    Unhealthy,
    /// It failed `failureThreshold` probes in a row: kill it.
    Failed,
}

/// The thresholds of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Passes in a row to become healthy.
    pub success: u32,
    /// Failures in a row to fail.
    pub failure: u32,
}

/// One task's run of results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    passes: u32,
    failures: u32,
    healthy: bool,
    failed: bool,
}

impl Health {
    /// True once it became healthy and has not failed a probe since.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// True once it failed its check.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Takes one probe result.
    pub fn observe(&mut self, passed: bool, t: Thresholds) -> Flip {
        if self.failed {
            return Flip::Same;
        }
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.healthy && self.passes >= t.success.max(1) {
                self.healthy = true;
                return Flip::Healthy;
            }
            return Flip::Same;
        }
        self.passes = 0;
        self.failures = self.failures.saturating_add(1);
        if self.failures >= t.failure.max(1) {
            self.failed = true;
            self.healthy = false;
            return Flip::Failed;
        }
        if self.healthy {
            self.healthy = false;
            return Flip::Unhealthy;
        }
        Flip::Same
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run(results: &str, success: u32, failure: u32) -> Vec<Flip> {
        let mut h = Health::default();
        results
            .chars()
            .map(|c| h.observe(c == '+', Thresholds { success, failure }))
            .collect()
    }

    #[test]
    fn runs_of_results_flip_it() {
        use Flip::*;
        for (results, success, failure, want) in [
            ("+", 1, 3, vec![Healthy]),
            ("++", 2, 3, vec![Same, Healthy]),
            ("+-+", 2, 3, vec![Same, Same, Same]),
            ("+-++", 2, 3, vec![Same, Same, Same, Healthy]),
            ("+-", 1, 3, vec![Healthy, Unhealthy]),
            ("+-+", 1, 3, vec![Healthy, Unhealthy, Healthy]),
            ("---", 1, 3, vec![Same, Same, Failed]),
            (
                "--+---",
                1,
                3,
                vec![Same, Same, Healthy, Unhealthy, Same, Failed],
            ),
            ("-+", 1, 1, vec![Failed, Same]),
        ] {
            assert_eq!(run(results, success, failure), want, "{results}");
        }
    }

    proptest! {
        /// It fails exactly when `failure` failures come in a row, is
        /// healthy exactly after `success` passes in a row (until a
        /// failure), and decides nothing after failing.
        #[test]
        fn only_runs_count(results in prop::collection::vec(any::<bool>(), 0..60), success in 1u32..4, failure in 1u32..4) {
            let mut h = Health::default();
            let (mut passes, mut fails, mut failed) = (0u32, 0u32, false);
            let mut healthy = false;
            for r in results {
                let flip = h.observe(r, Thresholds { success, failure });
                if failed {
                    prop_assert_eq!(flip, Flip::Same);
                    continue;
                }
                if r { passes += 1; fails = 0; } else { fails += 1; passes = 0; }
                if !r { healthy = false; }
                if passes >= success { healthy = true; }
                if fails >= failure { failed = true; healthy = false; }
                prop_assert_eq!(h.failed(), failed);
                prop_assert_eq!(h.healthy(), healthy);
                prop_assert_eq!(flip == Flip::Failed, failed && fails == failure);
            }
        }
    }
}
