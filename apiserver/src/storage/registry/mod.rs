//! The generic REST verbs over the Store, for every kind: get, list, create,
//! update (main resource and `/status`), patch, delete, deletecollection;
//! and the `/scale` subresource of the kinds that have one.
//!
//! Guarantees: `resourceVersion` is the store's mod revision; `generation`
//! grows only when the spec (anything but metadata and status) changes; a
//! write that changes nothing does not touch the store; a precondition that
//! fails is a 409 and writes nothing; every write is admitted (schema, then
//! the kind's rules) before it is stored.

use std::sync::Arc;

use corral_store::{RangeRequest, Store, StoreError};
use serde_json::{Value, json};

use crate::storage::admission::{FieldValidation, admit};
use crate::storage::cache::{Entry, NODE_FIELD, WatchCache};
use corral_api::validation::{FieldError, FieldErrorType};

use crate::error::ApiError;
use crate::kinds::catalog::{Catalog, ResourceDesc, View};
use crate::storage::objects::{
    finalizers, from_stored, labels, meta_mut, meta_str, now_time, parse_rv, same_spec_part,
    to_stored,
};
use crate::storage::patch::{PatchKind, apply_patch};
use crate::storage::selectors::{FieldSelector, LabelSelector};

pub mod binding;
mod born;
pub mod bulk;
mod delete;
pub mod eviction;
mod meta;
mod owners;
mod pods;
mod read;
mod scale;
pub mod tiers;
mod write;

pub use meta::ensure_default_namespaces;
use meta::{check_type_meta, merge_system, record_manager, unchanged};
pub use scale::{ScaleWrite, scale_of};

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
    pub registry: Catalog,
    /// Serves lists and watches when present.
    pub cache: Option<WatchCache>,
}

/// How long a consistent list waits for the cache before reading the store.
const CACHE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(3);

impl Api {
    /// The REST layer over `store`, with a watch cache.
    pub fn new(store: Arc<dyn Store>, registry: Catalog) -> Self {
        let cache = WatchCache::start(store.clone(), registry.clone());
        Api {
            store,
            registry,
            cache: Some(cache),
        }
    }

    /// The REST layer reading the store directly (no cache).
    pub fn uncached(store: Arc<dyn Store>, registry: Catalog) -> Self {
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

/// An error about a view's stored object, told with the view's resource
/// name (`events.events.k8s.io`), as a client of the view asked.
fn as_view_error(e: ApiError, desc: &ResourceDesc) -> ApiError {
    let resource = desc.group_resource();
    match e {
        ApiError::NotFound { name, .. } => ApiError::NotFound { resource, name },
        ApiError::AlreadyExists { name, .. } => ApiError::AlreadyExists { resource, name },
        ApiError::Conflict { name, message, .. } => ApiError::Conflict {
            resource,
            name,
            message,
        },
        other => other,
    }
}

/// `q` with its field selector in the stored kind's names.
fn stored_query(q: &ListQuery, view: &View) -> ListQuery {
    let mut q = q.clone();
    view.to_stored_selector(&mut q.fields);
    q
}

/// Options common to writes.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// `dryRun=All`: admit and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// The manager a non-apply write without `fieldManager` is recorded
    /// under: the first word of the client's User-Agent.
    pub agent_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (server-side apply).
    pub force: bool,
    /// Who asks, for the checks that depend on it (`use` of a Corral role);
    /// None for the server's own writes.
    pub requester: Option<Requester>,
    /// The write is a task binding: it sets `spec.nodeName` and status
    /// together (see [`binding`]).
    pub binding: bool,
}

/// The caller of a write and the authorizer that speaks for the server.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The authenticated caller.
    pub user: crate::transport::auth::User,
    /// The server's authorizer.
    pub authz: Arc<dyn crate::transport::auth::Authorizer>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            dry_run: false,
            field_manager: None,
            agent_manager: None,
            field_validation: FieldValidation::Warn,
            force: false,
            requester: None,
            binding: false,
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

/// How a delete treats the objects that name its target in their
/// `ownerReferences` (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// The owner goes now, its dependents after it (the default).
    Background,
    /// The owner stays, marked, until its dependents are gone.
    Foreground,
    /// The owner goes once its dependents no longer name it; they stay.
    Orphan,
}

impl Propagation {
    /// Reads the API's spelling (`Foreground`, `Background`, `Orphan`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }
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
    /// `propagationPolicy`, or what the deprecated `orphanDependents` asks
    /// for; `None` leaves it to the object's own finalizers (`orphan`,
    /// `foregroundDeletion`), else background.
    pub propagation: Option<Propagation>,
}

impl DeleteOptions {
    /// The options of a DELETE from its query's `propagationPolicy` and
    /// `orphanDependents`, then its body (a `DeleteOptions` object, whose
    /// fields win). An unknown policy, or one given with
    /// `orphanDependents`, is a 422 as kube-apiserver's
    /// `ValidateDeleteOptions` answers it.
    pub fn from_request(
        query_policy: Option<&str>,
        query_orphan: Option<bool>,
        dry_run: bool,
        body: Option<&Value>,
    ) -> Result<Self, ApiError> {
        let mut opts = DeleteOptions {
            dry_run,
            ..Default::default()
        };
        let mut policy = query_policy.map(str::to_owned);
        let mut orphan = query_orphan;
        if let Some(body) = body {
            if let Some(p) = body.get("preconditions") {
                if let Some(u) = p.get("uid").and_then(Value::as_str) {
                    opts.uid = Some(u.to_owned());
                }
                if let Some(rv) = p.get("resourceVersion").and_then(Value::as_str) {
                    opts.resource_version = Some(rv.to_owned());
                }
            }
            if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
                policy = Some(p.to_owned());
            }
            if let Some(o) = body.get("orphanDependents").and_then(Value::as_bool) {
                orphan = Some(o);
            }
            if let Some(d) = body.get("dryRun").and_then(Value::as_array)
                && d.iter().any(|x| x.as_str() == Some("All"))
            {
                opts.dry_run = true;
            }
        }
        let invalid = |type_, detail: &str, p: &str| ApiError::Invalid {
            kind: "DeleteOptions.meta.k8s.io".into(),
            name: String::new(),
            errors: vec![FieldError {
                type_,
                field: "propagationPolicy".into(),
                value: Some(json!(p).to_string()),
                detail: detail.into(),
            }],
        };
        opts.propagation = match (policy, orphan) {
            (Some(p), Some(_)) => {
                return Err(invalid(
                    FieldErrorType::Invalid,
                    "orphanDependents and deletionPropagation cannot be both set",
                    &p,
                ));
            }
            (Some(p), None) => Some(Propagation::parse(&p).ok_or_else(|| {
                invalid(
                    FieldErrorType::NotSupported,
                    r#"supported values: "Foreground", "Background", "Orphan""#,
                    &p,
                )
            })?),
            (None, Some(true)) => Some(Propagation::Orphan),
            (None, Some(false)) => Some(Propagation::Background),
            (None, None) => None,
        };
        Ok(opts)
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
    /// `resourceVersion` ("0": any; absent: the latest; N: not older than N).
    pub resource_version: Option<String>,
    /// `resourceVersionMatch=Exact`: the list exactly at `resource_version`.
    pub exact: bool,
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
