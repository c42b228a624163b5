//! Decoding of protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! for the kinds typed Go clients send that way (the self reviews of
//! `kubectl auth can-i` and `whoami` too, and SubjectAccessReview): v1 Namespace, ConfigMap,
//! Secret and Event, coordination/v1 Lease, the rbac/v1 kinds (`rbac.rs`),
//! and meta/v1 DeleteOptions (Helm
//! 3.17 and kubectl 1.32 use them). The body is the magic `k8s\0` followed by
//! a `runtime.Unknown` envelope. Messages are declared here for just these
//! kinds, with the field numbers of Kubernetes' `generated.proto`, and turned
//! into the same JSON a JSON client would have sent.

use std::collections::BTreeMap;

use base64::Engine;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    content_type: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Time {
    #[prost(int64, optional, tag = "1")]
    seconds: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    nanos: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct OwnerReference {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    uid: Option<String>,
    #[prost(string, optional, tag = "5")]
    api_version: Option<String>,
    #[prost(bool, optional, tag = "6")]
    controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    block_owner_deletion: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "5")]
    uid: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(int64, optional, tag = "7")]
    generation: Option<i64>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "13")]
    owner_references: Vec<OwnerReference>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    type_: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct SelfSubjectAccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
    /// SubjectAccessReview only: whom it asks about (the same message
    /// otherwise, with the same field numbers).
    #[prost(string, optional, tag = "3")]
    user: Option<String>,
    #[prost(string, repeated, tag = "4")]
    groups: Vec<String>,
}

