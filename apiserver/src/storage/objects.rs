//! Helpers over objects as JSON: metadata access, the stored form, time.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// `metadata` of an object, created when absent. Callers pass objects (bodies
/// are checked to be JSON objects before this is reached); anything else is
/// first replaced by an empty object, so this never panics.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let Value::Object(o) = obj else {
        unreachable!("obj was just made an object")
    };
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// `metadata.labels` as a map (empty when absent).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.finalizers` (empty when absent).
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Now, as Kubernetes writes `Time` (RFC 3339, seconds).
pub fn now_time() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// The bytes stored for an object: without `resourceVersion` (the store's
/// revision is the resourceVersion) and with keys in a stable order. The
/// object is encoded as it is, skipping that one field (no copy is made).
pub fn to_stored(obj: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(&Stored(obj))
        .map_err(|e| ApiError::Internal(format!("encoding an object: {e}")))
}

/// An object encoded without `metadata.resourceVersion`.
struct Stored<'a>(&'a Value);

/// `metadata` encoded without `resourceVersion`.
struct StoredMeta<'a>(&'a Map<String, Value>);

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(o) = self.0 else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(o.len()))?;
        for (k, v) in o {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    map.serialize_entry(k, &StoredMeta(meta))?
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

impl serde::Serialize for StoredMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.0.iter().filter(|(k, _)| *k != "resourceVersion");
        let mut map = s.serialize_map(None)?;
        for (k, v) in fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// An object read from the store, with its resourceVersion.
pub fn from_stored(bytes: &[u8], revision: i64) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Internal(format!("decoding a stored object: {e}")))?;
    meta_mut(&mut v).insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
    Ok(v)
}

/// The parts of an object that count as its spec for `generation`: every
/// top-level field except metadata, status, apiVersion and kind.
pub fn spec_part(obj: &Value) -> impl Iterator<Item = (&String, &Value)> {
    obj.as_object()
        .into_iter()
        .flat_map(|o| o.iter())
        .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
}

/// True when `a` and `b` have the same spec part (see [`spec_part`]).
pub fn same_spec_part(a: &Value, b: &Value) -> bool {
    spec_part(a).count() == spec_part(b).count() && spec_part(a).all(|(k, v)| b.get(k) == Some(v))
}

/// Parses a resourceVersion string.
pub fn parse_rv(rv: &str) -> Result<i64, ApiError> {
    rv.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid resourceVersion {rv:?}: must be a non-negative integer"
        ))
    })
}

/// kubectl's short age: `45s`, `5m3s`, `3h2m`, `4d`, …
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (900, "15m"),
            (3 * 3600 + 120, "3h2m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
        ] {
            assert_eq!(human_age(s), want);
        }
    }

    #[test]
    fn stored_objects_drop_and_regain_their_resource_version() {
        let obj = json!({"metadata": {"name": "a", "resourceVersion": "9"}, "spec": {"x": 1}});
        let bytes = to_stored(&obj).expect("encode");
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        let back = from_stored(&bytes, 12).expect("decode");
        assert_eq!(meta_str(&back, "resourceVersion"), Some("12"));
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z\"\\\\]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    "resourceVersion|metadata|name|[a-z]{1,4}",
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The stored bytes are the object's encoding with
        /// `metadata.resourceVersion` removed, and nothing else changed.
        #[test]
        fn stored_bytes_are_the_object_without_its_resource_version(
            obj in json_value(),
            meta in json_value(),
        ) {
            let mut obj = obj;
            if let Value::Object(o) = &mut obj {
                o.insert("metadata".into(), meta);
            }
            let mut expected = obj.clone();
            if let Some(m) = expected.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let got = to_stored(&obj).expect("encode");
            proptest::prop_assert_eq!(got, serde_json::to_vec(&expected).expect("encode"));
        }
    }
}
