//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A simplified structured merge: an object's fields are its leaf paths
//! (scalars, atomic lists and empty maps); each manager owns a set of them,
//! per operation (`Apply` or `Update`). Lists the schema marks
//! `x-kubernetes-list-type: map` are merged by their keys, and each item's
//! fields are owned on their own (a path goes through `k:{"type":"Ready"}`);
//! `set` lists are owned value by value (`v:"x"`); other lists are atomic.
//! Rules, as in Kubernetes:
//! - create and update give the writing manager the fields it set or changed,
//!   and take those fields from everyone else (no conflicts on updates);
//! - apply sets the applied fields; a field owned by another manager with a
//!   different value is a conflict (409) unless forced, when it changes hands;
//! - a field the same manager applied before and no longer applies is
//!   removed, unless another manager also owns it.

use std::collections::{BTreeMap, BTreeSet};

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

/// How a list is merged, from its schema's `x-kubernetes-list-type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole.
    Atomic,
    /// Items merged by these keys.
    Map(Vec<String>),
    /// Scalars, each owned on its own.
    Set,
}

/// The merged (non-atomic) lists of a kind, by schema path (field names,
/// no item segments).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lists(BTreeMap<Vec<String>, ListType>);

impl Lists {
    /// Reads the list types from an OpenAPI v3 schema; every kind's
    /// `metadata.finalizers` (set), `metadata.ownerReferences` (by uid) and
    /// `status.conditions` (by type) are merged lists, as in Kubernetes.
    pub fn from_schema(schema: &Value) -> Self {
        fn walk(s: &Value, path: &mut Vec<String>, out: &mut BTreeMap<Vec<String>, ListType>) {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (name, child) in props {
                    path.push(name.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            if let Some(items) = s.get("items") {
                let kind = match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => s
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|k| {
                            ListType::Map(
                                k.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect(),
                            )
                        }),
                    Some("set") => Some(ListType::Set),
                    _ => None,
                };
                if let Some(k) = kind {
                    out.insert(path.clone(), k);
                }
                walk(items, path, out);
            }
        }
        let mut out = BTreeMap::new();
        walk(schema, &mut Vec::new(), &mut out);
        let p = |a: &str, b: &str| vec![a.to_owned(), b.to_owned()];
        out.entry(p("metadata", "finalizers"))
            .or_insert(ListType::Set);
        out.entry(p("metadata", "ownerReferences"))
            .or_insert(ListType::Map(vec!["uid".into()]));
        out.entry(p("status", "conditions"))
            .or_insert(ListType::Map(vec!["type".into()]));
        Lists(out)
    }

    /// The list type at `path` (item segments skipped).
    pub(crate) fn at(&self, path: &[String]) -> ListType {
        let schema_path: Vec<String> = path.iter().filter(|s| !is_item(s)).cloned().collect();
        self.0
            .get(&schema_path)
            .cloned()
            .unwrap_or(ListType::Atomic)
    }
}

/// True for a list-item segment (`k:{…}`, `v:…`).
fn is_item(seg: &str) -> bool {
    seg.starts_with("k:{") || seg.starts_with("v:")
}

/// The segment of a map-list item, `k:{"name":"x"}` (keys sorted), or None
/// when it lacks a key.
fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut fields = BTreeMap::new();
    for k in keys {
        fields.insert(k.as_str(), item.get(k)?);
    }
    Some(format!("k:{}", serde_json::to_string(&fields).ok()?))
}

/// The index of the item `seg` names in `list`.
fn find_item(list: &[Value], seg: &str) -> Option<usize> {
    if let Some(keys) = seg.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(keys).ok()?;
        list.iter()
            .position(|item| want.iter().all(|(k, v)| same(item.get(k), Some(v))))
    } else {
        let want: Value = serde_json::from_str(seg.strip_prefix("v:")?).ok()?;
        list.iter().position(|item| same(Some(item), Some(&want)))
    }
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
pub fn leaves(obj: &Value, lists: &Lists) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, lists: &Lists, out: &mut BTreeSet<FieldPath>) {
        match (v, lists.at(path)) {
            (Value::Object(m), _) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, lists, out);
                    path.pop();
                }
            }
            (Value::Array(items), ListType::Map(keys)) if !items.is_empty() => {
                let segs: Option<Vec<String>> = items.iter().map(|i| item_key(i, &keys)).collect();
                let Some(segs) = segs else {
                    out.insert(path.clone()); // an item without its key: atomic
                    return;
                };
                for (item, seg) in items.iter().zip(segs) {
                    path.push(seg);
                    walk(item, path, lists, out);
                    path.pop();
                }
            }
            (Value::Array(items), ListType::Set) if !items.is_empty() => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
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
                            walk(val, &mut p, lists, &mut out);
                        }
                    }
                }
                for f in ["finalizers", "ownerReferences"] {
                    if let Some(val) = v.get(f) {
                        let mut p = vec!["metadata".to_owned(), f.to_owned()];
                        walk(val, &mut p, lists, &mut out);
                    }
                }
            }
            _ => {
                let mut p = vec![k.clone()];
                walk(v, &mut p, lists, &mut out);
            }
        }
    }
    out
}

