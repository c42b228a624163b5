//! Delegated authorization: the API server decides, through a
//! SubjectAccessReview, whether a caller may have what it asks an endpoint
//! for. Answers are kept for a short while (an allowed one longer than a
//! refused one, as kubelet keeps them), so a scraper or a followed log
//! costs the API server one review per caller and minute, not one per
//! request. A review that cannot be made refuses the request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::Caller;

/// How long an allowed answer is kept.
const ALLOWED_FOR: Duration = Duration::from_secs(60);
/// How long a refusal is kept.
const REFUSED_FOR: Duration = Duration::from_secs(10);
/// The most answers kept (all are dropped when it is reached).
const MOST_KEPT: usize = 1024;

/// What a request reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Access {
    /// `get` on a path that is not a resource (`/metrics`).
    Path(String),
    /// `get` on a subresource of a namespaced object (`tasks/log`).
    Subresource {
        /// API group.
        group: String,
        /// Plural resource.
        resource: String,
        /// The subresource.
        subresource: String,
        /// Namespace.
        namespace: String,
        /// Object name.
        name: String,
    },
}

impl Access {
    fn spec(&self, caller: &Caller) -> SubjectAccessReviewSpec {
        let mut spec = SubjectAccessReviewSpec {
            user: Some(caller.user.clone()),
            groups: Some(caller.groups.clone()),
            ..SubjectAccessReviewSpec::default()
        };
        match self {
            Access::Path(path) => {
                spec.non_resource_attributes = Some(NonResourceAttributes {
                    path: Some(path.clone()),
                    verb: Some("get".into()),
                });
            }
            Access::Subresource {
                group,
                resource,
                subresource,
                namespace,
                name,
            } => {
                spec.resource_attributes = Some(ResourceAttributes {
                    group: Some(group.clone()),
                    resource: Some(resource.clone()),
                    subresource: Some(subresource.clone()),
                    namespace: Some(namespace.clone()),
                    name: Some(name.clone()),
                    verb: Some("get".into()),
                    ..ResourceAttributes::default()
                });
            }
        }
        spec
    }
}

/// Asks the API server (through the component's own client, which needs
/// `create` on `subjectaccessreviews`) and keeps its answers a while.
pub struct Authorizer {
    client: kube::Client,
    kept: Mutex<HashMap<(Caller, Access), (bool, Instant)>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Asks through `client`.
    pub fn new(client: kube::Client) -> Self {
        Authorizer {
            client,
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// True when `caller` may have `access`.
    pub async fn allows(&self, caller: &Caller, access: &Access) -> bool {
        let key = (caller.clone(), access.clone());
        let now = Instant::now();
        {
            let kept = self
                .kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((allowed, at)) = kept.get(&key) {
                let keep = if *allowed { ALLOWED_FOR } else { REFUSED_FOR };
                if now.duration_since(*at) < keep {
                    return *allowed;
                }
            }
        }
        let review = SubjectAccessReview {
            spec: access.spec(caller),
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let allowed = match api.create(&PostParams::default(), &review).await {
            Ok(answer) => answer.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(error = %e, user = %caller.user, "could not ask the API server whether a caller may read this; refused");
                return false;
            }
        };
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() >= MOST_KEPT {
            kept.clear();
        }
        kept.insert(key, (allowed, now));
        allowed
    }
}
