//! Checks an object against its OpenAPI v3 schema, as kube-apiserver does for
//! custom resources: unknown fields are pruned and reported (for
//! `fieldValidation`), wrong types, missing required fields and values outside
//! an enum are field errors. `null` is pruned like an absent field.

use corral_api::validation::{FieldError, FieldErrorType};
use serde_json::Value;

/// What the check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// Paths of fields the schema does not know (already removed from the object).
    pub unknown: Vec<String>,
    /// Type, enum and required-field errors.
    pub errors: Vec<FieldError>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn invalid(report: &mut SchemaReport, path: &str, v: &Value, detail: String) {
    report.errors.push(FieldError {
        type_: FieldErrorType::Invalid,
        field: path.to_owned(),
        value: Some(short(v)),
        detail,
    });
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 64 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(60).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

/// Checks `v` (at `path`) against `schema`, pruning unknown fields and nulls.
pub fn check(schema: &Value, v: &mut Value, path: &str, report: &mut SchemaReport) {
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    // A schema with allOf/$ref (OpenAPI documents) is not walked further.
    if schema.get("allOf").is_some() && schema.get("type").is_none() {
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        // Quantities: Corral also accepts fractional numbers (`cpus: 0.5`).
        if !matches!(v, Value::Number(_) | Value::String(_)) {
            invalid(
                report,
                path,
                v,
                format!("{path} in body must be of type integer or string"),
            );
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    match (ty, &mut *v) {
        (Some("object"), Value::Object(map)) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if map.get(r).is_none_or(Value::is_null) {
                        report.errors.push(FieldError {
                            type_: FieldErrorType::Required,
                            field: join(path, r),
                            value: None,
                            detail: String::new(),
                        });
                    }
                }
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_path = join(path, &k);
                if map.get(&k).is_some_and(Value::is_null) {
                    map.remove(&k);
                    continue;
                }
                let child_schema = props.and_then(|p| p.get(&k)).or(match additional {
                    Some(s @ Value::Object(_)) => Some(s),
                    _ => None,
                });
                match child_schema {
                    Some(cs) => {
                        if let Some(child) = map.get_mut(&k) {
                            check(cs, child, &child_path, report);
                        }
                    }
                    None if preserve || additional == Some(&Value::Bool(true)) => {}
                    None if props.is_none() && additional.is_none() => {}
                    None => {
                        map.remove(&k);
                        report.unknown.push(child_path);
                    }
                }
            }
        }
        (Some("array"), Value::Array(items)) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), report);
                }
            }
        }
        (Some("string"), Value::String(s)) => {
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(s.as_str()))
            {
                let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                report.errors.push(FieldError {
                    type_: FieldErrorType::NotSupported,
                    field: path.to_owned(),
                    value: Some(format!("\"{s}\"")),
                    detail: format!("supported values: {}", list.join(", ")),
                });
            }
        }
        (Some("integer"), Value::Number(n)) => {
            if !(n.is_i64() || n.is_u64()) {
                invalid(
                    report,
                    path,
                    v,
                    format!("{path} in body must be of type integer: \"number\""),
                );
            } else if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n.as_f64().is_some_and(|x| x < min)
            {
                invalid(
                    report,
                    path,
                    v,
                    format!("{path} in body should be greater than or equal to {min}"),
                );
            } else if schema.get("format").and_then(Value::as_str) == Some("int32")
                && n.as_i64().is_none_or(|x| i32::try_from(x).is_err())
            {
                invalid(
                    report,
                    path,
                    v,
                    format!("{path} in body must fit in 32 bits"),
                );
            } else if schema.get("format").and_then(Value::as_str) == Some("uint32")
                && n.as_u64().is_none_or(|x| u32::try_from(x).is_err())
            {
                invalid(
                    report,
                    path,
                    v,
                    format!("{path} in body must be between 0 and 4294967295"),
                );
            }
        }
        (Some("number"), Value::Number(_)) | (Some("boolean"), Value::Bool(_)) | (None, _) => {}
        (Some(want), other) => {
            let got = type_name(other);
            invalid(
                report,
                path,
                other,
                format!("{path} in body must be of type {want}: \"{got}\""),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["role"], "properties": {
                "role": {"type": "string"},
                "instances": {"type": "integer", "format": "uint32", "minimum": 0},
                "tier": {"type": "string", "enum": ["preferred", "preemptible"]},
                "resources": {"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}}
            }},
            "metadata": {"type": "object"}
        }})
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported_with_their_path() {
        let mut v = json!({"metadata": {"name": "x"}, "spec": {"role": "r", "bogus": 1, "list": [{"a": "x", "b": 2}]}, "extra": true});
        let mut r = SchemaReport::default();
        check(&schema(), &mut v, "", &mut r);
        let mut unknown = r.unknown.clone();
        unknown.sort();
        assert_eq!(unknown, vec!["extra", "spec.bogus", "spec.list[0].b"]);
        assert!(r.errors.is_empty());
        assert_eq!(
            v,
            json!({"metadata": {"name": "x"}, "spec": {"role": "r", "list": [{"a": "x"}]}})
        );
    }

    #[test]
    fn wrong_types_enums_and_missing_fields_are_errors() {
        let mut v = json!({"spec": {"instances": "three", "tier": "gold", "resources": {"cpus": 0.5, "memory": "5Gi", "disk": true}, "labels": {"a": 1}}});
        let mut r = SchemaReport::default();
        check(&schema(), &mut v, "", &mut r);
        let mut got: Vec<(String, FieldErrorType)> = r
            .errors
            .iter()
            .map(|e| (e.field.clone(), e.type_))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("spec.instances".to_string(), FieldErrorType::Invalid),
                ("spec.labels.a".to_string(), FieldErrorType::Invalid),
                ("spec.resources.disk".to_string(), FieldErrorType::Invalid),
                ("spec.role".to_string(), FieldErrorType::Required),
                ("spec.tier".to_string(), FieldErrorType::NotSupported),
            ]
        );
    }

    #[test]
    fn nulls_are_treated_as_absent() {
        let mut v =
            json!({"spec": {"role": "r", "tier": null}, "metadata": {"creationTimestamp": null}});
        let mut r = SchemaReport::default();
        check(&schema(), &mut v, "", &mut r);
        assert_eq!(r, SchemaReport::default());
        assert_eq!(v["spec"], json!({"role": "r"}));
    }
}
