//! Deletes: finalizers and deletionTimestamp, preconditions, namespace
//! termination, and the propagation of a delete to the objects that name
//! its target in their `ownerReferences`:
//! - background (the default): the owner goes at once, its dependents after;
//! - foreground: the owner stays, marked and with the `foregroundDeletion`
//!   finalizer, until its dependents are gone;
//! - orphan: the owner stays, marked and with the `orphan` finalizer, until
//!   no dependent names it any more; the dependents stay.
//!
//! A delete that names no policy follows the object's own `orphan` or
//! `foregroundDeletion` finalizer. A server that restarts resumes the held
//! deletions it finds.
//!
//! Deleting a namespace that holds objects marks it Terminating (a
//! deletionTimestamp, the `kubernetes` finalizer in `spec.finalizers`,
//! `status.phase: Terminating`); nothing new may be created in it. Its
//! objects are then deleted like any delete — those with finalizers stay
//! until their finalizers are removed — and once it is empty the namespace
//! goes. A server that restarts resumes the terminations it finds.

use super::*;

/// The finalizer (in `spec.finalizers`) of a terminating namespace.
const NAMESPACE_FINALIZER: &str = "kubernetes";
/// The finalizer that holds an owner during foreground deletion.
const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer that holds an owner while its dependents are released.
const ORPHAN: &str = "orphan";
/// How long foreground deletion waits for dependents to disappear.
const FOREGROUND_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// The longest a background deletion waits for a change before it looks
/// again anyway (a missed change, or a store without a cache).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// The least time between two looks of one background deletion, so a busy
/// cluster's stream of changes does not turn into a stream of re-reads.
const MIN_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

impl Api {
    /// The revision a background deletion has seen before it reads: the
    /// cache's, or the store's.
    async fn seen_revision(&self) -> i64 {
        match &self.cache {
            Some(cache) => cache.revision(),
            None => self.store.current_revision().await.unwrap_or(0),
        }
    }

    /// Waits until something changes after revision `seen`, or `cap`
    /// passes: the cache's progress when there is a cache, else a store
    /// watch of the registry. At least [`MIN_RECHECK`] passes either way.
    async fn wait_for_change(&self, seen: i64, cap: std::time::Duration) {
        let earliest = tokio::time::Instant::now() + MIN_RECHECK;
        self.wait_for_change_after(seen, cap).await;
        tokio::time::sleep_until(earliest).await;
    }

    async fn wait_for_change_after(&self, seen: i64, cap: std::time::Duration) {
        match &self.cache {
            Some(cache) => {
                cache.wait_for(seen + 1, cap).await;
            }
            None => {
                let next = async {
                    if let Ok(mut changes) = self.store.watch("/registry/", seen + 1).await {
                        // A change, not a progress report someone asked for.
                        while let Some(Ok(corral_store::WatchEvent::Progress { .. })) =
                            futures::StreamExt::next(&mut changes).await
                        {}
                    }
                };
                let _ = tokio::time::timeout(cap, next).await;
            }
        }
    }

