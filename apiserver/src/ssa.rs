//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A simplified structured merge: an object's fields are its leaf paths
//! (scalars, lists — lists are atomic — and empty maps); each manager owns a
//! set of them, per operation (`Apply` or `Update`). Rules, as in Kubernetes:
//! - create and update give the writing manager the fields it set or changed,
//!   and take those fields from everyone else (no conflicts on updates);
//! - apply sets the applied fields; a field owned by another manager with a
//!   different value is a conflict (409) unless forced, when it changes hands;
//! - a field the same manager applied before and no longer applies is
//!   removed, unless another manager also owns it.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field: the keys from the object's root (`["spec", "instances"]`).
pub type FieldPath = Vec<String>;

/// A conflict: another manager owns a field the apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The apiVersion it wrote with.
    pub api_version: String,
    /// The field, as `.spec.instances`.
    pub field: String,
}

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: BTreeSet<FieldPath>,
}

fn dotted(p: &FieldPath) -> String {
    format!(".{}", p.join("."))
}

/// True when one path is the other or contains it.
fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The leaf fields of an object's content (system metadata left out).
pub fn leaves(obj: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    let Some(o) = obj.as_object() else { return out };
    for (k, v) in o {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for f in ["labels", "annotations"] {
                    if let Some(Value::Object(m)) = v.get(f) {
                        for (key, val) in m {
                            let mut p = vec!["metadata".to_owned(), f.to_owned(), key.clone()];
                            walk(val, &mut p, &mut out);
                        }
                    }
                }
                for f in ["finalizers", "ownerReferences"] {
                    if v.get(f).is_some() {
                        out.insert(vec!["metadata".to_owned(), f.to_owned()]);
                    }
                }
            }
            _ => {
                let mut p = vec![k.clone()];
                walk(v, &mut p, &mut out);
            }
        }
    }
    out
}

/// Encodes a field set as `FieldsV1`.
pub fn to_fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cur = &mut root;
        for seg in path {
            let entry = cur.entry(format!("f:{seg}")).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            let Value::Object(next) = entry else { break };
            cur = next;
        }
    }
    Value::Object(root)
}

/// Decodes `FieldsV1` into leaf paths. Keyed list items (`k:`, `v:`, `i:`)
/// own their whole list, which Corral treats as atomic.
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<(&String, &Value)> =
            m.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, child) in children {
            if let Some(name) = k.strip_prefix("f:") {
                path.push(name.to_owned());
                walk(child, path, out);
                path.pop();
            } else if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Equality of JSON values where `1` and `1.0` are the same number.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x == y || x.as_f64() == y.as_f64(),
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(Some(p), Some(q)))
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.len() == y.len() && x.iter().all(|(k, v)| same(Some(v), y.get(k)))
        }
        (x, y) => x == y,
    }
}

fn get<'a>(obj: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.iter().try_fold(obj, |cur, seg| cur.get(seg))
}

fn remove(obj: &mut Value, path: &FieldPath) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn parse_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some(Entry {
                        manager: e.get("manager")?.as_str()?.to_owned(),
                        operation: e
                            .get("operation")
                            .and_then(Value::as_str)
                            .unwrap_or("Update")
                            .to_owned(),
                        api_version: e
                            .get("apiVersion")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        time: e.get("time").and_then(Value::as_str).map(str::to_owned),
                        subresource: e
                            .get("subresource")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(t) = &e.time {
                v["time"] = json!(t);
            }
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    let meta = crate::objects::meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn entry_mut<'a>(
    entries: &'a mut Vec<Entry>,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    api_version: &str,
) -> &'a mut Entry {
    let pos = entries.iter().position(|e| {
        e.manager == manager && e.operation == operation && e.subresource.as_deref() == subresource
    });
    let i = match pos {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.to_owned(),
                operation: operation.to_owned(),
                api_version: api_version.to_owned(),
                time: None,
                subresource: subresource.map(str::to_owned),
                fields: BTreeSet::new(),
            });
            entries.len() - 1
        }
    };
    &mut entries[i]
}