/// Encodes a field set as `FieldsV1` (list items as `k:`/`v:` keys, map
/// items with their `.` marker, as Kubernetes writes them).
pub fn to_fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cur = &mut root;
        for seg in path {
            let key = if is_item(seg) {
                seg.clone()
            } else {
                format!("f:{seg}")
            };
            let entry = cur.entry(key).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            let Value::Object(next) = entry else { break };
            if seg.starts_with("k:{") {
                next.insert(".".into(), json!({}));
            }
            cur = next;
        }
    }
    Value::Object(root)
}

/// Decodes `FieldsV1` into leaf paths. Index items (`i:`), which Corral
/// does not write, own their whole list.
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
            } else if is_item(k) {
                path.push(k.clone());
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
    path.iter().try_fold(obj, |cur, seg| {
        if is_item(seg) {
            let list = cur.as_array()?;
            list.get(find_item(list, seg)?)
        } else {
            cur.get(seg)
        }
    })
}

fn remove(obj: &mut Value, path: &FieldPath) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        let next = if is_item(seg) {
            let Some(list) = cur.as_array_mut() else {
                return;
            };
            let Some(i) = find_item(list, seg) else {
                return;
            };
            list.get_mut(i)
        } else {
            cur.get_mut(seg)
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if is_item(last) {
        if let Some(list) = cur.as_array_mut()
            && let Some(i) = find_item(list, last)
        {
            list.remove(i);
        }
    } else if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// The merge step of server-side apply: merges an applied configuration
/// into `target` — maps field by field, map lists item by item (by key),
/// sets value by value; anything else the applied value replaces. System
/// metadata in `applied` is ignored.
pub(crate) fn merge_applied(target: &mut Value, applied: &Value, lists: &Lists) {
    fn merge(t: &mut Value, a: &Value, path: &mut FieldPath, lists: &Lists) {
        match (t, a) {
            (Value::Object(tm), Value::Object(am)) => {
                for (k, v) in am {
                    path.push(k.clone());
                    match tm.get_mut(k) {
                        Some(existing)
                            if (existing.is_object() && v.is_object())
                                || (existing.is_array()
                                    && v.is_array()
                                    && lists.at(path) != ListType::Atomic) =>
                        {
                            merge(existing, v, path, lists)
                        }
                        _ => {
                            tm.insert(k.clone(), v.clone());
                        }
                    }
                    path.pop();
                }
            }
            (Value::Array(tl), Value::Array(al)) => match lists.at(path) {
                ListType::Map(keys) => {
                    for item in al {
                        let Some(seg) = item_key(item, &keys) else {
                            tl.push(item.clone());
                            continue;
                        };
                        match find_item(tl, &seg) {
                            Some(i) => {
                                path.push(seg);
                                merge(&mut tl[i], item, path, lists);
                                path.pop();
                            }
                            None => tl.push(item.clone()),
                        }
                    }
                }
                ListType::Set => {
                    for item in al {
                        if !tl.iter().any(|x| same(Some(x), Some(item))) {
                            tl.push(item.clone());
                        }
                    }
                }
                ListType::Atomic => *tl = al.clone(),
            },
            (t, a) => *t = a.clone(),
        }
    }
    let mut a = applied.clone();
    if let Some(m) = a.get_mut("metadata").and_then(Value::as_object_mut) {
        for system in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "deletionTimestamp",
        ] {
            m.remove(system);
        }
    }
    merge(target, &a, &mut Vec::new(), lists);
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
    let meta = crate::storage::objects::meta_mut(obj);
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
    lists: &Lists,
) {
    let mut entries = parse_entries(new);
    let new_leaves = leaves(new, lists);
    let changed: BTreeSet<FieldPath> = match old {
        None => new_leaves.clone(),
        Some(o) => {
            let old_leaves = leaves(o, lists);
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
    lists: &Lists,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = parse_entries(live);
    let applied_fields = leaves(applied, lists);
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
    let kept_elsewhere = |p: &FieldPath| {
        entries.iter().any(|e| {
            !(e.manager == manager && e.operation == "Apply")
                && e.fields.iter().any(|q| overlaps(p, q))
        }) || applied_fields.iter().any(|a| overlaps(p, a))
    };
    for p in previous.difference(&applied_fields) {
        // A list item nobody else has a field of goes whole, key included.
        let item = p
            .iter()
            .position(|seg| is_item(seg))
            .map(|i| p[..=i].to_vec())
            .filter(|item| !kept_elsewhere(item));
        match item {
            Some(item) => remove(&mut next, &item),
            None if !kept_elsewhere(p) => remove(&mut next, p),
            None => {}
        }
    }
    merge_applied(&mut next, applied, lists);
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
mod tests;
