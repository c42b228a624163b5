//! `meta.k8s.io/v1` Table responses for `kubectl get`, from the per-kind
//! printer columns.

use serde_json::{Value, json};

use crate::kinds::catalog::{CellSource, ResourceDesc};
use crate::storage::objects::human_age;

/// What `row.object` holds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
    /// Nothing.
    None,
}

impl IncludeObject {
    /// Parses `includeObject`.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("Object") => IncludeObject::Object,
            Some("None") => IncludeObject::None,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `.a[0]`,
/// `.a[?(@.type=="Ready")].status`, map keys with `.KEY`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim().trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let (key, tail) = r.split_at(end);
            if !key.is_empty() {
                cur = cur.get(key)?;
            }
            rest = tail;
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let (inner, tail) = r.split_at(end);
            rest = &tail[1..];
            if let Ok(i) = inner.parse::<usize>() {
                cur = cur.get(i)?;
            } else if let Some(filter) =
                inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let (field, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches('"').trim_matches('\'');
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|item| item.get(field.trim()).and_then(Value::as_str) == Some(want))?;
            } else {
                return None;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

fn age_of(obj: &Value, field: &str) -> Value {
    obj.pointer(field)
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| {
            json!(human_age(
                jiff::Timestamp::now().as_second() - t.as_second()
            ))
        })
        .unwrap_or(Value::Null)
}

fn cell(obj: &Value, source: &CellSource, type_: &str) -> Value {
    match source {
        CellSource::Age => age_of(obj, "/metadata/creationTimestamp"),
        CellSource::AgeOfFirst(fields) => fields
            .iter()
            .find(|f| obj.pointer(f).and_then(Value::as_str).is_some())
            .map_or(Value::Null, |f| age_of(obj, f)),
        CellSource::FirstOf(fields) => fields
            .iter()
            .filter_map(|f| obj.pointer(f))
            .find(|v| !v.is_null() && *v != "")
            .cloned()
            .unwrap_or(Value::Null),
        CellSource::Name => obj
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
        CellSource::Reference(field) => match obj.pointer(field) {
            Some(r) => {
                let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
                json!(format!("{}/{}", text("kind").to_lowercase(), text("name")))
            }
            None => Value::Null,
        },
        CellSource::DataCount => {
            let count = |f: &str| obj.get(f).and_then(Value::as_object).map_or(0, |m| m.len());
            json!(count("data") + count("binaryData"))
        }
        CellSource::RoleRef => {
            let r = &obj["roleRef"];
            json!(format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or_default(),
                r["name"].as_str().unwrap_or_default()
            ))
        }
        CellSource::Subjects(kind) => {
            let names: Vec<String> = obj["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["kind"] == *kind)
                .map(|s| {
                    let name = s["name"].as_str().unwrap_or_default();
                    match s["namespace"].as_str() {
                        Some(ns) if *kind == "ServiceAccount" => format!("{ns}/{name}"),
                        _ => name.to_owned(),
                    }
                })
                .collect();
            if names.is_empty() {
                Value::Null
            } else {
                json!(names.join(", "))
            }
        }
        CellSource::SlicePorts => {
            let ports: Vec<String> = obj["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .map(|p| p.to_string())
                .collect();
            if ports.is_empty() {
                json!("<unset>")
            } else {
                json!(ports.join(","))
            }
        }
        CellSource::SliceEndpoints => {
            const SHOWN: usize = 3;
            let addresses: Vec<&str> = obj["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            match addresses.len() {
                0 => json!("<unset>"),
                n if n <= SHOWN => json!(addresses.join(",")),
                n => json!(format!(
                    "{} + {} more...",
                    addresses[..SHOWN].join(","),
                    n - SHOWN
                )),
            }
        }
        CellSource::Path(p) => match json_path(obj, p) {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(s)) if type_ == "date" => s
                .parse::<jiff::Timestamp>()
                .map(|t| {
                    json!(human_age(
                        jiff::Timestamp::now().as_second() - t.as_second()
                    ))
                })
                .unwrap_or_else(|_| json!(s)),
            Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => v.clone(),
            Some(other) => json!(other.to_string()),
        },
    }
}

/// The name column's definition, at `priority`.
fn name_column(priority: i32) -> Value {
    json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": priority})
}

/// Whether the kind places the name column itself (else it comes first).
fn places_name(desc: &ResourceDesc) -> bool {
    desc.columns.iter().any(|c| c.source == CellSource::Name)
}

