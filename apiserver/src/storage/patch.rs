//! Patch formats: JSON patch (RFC 6902), JSON merge patch (RFC 7386),
//! strategic merge patch for built-in kinds, and the merge step of
//! server-side apply.

mod strategic;

use serde_json::Value;

pub use strategic::strategic_merge;

use crate::error::ApiError;
use crate::kinds::catalog::{Origin, ResourceDesc};
use crate::storage::ssa::Lists;

/// The patch format, from the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

const ACCEPTED: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

impl PatchKind {
    /// Chooses the format, refusing what the kind does not take (415).
    pub fn from_content_type(content_type: &str, desc: &ResourceDesc) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let kind = match media {
            "application/json-patch+json" => PatchKind::Json,
            "application/merge-patch+json" => PatchKind::Merge,
            "application/strategic-merge-patch+json" => PatchKind::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
            _ => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the body of the request was in an unknown format - accepted media types include: {ACCEPTED}, application/strategic-merge-patch+json"
                )));
            }
        };
        if kind == PatchKind::Strategic && desc.origin == Origin::Custom {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: {ACCEPTED}"
            )));
        }
        Ok(kind)
    }
}

/// Parses a patch body: JSON, or YAML for apply patches.
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(e) if kind == PatchKind::Apply => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::BadRequest("the patch is not UTF-8".into()))?;
            serde_saphyr::from_str::<Value>(text).map_err(|ye| {
                ApiError::BadRequest(format!("error decoding patch: {e}; as YAML: {ye}"))
            })
        }
        Err(e) => Err(ApiError::BadRequest(format!("error decoding patch: {e}"))),
    }
}

/// Applies a JSON, merge or strategic patch to `target`; `lists` are the
/// kind's list types, which a strategic merge follows.
pub fn apply_patch(
    kind: PatchKind,
    target: &mut Value,
    patch: &Value,
    lists: &Lists,
) -> Result<(), ApiError> {
    match kind {
        PatchKind::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &p).map_err(|e| ApiError::Invalid {
                kind: "Patch".into(),
                name: String::new(),
                errors: vec![corral_api::validation::FieldError {
                    type_: corral_api::validation::FieldErrorType::Invalid,
                    field: String::new(),
                    value: None,
                    detail: format!("the JSON patch could not be applied: {e}"),
                }],
            })
        }
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(ApiError::BadRequest(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchKind::Strategic => strategic_merge(target, patch, lists),
        PatchKind::Apply => {
            // Server-side apply's merge step, every list atomic (the apply
            // endpoint itself merges with the kind's list types).
            crate::storage::ssa::merge_applied(target, patch, &Lists::default());
            Ok(())
        }
    }
}

/// The `/metadata/resourceVersion` a JSON patch sets or tests, if any.
pub fn json_patch_resource_version(patch: &Value) -> Option<String> {
    patch.as_array()?.iter().find_map(|op| {
        (op.get("path")?.as_str()? == "/metadata/resourceVersion"
            && matches!(op.get("op")?.as_str()?, "replace" | "test" | "add"))
        .then(|| op.get("value")?.as_str().map(str::to_owned))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_resource_version_in_a_json_patch_is_found() {
        let p = json!([{"op": "replace", "path": "/metadata/managedFields", "value": []},
                       {"op": "replace", "path": "/metadata/resourceVersion", "value": "106"}]);
        assert_eq!(json_patch_resource_version(&p).as_deref(), Some("106"));
        assert_eq!(json_patch_resource_version(&json!([])), None);
    }

    #[test]
    fn apply_merges_maps_and_replaces_lists() {
        let mut live = json!({"metadata": {"name": "j", "uid": "u", "labels": {"a": "1"}}, "spec": {"x": 1, "list": [1, 2], "keep": true}});
        apply_patch(
            PatchKind::Apply,
            &mut live,
            &json!({"metadata": {"name": "j", "uid": "evil", "labels": {"b": "2"}}, "spec": {"x": 2, "list": [3]}}),
            &Lists::default(),
        )
        .expect("apply");
        assert_eq!(
            live,
            json!({"metadata": {"name": "j", "uid": "u", "labels": {"a": "1", "b": "2"}}, "spec": {"x": 2, "list": [3], "keep": true}})
        );
    }

    proptest::proptest! {
        #[test]
        fn patches_never_panic(target in "\\PC{0,60}", patch in "\\PC{0,60}") {
            let mut t: Value = serde_json::from_str(&target).unwrap_or(json!({}));
            if let Ok(p) = serde_json::from_str::<Value>(&patch) {
                for kind in [PatchKind::Json, PatchKind::Merge, PatchKind::Strategic, PatchKind::Apply] {
                    let _ = apply_patch(kind, &mut t, &p, &Lists::from_schema(&json!({})));
                }
            }
        }
    }
}
