//! Admission of a write: metadata rules, the schema (with `fieldValidation`),
//! then the kind's own rules: from `corral-api` for Corral's kinds, from
//! `core_kinds` for the core kinds (create or update).

mod core_kinds;
mod endpoint_slices;
pub mod node_restriction;
pub mod task_transitions;

use corral_api::CorralObject;
use corral_api::validation::{
    FieldError, FieldErrorType, is_dns1123_label, is_dns1123_subdomain, is_label_value,
    is_qualified_name,
};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::kinds::catalog::{Origin, ResourceDesc};
use crate::storage::objects::meta_str;
use crate::storage::schema_check::SchemaReport;

/// What to do with fields the schema does not know (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// 400 BadRequest.
    Strict,
    /// Drop them and answer with `Warning` headers (the default).
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter; absent means Warn, as in Kubernetes.
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation must be one of Strict, Warn or Ignore, not {other:?}"
            ))),
        }
    }
}

fn invalid(desc: &ResourceDesc, obj: &Value, errors: Vec<FieldError>) -> ApiError {
    invalid_named(
        desc,
        meta_str(obj, "name").unwrap_or_default().to_owned(),
        errors,
    )
}

fn invalid_named(desc: &ResourceDesc, name: String, errors: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        kind: if desc.group.is_empty() {
            desc.kind.to_owned()
        } else {
            format!("{}.{}", desc.kind, desc.group)
        },
        name,
        errors,
    }
}

/// The most all of an object's annotations may hold, as in Kubernetes.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

const QUALIFIED_NAME: &str = "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/'";

fn bad_key(field: &str, key: &str) -> FieldError {
    FieldError {
        type_: FieldErrorType::Invalid,
        field: format!("metadata.{field}"),
        value: Some(format!("\"{key}\"")),
        detail: QUALIFIED_NAME.into(),
    }
}

