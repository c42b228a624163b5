//! Bulk writes, where Kubernetes has no batch API: many creates of one kind
//! in one request (a `TaskList` POSTed to `tasks`), many bindings of Tasks
//! in one request (a `BindingList` POSTed to `bindings`), and many Task
//! status reports in one request (a `TaskList` of merge patches of each
//! task's status, POSTed to `taskstatuses`: what an agent reports).
//!
//! Each item is its own write — admitted, preconditioned and stored exactly
//! as if it had come alone, with its own watch event and its own answer —
//! so every per-object guarantee holds and a stock client watching sees one
//! event per object. What a bulk request saves is the requests: one body,
//! one authentication and authorization, and items written concurrently, so
//! the store's group commit gathers them into few transactions.
//!
//! The answer is a `v1` `List` of one `Status` per item, in the items'
//! order: `Success` with the code the single request would have answered
//! (201, or 200 for a status) and the written object's name, uid and
//! resourceVersion, or the
//! `Failure` the single request would have answered. A bulk request that
//! cannot be read at all (not a list, too many items) fails whole.

use corral_api::validation::{FieldError, FieldErrorType};
use serde_json::{Value, json};

use super::{Api, WriteOptions, Written, meta_str};
use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::storage::patch::PatchKind;
use crate::transport::auth::{Attributes, authorize};

/// The most items one bulk request may carry.
pub const MAX_ITEMS: usize = 1000;

/// The items of `body` when it is a list of `kind` (`{kind}List`, or a
/// plain `List`); `None` for any other body (a single object).
pub fn list_items(kind: &str, body: &Value) -> Result<Option<Vec<Value>>, ApiError> {
    let Some(k) = body["kind"].as_str() else {
        return Ok(None);
    };
    if k != "List" && k.strip_suffix("List") != Some(kind) {
        return Ok(None);
    }
    let invalid = |detail: &str, value: Option<String>| ApiError::Invalid {
        kind: k.to_owned(),
        name: String::new(),
        errors: vec![FieldError {
            type_: if value.is_some() {
                FieldErrorType::TooMany
            } else {
                FieldErrorType::Required
            },
            field: "items".into(),
            value,
            detail: detail.to_owned(),
        }],
    };
    let items = match &body["items"] {
        Value::Array(items) => items,
        Value::Null => return Err(invalid("a bulk request lists its items", None)),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "the items of a {k} must be an array"
            )));
        }
    };
    if items.len() > MAX_ITEMS {
        return Err(invalid(
            &format!("at most {MAX_ITEMS} items in one request"),
            Some(items.len().to_string()),
        ));
    }
    Ok(Some(items.clone()))
}

/// The `Status` of one item's successful write.
fn success(desc: &ResourceDesc, w: &Written, code: u16) -> Value {
    let meta = &w.object["metadata"];
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": meta["resourceVersion"]},
        "status": "Success",
        "code": code,
        "details": {
            "name": meta["name"],
            "group": desc.group,
            "kind": desc.plural,
            "uid": meta["uid"],
        },
    })
}

/// The answer to a bulk request: one `Status` per item, in order, a written
/// item's with `code` (201 for creates and bindings, 200 for statuses).
pub fn answer(desc: &ResourceDesc, results: &[Result<Written, ApiError>], code: u16) -> Value {
    let items: Vec<Value> = results
        .iter()
        .map(|r| match r {
            Ok(w) => success(desc, w, code),
            Err(e) => e.status(),
        })
        .collect();
    json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
}

/// The object an item names (422 without one).
fn item_name<'a>(item: &'a Value, kind: &str) -> Result<&'a str, ApiError> {
    meta_str(item, "name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::Invalid {
            kind: format!("{kind}.corral.dev"),
            name: String::new(),
            errors: vec![FieldError {
                type_: FieldErrorType::Required,
                field: "metadata.name".into(),
                value: None,
                detail: "each item names its object".into(),
            }],
        })
}

impl Api {
    /// Creates every item of a bulk create (see the module doc), each as
    /// [`Api::create`] would alone.
    pub async fn create_many(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        items: Vec<Value>,
        opts: &WriteOptions,
    ) -> Vec<Result<Written, ApiError>> {
        futures::future::join_all(
            items
                .into_iter()
                .map(|item| self.create(desc, ns, item, opts)),
        )
        .await
    }

    /// Writes every item of a bulk status report — each a merge patch of
    /// one task's status, naming it in `metadata.name` (and its version in
    /// `metadata.resourceVersion`, a precondition) — each authorized as
    /// `patch` on that task's `status` would be alone, then written as
    /// [`Api::patch`] would write it.
    pub async fn patch_statuses(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        items: Vec<Value>,
        opts: &WriteOptions,
    ) -> Vec<Result<Written, ApiError>> {
        futures::future::join_all(items.into_iter().map(|item| async move {
            let name = item_name(&item, desc.kind)?.to_owned();
            if let Some(r) = &opts.requester {
                let attrs = Attributes {
                    verb: "patch".into(),
                    group: desc.group.to_owned(),
                    resource: desc.plural.to_owned(),
                    subresource: Some("status".into()),
                    namespace: ns.map(str::to_owned),
                    name: Some(name.clone()),
                    field_selector: None,
                    label_selector: None,
                };
                authorize(r.authz.as_ref(), &r.user, &attrs)?;
            }
            self.patch(desc, ns, &name, PatchKind::Merge, item, true, opts)
                .await
        }))
        .await
    }

    /// Binds every item of a bulk binding (each a `Binding` naming its
    /// task in `metadata.name`), each as [`Api::bind`] would alone.
    pub async fn bind_many(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        items: Vec<Value>,
        opts: &WriteOptions,
    ) -> Vec<Result<Written, ApiError>> {
        futures::future::join_all(items.iter().map(|item| async move {
            let name = item_name(item, "Binding")?;
            self.bind(desc, ns, name, item, opts).await
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lists_of_the_kind_are_bulk() {
        let one = json!({"kind": "Task", "metadata": {"name": "a"}});
        assert!(list_items("Task", &one).expect("readable").is_none());
        let other = json!({"kind": "JobList", "items": []});
        assert!(list_items("Task", &other).expect("readable").is_none());
        let list = json!({"kind": "TaskList", "items": [{"metadata": {"name": "a"}}]});
        assert_eq!(
            list_items("Task", &list)
                .expect("readable")
                .expect("a list")
                .len(),
            1
        );
        let plain = json!({"kind": "List", "items": []});
        assert_eq!(
            list_items("Task", &plain)
                .expect("readable")
                .expect("a list")
                .len(),
            0
        );
    }

    #[test]
    fn a_bulk_request_without_items_or_with_too_many_fails_whole() {
        let missing = json!({"kind": "TaskList"});
        let e = list_items("Task", &missing).expect_err("refused whole");
        assert_eq!(e.code(), 422);
        assert_eq!(e.status()["details"]["causes"][0]["field"], "items");
        let items: Vec<Value> = (0..=MAX_ITEMS).map(|_| json!({})).collect();
        let many = json!({"kind": "TaskList", "items": items});
        let e = list_items("Task", &many).expect_err("refused whole");
        assert_eq!(e.code(), 422);
        let not_array = json!({"kind": "TaskList", "items": {}});
        assert_eq!(
            list_items("Task", &not_array)
                .expect_err("refused whole")
                .code(),
            400
        );
    }
}
