//! `planreviews.corral.dev` (a [`corral_api::plan::PlanReview`]): the
//! what-if kind, create-only and never stored. The posted Jobs and Quotas
//! are checked by their kinds' own rules (422 with the field path under
//! `spec.jobs[i]` or `spec.quotas[i]`), the cluster is read from the watch
//! cache, and `core::plan` answers with the scheduler's own decisions over
//! it: nothing is written. Nodes and Tasks decoded for a plan are kept, by
//! resourceVersion, for the next ([`Decoded`]): a plan decodes only what
//! changed since the last one. Asking takes `create` on `planreviews`
//! (namespace editors have it: a plan names the nodes it would use and the
//! tasks it would preempt, in any namespace).

use corral_api::plan::{PLAN_REVIEW_KIND, PLAN_REVIEW_PLURAL, PlanReview};
use corral_api::validation::{FieldError, validate_job, validate_quota};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use corral_api::{Job, Node, Quota, Reservation, Role, Task};
use corral_core::plan::{Settings, World, plan};
use corral_core::sched::Policy;
use corral_core::sched::preempt::Rules;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::storage::registry::{Api, ListQuery};
use crate::transport::auth::{Attributes, Authorizer, User, authorize};

/// The group plans are asked in.
pub const GROUP: &str = "corral.dev";
/// Its version.
pub const VERSION: &str = "v1alpha1";

/// True for `/apis/corral.dev/v1alpha1/planreviews`.
pub fn is_plan(group: &str, version: &str, plural: &str) -> bool {
    group == GROUP && version == VERSION && plural == PLAN_REVIEW_PLURAL
}

/// Every object of `plural` (Corral's), from the cache when it can serve.
async fn entries(
    api: &Api,
    plural: &str,
) -> Result<Vec<Arc<crate::storage::cache::Entry>>, ApiError> {
    let Some(desc) = api.registry.find(GROUP, VERSION, plural) else {
        return Err(ApiError::Internal(format!("{plural} are not served")));
    };
    Ok(api.list(&desc, None, &ListQuery::default()).await?.items)
}

async fn all<T: DeserializeOwned>(api: &Api, plural: &str) -> Result<Vec<T>, ApiError> {
    Ok(entries(api, plural)
        .await?
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.json).ok())
        .collect())
}

/// Objects of one kind decoded for plans, by key, with the version each
/// was decoded at.
#[derive(Debug)]
struct Kept<T>(Mutex<HashMap<String, (i64, Arc<T>)>>);

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept(Mutex::new(HashMap::new()))
    }
}

impl<T: DeserializeOwned> Kept<T> {
    /// `entries` decoded: those kept at the same version reused, the
    /// others decoded (and kept), the gone ones forgotten.
    fn refresh(&self, entries: &[Arc<crate::storage::cache::Entry>]) -> Vec<Arc<T>> {
        let Ok(mut kept) = self.0.lock() else {
            return entries
                .iter()
                .filter_map(|e| serde_json::from_slice(&e.json).ok().map(Arc::new))
                .collect();
        };
        let mut next = HashMap::with_capacity(entries.len());
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let key = format!("{}/{}", e.namespace.as_deref().unwrap_or_default(), e.name);
            let version = e.revision;
            let object = match kept.remove(&key) {
                Some((v, o)) if v == version => o,
                _ => match serde_json::from_slice(&e.json) {
                    Ok(o) => Arc::new(o),
                    Err(_) => continue,
                },
            };
            out.push(object.clone());
            next.insert(key, (version, object));
        }
        *kept = next;
        out
    }
}

/// The Nodes and Tasks a server decoded for its last plan, reused by the
/// next as far as they did not change.
#[derive(Debug, Default)]
pub struct Decoded {
    nodes: Kept<Node>,
    tasks: Kept<Task>,
}

fn invalid(errors: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        kind: format!("{PLAN_REVIEW_KIND}.{GROUP}"),
        name: String::new(),
        errors,
    }
}

fn under(prefix: &str, errors: Vec<FieldError>) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|mut e| {
            e.field = format!("{prefix}.{}", e.field);
            e
        })
        .collect()
}

