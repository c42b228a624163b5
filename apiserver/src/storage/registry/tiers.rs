//! A Job or Task names a Corral Role that exists: naming one that does not
//! is refused (422 on `spec.role`), never run without the role's limits.
//!
//! A Job or Task runs in the `preferred` tier (the talk's production) only
//! on a role an administrator granted production to: a role with a Quota
//! (Aurora runs production jobs only within the quota granted to their
//! role; the Quota's limit and guarantee then bound them). Preemption rights
//! follow, since only `preferred` tasks preempt. Quotas are administrators'
//! objects: no aggregated role grants them.
//!
//! Checked when a request sets or changes the role or the tier (the
//! server's own writes carry no requester), so a Role or Quota removed later
//! stops new work on it without touching what was admitted.

use corral_api::validation::{FieldError, FieldErrorType};
use serde_json::Value;

use super::{Api, ListQuery, WriteOptions};
use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::storage::objects::meta_str;

fn refused(desc: &ResourceDesc, obj: &Value, error: FieldError) -> ApiError {
    ApiError::Invalid {
        kind: format!("{}.{}", desc.kind, desc.group),
        name: meta_str(obj, "name").unwrap_or_default().to_owned(),
        errors: vec![error],
    }
}

/// True when `quota` (JSON) is `role`'s.
pub fn is_quota_of(quota: &Value, role: &str) -> bool {
    quota["spec"]["role"].as_str() == Some(role)
}

impl Api {
    /// Admits the role and tier of Job or Task `next` over `old` (see the
    /// module doc).
    pub(super) async fn admit_role_and_tier(
        &self,
        desc: &ResourceDesc,
        next: &Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> Result<(), ApiError> {
        if opts.requester.is_none()
            || desc.group != "corral.dev"
            || !matches!(desc.kind, "Job" | "Task")
        {
            return Ok(());
        }
        let Some(role) = next["spec"]["role"].as_str().filter(|r| !r.is_empty()) else {
            // Validation reports a missing role.
            return Ok(());
        };
        // A Job's own tasks were admitted with it.
        let owned_by_job = next["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| o.iter().any(|r| r["kind"] == "Job"));
        if desc.kind == "Task" && owned_by_job {
            return Ok(());
        }
        let changed = |field: &str| old.is_none_or(|o| o["spec"][field] != next["spec"][field]);
        if changed("role") && !self.role_exists(role).await? {
            return Err(refused(
                desc,
                next,
                FieldError {
                    type_: FieldErrorType::NotFound,
                    field: "spec.role".into(),
                    value: Some(format!("{role:?}")),
                    detail: format!(
                        "no Role {role:?} exists (roles.corral.dev are cluster-wide; an administrator creates them)"
                    ),
                },
            ));
        }
        if next["spec"]["tier"].as_str() != Some("preferred") {
            return Ok(());
        }
        let quotas_desc = self
            .registry
            .find("corral.dev", "v1alpha1", "quotas")
            .ok_or_else(|| ApiError::Internal("quotas are not registered".into()))?;
        if changed("role") || changed("tier") {
            let quotas = self.list(&quotas_desc, None, &ListQuery::default()).await?;
            if !quotas
                .items
                .iter()
                .any(|q| q.value().is_ok_and(|q| is_quota_of(&q, role)))
            {
                return Err(refused(
                    desc,
                    next,
                    FieldError {
                        type_: FieldErrorType::Forbidden,
                        field: "spec.tier".into(),
                        value: Some("\"preferred\"".into()),
                        detail: format!(
                            "the preferred (production) tier runs only on a role an administrator granted a Quota: role {role:?} has none"
                        ),
                    },
                ));
            }
        }
        Ok(())
    }

    /// True when Corral Role `role` exists.
    async fn role_exists(&self, role: &str) -> Result<bool, ApiError> {
        let roles = self
            .registry
            .find("corral.dev", "v1alpha1", "roles")
            .ok_or_else(|| ApiError::Internal("roles are not registered".into()))?;
        Ok(self.cached_or_stored(&roles, None, role).await?.is_some())
    }
}
