//! The generic REST verbs over the Store, for every kind: get, list, create,
//! update (main resource and `/status`), patch, delete, deletecollection.
//!
//! Guarantees: `resourceVersion` is the store's mod revision; `generation`
//! grows only when the spec (anything but metadata and status) changes; a
//! write that changes nothing does not touch the store; a precondition that
//! fails is a 409 and writes nothing; every write is admitted (schema, then
//! the kind's rules) before it is stored.

use std::sync::Arc;

use corral_store::{RangeRequest, Store, StoreError};
use serde_json::{Value, json};

use crate::admission::{FieldValidation, admit};
use crate::cache::{Entry, NODE_FIELD, WatchCache};
use crate::error::ApiError;
use crate::objects::{
    finalizers, from_stored, labels, meta_mut, meta_str, now_time, parse_rv, spec_part, to_stored,
};
use crate::patch::{PatchKind, apply_patch};
use crate::registry::{Registry, ResourceDesc};
use crate::selectors::{FieldSelector, LabelSelector};

/// How often an unconditional write retries after losing a race.
const MAX_RETRIES: usize = 16;
/// Store page size when scanning for a filtered list.
const SCAN_PAGE: usize = 500;

/// The shared state of the REST layer.
#[derive(Debug, Clone)]
pub struct Api {
    /// Where objects live.
    pub store: Arc<dyn Store>,
    /// What is served.
    pub registry: Registry,
    /// Serves lists and watches when present.
    pub cache: Option<WatchCache>,
}

/// How long a consistent list waits for the cache before reading the store.
const CACHE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(3);

impl Api {
    /// The REST layer over `store`, with a watch cache.
    pub fn new(store: Arc<dyn Store>, registry: Registry) -> Self {
        let cache = WatchCache::start(store.clone(), registry.clone());
        Api {
            store,
            registry,
            cache: Some(cache),
        }
    }

    /// The REST layer reading the store directly (no cache).
    pub fn uncached(store: Arc<dyn Store>, registry: Registry) -> Self {
        Api {
            store,
            registry,
            cache: None,
        }
    }

    /// The cache and the resource's index in it, when the cache can serve a
    /// read that must be at least as new as `resource_version` (None: the
    /// latest, which waits for the cache to catch up with the store).
    pub async fn cache_for(
        &self,
        desc: &ResourceDesc,
        resource_version: Option<&str>,
    ) -> Result<Option<(WatchCache, usize)>, ApiError> {
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let Some(index) = cache.index_of(desc.plural, desc.group) else {
            return Ok(None);
        };
        let needed = match resource_version {
            Some("0") => 0,
            Some(rv) if !rv.is_empty() => parse_rv(rv)?,
            _ => self.store.current_revision().await?,
        };
        if cache.wait_for(needed, CACHE_CATCH_UP).await {
            Ok(Some((cache.clone(), index)))
        } else {
            Ok(None)
        }
    }
}

/// Options common to writes.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// `dryRun=All`: admit and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (server-side apply).
    pub force: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            dry_run: false,
            field_manager: None,
            field_validation: FieldValidation::Warn,
            force: false,
        }
    }
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object as stored (or as it would be, on dry run).
    pub object: Value,
    /// True when the write created the object (201).
    pub created: bool,
    /// `Warning` headers to send.
    pub warnings: Vec<String>,
}

/// Options of a delete (`DeleteOptions` body and query).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `Foreground`, `Background` or `Orphan`.
    pub propagation: Option<String>,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` JSON body (absent fields keep their value).
    pub fn merge_body(&mut self, body: &Value) {
        if let Some(p) = body.get("preconditions") {
            if let Some(u) = p.get("uid").and_then(Value::as_str) {
                self.uid = Some(u.to_owned());
            }
            if let Some(rv) = p.get("resourceVersion").and_then(Value::as_str) {
                self.resource_version = Some(rv.to_owned());
            }
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation = Some(p.to_owned());
        }
        if let Some(d) = body.get("dryRun").and_then(Value::as_array)
            && d.iter().any(|x| x.as_str() == Some("All"))
        {
            self.dry_run = true;
        }
    }
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Matching objects, each with its JSON encoded once.
    pub items: Vec<Arc<Entry>>,
    /// The revision the list was read at.
    pub revision: i64,
    /// A token for the next page, when more matched.
    pub continue_token: Option<String>,
}

/// What a list asks for.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: all).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion` ("0": any; absent: the latest).
    pub resource_version: Option<String>,
}