    /// Deletes an object; with finalizers it is only marked for deletion.
    pub async fn delete(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        if let Some(view) = &desc.view {
            return Box::pin(self.delete(&view.storage, ns, name, opts))
                .await
                .map(view.to_view)
                .map_err(|e| as_view_error(e, desc));
        }
        let key = desc.key(ns, name);
        let resource = desc.group_resource();
        for _ in 0..MAX_RETRIES {
            let kv = self
                .store
                .get(&key)
                .await
                .map_err(|e| ApiError::from_store(e, &resource, name))?
                .ok_or_else(|| ApiError::NotFound {
                    resource: resource.clone(),
                    name: name.to_owned(),
                })?;
            let current = from_stored(&kv.value, kv.mod_revision)?;
            if let Some(uid) = &opts.uid
                && meta_str(&current, "uid") != Some(uid.as_str())
            {
                return Err(ApiError::Conflict {
                    resource,
                    name: name.to_owned(),
                    message: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&current, "uid").unwrap_or_default()
                    ),
                });
            }
            if let Some(rv) = &opts.resource_version
                && *rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::Conflict {
                    resource,
                    name: name.to_owned(),
                    message: format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                });
            }
            if opts.dry_run {
                return Ok(current);
            }
            let policy = opts
                .propagation
                .unwrap_or_else(|| default_propagation(&current));
            // Foreground and orphan deletions hold the owner, marked and with
            // their finalizer, while its dependents go or are released.
            let hold = match policy {
                Propagation::Foreground => Some(FOREGROUND),
                Propagation::Orphan => Some(ORPHAN),
                Propagation::Background => None,
            };
            if let Some(hold) = hold
                && meta_str(&current, "deletionTimestamp").is_none()
                && let Some(uid) = meta_str(&current, "uid").map(str::to_owned)
                && (finalizers(&current).iter().any(|f| f == hold)
                    || !self.dependents(&uid).await?.is_empty())
            {
                let mut marked = marked_for_deletion(&current);
                // The policy asked for replaces the other one's finalizer.
                let mut fins: Vec<String> = finalizers(&current)
                    .into_iter()
                    .filter(|f| f != FOREGROUND && f != ORPHAN)
                    .collect();
                fins.push(hold.to_owned());
                meta_mut(&mut marked).insert("finalizers".into(), json!(fins));
                match self
                    .store
                    .update(&key, to_stored(&marked)?, kv.mod_revision)
                    .await
                {
                    Ok(new_kv) => {
                        if let Some(arc) = self.registry.find(desc.group, desc.version, desc.plural)
                        {
                            self.spawn_held_deletion(
                                arc,
                                ns.map(str::to_owned),
                                name.to_owned(),
                                uid,
                                policy,
                            );
                        }
                        return from_stored(&new_kv.value, new_kv.mod_revision);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, &resource, name)),
                }
            }
            // A background delete is not held by the other policies'
            // finalizers: it drops them, as kube-apiserver does.
            let mut holding = finalizers(&current);
            if meta_str(&current, "deletionTimestamp").is_none() {
                holding.retain(|f| f != FOREGROUND && f != ORPHAN);
            }
            if !holding.is_empty() {
                if meta_str(&current, "deletionTimestamp").is_some() {
                    return Ok(current);
                }
                let mut marked = marked_for_deletion(&current);
                meta_mut(&mut marked).insert("finalizers".into(), json!(holding));
                match self
                    .store
                    .update(&key, to_stored(&marked)?, kv.mod_revision)
                    .await
                {
                    Ok(new_kv) => return from_stored(&new_kv.value, new_kv.mod_revision),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, &resource, name)),
                }
            }
            if desc.kind == "Namespace" && !self.namespace_is_empty(name).await? {
                if meta_str(&current, "deletionTimestamp").is_some() {
                    return Ok(current);
                }
                let mut marked = marked_for_deletion(&current);
                marked["spec"]["finalizers"] = json!([NAMESPACE_FINALIZER]);
                marked["status"]["phase"] = json!("Terminating");
                match self
                    .store
                    .update(&key, to_stored(&marked)?, kv.mod_revision)
                    .await
                {
                    Ok(new_kv) => {
                        self.spawn_namespace_termination(name.to_owned());
                        return from_stored(&new_kv.value, new_kv.mod_revision);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, &resource, name)),
                }
            }
            match self.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(d) => {
                    if policy != Propagation::Orphan {
                        self.spawn_collect_dependents(&current);
                    }
                    let mut last = current;
                    meta_mut(&mut last)
                        .insert("resourceVersion".into(), json!(d.revision.to_string()));
                    return Ok(last);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, &resource, name)),
            }
        }
        Err(ApiError::Conflict {
            resource,
            name: name.to_owned(),
            message: "the object kept changing; please try again".into(),
        })
    }

    /// Deletes every object of a list (deletecollection).
    pub async fn delete_collection(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        q: &ListQuery,
        opts: &DeleteOptions,
    ) -> Result<ListPage, ApiError> {
        let page = self.list(desc, ns, q).await?;
        let mut deleted = Vec::new();
        for entry in &page.items {
            match self
                .delete(desc, entry.namespace.as_deref(), &entry.name, opts)
                .await
            {
                Ok(v) => deleted.push(Arc::new(Entry::new(v)?)),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ListPage {
            items: deleted,
            revision: page.revision,
            continue_token: None,
        })
    }

    /// True when no namespaced object lives in `ns`.
    async fn namespace_is_empty(&self, ns: &str) -> Result<bool, ApiError> {
        for desc in self.registry.all().iter().filter(|d| d.namespaced) {
            let mut req = RangeRequest::prefix(desc.key_prefix(Some(ns)));
            req.limit = 1;
            if !self.store.range(req).await?.items.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Deletes every object of the terminating namespace `ns` (each through
    /// [`Api::delete`], so finalizers hold), and returns whether it is empty.
    async fn delete_namespace_contents(&self, ns: &str) -> Result<bool, ApiError> {
        let mut empty = true;
        for desc in self.registry.all().iter().filter(|d| d.namespaced) {
            let page = self
                .store
                .range(RangeRequest::prefix(desc.key_prefix(Some(ns))))
                .await?;
            for kv in page.items {
                empty = false;
                let obj = from_stored(&kv.value, kv.mod_revision)?;
                if meta_str(&obj, "deletionTimestamp").is_some() {
                    continue; // waiting for its finalizers
                }
                let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
                match self
                    .delete(desc, Some(ns), &name, &DeleteOptions::default())
                    .await
                {
                    Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(empty)
    }

    /// Terminates namespace `ns` in the background: deletes its contents
    /// until none is left, then the namespace itself.
    pub(super) fn spawn_namespace_termination(&self, ns: String) {
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let seen = api.seen_revision().await;
                match api.delete_namespace_contents(&ns).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(namespace = %ns, error = %e, "terminating a namespace; retrying")
                    }
                }
                // Objects with finalizers wait for their controllers: look
                // again once something has changed.
                api.wait_for_change(seen, RECHECK).await;
            }
            let key = format!("/registry/core/namespaces/{ns}");
            for _ in 0..MAX_RETRIES {
                let Ok(Some(kv)) = api.store.get(&key).await else {
                    return;
                };
                match api.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => return,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => {
                        tracing::warn!(namespace = %ns, error = %e, "deleting a terminated namespace failed");
                        return;
                    }
                }
            }
        });
    }

    /// Background garbage collection: deletes (recursively) the objects whose
    /// ownerReferences name `owner`'s uid.
    pub(super) fn spawn_collect_dependents(&self, owner: &Value) {
        let Some(uid) = meta_str(owner, "uid").map(str::to_owned) else {
            return;
        };
        let api = self.clone();
        tokio::spawn(async move {
            if let Err(e) = api.collect_dependents(&uid).await {
                tracing::warn!(owner = %uid, error = %e, "garbage collection of dependents failed");
            }
        });
    }

    /// The objects whose ownerReferences name `uid` (from the cache when there is one).
    async fn dependents(&self, uid: &str) -> Result<Vec<(Arc<ResourceDesc>, Value)>, ApiError> {
        self.objects_where(|e| e.owners.iter().any(|o| o == uid), |_| true)
            .await
    }

    /// Every object, of any kind, that `maybe` holds for its entry and
    /// `keep` for the object (from the cache when there is one): only the
    /// objects `maybe` lets through are decoded.
    async fn objects_where(
        &self,
        maybe: impl Fn(&Entry) -> bool,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Vec<(Arc<ResourceDesc>, Value)>, ApiError> {
        let mut out = Vec::new();
        for desc in self.registry.all() {
            let entries = match self.cache_for(desc, None).await? {
                Some((cache, index)) => cache.snapshot(index, None, None)?.items,
                None => self
                    .store
                    .range(RangeRequest::prefix(desc.key_prefix(None)))
                    .await?
                    .items
                    .iter()
                    .map(|kv| Entry::from_stored(&kv.value, kv.mod_revision).map(Arc::new))
                    .collect::<Result<_, _>>()?,
            };
            for e in entries.iter().filter(|e| maybe(e)) {
                let obj = e.value()?;
                if keep(&obj) {
                    out.push((desc.clone(), obj));
                }
            }
        }
        Ok(out)
    }

    /// Deletes the dependents of `uid`; each deletion collects its own
    /// dependents in turn.
    async fn collect_dependents(&self, uid: &str) -> Result<(), ApiError> {
        for (desc, obj) in self.dependents(uid).await? {
            let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
            let ns = meta_str(&obj, "namespace").map(str::to_owned);
            match self
                .delete(&desc, ns.as_deref(), &name, &DeleteOptions::default())
                .await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Finishes a deletion that holds its owner (marked, with the policy's
    /// finalizer), in the background. Foreground: deletes the dependents and
    /// waits until they are gone. Orphan: removes the owner from each
    /// dependent's `ownerReferences`. Then it drops the owner's finalizer,
    /// which deletes it when no other finalizer remains. Both steps are
    /// idempotent, so a server that restarts simply runs them again.
    pub(super) fn spawn_held_deletion(
        &self,
        desc: Arc<ResourceDesc>,
        ns: Option<String>,
        name: String,
        uid: String,
        policy: Propagation,
    ) {
        let api = self.clone();
        tokio::spawn(async move {
            let result = async {
                let hold = match policy {
                    Propagation::Foreground => {
                        api.collect_dependents(&uid).await?;
                        api.wait_until_no_dependents(&uid).await?;
                        FOREGROUND
                    }
                    Propagation::Orphan => {
                        api.release_dependents(&uid).await?;
                        ORPHAN
                    }
                    Propagation::Background => return Ok(()),
                };
                let drop_finalizer = |cur: &Value| {
                    let mut next = cur.clone();
                    let rest: Vec<String> =
                        finalizers(cur).into_iter().filter(|f| f != hold).collect();
                    meta_mut(&mut next).insert("finalizers".into(), json!(rest));
                    Ok(next)
                };
                ignore_not_found(
                    api.modify(
                        &desc,
                        ns.as_deref(),
                        &name,
                        None,
                        &WriteOptions::default(),
                        drop_finalizer,
                        false,
                        "Update",
                    )
                    .await,
                )
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(owner = %uid, ?policy, error = %e, "deletion of an owner did not finish");
            }
        });
    }

    async fn wait_until_no_dependents(&self, uid: &str) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + FOREGROUND_WAIT;
        loop {
            let seen = self.seen_revision().await;
            if self.dependents(uid).await?.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::Unavailable("dependents are still present".into()));
            }
            self.wait_for_change(seen, RECHECK).await;
        }
    }

    /// Removes `uid` from the `ownerReferences` of every object naming it.
    async fn release_dependents(&self, uid: &str) -> Result<(), ApiError> {
        let release = |cur: &Value| {
            let mut next = cur.clone();
            if let Some(refs) = next
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            }
            Ok(next)
        };
        for (desc, obj) in self.dependents(uid).await? {
            let name = meta_str(&obj, "name").unwrap_or_default();
            let ns = meta_str(&obj, "namespace");
            ignore_not_found(
                self.modify(
                    &desc,
                    ns,
                    name,
                    None,
                    &WriteOptions::default(),
                    release,
                    false,
                    "Update",
                )
                .await,
            )?;
        }
        Ok(())
    }

    /// Resumes the held deletions a server stopped in the middle of: objects
    /// marked for deletion that still carry `foregroundDeletion` or `orphan`.
    pub(super) async fn resume_held_deletions(&self) -> Result<(), ApiError> {
        let held = self
            .objects_where(
                |e| e.deleting,
                |obj| {
                    finalizers(obj)
                        .iter()
                        .any(|f| f == FOREGROUND || f == ORPHAN)
                },
            )
            .await?;
        for (desc, obj) in held {
            let policy = default_propagation(&obj);
            if let (Some(name), Some(uid)) = (meta_str(&obj, "name"), meta_str(&obj, "uid")) {
                self.spawn_held_deletion(
                    desc,
                    meta_str(&obj, "namespace").map(str::to_owned),
                    name.to_owned(),
                    uid.to_owned(),
                    policy,
                );
            }
        }
        Ok(())
    }
}

/// The policy of a delete that names none: what the object's finalizers
/// ask for (`orphan`, `foregroundDeletion`), else background.
fn default_propagation(obj: &Value) -> Propagation {
    let fins = finalizers(obj);
    if fins.iter().any(|f| f == ORPHAN) {
        Propagation::Orphan
    } else if fins.iter().any(|f| f == FOREGROUND) {
        Propagation::Foreground
    } else {
        Propagation::Background
    }
}

/// A write's result, with an object already gone counting as done.
fn ignore_not_found(result: Result<Written, ApiError>) -> Result<(), ApiError> {
    match result {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `obj` with its deletion begun now (what a delete writes while finalizers
/// or dependents hold the object).
fn marked_for_deletion(obj: &Value) -> Value {
    let mut marked = obj.clone();
    let meta = meta_mut(&mut marked);
    meta.insert("deletionTimestamp".into(), json!(now_time()));
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
    marked
}
