//! Checks an object against its OpenAPI v3 schema, as kube-apiserver does for
//! custom resources: unknown fields are pruned and reported (for
//! `fieldValidation`), wrong types, missing required fields and values outside
//! an enum are field errors. `null` is pruned like an absent field.

use std::collections::BTreeMap;

use corral_api::validation::{FieldError, FieldErrorType};
use serde_json::{Map, Value};

/// What the check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// Paths of fields the schema does not know (already removed from the object).
    pub unknown: Vec<String>,
    /// Type, enum and required-field errors.
    pub errors: Vec<FieldError>,
}

/// Where a value sits in the object, rendered only when a finding names it
/// (`spec.list[0].b`): walking a valid object builds no strings.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(Path::Root, k) => (*k).to_owned(),
            Path::Key(parent, k) => format!("{}.{k}", parent.render()),
            Path::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
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

/// The `type` of a schema node.
#[derive(Debug, Clone, PartialEq)]
enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
    /// Any other name: no value has it.
    Other(String),
}

/// What `additionalProperties` says.
#[derive(Debug, Clone, PartialEq)]
enum Additional {
    Absent,
    /// `true`: any field, unchecked.
    Any,
    /// A schema for every field not in `properties`.
    Schema(Box<Schema>),
    /// `false`, or anything else that is not a schema.
    No,
}

/// An integer `format` that bounds the value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum IntFormat {
    None,
    Int32,
    Uint32,
}

/// An OpenAPI v3 schema, read once into the form the check walks: every
/// keyword looked up when the server starts, not on every request.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// `allOf`/`$ref` without a type (OpenAPI documents): not walked.
    opaque: bool,
    preserve_unknown: bool,
    /// `x-kubernetes-int-or-string` (quantities).
    int_or_string: bool,
    ty: Option<Type>,
    properties: Option<BTreeMap<String, Schema>>,
    additional: Additional,
    required: Vec<String>,
    items: Option<Box<Schema>>,
    enum_values: Option<Vec<Value>>,
    minimum: Option<f64>,
    format: IntFormat,
}

