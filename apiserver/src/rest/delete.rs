//! Deletes: finalizers and deletionTimestamp, preconditions, namespace
//! contents, and background garbage collection of dependents.

use super::*;

impl Api {
    /// Deletes an object; with finalizers it is only marked for deletion.
    pub async fn delete(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
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
            if !finalizers(&current).is_empty() {
                if meta_str(&current, "deletionTimestamp").is_some() {
                    return Ok(current);
                }
                let mut marked = current.clone();
                let meta = meta_mut(&mut marked);
                meta.insert("deletionTimestamp".into(), json!(now_time()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
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
            if desc.kind == "Namespace" {
                self.delete_namespace_contents(name).await?;
            }
            match self.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(d) => {
                    if opts.propagation.as_deref() != Some("Orphan") {
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
            let obj = &entry.value;
            let name = meta_str(obj, "name").unwrap_or_default();
            let obj_ns = meta_str(obj, "namespace");
            match self.delete(desc, obj_ns, name, opts).await {
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

    /// Removes every namespaced object of namespace `ns`.
    async fn delete_namespace_contents(&self, ns: &str) -> Result<(), ApiError> {
        for desc in self.registry.all().iter().filter(|d| d.namespaced) {
            let page = self
                .store
                .range(RangeRequest::prefix(desc.key_prefix(Some(ns))))
                .await?;
            for kv in page.items {
                match self.store.delete(&kv.key, None).await {
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
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

    async fn collect_dependents(&self, uid: &str) -> Result<(), ApiError> {
        let mut owners = vec![uid.to_owned()];
        while let Some(owner) = owners.pop() {
            for desc in self.registry.all() {
                let page = self
                    .store
                    .range(RangeRequest::prefix(desc.key_prefix(None)))
                    .await?;
                for kv in page.items {
                    let obj = from_stored(&kv.value, kv.mod_revision)?;
                    let owned = obj
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter().any(|r| {
                                r.get("uid").and_then(Value::as_str) == Some(owner.as_str())
                            })
                        });
                    if owned {
                        let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
                        let ns = meta_str(&obj, "namespace").map(str::to_owned);
                        match self
                            .delete(desc, ns.as_deref(), &name, &DeleteOptions::default())
                            .await
                        {
                            Ok(_) | Err(ApiError::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                        if let Some(child) = meta_str(&obj, "uid") {
                            owners.push(child.to_owned());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
