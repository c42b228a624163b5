//! The supervisor's side of the agent's metrics (see [`crate::metrics`]):
//! each task it runs, with what it was given and what it used.

use std::collections::BTreeMap;

use super::Supervisor;

impl Supervisor {
    /// Each task this agent runs: its role, what it was given and, from
    /// `usage` (milli-cores and bytes by key, as sampled), what it used.
    pub(crate) fn figures(
        &self,
        usage: &BTreeMap<String, (u64, u64)>,
    ) -> BTreeMap<String, crate::metrics::TaskFigures> {
        let Ok(objects) = self.objects.lock() else {
            return BTreeMap::new();
        };
        self.tasks
            .keys()
            .filter_map(|key| {
                let t = objects.get(key)?;
                let mut f = crate::metrics::TaskFigures {
                    role: t.spec.role.clone(),
                    allocated: t.spec.resources.to_milli().unwrap_or_default().0,
                    used: BTreeMap::new(),
                };
                if let Some((cpu, mem)) = usage.get(key) {
                    let milli = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                    f.used
                        .insert(corral_api::resources::CPUS.into(), milli(*cpu));
                    f.used.insert(
                        corral_api::resources::MEMORY.into(),
                        milli(*mem).saturating_mul(1000),
                    );
                }
                Some((key.clone(), f))
            })
            .collect()
    }
}