impl Schema {
    /// Reads `schema` (an OpenAPI v3 schema object).
    pub fn compile(schema: &Value) -> Schema {
        let ty = schema.get("type").and_then(Value::as_str).map(|t| match t {
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "integer" => Type::Integer,
            "number" => Type::Number,
            "boolean" => Type::Boolean,
            other => Type::Other(other.to_owned()),
        });
        Schema {
            opaque: schema.get("allOf").is_some() && schema.get("type").is_none(),
            preserve_unknown: schema.get("x-kubernetes-preserve-unknown-fields")
                == Some(&Value::Bool(true)),
            int_or_string: schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)),
            properties: schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| (k.clone(), Schema::compile(v)))
                        .collect()
                }),
            additional: match schema.get("additionalProperties") {
                None => Additional::Absent,
                Some(Value::Bool(true)) => Additional::Any,
                Some(s @ Value::Object(_)) => Additional::Schema(Box::new(Schema::compile(s))),
                Some(_) => Additional::No,
            },
            required: schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            items: schema.get("items").map(|i| Box::new(Schema::compile(i))),
            enum_values: schema.get("enum").and_then(Value::as_array).cloned(),
            minimum: schema.get("minimum").and_then(Value::as_f64),
            format: match schema.get("format").and_then(Value::as_str) {
                Some("int32") => IntFormat::Int32,
                Some("uint32") => IntFormat::Uint32,
                _ => IntFormat::None,
            },
            ty,
        }
    }

    /// Checks `v` (the whole object) against this schema, pruning unknown
    /// fields and nulls.
    pub fn check(&self, v: &mut Value, report: &mut SchemaReport) {
        self.walk(v, Path::Root, report);
    }

    fn walk(&self, v: &mut Value, path: Path<'_>, report: &mut SchemaReport) {
        if self.opaque {
            return;
        }
        if self.int_or_string {
            // Quantities: Corral also accepts fractional numbers (`cpus: 0.5`).
            if !matches!(v, Value::Number(_) | Value::String(_)) {
                let at = path.render();
                invalid(
                    report,
                    &at,
                    v,
                    format!("{at} in body must be of type integer or string"),
                );
            }
            return;
        }
        match (&self.ty, &mut *v) {
            (Some(Type::Object), Value::Object(map)) => self.walk_object(map, path, report),
            (Some(Type::Array), Value::Array(items)) => {
                if let Some(item_schema) = &self.items {
                    for (i, item) in items.iter_mut().enumerate() {
                        item_schema.walk(item, Path::Index(&path, i), report);
                    }
                }
            }
            (Some(Type::String), Value::String(s)) => {
                if let Some(allowed) = &self.enum_values
                    && !allowed.iter().any(|a| a.as_str() == Some(s.as_str()))
                {
                    let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                    report.errors.push(FieldError {
                        type_: FieldErrorType::NotSupported,
                        field: path.render(),
                        value: Some(format!("\"{s}\"")),
                        detail: format!("supported values: {}", list.join(", ")),
                    });
                }
            }
            (Some(Type::Integer), Value::Number(n)) => {
                let problem = if !(n.is_i64() || n.is_u64()) {
                    Some("must be of type integer: \"number\"".to_owned())
                } else if let Some(min) = self.minimum
                    && n.as_f64().is_some_and(|x| x < min)
                {
                    Some(format!("should be greater than or equal to {min}"))
                } else if self.format == IntFormat::Int32
                    && n.as_i64().is_none_or(|x| i32::try_from(x).is_err())
                {
                    Some("must fit in 32 bits".to_owned())
                } else if self.format == IntFormat::Uint32
                    && n.as_u64().is_none_or(|x| u32::try_from(x).is_err())
                {
                    Some("must be between 0 and 4294967295".to_owned())
                } else {
                    None
                };
                if let Some(problem) = problem {
                    let at = path.render();
                    invalid(report, &at, v, format!("{at} in body {problem}"));
                }
            }
            (Some(Type::Number), Value::Number(_))
            | (Some(Type::Boolean), Value::Bool(_))
            | (None, _) => {}
            (Some(want), other) => {
                let want = match want {
                    Type::Object => "object",
                    Type::Array => "array",
                    Type::String => "string",
                    Type::Integer => "integer",
                    Type::Number => "number",
                    Type::Boolean => "boolean",
                    Type::Other(name) => name.as_str(),
                };
                let at = path.render();
                let got = type_name(other);
                invalid(
                    report,
                    &at,
                    other,
                    format!("{at} in body must be of type {want}: \"{got}\""),
                );
            }
        }
    }

    fn walk_object(&self, map: &mut Map<String, Value>, path: Path<'_>, report: &mut SchemaReport) {
        for r in &self.required {
            if map.get(r).is_none_or(Value::is_null) {
                report.errors.push(FieldError {
                    type_: FieldErrorType::Required,
                    field: Path::Key(&path, r).render(),
                    value: None,
                    detail: String::new(),
                });
            }
        }
        map.retain(|k, child| {
            if child.is_null() {
                return false;
            }
            let child_schema =
                self.properties
                    .as_ref()
                    .and_then(|p| p.get(k))
                    .or(match &self.additional {
                        Additional::Schema(s) => Some(s),
                        _ => None,
                    });
            match child_schema {
                Some(cs) => {
                    cs.walk(child, Path::Key(&path, k), report);
                    true
                }
                None if self.preserve_unknown || self.additional == Additional::Any => true,
                None if self.properties.is_none() && self.additional == Additional::Absent => true,
                None => {
                    report.unknown.push(Path::Key(&path, k).render());
                    false
                }
            }
        });
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
        Schema::compile(&schema()).check(&mut v, &mut r);
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
        Schema::compile(&schema()).check(&mut v, &mut r);
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
        Schema::compile(&schema()).check(&mut v, &mut r);
        assert_eq!(r, SchemaReport::default());
        assert_eq!(v["spec"], json!({"role": "r"}));
    }
}
