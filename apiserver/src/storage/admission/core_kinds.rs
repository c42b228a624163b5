//! The core kinds' own rules, which kube-apiserver's strategies for them
//! apply after decoding a write; custom kinds take theirs from `corral-api`.
//!
//! - What a write is turned into: a Secret's write-only `stringData` folds
//!   into `data` (its values win) and its `type` defaults to `Opaque`; a
//!   Namespace carries the `kubernetes.io/metadata.name` label with its own
//!   name, and the `kubernetes` finalizer from its creation on, which no
//!   update removes.
//! - What is never made: Services and PersistentVolumeClaims (served to be
//!   listed and deleted by clients that clean up after themselves).
//! - What it must satisfy: ConfigMap and Secret keys are config keys, their
//!   bytes are base64 (else 400, as a decoding error is) and hold at most
//!   1 MiB; a typed Secret holds the keys its type needs and keeps its type;
//!   an `immutable` ConfigMap or Secret keeps its data; a Lease's durations
//!   are positive.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use corral_api::validation::{FieldError, FieldErrorType, config_key_problems};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The most bytes a ConfigMap's or Secret's data may hold, as in Kubernetes.
const MAX_DATA_BYTES: usize = 1024 * 1024;
/// The label every Namespace carries, holding its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The finalizer a Namespace is created with (in `spec.finalizers`).
const NAMESPACE_FINALIZER: &str = "kubernetes";
const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

/// Base64 as Go's `encoding/json` reads `[]byte`: the standard alphabet,
/// padding required, stray trailing bits tolerated (line breaks are dropped
/// before decoding).
const GO_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Turns a write of a core kind into what is stored (see the module docs).
pub(super) fn normalize(kind: &str, obj: &mut Value, old: Option<&Value>) {
    match kind {
        "Secret" => normalize_secret(obj),
        "Namespace" => normalize_namespace(obj, old),
        _ => {}
    }
}

fn normalize_secret(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    if let Some(Value::Object(string_data)) = o.remove("stringData") {
        let data = o
            .entry("data")
            .and_modify(|d| {
                if !d.is_object() {
                    *d = json!({});
                }
            })
            .or_insert_with(|| json!({}));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in string_data {
                if let Value::String(s) = v {
                    data.insert(k, json!(GO_BASE64.encode(s)));
                }
            }
        }
    }
    if o.get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        o.insert("type".into(), json!("Opaque"));
    }
}

fn normalize_namespace(obj: &mut Value, old: Option<&Value>) {
    let Some(name) = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
    else {
        return;
    };
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        labels[NAMESPACE_NAME_LABEL] = json!(name);
    }
    // Only the namespace's own termination changes its finalizers.
    let finalizers = match old {
        None => {
            let mut list = obj
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or_else(|| json!([]));
            if let Some(items) = list.as_array_mut()
                && !items.iter().any(|f| f == NAMESPACE_FINALIZER)
            {
                items.push(json!(NAMESPACE_FINALIZER));
            }
            Some(list)
        }
        Some(old) => old.pointer("/spec/finalizers").cloned(),
    };
    let Some(o) = obj.as_object_mut() else { return };
    let spec = o.entry("spec").or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        match finalizers {
            Some(f) => spec.insert("finalizers".into(), f),
            None => spec.remove("finalizers"),
        };
    }
    if o.get("spec").is_some_and(|s| s == &json!({})) {
        o.remove("spec");
    }
}