/// Records a create or update by `manager`: it owns what it set or changed,
/// and nobody else keeps those fields.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) {
    let mut entries = parse_entries(new);
    let new_leaves = leaves(new);
    let changed: BTreeSet<FieldPath> = match old {
        None => new_leaves.clone(),
        Some(o) => {
            let old_leaves = leaves(o);
            old_leaves
                .union(&new_leaves)
                .filter(|p| !same(get(o, p), get(new, p)))
                .cloned()
                .collect()
        }
    };
    if changed.is_empty() {
        return;
    }
    for e in entries.iter_mut() {
        if !(e.manager == manager
            && e.operation == "Update"
            && e.subresource.as_deref() == subresource)
        {
            e.fields.retain(|p| !changed.iter().any(|c| overlaps(p, c)));
        }
    }
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mine = entry_mut(&mut entries, manager, "Update", subresource, &api_version);
    mine.fields
        .extend(changed.into_iter().filter(|p| new_leaves.contains(p)));
    mine.fields.retain(|p| new_leaves.contains(p));
    mine.time = Some(now.to_owned());
    mine.api_version = api_version;
    write_entries(new, &entries);
}

/// Server-side apply of `applied` by `manager` onto `live`. Returns the new
/// object, or the conflicts when `force` is false.
pub fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = parse_entries(live);
    let applied_fields = leaves(applied);
    let mut conflicts = Vec::new();
    for e in &entries {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for p in &e.fields {
            for a in applied_fields.iter().filter(|a| overlaps(p, a)) {
                if !same(get(live, a), get(applied, a)) {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        api_version: e.api_version.clone(),
                        field: dotted(a),
                    });
                }
            }
        }
    }
    conflicts.sort_by(|a, b| (&a.manager, &a.field).cmp(&(&b.manager, &b.field)));
    conflicts.dedup();
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    // Fields this manager applied before and no longer applies go, unless shared.
    let previous: BTreeSet<FieldPath> = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource.is_none())
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut next = live.clone();
    for p in previous.difference(&applied_fields) {
        let shared = entries.iter().any(|e| {
            !(e.manager == manager && e.operation == "Apply")
                && e.fields.iter().any(|q| overlaps(p, q))
        });
        if !shared && !applied_fields.iter().any(|a| overlaps(p, a)) {
            remove(&mut next, p);
        }
    }
    crate::patch::apply_configuration(&mut next, applied);
    // Forced or uncontested, the applied fields are this manager's alone.
    for e in entries.iter_mut() {
        if !(e.manager == manager && e.operation == "Apply") {
            e.fields.retain(|p| {
                !applied_fields
                    .iter()
                    .any(|a| overlaps(p, a) && !same(get(live, a), get(applied, a)))
            });
        }
    }
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mine = entry_mut(&mut entries, manager, "Apply", None, &api_version);
    mine.fields = applied_fields;
    mine.time = Some(now.to_owned());
    mine.api_version = api_version;
    write_entries(&mut next, &entries);
    Ok(next)
}

