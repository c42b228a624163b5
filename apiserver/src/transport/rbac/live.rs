//! The server's RBAC authorizer: the [`Policy`] of the RBAC objects in the
//! watch cache, rebuilt after every change to them, behind the privileged
//! group `system:masters` (allowed everything without a lookup, as
//! kube-apiserver allows it, so that administrators and the components that
//! share their credential are never locked out, even before the cache has
//! loaded the policy).
//!
//! A change to a binding takes effect once the cache has it (milliseconds):
//! a request in between is decided by the policy before the change, as in
//! kube-apiserver, whose authorizer follows informers.

use std::sync::{Arc, RwLock};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;

use super::{MASTERS, Policy};
use crate::storage::cache::{Interest, Start, WatchCache};
use crate::transport::auth::{Attributes, Authorizer, Rules, User};

const GROUP: &str = "rbac.authorization.k8s.io";
const PLURALS: [&str; 4] = [
    "clusterroles",
    "roles",
    "clusterrolebindings",
    "rolebindings",
];

/// The server's authorizers in kube-apiserver's `Node,RBAC` order: node
/// credentials confined to their node's objects (see
/// [`crate::transport::node_authorizer`]), then RBAC over `api`'s watch cache.
///
/// Waits (at most [`SYNC_WAIT`]) for the cache to hold what the store holds
/// now — the bootstrap policy just reconciled — so that the first request
/// is judged by it, not by an empty policy.
pub async fn node_and_rbac(
    api: &crate::storage::registry::Api,
) -> Result<Arc<dyn Authorizer>, crate::ApiError> {
    let cache = api.cache.clone().ok_or_else(|| {
        crate::ApiError::Internal("RBAC follows the watch cache, which this server lacks".into())
    })?;
    let now = api
        .store
        .current_revision()
        .await
        .map_err(|e| crate::ApiError::from_store(e, "", ""))?;
    if !cache.wait_for(now, SYNC_WAIT).await {
        tracing::warn!(
            revision = now,
            "the watch cache is behind the store: RBAC starts from what it holds"
        );
    }
    Ok(Arc::new(crate::transport::auth::Chain(vec![
        crate::transport::node_authorizer::NodeAuthorizer::new(Some(cache.clone()), &api.registry),
        RbacAuthorizer::follow(cache),
    ])))
}

/// How long the server waits for its cache before RBAC's first decision.
pub const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// RBAC over the cache's objects (see the module doc).
#[derive(Debug, Default)]
pub struct RbacAuthorizer {
    policy: RwLock<Arc<Policy>>,
}

fn is_master(user: &User) -> bool {
    user.groups.iter().any(|g| g == MASTERS)
}

fn objects<T: DeserializeOwned>(cache: &WatchCache, index: usize) -> Vec<T> {
    cache
        .snapshot(index, None, None)
        .map(|s| {
            s.items
                .iter()
                .filter_map(|e| serde_json::from_slice(&e.json).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl RbacAuthorizer {
    /// An authorizer that follows `cache` from now on (in a task of its own,
    /// which ends when the cache is gone).
    pub fn follow(cache: WatchCache) -> Arc<Self> {
        let me = Arc::new(RbacAuthorizer::default());
        // The first policy now, from what the cache holds: no request is
        // judged before it exists.
        if let Some(indexes) = PLURALS
            .iter()
            .map(|p| cache.index_of(p, GROUP))
            .collect::<Option<Vec<usize>>>()
            && let Ok(mut p) = me.policy.write()
        {
            *p = Arc::new(Policy::new(
                &objects::<ClusterRole>(&cache, indexes[0]),
                &objects::<Role>(&cache, indexes[1]),
                &objects::<ClusterRoleBinding>(&cache, indexes[2]),
                &objects::<RoleBinding>(&cache, indexes[3]),
            ));
        }
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            let Some(indexes) = PLURALS
                .iter()
                .map(|p| cache.index_of(p, GROUP))
                .collect::<Option<Vec<usize>>>()
            else {
                tracing::error!(
                    "the RBAC kinds are not registered: RBAC denies all but system:masters"
                );
                return;
            };
            loop {
                // Subscribe first, then read: no change falls in between.
                let mut subs = Vec::new();
                for &i in &indexes {
                    let interest = Interest {
                        resource: i,
                        namespace: None,
                        node: None,
                    };
                    match cache.subscribe(interest, Start::Now) {
                        Ok(s) => subs.push(s.live),
                        Err(e) => tracing::warn!(error = %e, "following RBAC objects"),
                    }
                }
                if subs.len() < indexes.len() {
                    // The cache is restarting: try again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
                let policy = Policy::new(
                    &objects::<ClusterRole>(&cache, indexes[0]),
                    &objects::<Role>(&cache, indexes[1]),
                    &objects::<ClusterRoleBinding>(&cache, indexes[2]),
                    &objects::<RoleBinding>(&cache, indexes[3]),
                );
                let Some(me) = weak.upgrade() else {
                    return;
                };
                if let Ok(mut p) = me.policy.write() {
                    *p = Arc::new(policy);
                }
                drop(me);
                // The next change to any of them (or a dropped subscription,
                // after a relist) rebuilds the policy.
                let next = futures::future::select_all(subs.iter_mut().map(|s| Box::pin(s.recv())));
                let _ = next.await;
            }
        });
        me
    }

    /// An authorizer that decides by `policy` and follows nothing (for
    /// tests, and for embedding a fixed policy).
    pub fn with_policy(policy: Policy) -> Self {
        RbacAuthorizer {
            policy: RwLock::new(Arc::new(policy)),
        }
    }

    fn current(&self) -> Arc<Policy> {
        self.policy.read().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Authorizer for RbacAuthorizer {
    fn allows(&self, user: &User, attrs: &Attributes) -> bool {
        is_master(user) || self.current().allows(user, attrs)
    }

    fn allows_path(&self, user: &User, verb: &str, path: &str) -> bool {
        is_master(user) || self.current().allows_path(user, verb, path)
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        Some(self.current())
    }

    fn rules(&self, user: &User, namespace: &str) -> Option<Rules> {
        if is_master(user) {
            return crate::transport::auth::AllowAuthenticated.rules(user, namespace);
        }
        self.current().rules(user, namespace)
    }
}
