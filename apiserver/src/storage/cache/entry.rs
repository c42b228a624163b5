//! One cached object, kept as the JSON it is served as.
//!
//! The cache holds every object of the cluster and a history of their past
//! states; at tens of thousands of Tasks a decoded `serde_json::Value` of
//! each (several times the size of its JSON) would be most of the server's
//! memory. An entry keeps only the encoded object, which lists, watches and
//! reads copy out as they are, and the few facts the cache and selectors ask
//! of every object (name, namespace, labels, owners, `spec.nodeName`,
//! whether it is being deleted, its resourceVersion). Whoever needs the
//! whole object decodes it ([`Entry::value`]).
//!
//! An entry made from the store's bytes ([`Entry::from_stored`]) is never
//! decoded into a `Value`: its resourceVersion is written into the stored
//! JSON's metadata, every other field is copied as raw JSON, and only the
//! facts above are read from it.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::storage::selectors::{FieldSelector, LabelSelector};

/// One cached object: its JSON (with its resourceVersion) and what is
/// selected on.
#[derive(Debug)]
pub struct Entry {
    /// The object, encoded, with its resourceVersion.
    pub json: Bytes,
    /// Its resourceVersion (0 when it has none).
    pub revision: i64,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`, when the object has one.
    pub node: Option<String>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The uids its `metadata.ownerReferences` name.
    pub owners: Vec<String>,
}

/// The fields of an object an entry keeps, read without decoding the rest.
#[derive(Deserialize, Default)]
struct Head<'a> {
    #[serde(default, borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(default, borrow)]
    spec: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct HeadMeta<'a> {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(default, rename = "deletionTimestamp", borrow)]
    deletion_timestamp: Option<&'a RawValue>,
    #[serde(default, borrow)]
    labels: Option<&'a RawValue>,
    #[serde(default, rename = "ownerReferences", borrow)]
    owner_references: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct HeadOwner {
    #[serde(default)]
    uid: Option<String>,
}

#[derive(Deserialize, Default)]
struct HeadSpec {
    #[serde(default, rename = "nodeName")]
    node_name: Option<String>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("a cached object: {e}"))
}

/// A field of an object that is not what an entry expects (a `spec` that is
/// not an object, labels that are not strings) reads as absent.
fn lenient<'a, T: Deserialize<'a> + Default>(raw: Option<&'a RawValue>) -> T {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or_default()
}

/// What an entry keeps besides the JSON.
struct Facts {
    revision: i64,
    name: String,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
    node: Option<String>,
    deleting: bool,
    owners: Vec<String>,
}

impl Facts {
    /// Reads them from an object's metadata and spec.
    fn read(metadata: Option<&RawValue>, spec: Option<&RawValue>) -> Facts {
        let meta: HeadMeta<'_> = lenient(metadata);
        let spec: HeadSpec = lenient(spec);
        let owners: Vec<HeadOwner> = lenient(meta.owner_references);
        Facts {
            revision: meta
                .resource_version
                .as_deref()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0),
            name: meta.name.unwrap_or_default(),
            namespace: meta.namespace,
            labels: lenient(meta.labels),
            node: spec.node_name,
            deleting: meta.deletion_timestamp.is_some_and(|d| d.get() != "null"),
            owners: owners.into_iter().filter_map(|o| o.uid).collect(),
        }
    }

    fn with_json(self, json: Bytes) -> Entry {
        Entry {
            json,
            revision: self.revision,
            name: self.name,
            namespace: self.namespace,
            labels: self.labels,
            node: self.node,
            deleting: self.deleting,
            owners: self.owners,
        }
    }
}

impl Entry {
    /// Wraps an object, encoding it once.
    pub fn new(value: Value) -> Result<Self, ApiError> {
        let json = serde_json::to_vec(&value).map_err(internal)?;
        Entry::from_json(Bytes::from(json))
    }

    /// The entry of a stored object (stored without its resourceVersion,
    /// see `objects::to_stored`) at `revision`: `revision` is written into
    /// its metadata, in the order the fields are encoded in, and nothing
    /// else is decoded. (An object whose top-level or metadata field names
    /// hold escapes, which no valid object has, is decoded whole instead.)
    pub fn from_stored(bytes: &[u8], revision: i64) -> Result<Self, ApiError> {
        let whole = || Entry::new(crate::storage::objects::from_stored(bytes, revision)?);
        let Ok(top) = serde_json::from_slice::<BTreeMap<&str, &RawValue>>(bytes) else {
            return whole();
        };
        let stored_meta = top.get("metadata").copied();
        let mut meta: BTreeMap<&str, &RawValue> =
            match stored_meta.map(|m| serde_json::from_str(m.get())) {
                Some(Ok(meta)) => meta,
                Some(Err(_)) => return whole(),
                None => BTreeMap::new(),
            };
        let version = RawValue::from_string(format!("\"{revision}\"")).map_err(internal)?;
        meta.insert("resourceVersion", &version);
        let mut out = Vec::with_capacity(bytes.len() + 40);
        out.push(b'{');
        let mut first = true;
        let mut wrote_meta = false;
        let mut put_key = |out: &mut Vec<u8>, key: &str| -> Result<(), ApiError> {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, key).map_err(internal)?;
            out.push(b':');
            Ok(())
        };
        for (key, raw) in &top {
            if !wrote_meta && *key >= "metadata" {
                put_key(&mut out, "metadata")?;
                serde_json::to_writer(&mut out, &meta).map_err(internal)?;
                wrote_meta = true;
                if *key == "metadata" {
                    continue;
                }
            }
            put_key(&mut out, key)?;
            out.extend_from_slice(raw.get().as_bytes());
        }
        if !wrote_meta {
            put_key(&mut out, "metadata")?;
            serde_json::to_writer(&mut out, &meta).map_err(internal)?;
        }
        out.push(b'}');
        let mut facts = Facts::read(stored_meta, top.get("spec").copied());
        facts.revision = revision;
        Ok(facts.with_json(Bytes::from(out)))
    }

    /// An entry of an object already encoded with its resourceVersion.
    fn from_json(json: Bytes) -> Result<Self, ApiError> {
        let head: Head<'_> = serde_json::from_slice(&json).map_err(internal)?;
        let facts = Facts::read(head.metadata, head.spec);
        Ok(facts.with_json(json))
    }

    /// The whole object, decoded.
    pub fn value(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.json).map_err(internal)
    }

    /// True when the object matches a list's or a watch's selectors. Field
    /// selectors on the name, namespace or `spec.nodeName` are answered from
    /// the entry; others decode the object.
    pub fn matches(&self, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        if !labels.matches(&self.labels) {
            return false;
        }
        let known = |field: &str| match field {
            "metadata.name" => Some(self.name.as_str()),
            "metadata.namespace" => Some(self.namespace.as_deref().unwrap_or_default()),
            "spec.nodeName" => Some(self.node.as_deref().unwrap_or_default()),
            _ => None,
        };
        if fields.0.iter().all(|t| known(&t.field).is_some()) {
            return fields
                .0
                .iter()
                .all(|t| (known(&t.field) == Some(t.value.as_str())) == t.equal);
        }
        self.value().is_ok_and(|v| fields.matches(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::objects::{from_stored, to_stored};
    use serde_json::json;

    fn objects() -> Vec<Value> {
        vec![
            json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Task",
                "metadata": {"name": "web-0-0", "namespace": "team-a", "uid": "u",
                    "labels": {"corral.dev/job": "web", "tier": "prod"},
                    "ownerReferences": [{"kind": "Job", "name": "web", "uid": "j1"}, {"kind": "X"}]},
                "spec": {"nodeName": "n1", "template": {"metadata": {"name": "inner"}}},
                "status": {"phase": "RUNNING", "events": [{"at": 1.5}]}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "\"quoted\" \u{e9}"},
                "metadata": {"name": "c", "namespace": "ns", "deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}, "spec": "odd"}),
            json!({"kind": "Bare", "zzz": 1, "aaa": [1, 2, {"metadata": 3}]}),
            json!({"metadata": {"name": "x", "labels": {"n": 5}}, "spec": {"nodeName": 7}}),
            json!({"a\"b": 1, "metadata": {"name": "esc", "we\\ird": true}}),
        ]
    }

    #[test]
    fn an_entry_from_stored_bytes_is_the_object_with_its_version() {
        for obj in objects() {
            let stored = to_stored(&obj).expect("encode");
            let entry = Entry::from_stored(&stored, 42).expect("entry");
            let want = from_stored(&stored, 42).expect("decode");
            assert_eq!(entry.value().expect("value"), want, "{obj}");
            // The same bytes as encoding the decoded object.
            assert_eq!(
                entry.json,
                serde_json::to_vec(&want).expect("encode"),
                "{obj}"
            );
            assert_eq!(entry.revision, 42);
            let by_value = Entry::new(want).expect("entry");
            assert_eq!(
                (&by_value.name, &by_value.namespace, &by_value.labels),
                (&entry.name, &entry.namespace, &entry.labels)
            );
            assert_eq!(
                (&by_value.node, by_value.deleting, by_value.revision),
                (&entry.node, entry.deleting, entry.revision)
            );
            assert_eq!(by_value.owners, entry.owners);
        }
    }

    #[test]
    fn an_entry_keeps_what_is_selected_on() {
        let [task, cm, ns, _, odd, _] = objects().try_into().expect("six");
        let task = Entry::new(task).expect("entry");
        assert_eq!(task.name, "web-0-0");
        assert_eq!(task.namespace.as_deref(), Some("team-a"));
        assert_eq!(task.node.as_deref(), Some("n1"));
        assert_eq!(task.labels.get("tier").map(String::as_str), Some("prod"));
        assert_eq!(task.owners, ["j1"]);
        assert!(!task.deleting);
        assert!(Entry::new(cm).expect("entry").deleting);
        // A spec that is not an object, labels or a nodeName that are not
        // strings: read as absent, not an error.
        let ns = Entry::new(ns).expect("entry");
        assert_eq!(ns.node, None);
        let odd = Entry::new(odd).expect("entry");
        assert!(odd.labels.is_empty());
        assert_eq!(odd.node, None);
    }

    #[test]
    fn selectors_are_answered_from_the_entry_or_the_object() {
        let task = Entry::new(objects().remove(0)).expect("entry");
        let fields = |s: &str| {
            FieldSelector::parse(s, &["spec.nodeName".into(), "status.phase".into()])
                .expect("field selector")
        };
        let labels = |s: &str| LabelSelector::parse(s).expect("label selector");
        let cases = [
            ("", "", true),
            ("tier=prod", "", true),
            ("tier=dev", "", false),
            ("", "spec.nodeName=n1", true),
            ("", "spec.nodeName!=n1", false),
            ("", "metadata.name=web-0-0,metadata.namespace=team-a", true),
            ("", "metadata.namespace=other", false),
            ("", "status.phase=RUNNING", true),
            ("", "status.phase=PENDING", false),
            ("tier=prod", "status.phase=RUNNING,spec.nodeName=n1", true),
        ];
        for (l, f, want) in cases {
            assert_eq!(task.matches(&labels(l), &fields(f)), want, "{l:?} {f:?}");
        }
    }
}