/// The Status message kube-apiserver gives for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            one.manager, one.api_version, one.field
        ),
        many => {
            let mut s = format!("Apply failed with {} conflicts:", many.len());
            for c in many {
                s.push_str(&format!(
                    " conflict with \"{}\" using {}: {}",
                    c.manager, c.api_version, c.field
                ));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(instances: u32, priority: i32) -> Value {
        json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "j", "labels": {"a": "1"}},
               "spec": {"instances": instances, "priority": priority, "container": {"image": "busybox", "command": ["sh"]}}})
    }

    #[test]
    fn fields_v1_round_trips() {
        let f = leaves(&job(1, 0));
        assert!(f.contains(&vec![
            "spec".to_string(),
            "container".to_string(),
            "command".to_string()
        ]));
        assert!(f.contains(&vec![
            "metadata".to_string(),
            "labels".to_string(),
            "a".to_string()
        ]));
        assert_eq!(from_fields_v1(&to_fields_v1(&f)), f);
        // kubectl writes keyed items and "." markers.
        let kubectl = json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}}, "f:spec": {"f:list": {"k:{\"name\":\"x\"}": {".": {}, "f:name": {}}}}});
        let parsed = from_fields_v1(&kubectl);
        assert_eq!(
            parsed,
            [
                vec![
                    "metadata".to_string(),
                    "labels".to_string(),
                    "a".to_string()
                ],
                vec!["spec".to_string(), "list".to_string()]
            ]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn a_second_manager_conflicts_on_a_changed_field_and_force_takes_it() {
        let mut created = job(1, 0);
        record_update(None, &mut created, "alice", None, "t0");
        let err = apply(&created, &job(2, 0), "bob", false, "t1").expect_err("conflict");
        assert_eq!(
            err,
            vec![Conflict {
                manager: "alice".into(),
                api_version: "corral.dev/v1alpha1".into(),
                field: ".spec.instances".into()
            }]
        );
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"alice\" using corral.dev/v1alpha1: .spec.instances"
        );
        // Same value: no conflict, shared ownership.
        assert!(apply(&created, &job(1, 0), "bob", false, "t1").is_ok());
        let forced = apply(&created, &job(2, 0), "bob", true, "t1").expect("forced");
        assert_eq!(forced["spec"]["instances"], 2);
        let entries = parse_entries(&forced);
        let alice = entries
            .iter()
            .find(|e| e.manager == "alice")
            .expect("alice keeps the rest");
        assert!(
            !alice
                .fields
                .contains(&vec!["spec".to_string(), "instances".to_string()])
        );
        let bob = entries.iter().find(|e| e.manager == "bob").expect("bob");
        assert_eq!(bob.operation, "Apply");
        assert!(
            bob.fields
                .contains(&vec!["spec".to_string(), "instances".to_string()])
        );
    }

    #[test]
    fn fields_no_longer_applied_are_removed_unless_shared() {
        let applied = job(1, 0);
        let live = apply(
            &json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job", "metadata": {"name": "j"}}),
            &applied,
            "alice",
            false,
            "t0",
        )
        .expect("apply");
        let mut smaller = applied.clone();
        smaller["spec"]
            .as_object_mut()
            .map(|m| m.remove("priority"));
        smaller["metadata"]["labels"] = json!({});
        let next = apply(&live, &smaller, "alice", false, "t1").expect("apply");
        assert!(next["spec"].get("priority").is_none(), "{next}");
        assert!(next["metadata"]["labels"].get("a").is_none(), "{next}");
        // Another manager's update keeps a field alive.
        let mut updated = live.clone();
        updated["spec"]["priority"] = json!(5);
        record_update(Some(&live), &mut updated, "carol", None, "t2");
        let next = apply(&updated, &smaller, "alice", false, "t3").expect("apply");
        assert_eq!(next["spec"]["priority"], 5);
    }

    #[test]
    fn updates_take_ownership_without_conflicts() {
        let mut created = job(1, 0);
        record_update(None, &mut created, "alice", None, "t0");
        let mut changed = created.clone();
        changed["spec"]["instances"] = json!(3);
        record_update(Some(&created), &mut changed, "bob", None, "t1");
        let entries = parse_entries(&changed);
        let bob = entries.iter().find(|e| e.manager == "bob").expect("bob");
        assert_eq!(
            bob.fields,
            [vec!["spec".to_string(), "instances".to_string()]]
                .into_iter()
                .collect()
        );
        let alice = entries
            .iter()
            .find(|e| e.manager == "alice")
            .expect("alice");
        assert!(
            !alice
                .fields
                .contains(&vec!["spec".to_string(), "instances".to_string()])
        );
    }
}