/// The problems of a (normalized) write of a core kind, on create
/// (`old = None`) or update. Bytes that are not base64 are a 400, as
/// kube-apiserver's decoder answers them.
pub(super) fn validate(
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<FieldError>, ApiError> {
    let mut errors = Vec::new();
    match kind {
        // Served so that clients may list and delete them (Spark deletes
        // its services and claims by label when it stops), but never made:
        // nothing in Corral would route or provision them.
        "Service" | "PersistentVolumeClaim" if old.is_none() => {
            let detail = if kind == "Service" {
                "Corral does not route Services: a service Job's instances are reached where its EndpointSlices say (`corral endpoints JOB`)"
            } else {
                "Corral does not provision volumes: a task writes to its sandbox ($CORRAL_SANDBOX)"
            };
            errors.push(FieldError {
                type_: FieldErrorType::Forbidden,
                field: "spec".into(),
                value: None,
                detail: detail.into(),
            });
        }
        "ConfigMap" => {
            let data = map(obj, "data");
            let binary = map(obj, "binaryData");
            let mut total = 0;
            for (k, v) in data.into_iter().flatten() {
                key_errors(&mut errors, "data", k);
                if binary.is_some_and(|b| b.contains_key(k)) {
                    errors.push(invalid(
                        format!("data[{k}]"),
                        k,
                        "duplicate of key present in binaryData",
                    ));
                }
                total += v.as_str().map_or(0, str::len);
            }
            for (k, v) in binary.into_iter().flatten() {
                key_errors(&mut errors, "binaryData", k);
                total += decoded(kind, v)?.len();
            }
            if total > MAX_DATA_BYTES {
                errors.push(too_long(""));
            }
            if let Some(old) = old {
                immutable_data(&mut errors, obj, old, &["data", "binaryData"]);
            }
        }
        "Secret" => {
            validate_secret(&mut errors, obj)?;
            if let Some(old) = old {
                let type_of = |o: &Value| {
                    o.get("type")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                        .unwrap_or("Opaque")
                        .to_owned()
                };
                let new_type = type_of(obj);
                if new_type != type_of(old) {
                    errors.push(invalid("type".into(), &new_type, "field is immutable"));
                }
                immutable_data(&mut errors, obj, old, &["data"]);
            }
        }
        "Lease" => validate_lease(&mut errors, obj),
        "EndpointSlice" => errors.extend(super::endpoint_slices::validate(obj, old)),
        _ => {}
    }
    Ok(errors)
}

fn validate_secret(errors: &mut Vec<FieldError>, obj: &Value) -> Result<(), ApiError> {
    let mut bytes = BTreeMap::new();
    for (k, v) in map(obj, "data").into_iter().flatten() {
        key_errors(errors, "data", k);
        bytes.insert(k.as_str(), decoded("Secret", v)?);
    }
    if bytes.values().map(Vec::len).sum::<usize>() > MAX_DATA_BYTES {
        errors.push(too_long("data"));
    }
    let raw = |k: &str| bytes.get(k);
    let required = |k: &str| FieldError {
        type_: FieldErrorType::Required,
        field: format!("data[{k}]"),
        value: None,
        detail: String::new(),
    };
    match obj.get("type").and_then(Value::as_str).unwrap_or("Opaque") {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            if obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(FieldError {
                    type_: FieldErrorType::Required,
                    field: format!("metadata.annotations[{key}]"),
                    value: None,
                    detail: String::new(),
                });
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if t.ends_with("json") {
                ".dockerconfigjson"
            } else {
                ".dockercfg"
            };
            match raw(key) {
                None => errors.push(required(key)),
                Some(b) => {
                    if let Err(e) = serde_json::from_slice::<Map<String, Value>>(b) {
                        errors.push(FieldError {
                            type_: FieldErrorType::Invalid,
                            field: format!("data[{key}]"),
                            value: Some("\"<secret contents redacted>\"".into()),
                            detail: e.to_string(),
                        });
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if raw("username").is_none() && raw("password").is_none() => {
            errors.push(required("username"));
            errors.push(required("password"));
        }
        "kubernetes.io/ssh-auth" if raw("ssh-privatekey").is_none_or(|b| b.is_empty()) => {
            errors.push(required("ssh-privatekey"));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if raw(key).is_none() {
                    errors.push(required(key));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn validate_lease(errors: &mut Vec<FieldError>, obj: &Value) {
    let spec = |f: &str| obj.get("spec").and_then(|s| s.get(f));
    if let Some(d) = spec("leaseDurationSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        errors.push(FieldError {
            type_: FieldErrorType::Invalid,
            field: "spec.leaseDurationSeconds".into(),
            value: Some(d.to_string()),
            detail: "must be greater than 0".into(),
        });
    }
    if let Some(t) = spec("leaseTransitions").and_then(Value::as_i64)
        && t < 0
    {
        errors.push(FieldError {
            type_: FieldErrorType::Invalid,
            field: "spec.leaseTransitions".into(),
            value: Some(t.to_string()),
            detail: "must be greater than or equal to 0".into(),
        });
    }
    let set = |f: &str| {
        spec(f)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if set("preferredHolder") && !set("strategy") {
        errors.push(FieldError {
            type_: FieldErrorType::Forbidden,
            field: "spec.preferredHolder".into(),
            value: None,
            detail: "may only be specified if `strategy` is defined".into(),
        });
    }
}

fn map<'a>(obj: &'a Value, field: &str) -> Option<&'a Map<String, Value>> {
    obj.get(field)?.as_object()
}

fn invalid(field: String, value: &str, detail: &str) -> FieldError {
    FieldError {
        type_: FieldErrorType::Invalid,
        field,
        value: Some(json!(value).to_string()),
        detail: detail.into(),
    }
}

fn too_long(field: &str) -> FieldError {
    FieldError {
        type_: FieldErrorType::TooLong,
        field: field.into(),
        value: None,
        detail: format!("may not be more than {MAX_DATA_BYTES} bytes"),
    }
}

fn key_errors(errors: &mut Vec<FieldError>, field: &str, key: &str) {
    for problem in config_key_problems(key) {
        errors.push(invalid(format!("{field}[{key}]"), key, problem));
    }
}

/// The bytes of a base64 value, or the 400 kube-apiserver's decoder gives.
fn decoded(kind: &str, v: &Value) -> Result<Vec<u8>, ApiError> {
    let text: String = v
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    GO_BASE64.decode(&text).map_err(|e| {
        let at = match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidPadding => {
                text.len()
            }
        };
        ApiError::BadRequest(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: illegal base64 data at input byte {at}"
        ))
    })
}

/// Once `immutable` is true it stays true, and `fields` keep their content.
fn immutable_data(errors: &mut Vec<FieldError>, obj: &Value, old: &Value, fields: &[&str]) {
    if old.get("immutable") != Some(&json!(true)) {
        return;
    }
    if obj.get("immutable") != Some(&json!(true)) {
        errors.push(forbidden("immutable"));
    }
    let empty = Map::new();
    for f in fields {
        if map(obj, f).unwrap_or(&empty) != map(old, f).unwrap_or(&empty) {
            errors.push(forbidden(f));
        }
    }
}

fn forbidden(field: &str) -> FieldError {
    FieldError {
        type_: FieldErrorType::Forbidden,
        field: field.into(),
        value: None,
        detail: IMMUTABLE_SET.into(),
    }
}

#[cfg(test)]
mod tests;