/// Kubernetes' rules for every object's labels and annotations: keys are
/// qualified names (`[prefix/]name`), label values are at most 63
/// characters of `[A-Za-z0-9_.-]` starting and ending alphanumeric, and the
/// annotations together stay within 256 KiB. On an update, what `old`
/// already held is not checked again (validation ratcheting, as Kubernetes
/// does for custom resources), so objects stored before a rule still take
/// writes.
fn labels_and_annotations(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    fn map<'a>(o: Option<&'a Value>, field: &str) -> Option<&'a Map<String, Value>> {
        o?.get("metadata")?.get(field)?.as_object()
    }
    let mut errors = Vec::new();
    let old_labels = map(old, "labels");
    for (k, v) in map(Some(obj), "labels").into_iter().flatten() {
        if old_labels.and_then(|l| l.get(k)) == Some(v) {
            continue;
        }
        if !is_qualified_name(k) {
            errors.push(bad_key("labels", k));
        }
        if let Some(v) = v.as_str()
            && !is_label_value(v)
        {
            errors.push(FieldError {
                type_: FieldErrorType::Invalid,
                field: format!("metadata.labels.{k}"),
                value: Some(format!("\"{v}\"")),
                detail: "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', must start and end with an alphanumeric character, and be at most 63 characters".into(),
            });
        }
    }
    let (annotations, old_annotations) = (map(Some(obj), "annotations"), map(old, "annotations"));
    if old.is_some() && annotations == old_annotations {
        return errors;
    }
    let mut total = 0;
    for (k, v) in annotations.into_iter().flatten() {
        if !old_annotations.is_some_and(|a| a.contains_key(k)) && !is_qualified_name(k) {
            errors.push(bad_key("annotations", k));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > MAX_ANNOTATION_BYTES {
        errors.push(FieldError {
            type_: FieldErrorType::TooLong,
            field: "metadata.annotations".into(),
            value: None,
            detail: format!("may not be more than {MAX_ANNOTATION_BYTES} bytes"),
        });
    }
    errors
}

/// The finalizers Kubernetes itself defines; every other one is a qualified
/// name, and on a core kind one with a `/` (`example.com/cleanup`).
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// Kubernetes' rules for `metadata.finalizers`: each is a qualified name
/// (checked for those `old` did not hold), `orphan` and `foregroundDeletion`
/// exclude each other, and an object being deleted takes no new ones. A
/// core kind's finalizers are standard or domain-qualified; on a custom kind
/// an unqualified one is only warned about, as kube-apiserver does.
fn finalizer_rules(
    obj: &Value,
    old: Option<&Value>,
    origin: Origin,
    warnings: &mut Vec<String>,
) -> Vec<FieldError> {
    fn list(o: Option<&Value>) -> Vec<&str> {
        o.and_then(|o| o.pointer("/metadata/finalizers"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
    let (finalizers, old_finalizers) = (list(Some(obj)), list(old));
    let mut errors = Vec::new();
    for (i, f) in finalizers.iter().enumerate() {
        if old_finalizers.contains(f) {
            continue;
        }
        if !is_qualified_name(f) {
            errors.push(FieldError {
                type_: FieldErrorType::Invalid,
                field: "metadata.finalizers".into(),
                value: Some(Value::from(*f).to_string()),
                detail: QUALIFIED_NAME.into(),
            });
        } else if !f.contains('/') && !STANDARD_FINALIZERS.contains(f) {
            match origin {
                Origin::BuiltIn => errors.push(FieldError {
                    type_: FieldErrorType::Invalid,
                    field: format!("metadata.finalizers[{i}]"),
                    value: Some(Value::from(*f).to_string()),
                    detail: "name is neither a standard finalizer name nor is it fully qualified"
                        .into(),
                }),
                Origin::Custom => warnings.push(format!(
                    "metadata.finalizers: {}: prefer a domain-qualified finalizer name including a path (/) to avoid accidental conflicts with other finalizer writers",
                    Value::from(*f)
                )),
            }
        }
    }
    if finalizers.contains(&"orphan") && finalizers.contains(&"foregroundDeletion") {
        errors.push(FieldError {
            type_: FieldErrorType::Invalid,
            field: "metadata.finalizers".into(),
            value: Some(Value::from(finalizers.clone()).to_string()),
            detail: "finalizer orphan and foregroundDeletion cannot be both set".into(),
        });
    }
    if old.and_then(|o| meta_str(o, "deletionTimestamp")).is_some() {
        let added: Vec<&str> = finalizers
            .iter()
            .filter(|f| !old_finalizers.contains(f))
            .copied()
            .collect();
        if !added.is_empty() {
            errors.push(FieldError {
                type_: FieldErrorType::Forbidden,
                field: "metadata.finalizers".into(),
                value: None,
                detail: format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    go_strings(&added)
                ),
            });
        }
    }
    errors
}

/// A list of strings as Go's `%#v` prints one: `[]string{"a", "b"}`.
fn go_strings(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| Value::from(*s).to_string()).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// Checks (and prunes) `obj` for a write; returns the warnings to send.
pub fn admit(
    desc: &ResourceDesc,
    obj: &mut Value,
    old: Option<&Value>,
    fv: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let mut report = SchemaReport::default();
    desc.checker.check(obj, &mut report);
    let mut warnings = Vec::new();
    if !report.unknown.is_empty() {
        let list: Vec<String> = report
            .unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match fv {
            FieldValidation::Strict => {
                return Err(ApiError::BadRequest(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => warnings = list,
            FieldValidation::Ignore => {}
        }
    }
    let mut errors = report.errors;
    let name = meta_str(obj, "name").unwrap_or_default();
    let rbac = desc.group == "rbac.authorization.k8s.io";
    let name_ok = if desc.kind == "Namespace" {
        is_dns1123_label(name)
    } else if rbac {
        // RBAC names are path segments (`system:node`, `corral:agent`).
        name != "." && name != ".." && !name.contains(['/', '%'])
    } else {
        is_dns1123_subdomain(name)
    };
    if name.is_empty() {
        errors.insert(
            0,
            FieldError {
                type_: FieldErrorType::Required,
                field: "metadata.name".into(),
                value: None,
                detail: "name or generateName is required".into(),
            },
        );
    } else if !name_ok && rbac {
        errors.insert(
            0,
            FieldError {
                type_: FieldErrorType::Invalid,
                field: "metadata.name".into(),
                value: Some(format!("\"{name}\"")),
                detail: "may not be '.' or '..' and may not contain '/' or '%'".into(),
            },
        );
    } else if !name_ok {
        errors.insert(0, FieldError {
            type_: FieldErrorType::Invalid,
            field: "metadata.name".into(),
            value: Some(format!("\"{name}\"")),
            detail: "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into(),
        });
    }
    errors.extend(labels_and_annotations(obj, old));
    errors.extend(finalizer_rules(obj, old, desc.origin, &mut warnings));
    if !errors.is_empty() {
        return Err(invalid(desc, obj, errors));
    }
    if desc.origin == Origin::BuiltIn {
        core_kinds::normalize(desc.kind, obj, old);
        let errors = core_kinds::validate(desc.kind, obj, old)?;
        if !errors.is_empty() {
            return Err(invalid(desc, obj, errors));
        }
    }
    if desc.origin == Origin::Custom {
        // The typed form replaces `obj` below, so it is decoded from `obj`
        // itself rather than from a copy; only the name is kept for errors.
        let name = meta_str(obj, "name").unwrap_or_default().to_owned();
        let typed = CorralObject::from_value(std::mem::take(obj)).map_err(|e| {
            invalid_named(
                desc,
                name.clone(),
                vec![FieldError {
                    type_: FieldErrorType::Invalid,
                    field: String::new(),
                    value: None,
                    detail: e.to_string(),
                }],
            )
        })?;
        let rule_errors = match old.map(CorralObject::from_value_ref) {
            Some(Ok(old_typed)) => typed.validate_update(&old_typed),
            _ => typed.validate(),
        };
        if !rule_errors.is_empty() {
            return Err(invalid_named(desc, name, rule_errors));
        }
        // Store the typed form: schema defaults (weight 1, tier preemptible,
        // reservation type dynamic, …) are filled in, as Kubernetes does.
        *obj = typed
            .to_value()
            .map_err(|e| ApiError::Internal(format!("encoding {}: {e}", desc.kind)))?;
    }
    drop_empty_metadata(obj);
    Ok(warnings)
}

/// Removes empty `labels`, `annotations`, `finalizers` and
/// `ownerReferences`, as Kubernetes' encoding omits them: an object whose
/// last label was removed reads back without `labels`, so GitOps tools see
/// no difference from the manifest that never had one.
fn drop_empty_metadata(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, v| {
            !(matches!(
                k.as_str(),
                "labels" | "annotations" | "finalizers" | "ownerReferences"
            ) && match v {
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn empty_metadata_maps_and_lists_are_dropped() {
        let registry = crate::kinds::catalog::Catalog::standard();
        for (desc, mut obj) in [
            (
                registry.find("", "v1", "configmaps").expect("configmaps"),
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "c", "labels": {}, "annotations": {}, "finalizers": [],
                                    "ownerReferences": [], "managedFields": []},
                       "data": {}}),
            ),
            (
                registry
                    .find("corral.dev", "v1alpha1", "roles")
                    .expect("roles"),
                json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Role",
                       "metadata": {"name": "r", "labels": {}, "annotations": {"kept": "yes"}},
                       "spec": {}}),
            ),
        ] {
            admit(&desc, &mut obj, None, FieldValidation::Strict).expect("admitted");
            let meta = obj["metadata"].as_object().expect("metadata");
            for gone in ["labels", "finalizers", "ownerReferences"] {
                assert!(!meta.contains_key(gone), "{gone} kept in {obj}");
            }
            // Data other than these keeps its shape.
            if desc.kind == "ConfigMap" {
                assert!(!meta.contains_key("annotations"), "{obj}");
                assert_eq!(obj["data"], json!({}));
                assert_eq!(meta["managedFields"], json!([]));
            } else {
                assert_eq!(meta["annotations"], json!({"kept": "yes"}));
            }
        }
    }

    #[test]
    fn labels_and_annotations_follow_kubernetes_rules() {
        let obj = json!({"metadata": {
            "labels": {"ok": "fine", "corral.dev/job": "web", "bad key!": "x", "long": "x".repeat(64)},
            "annotations": {"a.example/b": "anything at all", "/no-name": "x"}}});
        assert_eq!(
            fields(&labels_and_annotations(&obj, None)),
            [
                "metadata.labels",
                "metadata.labels.long",
                "metadata.annotations"
            ]
        );
        let big = json!({"metadata": {"annotations": {"a": "x".repeat(MAX_ANNOTATION_BYTES)}}});
        assert_eq!(
            fields(&labels_and_annotations(&big, None)),
            ["metadata.annotations"]
        );
    }

    #[test]
    fn what_an_object_already_held_is_not_checked_again() {
        let old = json!({"metadata": {"labels": {"long": "x".repeat(64)}, "annotations": {"bad key": "v"}}});
        assert!(labels_and_annotations(&old, Some(&old)).is_empty());
        // Another annotation added: the old key stays accepted.
        let mut more = old.clone();
        more["metadata"]["annotations"]["fine"] = json!("v");
        assert!(labels_and_annotations(&more, Some(&old)).is_empty());
        // A label that changes is checked.
        let mut changed = old.clone();
        changed["metadata"]["labels"]["long"] = json!("y".repeat(64));
        assert_eq!(
            fields(&labels_and_annotations(&changed, Some(&old))),
            ["metadata.labels.long"]
        );
    }

    #[test]
    fn finalizers_follow_kubernetes_rules() {
        let with = |f: Value| json!({"metadata": {"finalizers": f}});
        let check = |obj: &Value, old: Option<&Value>, origin| {
            let mut warnings = Vec::new();
            let errors = finalizer_rules(obj, old, origin, &mut warnings);
            (fields(&errors).join(" "), warnings.len())
        };
        for (origin, finalizers, want) in [
            (
                Origin::BuiltIn,
                json!(["kubernetes", "example.com/x", "orphan"]),
                ("", 0),
            ),
            (
                Origin::BuiltIn,
                json!(["plain"]),
                ("metadata.finalizers[0]", 0),
            ),
            (
                Origin::Custom,
                json!(["plain", "foregroundDeletion"]),
                ("", 1),
            ),
            (
                Origin::Custom,
                json!(["bad name!"]),
                ("metadata.finalizers", 0),
            ),
            (
                Origin::Custom,
                json!(["orphan", "foregroundDeletion"]),
                ("metadata.finalizers", 0),
            ),
        ] {
            let obj = with(finalizers);
            let got = check(&obj, None, origin);
            assert_eq!((got.0.as_str(), got.1), want, "{obj}");
        }
        // What the object already held is not checked again.
        let old = with(json!(["plain"]));
        assert_eq!(check(&old, Some(&old), Origin::BuiltIn), (String::new(), 0));
        // Being deleted: finalizers may go, not come.
        let mut deleting = with(json!(["example.com/a"]));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(
            check(&with(json!([])), Some(&deleting), Origin::Custom).0,
            ""
        );
        let mut warnings = Vec::new();
        let errors = finalizer_rules(
            &with(json!(["example.com/a", "example.com/b"])),
            Some(&deleting),
            Origin::Custom,
            &mut warnings,
        );
        assert_eq!(
            errors[0].detail,
            "no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/b\"}"
        );
    }
}
