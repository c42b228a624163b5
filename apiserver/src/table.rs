//! `meta.k8s.io/v1` Table responses for `kubectl get`, from the per-kind
//! printer columns.

use serde_json::{Value, json};

use crate::objects::human_age;
use crate::registry::{CellSource, ResourceDesc};

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

fn column_definitions(desc: &ResourceDesc) -> Vec<Value> {
    let mut cols = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    for c in &desc.columns {
        let description = match &c.source {
            CellSource::Path(p) => p.clone(),
            CellSource::Age => "time since creation".into(),
            CellSource::AgeOfFirst(fields) => {
                format!("time since the first of {}", fields.join(", "))
            }
            CellSource::Reference(field) => format!("the object at {field}"),
            CellSource::DataCount => "number of data keys".into(),
        };
        cols.push(json!({"name": c.name, "type": c.type_, "format": "", "description": description, "priority": c.priority}));
    }
    cols
}

fn row(desc: &ResourceDesc, obj: &Value, include: IncludeObject) -> Value {
    let mut cells = vec![
        obj.pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
    ];
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
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
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
}
