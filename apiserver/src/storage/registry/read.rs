//! Reads: one object, and lists (first page from the watch cache, later
//! pages from the store at the same revision).

use super::*;

impl Api {
    /// Reads one object.
    pub async fn get(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        if let Some(view) = &desc.view {
            return Box::pin(self.get(&view.storage, ns, name))
                .await
                .map(view.to_view)
                .map_err(|e| as_view_error(e, desc));
        }
        let kv = self
            .store
            .get(&desc.key(ns, name))
            .await
            .map_err(|e| ApiError::from_store(e, &desc.group_resource(), name))?
            .ok_or_else(|| ApiError::NotFound {
                resource: desc.group_resource(),
                name: name.to_owned(),
            })?;
        from_stored(&kv.value, kv.mod_revision)
    }

    /// One object for an admission decision: from the watch cache when it
    /// holds it, else from the store (one created a moment ago may not be
    /// cached yet); None when it does not exist.
    pub(super) async fn cached_or_stored(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        if let Some(entry) = self.cache.as_ref().and_then(|c| c.get(&desc.key(ns, name))) {
            return Ok(Some(entry.value()?));
        }
        match self.get(desc, ns, name).await {
            Ok(v) => Ok(Some(v)),
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists objects, filtered and paginated: the first page from the watch
    /// cache when there is one, later pages from the store at the same revision.
    pub async fn list(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        q: &ListQuery,
    ) -> Result<ListPage, ApiError> {
        if let Some(view) = &desc.view {
            let page = Box::pin(self.list(&view.storage, ns, &stored_query(q, view))).await?;
            let items = page
                .items
                .iter()
                .map(|e| Ok::<_, ApiError>(Arc::new(Entry::new((view.to_view)(e.value()?))?)))
                .collect::<Result<_, _>>()?;
            return Ok(ListPage { items, ..page });
        }
        // A version the store has not reached cannot be served (one store
        // backs every server, so its revision is the newest there is).
        if let Some(rv) = q
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty() && *r != "0")
        {
            let requested = parse_rv(rv)?;
            let current = self.store.current_revision().await?;
            if requested > current {
                return Err(ApiError::TooLargeResourceVersion { requested, current });
            }
        }
        if q.continue_token.is_none()
            && !q.exact
            && let Some((cache, index)) =
                self.cache_for(desc, q.resource_version.as_deref()).await?
        {
            let node = q.fields.required(NODE_FIELD).filter(|n| !n.is_empty());
            let snap = cache.snapshot(index, ns.filter(|_| desc.namespaced), node)?;
            let mut items: Vec<Arc<Entry>> = Vec::new();
            for entry in &snap.items {
                if !entry.matches(&q.labels, &q.fields) {
                    continue;
                }
                if q.limit > 0 && items.len() == q.limit {
                    let key = items.last().map_or_else(String::new, |last| {
                        desc.key(last.namespace.as_deref(), &last.name)
                    });
                    return Ok(ListPage {
                        items,
                        revision: snap.revision,
                        continue_token: Some(encode_continue(snap.revision, &key)),
                    });
                }
                items.push(entry.clone());
            }
            return Ok(ListPage {
                items,
                revision: snap.revision,
                continue_token: None,
            });
        }
        self.list_from_store(desc, ns, q).await
    }

    /// Lists objects straight from the store.
    pub async fn list_from_store(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        q: &ListQuery,
    ) -> Result<ListPage, ApiError> {
        let prefix = desc.key_prefix(ns);
        let (mut revision, mut after) = match &q.continue_token {
            Some(t) => {
                let (rv, start) = decode_continue(t)?;
                if !start.starts_with(&prefix) {
                    return Err(ApiError::BadRequest(
                        "continue token does not belong to this list".into(),
                    ));
                }
                (Some(rv), Some(start))
            }
            // An exact list reads the store at that revision.
            None if q.exact => (
                q.resource_version.as_deref().map(parse_rv).transpose()?,
                None,
            ),
            None => (None, None),
        };
        let mut items = Vec::new();
        loop {
            let mut req = RangeRequest::prefix(prefix.clone()).limit(SCAN_PAGE.max(q.limit + 1));
            req.revision = revision;
            req.start_after = after.clone();
            let page = self.store.range(req).await.map_err(|e| match e {
                StoreError::Compacted { .. } if q.continue_token.is_some() || q.exact => {
                    ApiError::Expired {
                        requested: revision.unwrap_or_default(),
                        oldest: 0,
                    }
                }
                other => ApiError::from(other),
            })?;
            revision = Some(page.revision);
            for kv in &page.items {
                let obj = from_stored(&kv.value, kv.mod_revision)?;
                if !matches(&q.labels, &q.fields, &obj) {
                    continue;
                }
                if q.limit > 0 && items.len() == q.limit {
                    let last_key = after.clone().unwrap_or_default();
                    return Ok(ListPage {
                        items,
                        revision: page.revision,
                        continue_token: Some(encode_continue(page.revision, &last_key)),
                    });
                }
                items.push(Arc::new(Entry::new(obj)?));
                after = Some(kv.key.clone());
            }
            if !page.more {
                return Ok(ListPage {
                    items,
                    revision: page.revision,
                    continue_token: None,
                });
            }
            if let Some(last) = page.items.last() {
                after = Some(last.key.clone());
            }
        }
    }
}