fn generated_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn encode_continue(revision: i64, key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": revision, "start": key}).to_string())
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let parts = || Some((v.get("rv")?.as_i64()?, v.get("start")?.as_str()?.to_owned()));
    parts().ok_or_else(bad)
}

/// True when an object matches a list's selectors.
pub fn matches(q_labels: &LabelSelector, q_fields: &FieldSelector, obj: &Value) -> bool {
    q_labels.matches(&labels(obj)) && q_fields.matches(obj)
}

impl Api {
    /// A namespaced kind needs its namespace to exist.
    async fn require_namespace(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(ns) = ns.filter(|_| desc.namespaced) else {
            return Ok(());
        };
        let key = format!("/registry/core/namespaces/{ns}");
        match self.store.get(&key).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::NotFound {
                resource: "namespaces".into(),
                name: ns.to_owned(),
            }),
        }
    }

    /// Reads one object.
    pub async fn get(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
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

    /// Lists objects, filtered and paginated: the first page from the watch
    /// cache when there is one, later pages from the store at the same revision.
    pub async fn list(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        q: &ListQuery,
    ) -> Result<ListPage, ApiError> {
        if q.continue_token.is_none()
            && let Some((cache, index)) =
                self.cache_for(desc, q.resource_version.as_deref()).await?
        {
            let node = q.fields.required(NODE_FIELD).filter(|n| !n.is_empty());
            let snap = cache.snapshot(index, ns.filter(|_| desc.namespaced), node)?;
            let mut items: Vec<Arc<Entry>> = Vec::new();
            for entry in &snap.items {
                if !matches(&q.labels, &q.fields, &entry.value) {
                    continue;
                }
                if q.limit > 0 && items.len() == q.limit {
                    let last = items.last().map(|e| &e.value).unwrap_or(&Value::Null);
                    let key = desc.key(
                        meta_str(last, "namespace"),
                        meta_str(last, "name").unwrap_or_default(),
                    );
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
            None => (None, None),
        };
        let mut items = Vec::new();
        loop {
            let mut req = RangeRequest::prefix(prefix.clone()).limit(SCAN_PAGE.max(q.limit + 1));
            req.revision = revision;
            req.start_after = after.clone();
            let page = self.store.range(req).await.map_err(|e| match e {
                StoreError::Compacted { .. } if q.continue_token.is_some() => ApiError::Expired {
                    requested: revision.unwrap_or_default(),
                    oldest: 0,
                },
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

    /// Creates an object (POST).
    pub async fn create(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !body.is_object() {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        }
        check_type_meta(desc, &mut body)?;
        let meta = meta_mut(&mut body);
        if let (Some(url_ns), Some(body_ns)) = (ns, meta.get("namespace").and_then(Value::as_str))
            && !body_ns.is_empty()
            && url_ns != body_ns
        {
            return Err(ApiError::BadRequest(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({url_ns})"
            )));
        }
        if desc.namespaced {
            if let Some(n) = ns {
                meta.insert("namespace".into(), json!(n));
            }
        } else {
            meta.remove("namespace");
        }
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            && let Some(prefix) = meta
                .get("generateName")
                .and_then(Value::as_str)
                .map(str::to_owned)
        {
            meta.insert(
                "name".into(),
                json!(format!("{prefix}{}", generated_suffix())),
            );
        }
        for system in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            meta.remove(system);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_time()));
        if desc.status_subresource
            && desc.kind != "Namespace"
            && let Some(o) = body.as_object_mut()
        {
            o.remove("status");
        }
        if desc.kind == "Namespace" {
            body["status"] = json!({"phase": "Active"});
        }
        if !spec_part(&body).is_empty() || desc.status_subresource {
            meta_mut(&mut body).insert("generation".into(), json!(1));
        }
        let warnings = admit(desc, &mut body, None, opts.field_validation)?;
        record_manager(&mut body, None, opts, "Update", None);
        let name = meta_str(&body, "name").unwrap_or_default().to_owned();
        let ns_of_obj = meta_str(&body, "namespace").map(str::to_owned);
        self.require_namespace(desc, ns_of_obj.as_deref()).await?;
        if opts.dry_run {
            return Ok(Written {
                object: body,
                created: true,
                warnings,
            });
        }
        let kv = self
            .store
            .create(&desc.key(ns_of_obj.as_deref(), &name), to_stored(&body)?)
            .await
            .map_err(|e| ApiError::from_store(e, &desc.group_resource(), &name))?;
        Ok(Written {
            object: from_stored(&kv.value, kv.mod_revision)?,
            created: true,
            warnings,
        })
    }

    /// Replaces an object (PUT), or its status (`status = true`).
    pub async fn update(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !body.is_object() {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        }
        if let Some(body_name) = meta_str(&body, "name")
            && body_name != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = meta_str(&body, "resourceVersion")
            .map(parse_rv)
            .transpose()?;
        self.modify(
            desc,
            ns,
            name,
            precondition,
            opts,
            move |_current| Ok(body.clone()),
            status,
            "Update",
        )
        .await
    }

    /// Patches an object (PATCH), or its status.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        patch: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if kind == PatchKind::Apply {
            return self.apply(desc, ns, name, patch, status, opts).await;
        }
        // A resourceVersion inside the patch is a precondition (kubectl diff, SSA migration).
        let precondition = match kind {
            PatchKind::Json => crate::patch::json_patch_resource_version(&patch),
            _ => patch
                .get("metadata")
                .and_then(|m| m.get("resourceVersion"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
        .map(|rv| parse_rv(&rv))
        .transpose()?;
        let operation = "Update";
        self.modify(
            desc,
            ns,
            name,
            precondition,
            opts,
            move |current| {
                let mut target = current.clone();
                apply_patch(kind, &mut target, &patch)?;
                Ok(target)
            },
            status,
            operation,
        )
        .await
    }

    /// Server-side apply: create if absent, else merge the applied fields.
    async fn apply(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        applied: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let manager = opts
            .field_manager
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::Invalid {
                kind: "PatchOptions.meta.k8s.io".into(),
                name: String::new(),
                errors: vec![corral_api::validation::FieldError {
                    type_: corral_api::validation::FieldErrorType::Required,
                    field: "fieldManager".into(),
                    value: None,
                    detail: "is required for apply patch".into(),
                }],
            })?;
        if !applied.is_object() {
            return Err(ApiError::BadRequest(
                "the apply patch must be an object".into(),
            ));
        }
        if let Some(n) = meta_str(&applied, "name")
            && n != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let mut opts = opts.clone();
        opts.field_manager = Some(manager.clone());
        let force = opts.force;
        match self.get(desc, ns, name).await {
            Err(ApiError::NotFound { .. }) if !status => {
                let skeleton = json!({"apiVersion": desc.api_version(), "kind": desc.kind, "metadata": {"name": name}});
                let mut body = crate::ssa::apply(&skeleton, &applied, &manager, force, &now_time())
                    .map_err(|conflicts| ApiError::ApplyConflict { conflicts })?;
                meta_mut(&mut body).insert("name".into(), json!(name));
                self.create(desc, ns, body, &opts).await
            }
            Err(e) => Err(e),
            Ok(_) => {
                let precondition = meta_str(&applied, "resourceVersion")
                    .map(parse_rv)
                    .transpose()?;
                self.modify(
                    desc,
                    ns,
                    name,
                    precondition,
                    &opts,
                    move |current| {
                        crate::ssa::apply(current, &applied, &manager, force, &now_time())
                            .map_err(|conflicts| ApiError::ApplyConflict { conflicts })
                    },
                    status,
                    "Apply",
                )
                .await
            }
        }
    }

    /// The read-modify-write loop shared by update and patch.
    #[allow(clippy::too_many_arguments)]
    async fn modify<F>(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        precondition: Option<i64>,
        opts: &WriteOptions,
        change: F,
        status: bool,
        operation: &str,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
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
            if let Some(p) = precondition
                && p != kv.mod_revision
            {
                return Err(ApiError::from_store(
                    StoreError::Conflict {
                        key: key.clone(),
                        expected: p,
                        current: Box::new(kv),
                    },
                    &resource,
                    name,
                ));
            }
            let current = from_stored(&kv.value, kv.mod_revision)?;
            let mut proposed = change(&current)?;
            if !proposed.is_object() {
                return Err(ApiError::BadRequest(
                    "the result of the change is not an object".into(),
                ));
            }
            check_type_meta(desc, &mut proposed)?;
            let mut next = merge_system(desc, &current, proposed, status);
            let warnings = admit(desc, &mut next, Some(&current), opts.field_validation)?;
            record_manager(
                &mut next,
                Some(&current),
                opts,
                operation,
                status.then_some("status"),
            );
            let deleting =
                meta_str(&next, "deletionTimestamp").is_some() && finalizers(&next).is_empty();
            if opts.dry_run {
                return Ok(Written {
                    object: next,
                    created: false,
                    warnings,
                });
            }
            if deleting {
                match self.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(d) => {
                        self.spawn_collect_dependents(&current);
                        let mut last = next;
                        meta_mut(&mut last)
                            .insert("resourceVersion".into(), json!(d.revision.to_string()));
                        return Ok(Written {
                            object: last,
                            created: false,
                            warnings,
                        });
                    }
                    Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                    Err(e) => return Err(ApiError::from_store(e, &resource, name)),
                }
            }
            let bytes = to_stored(&next)?;
            if bytes == kv.value || same_ignoring_manager_time(&bytes, &kv.value) {
                return Ok(Written {
                    object: current,
                    created: false,
                    warnings,
                });
            }
            match self.store.update(&key, bytes, kv.mod_revision).await {
                Ok(new_kv) => {
                    return Ok(Written {
                        object: from_stored(&new_kv.value, new_kv.mod_revision)?,
                        created: false,
                        warnings,
                    });
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(ApiError::from_store(e, &resource, name)),
            }
        }
        Err(ApiError::Conflict {
            resource,
            name: name.to_owned(),
            message: "the object kept changing; please try again".into(),
        })
    }

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
    fn spawn_collect_dependents(&self, owner: &Value) {
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

/// Fills in or checks `apiVersion` and `kind`.
fn check_type_meta(desc: &ResourceDesc, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = desc.api_version();
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the object must be a JSON object".into()))?;
    match o.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match o.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("kind".into(), json!(desc.kind));
        }
        Some(k) if k == desc.kind => {}
        Some(k) => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                desc.kind
            )));
        }
    }
    Ok(())
}