/// authorization.k8s.io/v1 (`kubectl auth can-i`); its status is the answer.
#[derive(Clone, PartialEq, Message)]
struct SelfSubjectAccessReview {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<SelfSubjectAccessReviewSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct SelfSubjectRulesReviewSpec {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
}

/// authorization.k8s.io/v1 (`kubectl auth can-i --list`).
#[derive(Clone, PartialEq, Message)]
struct SelfSubjectRulesReview {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<SelfSubjectRulesReviewSpec>,
}

/// authentication.k8s.io/v1 (`kubectl auth whoami`): nothing but metadata.
#[derive(Clone, PartialEq, Message)]
struct SelfSubjectReview {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

#[derive(Clone, PartialEq, Message)]
struct NamespaceSpec {
    #[prost(string, repeated, tag = "1")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<NamespaceSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectReference {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "2")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    uid: Option<String>,
    #[prost(string, optional, tag = "5")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(string, optional, tag = "7")]
    field_path: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct EventSource {
    #[prost(string, optional, tag = "1")]
    component: Option<String>,
    #[prost(string, optional, tag = "2")]
    host: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    involved_object: Option<ObjectReference>,
    #[prost(string, optional, tag = "3")]
    reason: Option<String>,
    #[prost(string, optional, tag = "4")]
    message: Option<String>,
    #[prost(message, optional, tag = "5")]
    source: Option<EventSource>,
    #[prost(message, optional, tag = "6")]
    first_timestamp: Option<Time>,
    #[prost(message, optional, tag = "7")]
    last_timestamp: Option<Time>,
    #[prost(int32, optional, tag = "8")]
    count: Option<i32>,
    #[prost(string, optional, tag = "9")]
    type_: Option<String>,
    #[prost(message, optional, tag = "10")]
    event_time: Option<Time>,
    #[prost(message, optional, tag = "11")]
    series: Option<EventSeries>,
    #[prost(string, optional, tag = "12")]
    action: Option<String>,
    #[prost(message, optional, tag = "13")]
    related: Option<ObjectReference>,
    #[prost(string, optional, tag = "14")]
    reporting_component: Option<String>,
    #[prost(string, optional, tag = "15")]
    reporting_instance: Option<String>,
}

/// core/v1 and events.k8s.io/v1 `EventSeries` (the same fields and tags).
#[derive(Clone, PartialEq, Message)]
struct EventSeries {
    #[prost(int32, optional, tag = "1")]
    count: Option<i32>,
    #[prost(message, optional, tag = "2")]
    last_observed_time: Option<Time>,
}

/// events.k8s.io/v1 `Event`.
#[derive(Clone, PartialEq, Message)]
struct EventV1 {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    event_time: Option<Time>,
    #[prost(message, optional, tag = "3")]
    series: Option<EventSeries>,
    #[prost(string, optional, tag = "4")]
    reporting_controller: Option<String>,
    #[prost(string, optional, tag = "5")]
    reporting_instance: Option<String>,
    #[prost(string, optional, tag = "6")]
    action: Option<String>,
    #[prost(string, optional, tag = "7")]
    reason: Option<String>,
    #[prost(message, optional, tag = "8")]
    regarding: Option<ObjectReference>,
    #[prost(message, optional, tag = "9")]
    related: Option<ObjectReference>,
    #[prost(string, optional, tag = "10")]
    note: Option<String>,
    #[prost(string, optional, tag = "11")]
    type_: Option<String>,
    #[prost(message, optional, tag = "12")]
    deprecated_source: Option<EventSource>,
    #[prost(message, optional, tag = "13")]
    deprecated_first_timestamp: Option<Time>,
    #[prost(message, optional, tag = "14")]
    deprecated_last_timestamp: Option<Time>,
    #[prost(int32, optional, tag = "15")]
    deprecated_count: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct LeaseSpec {
    #[prost(string, optional, tag = "1")]
    holder_identity: Option<String>,
    #[prost(int32, optional, tag = "2")]
    lease_duration_seconds: Option<i32>,
    #[prost(message, optional, tag = "3")]
    acquire_time: Option<Time>,
    #[prost(message, optional, tag = "4")]
    renew_time: Option<Time>,
    #[prost(int32, optional, tag = "5")]
    lease_transitions: Option<i32>,
    #[prost(string, optional, tag = "6")]
    strategy: Option<String>,
    #[prost(string, optional, tag = "7")]
    preferred_holder: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Lease {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<LeaseSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct Preconditions {
    #[prost(string, optional, tag = "1")]
    uid: Option<String>,
    #[prost(string, optional, tag = "2")]
    resource_version: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct DeleteOptions {
    #[prost(int64, optional, tag = "1")]
    grace_period_seconds: Option<i64>,
    #[prost(message, optional, tag = "2")]
    preconditions: Option<Preconditions>,
    #[prost(bool, optional, tag = "3")]
    orphan_dependents: Option<bool>,
    #[prost(string, optional, tag = "4")]
    propagation_policy: Option<String>,
    #[prost(string, repeated, tag = "5")]
    dry_run: Vec<String>,
}

/// Sets `key` when `v` is present.
fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v);
    }
}

/// An optional string; Go clients send empty strings for unset fields.
fn s(v: &Option<String>) -> Option<Value> {
    v.as_ref().filter(|x| !x.is_empty()).map(|x| json!(x))
}

fn reference(r: &ObjectReference) -> Value {
    let mut o = Map::new();
    put(&mut o, "kind", s(&r.kind));
    put(&mut o, "namespace", s(&r.namespace));
    put(&mut o, "name", s(&r.name));
    put(&mut o, "uid", s(&r.uid));
    put(&mut o, "apiVersion", s(&r.api_version));
    put(&mut o, "resourceVersion", s(&r.resource_version));
    put(&mut o, "fieldPath", s(&r.field_path));
    Value::Object(o)
}

fn source(src: &EventSource) -> Value {
    let mut o = Map::new();
    put(&mut o, "component", s(&src.component));
    put(&mut o, "host", s(&src.host));
    Value::Object(o)
}

fn series(sr: &EventSeries) -> Value {
    let mut o = Map::new();
    put(&mut o, "count", sr.count.map(|n| json!(n)));
    put(
        &mut o,
        "lastObservedTime",
        time(&sr.last_observed_time, true),
    );
    Value::Object(o)
}

fn time(t: &Option<Time>, micro: bool) -> Option<Value> {
    let t = t.as_ref()?;
    let ts = jiff::Timestamp::new(t.seconds.unwrap_or(0), t.nanos.unwrap_or(0)).ok()?;
    Some(json!(if micro {
        ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }))
}

fn string_map(m: &BTreeMap<String, String>) -> Option<Value> {
    (!m.is_empty()).then(|| json!(m))
}

fn bytes_map(m: &BTreeMap<String, Vec<u8>>) -> Option<Value> {
    (!m.is_empty()).then(|| {
        Value::Object(
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!(base64::engine::general_purpose::STANDARD.encode(v)),
                    )
                })
                .collect(),
        )
    })
}

fn meta(m: &Option<ObjectMeta>) -> Value {
    let mut out = Map::new();
    if let Some(m) = m {
        put(&mut out, "name", s(&m.name));
        put(&mut out, "generateName", s(&m.generate_name));
        put(&mut out, "namespace", s(&m.namespace));
        put(&mut out, "uid", s(&m.uid));
        put(&mut out, "resourceVersion", s(&m.resource_version));
        put(&mut out, "generation", m.generation.map(|g| json!(g)));
        put(&mut out, "labels", string_map(&m.labels));
        put(&mut out, "annotations", string_map(&m.annotations));
        if !m.owner_references.is_empty() {
            let refs: Vec<Value> = m
                .owner_references
                .iter()
                .map(|r| {
                    let mut o = Map::new();
                    put(&mut o, "apiVersion", s(&r.api_version));
                    put(&mut o, "kind", s(&r.kind));
                    put(&mut o, "name", s(&r.name));
                    put(&mut o, "uid", s(&r.uid));
                    put(&mut o, "controller", r.controller.map(|b| json!(b)));
                    put(
                        &mut o,
                        "blockOwnerDeletion",
                        r.block_owner_deletion.map(|b| json!(b)),
                    );
                    Value::Object(o)
                })
                .collect();
            out.insert("ownerReferences".into(), Value::Array(refs));
        }
        if !m.finalizers.is_empty() {
            out.insert("finalizers".into(), json!(m.finalizers));
        }
    }
    Value::Object(out)
}

fn bad(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("error decoding the protobuf {what}: {e}"))
}