/// Answers a PlanReview posted by `user` (see the module doc).
pub async fn answer(
    api: &Api,
    decoded: &Decoded,
    body: Value,
    user: &User,
    authz: &dyn Authorizer,
) -> Result<Value, ApiError> {
    let attrs = Attributes {
        verb: "create".into(),
        group: GROUP.into(),
        resource: PLAN_REVIEW_PLURAL.into(),
        ..Attributes::default()
    };
    authorize(authz, user, &attrs)?;
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && kind != PLAN_REVIEW_KIND
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({kind}) does not match the expected kind ({PLAN_REVIEW_KIND})"
        )));
    }
    let mut review: PlanReview = serde_json::from_value(body)
        .map_err(|e| ApiError::BadRequest(format!("a PlanReview: {e}")))?;
    let mut errors = Vec::new();
    for (i, job) in review.spec.jobs.iter_mut().enumerate() {
        if job.metadata.namespace.is_none() {
            job.metadata.namespace = Some("default".into());
        }
        errors.extend(under(&format!("spec.jobs[{i}]"), validate_job(job)));
    }
    for (i, q) in review.spec.quotas.iter().enumerate() {
        errors.extend(under(&format!("spec.quotas[{i}]"), validate_quota(q)));
    }
    if review.spec.jobs.is_empty() && review.spec.quotas.is_empty() {
        errors.push(FieldError {
            type_: corral_api::validation::FieldErrorType::Required,
            field: "spec".into(),
            value: None,
            detail: "name jobs or quotas to plan".into(),
        });
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let nodes = decoded.nodes.refresh(&entries(api, "nodes").await?);
    let reservations: Vec<Reservation> = all(api, "reservations").await?;
    let roles: Vec<Role> = all(api, "roles").await?;
    let quotas: Vec<Quota> = all(api, "quotas").await?;
    let tasks = decoded.tasks.refresh(&entries(api, "tasks").await?);
    let world = World {
        nodes: &nodes,
        reservations: &reservations,
        roles: &roles,
        quotas: &quotas,
        tasks: &tasks,
    };
    let jobs: Vec<Job> = review.spec.jobs.clone();
    let settings = Settings {
        policy: Policy::BinPack,
        rules: Rules::default(),
    };
    let status = plan(
        &world,
        &jobs,
        &review.spec.quotas,
        settings,
        jiff::Timestamp::now(),
    );
    review.api_version = format!("{GROUP}/{VERSION}");
    review.kind = PLAN_REVIEW_KIND.into();
    review.status = Some(status);
    serde_json::to_value(&review).map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::storage::cache::Entry;

    fn node(name: &str, version: &str, cpus: i64) -> Arc<Entry> {
        Arc::new(
            Entry::new(json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Node",
                "metadata": {"name": name, "resourceVersion": version}, "spec": {},
                "status": {"allocatable": {"cpus": cpus}}}))
            .expect("entry"),
        )
    }

    #[test]
    fn a_plan_decodes_only_what_changed_since_the_last() {
        let kept: Kept<Node> = Kept::default();
        let first = kept.refresh(&[node("a", "1", 1), node("b", "1", 1)]);
        assert_eq!(first.len(), 2);
        let second = kept.refresh(&[node("a", "1", 1), node("b", "2", 4), node("c", "3", 1)]);
        assert!(Arc::ptr_eq(&first[0], &second[0]), "a unchanged: reused");
        assert!(
            !Arc::ptr_eq(&first[1], &second[1]),
            "b changed: decoded again"
        );
        let b = second[1]
            .status
            .as_ref()
            .and_then(|s| s.allocatable.get("cpus"));
        assert_eq!(b.map(|q| q.to_string()), Some("4".to_owned()));
        let third = kept.refresh(&[node("c", "3", 1)]);
        assert!(Arc::ptr_eq(&second[2], &third[0]));
        assert_eq!(
            kept.0.lock().map(|k| k.len()).unwrap_or(0),
            1,
            "gone ones forgotten"
        );
    }
}