fn column_definitions(desc: &ResourceDesc) -> Vec<Value> {
    let mut cols = Vec::new();
    if !places_name(desc) {
        cols.push(name_column(0));
    }
    for c in &desc.columns {
        if c.source == CellSource::Name {
            cols.push(name_column(c.priority));
            continue;
        }
        let description = match &c.source {
            CellSource::Path(p) => p.clone(),
            CellSource::Age => "time since creation".into(),
            CellSource::AgeOfFirst(fields) => {
                format!("time since the first of {}", fields.join(", "))
            }
            CellSource::Reference(field) => format!("the object at {field}"),
            CellSource::FirstOf(fields) => {
                format!("the first of {} that is set", fields.join(", "))
            }
            CellSource::Name => unreachable!("placed above"),
            CellSource::DataCount => "number of data keys".into(),
            CellSource::RoleRef => "the role bound, as Kind/name".into(),
            CellSource::Subjects(kind) => format!("the {kind} subjects bound"),
            CellSource::SlicePorts => "the ports of the slice".into(),
            CellSource::SliceEndpoints => "the first addresses of the slice".into(),
        };
        cols.push(json!({"name": c.name, "type": c.type_, "format": "", "description": description, "priority": c.priority}));
    }
    cols
}

fn row(desc: &ResourceDesc, obj: &Value, include: IncludeObject) -> Value {
    let mut cells = Vec::with_capacity(desc.columns.len() + 1);
    if !places_name(desc) {
        cells.push(cell(obj, &CellSource::Name, "string"));
    }
    cells.extend(desc.columns.iter().map(|c| cell(obj, &c.source, &c.type_)));
    let mut r = json!({"cells": cells});
    match include {
        IncludeObject::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            });
        }
        IncludeObject::Object => r["object"] = obj.clone(),
        IncludeObject::None => {}
    }
    r
}

/// A Table of `items`.
pub fn table(
    desc: &ResourceDesc,
    items: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": crate::kinds::render::list_metadata(resource_version, continue_token),
        "columnDefinitions": column_definitions(desc),
        "rows": items.iter().map(|o| row(desc, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths_resolve() {
        let obj = json!({"status": {"phase": "RUNNING", "tasks": {"RUNNING": 3},
            "conditions": [{"type": "Scheduled", "status": "True"}, {"type": "Ready", "status": "False"}]},
            "spec": {"list": [{"a": 1}]}});
        assert_eq!(json_path(&obj, ".status.phase"), Some(&json!("RUNNING")));
        assert_eq!(json_path(&obj, ".status.tasks.RUNNING"), Some(&json!(3)));
        assert_eq!(
            json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("False"))
        );
        assert_eq!(json_path(&obj, ".spec.list[0].a"), Some(&json!(1)));
        assert_eq!(json_path(&obj, ".spec.missing"), None);
        assert_eq!(json_path(&obj, ".spec.list[9]"), None);
    }

    #[test]
    fn event_tables_read_like_kubectls() {
        let registry = crate::kinds::catalog::Catalog::standard();
        let event = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "j.1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "involvedObject": {"kind": "Job", "name": "j", "fieldPath": "spec"},
            "reason": "Synced", "message": "done", "type": "Normal",
            "reportingComponent": "example.com/op", "series": {"count": 3},
            "eventTime": "2026-01-01T00:00:00.000000Z"});
        for (group, obj) in [
            ("", event.clone()),
            ("events.k8s.io", crate::kinds::events_v1::to_view(event)),
        ] {
            let desc = registry.find(group, "v1", "events").expect("events");
            let t = table(&desc, &[obj], "7", None, IncludeObject::None);
            let names: Vec<(&str, i64)> = t["columnDefinitions"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or(""),
                        c["priority"].as_i64().unwrap_or(-1),
                    )
                })
                .collect();
            assert_eq!(
                names,
                [
                    ("Last Seen", 0),
                    ("Type", 0),
                    ("Reason", 0),
                    ("Object", 0),
                    ("Subobject", 1),
                    ("Source", 1),
                    ("Message", 0),
                    ("First Seen", 1),
                    ("Count", 1),
                    ("Name", 1)
                ],
                "{group}"
            );
            let cells = &t["rows"][0]["cells"];
            assert_eq!(cells[1], "Normal");
            assert_eq!(cells[3], "job/j");
            assert_eq!(cells[4], "spec");
            assert_eq!(cells[5], "example.com/op");
            assert_eq!(cells[6], "done");
            assert_eq!(cells[8], 3);
            assert_eq!(cells[9], "j.1");
            assert!(
                cells[0].as_str().is_some_and(|age| !age.is_empty()),
                "{cells}"
            );
        }
        // Other kinds keep the name first.
        let jobs = registry
            .find("corral.dev", "v1alpha1", "jobs")
            .expect("jobs");
        let t = table(
            &jobs,
            &[json!({"metadata": {"name": "j"}})],
            "1",
            None,
            IncludeObject::None,
        );
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["rows"][0]["cells"][0], "j");
    }
}