/// Opens the `k8s\0` + `runtime.Unknown` envelope: `(apiVersion, kind, raw)`.
fn envelope(body: &[u8]) -> Result<(String, String, Vec<u8>), ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("body", "it does not start with the k8s protobuf magic"))?;
    let u = Unknown::decode(rest).map_err(|e| bad("envelope", e))?;
    if u.content_encoding.as_deref().is_some_and(|e| !e.is_empty()) {
        return Err(ApiError::UnsupportedMediaType(
            "encoded protobuf bodies are not supported".into(),
        ));
    }
    let tm = u.type_meta.unwrap_or_default();
    Ok((
        tm.api_version.unwrap_or_default(),
        tm.kind.unwrap_or_default(),
        u.raw.unwrap_or_default(),
    ))
}

/// Decodes a protobuf object body into its JSON form.
pub fn decode_object(body: &[u8]) -> Result<Value, ApiError> {
    let (api_version, kind, raw) = envelope(body)?;
    let raw = raw.as_slice();
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => {
            let c = ConfigMap::decode(raw).map_err(|e| bad("ConfigMap", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            put(&mut out, "data", string_map(&c.data));
            put(&mut out, "binaryData", bytes_map(&c.binary_data));
            put(&mut out, "immutable", c.immutable.map(|b| json!(b)));
        }
        ("v1", "Secret") => {
            let c = Secret::decode(raw).map_err(|e| bad("Secret", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            put(&mut out, "data", bytes_map(&c.data));
            put(&mut out, "stringData", string_map(&c.string_data));
            put(&mut out, "type", s(&c.type_));
            put(&mut out, "immutable", c.immutable.map(|b| json!(b)));
        }
        ("v1", "Namespace") => {
            let c = Namespace::decode(raw).map_err(|e| bad("Namespace", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            if let Some(spec) = c.spec.filter(|sp| !sp.finalizers.is_empty()) {
                out.insert("spec".into(), json!({"finalizers": spec.finalizers}));
            }
        }
        ("v1", "Event") => {
            let c = Event::decode(raw).map_err(|e| bad("Event", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            put(
                &mut out,
                "involvedObject",
                c.involved_object.as_ref().map(reference),
            );
            put(&mut out, "reason", s(&c.reason));
            put(&mut out, "message", s(&c.message));
            put(&mut out, "source", c.source.as_ref().map(source));
            put(&mut out, "firstTimestamp", time(&c.first_timestamp, false));
            put(&mut out, "lastTimestamp", time(&c.last_timestamp, false));
            put(&mut out, "count", c.count.map(|n| json!(n)));
            put(&mut out, "type", s(&c.type_));
            put(&mut out, "eventTime", time(&c.event_time, true));
            put(&mut out, "series", c.series.as_ref().map(series));
            put(&mut out, "action", s(&c.action));
            put(&mut out, "related", c.related.as_ref().map(reference));
            put(&mut out, "reportingComponent", s(&c.reporting_component));
            put(&mut out, "reportingInstance", s(&c.reporting_instance));
        }
        ("events.k8s.io/v1", "Event") => {
            let c = EventV1::decode(raw).map_err(|e| bad("Event", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            put(&mut out, "eventTime", time(&c.event_time, true));
            put(&mut out, "series", c.series.as_ref().map(series));
            put(&mut out, "reportingController", s(&c.reporting_controller));
            put(&mut out, "reportingInstance", s(&c.reporting_instance));
            put(&mut out, "action", s(&c.action));
            put(&mut out, "reason", s(&c.reason));
            put(&mut out, "regarding", c.regarding.as_ref().map(reference));
            put(&mut out, "related", c.related.as_ref().map(reference));
            put(&mut out, "note", s(&c.note));
            put(&mut out, "type", s(&c.type_));
            put(
                &mut out,
                "deprecatedSource",
                c.deprecated_source.as_ref().map(source),
            );
            put(
                &mut out,
                "deprecatedFirstTimestamp",
                time(&c.deprecated_first_timestamp, false),
            );
            put(
                &mut out,
                "deprecatedLastTimestamp",
                time(&c.deprecated_last_timestamp, false),
            );
            put(
                &mut out,
                "deprecatedCount",
                c.deprecated_count.map(|n| json!(n)),
            );
        }
        ("coordination.k8s.io/v1", "Lease") => {
            let c = Lease::decode(raw).map_err(|e| bad("Lease", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            if let Some(sp) = &c.spec {
                let mut o = Map::new();
                put(&mut o, "holderIdentity", s(&sp.holder_identity));
                put(
                    &mut o,
                    "leaseDurationSeconds",
                    sp.lease_duration_seconds.map(|n| json!(n)),
                );
                put(&mut o, "acquireTime", time(&sp.acquire_time, true));
                put(&mut o, "renewTime", time(&sp.renew_time, true));
                put(
                    &mut o,
                    "leaseTransitions",
                    sp.lease_transitions.map(|n| json!(n)),
                );
                put(&mut o, "strategy", s(&sp.strategy));
                put(&mut o, "preferredHolder", s(&sp.preferred_holder));
                out.insert("spec".into(), Value::Object(o));
            }
        }
        ("authorization.k8s.io/v1", k @ ("SelfSubjectAccessReview" | "SubjectAccessReview")) => {
            let c = SelfSubjectAccessReview::decode(raw).map_err(|e| bad(k, e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            let mut spec = Map::new();
            if let Some(sp) = c.spec.as_ref().filter(|_| k == "SubjectAccessReview") {
                put(&mut spec, "user", s(&sp.user));
                if !sp.groups.is_empty() {
                    spec.insert("groups".into(), json!(sp.groups));
                }
            }
            if let Some(r) = c
                .spec
                .as_ref()
                .and_then(|sp| sp.resource_attributes.as_ref())
            {
                let mut o = Map::new();
                put(&mut o, "namespace", s(&r.namespace));
                put(&mut o, "verb", s(&r.verb));
                put(&mut o, "group", s(&r.group));
                put(&mut o, "version", s(&r.version));
                put(&mut o, "resource", s(&r.resource));
                put(&mut o, "subresource", s(&r.subresource));
                put(&mut o, "name", s(&r.name));
                spec.insert("resourceAttributes".into(), Value::Object(o));
            }
            if let Some(r) = c
                .spec
                .as_ref()
                .and_then(|sp| sp.non_resource_attributes.as_ref())
            {
                let mut o = Map::new();
                put(&mut o, "path", s(&r.path));
                put(&mut o, "verb", s(&r.verb));
                spec.insert("nonResourceAttributes".into(), Value::Object(o));
            }
            out.insert("spec".into(), Value::Object(spec));
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let c = SelfSubjectRulesReview::decode(raw)
                .map_err(|e| bad("SelfSubjectRulesReview", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            let mut spec = Map::new();
            put(
                &mut spec,
                "namespace",
                s(&c.spec.as_ref().and_then(|sp| sp.namespace.clone())),
            );
            out.insert("spec".into(), Value::Object(spec));
        }
        ("authentication.k8s.io/v1", "SelfSubjectReview") => {
            let c = SelfSubjectReview::decode(raw).map_err(|e| bad("SelfSubjectReview", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
        }
        ("rbac.authorization.k8s.io/v1", k) if rbac::decode(k, raw, &mut out)? => {}
        (av, k) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "protobuf bodies of {av}/{k} are not supported; send application/json"
            )));
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf `DeleteOptions` body into its JSON form.
pub fn decode_delete_options(body: &[u8]) -> Result<Value, ApiError> {
    let (_, kind, raw) = envelope(body)?;
    if kind != "DeleteOptions" {
        return Err(bad("DeleteOptions", format!("the body holds a {kind}")));
    }
    let d = DeleteOptions::decode(raw.as_slice()).map_err(|e| bad("DeleteOptions", e))?;
    let mut out = Map::new();
    put(
        &mut out,
        "gracePeriodSeconds",
        d.grace_period_seconds.map(|n| json!(n)),
    );
    if let Some(p) = &d.preconditions {
        let mut o = Map::new();
        put(&mut o, "uid", s(&p.uid));
        put(&mut o, "resourceVersion", s(&p.resource_version));
        out.insert("preconditions".into(), Value::Object(o));
    }
    put(
        &mut out,
        "orphanDependents",
        d.orphan_dependents.map(|b| json!(b)),
    );
    put(&mut out, "propagationPolicy", s(&d.propagation_policy));
    if !d.dry_run.is_empty() {
        out.insert("dryRun".into(), json!(d.dry_run));
    }
    Ok(Value::Object(out))
}

mod rbac;

#[cfg(test)]
mod tests;