/// Builds the next version of an object from the current one and what the
/// client proposed: system metadata stays the server's, status follows the
/// subresource rules, and generation grows on spec changes.
fn merge_system(desc: &ResourceDesc, current: &Value, proposed: Value, status: bool) -> Value {
    let mut next = if status {
        // A status write changes only status.
        let mut n = current.clone();
        match proposed.get("status") {
            Some(s) => n["status"] = s.clone(),
            None => {
                if let Some(o) = n.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        n
    } else {
        let mut n = proposed;
        if desc.status_subresource {
            match current.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        n
    };
    let cur_meta = current
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let meta = meta_mut(&mut next);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur_meta.get(field) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    if !meta.contains_key("managedFields")
        && let Some(mf) = cur_meta.get("managedFields")
    {
        meta.insert("managedFields".into(), mf.clone());
    }
    if spec_part(current) != spec_part(&next) {
        let g = cur_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(&mut next).insert("generation".into(), json!(g));
    }
    next
}

/// Records the write in `metadata.managedFields` under its manager (see
/// [`crate::ssa`]), unless the client wrote managedFields itself (kubectl's
/// and Flux's migrations) or the write is an apply, which records itself.
fn record_manager(
    obj: &mut Value,
    current: Option<&Value>,
    opts: &WriteOptions,
    operation: &str,
    subresource: Option<&str>,
) {
    let Some(manager) = opts.field_manager.clone().filter(|m| !m.is_empty()) else {
        return;
    };
    if operation == "Apply" {
        return;
    }
    let client_wrote = match current {
        Some(cur) => {
            obj.pointer("/metadata/managedFields") != cur.pointer("/metadata/managedFields")
        }
        None => obj.pointer("/metadata/managedFields").is_some(),
    };
    if client_wrote {
        return;
    }
    crate::ssa::record_update(current, obj, &manager, subresource, &now_time());
}

/// Two stored forms that differ only in managedFields timestamps are the same
/// object: a no-op write must not bump the resourceVersion.
fn same_ignoring_manager_time(a: &[u8], b: &[u8]) -> bool {
    let strip = |bytes: &[u8]| -> Option<Value> {
        let mut v: Value = serde_json::from_slice(bytes).ok()?;
        if let Some(entries) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in entries {
                if let Some(o) = e.as_object_mut() {
                    o.remove("time");
                }
            }
        }
        Some(v)
    };
    match (strip(a), strip(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Creates the `default` namespace when it does not exist yet.
pub async fn ensure_default_namespaces(api: &Api) -> Result<(), ApiError> {
    let desc = api
        .registry
        .find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::Internal("namespaces are not registered".into()))?;
    for ns in ["default"] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match api
            .create(&desc, None, body, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
