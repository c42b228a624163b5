//! Strategic merge patch (`application/strategic-merge-patch+json`), taken
//! by the built-in kinds as kube-apiserver takes it: maps merge and `null`
//! deletes a field; a list merges the way the kind's schema declares it
//! ([`Lists`]: map lists by their keys, set lists value by value) and is
//! replaced otherwise. The directives clients send are honoured: `$patch`
//! (`merge`, `replace`, `delete`, also on list items), `$retainKeys`,
//! `$deleteFromPrimitiveList/<list>` and `$setElementOrder/<list>`.
//!
//! A malformed patch (an unknown `$patch`, a map-list item without its keys,
//! a directive of the wrong shape) is a 400 naming the field, and leaves the
//! object as it was: the caller patches a copy.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::storage::ssa::{ListType, Lists};

const DELETE_FROM: &str = "$deleteFromPrimitiveList/";
const ELEMENT_ORDER: &str = "$setElementOrder/";

/// Applies `patch` (an object) to `target`, with the kind's list types.
pub fn strategic_merge(target: &mut Value, patch: &Value, lists: &Lists) -> Result<(), ApiError> {
    let Some(p) = patch.as_object() else {
        return Err(ApiError::BadRequest(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    merge_object(target, p, lists, &mut Vec::new())
}

fn bad(path: &[String], what: impl std::fmt::Display) -> ApiError {
    let at = if path.is_empty() {
        "the object".to_owned()
    } else {
        path.join(".")
    };
    ApiError::BadRequest(format!("invalid strategic merge patch at {at}: {what}"))
}

/// Removes the directives from a value that is set as a whole.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// What an object's (or list item's) `$patch` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Merge,
    Replace,
    Delete,
}

fn directive(p: &Map<String, Value>, path: &[String]) -> Result<Directive, ApiError> {
    match p.get("$patch") {
        None => Ok(Directive::Merge),
        Some(Value::String(s)) => match s.as_str() {
            "merge" => Ok(Directive::Merge),
            "replace" => Ok(Directive::Replace),
            "delete" => Ok(Directive::Delete),
            other => Err(bad(path, format!("unknown $patch {other:?}"))),
        },
        Some(other) => Err(bad(path, format!("$patch must be a string, not {other}"))),
    }
}

fn merge_object(
    target: &mut Value,
    p: &Map<String, Value>,
    lists: &Lists,
    path: &mut Vec<String>,
) -> Result<(), ApiError> {
    match directive(p, path)? {
        Directive::Replace => {
            *target = strip_directives(&Value::Object(p.clone()));
            return Ok(());
        }
        Directive::Delete => {
            *target = Value::Null;
            return Ok(());
        }
        Directive::Merge => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return Ok(());
    };
    if let Some(keep) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect())
            .ok_or_else(|| bad(path, "$retainKeys must be a list of field names"))?;
        t.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix(DELETE_FROM) {
            let remove = v
                .as_array()
                .ok_or_else(|| bad(path, format!("{k} must be a list")))?;
            if let Some(Value::Array(list)) = t.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        path.push(k.clone());
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(child) => {
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                merge_object(entry, child, lists, path)?;
                if entry.is_null() {
                    t.remove(k);
                }
            }
            Value::Array(items) => {
                let merged = match lists.at(path) {
                    ListType::Atomic => strip_directives(v),
                    ListType::Set => Value::Array(merge_set(t.get(k), items)),
                    ListType::Map(keys) => {
                        Value::Array(merge_map_list(t.get_mut(k), items, &keys, lists, path)?)
                    }
                };
                t.insert(k.clone(), merged);
            }
            scalar => {
                t.insert(k.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    for (k, order) in p {
        let Some(field) = k.strip_prefix(ELEMENT_ORDER) else {
            continue;
        };
        let order = order
            .as_array()
            .ok_or_else(|| bad(path, format!("{k} must be a list")))?;
        path.push(field.to_owned());
        let keys = match lists.at(path) {
            ListType::Map(keys) => Some(keys),
            _ => None,
        };
        path.pop();
        if let Some(Value::Array(list)) = t.get_mut(field) {
            reorder(list, order, keys.as_deref());
        }
    }
    Ok(())
}

/// A set list: the live values, then the patch's new ones.
fn merge_set(live: Option<&Value>, items: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = live.and_then(Value::as_array).cloned().unwrap_or_default();
    for item in items {
        if !out.contains(item) {
            out.push(strip_directives(item));
        }
    }
    out
}

/// Whether `item` has `keys` equal to those of `probe`.
fn same_keys(item: &Value, probe: &Map<String, Value>, keys: &[String]) -> bool {
    keys.iter().all(|k| item.get(k) == probe.get(k))
}

/// A map list: items merge with the live item of the same keys, new ones are
/// appended, `$patch: delete` items remove theirs, and a `$patch: replace`
/// item makes the patch's other items the whole list.
fn merge_map_list(
    live: Option<&mut Value>,
    items: &[Value],
    keys: &[String],
    lists: &Lists,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, ApiError> {
    let mut out = match live {
        Some(Value::Array(l)) => std::mem::take(l),
        _ => Vec::new(),
    };
    let mut objects = Vec::with_capacity(items.len());
    for item in items {
        let obj = item.as_object().ok_or_else(|| {
            bad(
                path,
                format!("the items of this list are objects, not {item}"),
            )
        })?;
        objects.push(obj);
    }
    let mut replace = false;
    for obj in &objects {
        if directive(obj, path)? == Directive::Replace {
            replace = true;
            continue;
        }
        if let Some(missing) = keys.iter().find(|k| !obj.contains_key(*k)) {
            return Err(bad(
                path,
                format!("an item lacks the merge key {missing:?}"),
            ));
        }
    }
    if replace {
        return Ok(objects
            .iter()
            .filter(|o| directive(o, path).ok() != Some(Directive::Replace))
            .map(|o| strip_directives(&Value::Object((*o).clone())))
            .collect());
    }
    for obj in objects {
        let pos = out.iter().position(|e| same_keys(e, obj, keys));
        match (pos, directive(obj, path)?) {
            (Some(i), Directive::Delete) => {
                out.remove(i);
            }
            (None, Directive::Delete) => {}
            (Some(i), _) => merge_object(&mut out[i], obj, lists, path)?,
            (None, _) => out.push(strip_directives(&Value::Object(obj.clone()))),
        }
    }
    Ok(out)
}

/// Puts the items `order` names first, in its order; the others keep their
/// relative order after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], keys: Option<&[String]>) {
    let rank = |item: &Value| {
        order.iter().position(|o| match (keys, o.as_object()) {
            (Some(keys), Some(probe)) => same_keys(item, probe, keys),
            _ => item == o,
        })
    };
    let mut ranked: Vec<(usize, usize, Value)> = std::mem::take(list)
        .into_iter()
        .enumerate()
        .map(|(i, item)| (rank(&item).unwrap_or(usize::MAX), i, item))
        .collect();
    ranked.sort_by_key(|(r, i, _)| (*r, *i));
    *list = ranked.into_iter().map(|(_, _, item)| item).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The lists every kind has (metadata and status conditions).
    fn lists() -> Lists {
        Lists::from_schema(&json!({}))
    }

    fn patched(mut target: Value, patch: Value) -> Result<Value, ApiError> {
        strategic_merge(&mut target, &patch, &lists())?;
        Ok(target)
    }

    #[test]
    fn the_directives_clients_send_are_honoured() {
        let cm = json!({"metadata": {"name": "c", "finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"},
            "ownerReferences": [{"uid": "u1", "name": "one"}, {"uid": "u2", "name": "two"}]},
            "data": {"a": "1", "b": "2"}});
        let patch = json!({"metadata": {
                "$deleteFromPrimitiveList/finalizers": ["a"],
                "$setElementOrder/finalizers": ["c", "b"],
                "finalizers": ["c"],
                "labels": {"y": null, "z": "3"},
                "ownerReferences": [{"uid": "u1", "$patch": "delete"}, {"uid": "u3", "name": "three"}]},
            "data": {"a": "10", "b": null}});
        let cm = patched(cm, patch).expect("patch");
        assert_eq!(cm["metadata"]["finalizers"], json!(["c", "b"]));
        assert_eq!(cm["metadata"]["labels"], json!({"x": "1", "z": "3"}));
        assert_eq!(
            cm["metadata"]["ownerReferences"],
            json!([{"uid": "u2", "name": "two"}, {"uid": "u3", "name": "three"}])
        );
        assert_eq!(cm["data"], json!({"a": "10"}));
        let replaced = patched(
            json!({"data": {"a": "1"}}),
            json!({"data": {"$patch": "replace", "b": "2"}}),
        )
        .expect("patch");
        assert_eq!(replaced, json!({"data": {"b": "2"}}));
    }

    #[test]
    fn map_list_items_merge_by_key_field_by_field() {
        let ns = json!({"status": {"phase": "Active", "conditions": [
            {"type": "A", "status": "True", "reason": "Old"},
            {"type": "B", "status": "False"}]}});
        let ns = patched(
            ns,
            json!({"status": {"conditions": [
                {"type": "B", "status": "True"},
                {"type": "C", "status": "Unknown"}]}}),
        )
        .expect("patch");
        assert_eq!(
            ns["status"]["conditions"],
            json!([{"type": "A", "status": "True", "reason": "Old"},
                   {"type": "B", "status": "True"},
                   {"type": "C", "status": "Unknown"}])
        );
        // Order by $setElementOrder, keyed by the merge key.
        let ns = patched(
            ns,
            json!({"status": {"$setElementOrder/conditions": [{"type": "C"}, {"type": "A"}]}}),
        )
        .expect("patch");
        let order: Vec<&str> = ns["status"]["conditions"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(order, ["C", "A", "B"]);
        // A replace item makes the other items the whole list.
        let ns = patched(
            ns,
            json!({"status": {"conditions": [{"$patch": "replace"}, {"type": "Z", "status": "True"}]}}),
        )
        .expect("patch");
        assert_eq!(
            ns["status"]["conditions"],
            json!([{"type": "Z", "status": "True"}])
        );
    }

    #[test]
    fn lists_the_schema_does_not_declare_are_replaced() {
        // A Namespace's spec.finalizers is an atomic list (only
        // metadata.finalizers merges as a set).
        let ns =
            json!({"spec": {"finalizers": ["kubernetes", "x"]}, "metadata": {"finalizers": ["a"]}});
        let ns = patched(
            ns,
            json!({"spec": {"finalizers": ["y"]}, "metadata": {"finalizers": ["b"]}}),
        )
        .expect("patch");
        assert_eq!(ns["spec"]["finalizers"], json!(["y"]));
        assert_eq!(ns["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn a_malformed_patch_is_a_bad_request_naming_the_field() {
        let cases = [
            (json!({"data": {"$patch": "explode"}}), "data"),
            (json!({"data": {"$patch": 3}}), "data"),
            (
                json!({"metadata": {"ownerReferences": [{"name": "no-uid"}]}}),
                "metadata.ownerReferences",
            ),
            (
                json!({"metadata": {"ownerReferences": ["scalar"]}}),
                "metadata.ownerReferences",
            ),
            (json!({"$retainKeys": "data"}), "the object"),
            (
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
                "metadata",
            ),
            (
                json!({"metadata": {"$setElementOrder/finalizers": {"a": 1}}}),
                "metadata",
            ),
        ];
        for (patch, field) in cases {
            match patched(json!({"metadata": {"name": "x"}}), patch.clone()) {
                Err(ApiError::BadRequest(msg)) => {
                    assert!(msg.contains(&format!("at {field}:")), "{patch}: {msg}")
                }
                other => panic!("{patch}: {other:?}"),
            }
        }
        assert!(matches!(
            strategic_merge(&mut json!({}), &json!([1]), &lists()),
            Err(ApiError::BadRequest(_))
        ));
    }

    proptest::proptest! {
        /// A patch that sets nothing but fields already present changes nothing.
        #[test]
        fn patching_an_object_with_itself_changes_nothing(
            labels in proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 0..5),
            finalizers in proptest::collection::btree_set("[a-z]{1,5}", 0..5),
            owners in proptest::collection::btree_set("[a-z]{1,5}", 0..4),
        ) {
            let owners: Vec<Value> = owners.iter().map(|u| json!({"uid": u, "name": u})).collect();
            let obj = json!({"metadata": {"labels": labels, "finalizers": finalizers, "ownerReferences": owners}});
            let got = patched(obj.clone(), obj.clone()).expect("patch");
            proptest::prop_assert_eq!(got, obj);
        }
    }
}
