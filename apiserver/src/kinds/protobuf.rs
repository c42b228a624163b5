//! Decoding of protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! for the kinds typed Go clients send that way (the self reviews of
//! `kubectl auth can-i` and `whoami` too, and SubjectAccessReview): v1 Namespace, ConfigMap,
//! Secret and Event, coordination/v1 Lease, the rbac/v1 kinds (`rbac.rs`),
//! and meta/v1 DeleteOptions (Helm
//! 3.17 and kubectl 1.32 use them). The body is the magic `k8s\0` followed by
//! a `runtime.Unknown` envelope. The messages are the kube-rs project's
//! `k8s-pb` bindings of Kubernetes' `generated.proto`; this module turns them
//! into the same JSON a JSON client would have sent.

use std::collections::BTreeMap;

use base64::Engine;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

use k8s_pb::api::authentication::v1::SelfSubjectReview;
use k8s_pb::api::authorization::v1::{
    SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
};
use k8s_pb::api::coordination::v1::Lease;
use k8s_pb::api::core::v1::{
    ConfigMap, Event, EventSeries, EventSource, Namespace, ObjectReference, Secret,
};
use k8s_pb::api::events::v1::{Event as EventV1, EventSeries as EventSeriesV1};
use k8s_pb::apimachinery::pkg::apis::meta::v1::{DeleteOptions, MicroTime, ObjectMeta, Time};
use k8s_pb::apimachinery::pkg::runtime::Unknown;

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

/// An event series (core/v1 and events.k8s.io/v1 declare the same fields).
fn series(count: Option<i32>, last_observed: &Option<MicroTime>) -> Value {
    let mut o = Map::new();
    put(&mut o, "count", count.map(|n| json!(n)));
    put(&mut o, "lastObservedTime", micro_time(last_observed));
    Value::Object(o)
}

fn core_series(sr: &EventSeries) -> Value {
    series(sr.count, &sr.last_observed_time)
}

fn events_series(sr: &EventSeriesV1) -> Value {
    series(sr.count, &sr.last_observed_time)
}

/// A meta/v1 `Time`: RFC 3339 to the second.
fn time(t: &Option<Time>) -> Option<Value> {
    let t = t.as_ref()?;
    let ts = jiff::Timestamp::new(t.seconds.unwrap_or(0), t.nanos.unwrap_or(0)).ok()?;
    Some(json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// A meta/v1 `MicroTime`: RFC 3339 to the microsecond.
fn micro_time(t: &Option<MicroTime>) -> Option<Value> {
    let t = t.as_ref()?;
    let ts = jiff::Timestamp::new(t.seconds.unwrap_or(0), t.nanos.unwrap_or(0)).ok()?;
    Some(json!(ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
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

/// The attributes an access review asks about, shared by its two kinds.
fn access_attributes(
    spec: &mut Map<String, Value>,
    resource: Option<&k8s_pb::api::authorization::v1::ResourceAttributes>,
    non_resource: Option<&k8s_pb::api::authorization::v1::NonResourceAttributes>,
) {
    if let Some(r) = resource {
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
    if let Some(r) = non_resource {
        let mut o = Map::new();
        put(&mut o, "path", s(&r.path));
        put(&mut o, "verb", s(&r.verb));
        spec.insert("nonResourceAttributes".into(), Value::Object(o));
    }
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
            put(&mut out, "type", s(&c.r#type));
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
            put(&mut out, "firstTimestamp", time(&c.first_timestamp));
            put(&mut out, "lastTimestamp", time(&c.last_timestamp));
            put(&mut out, "count", c.count.map(|n| json!(n)));
            put(&mut out, "type", s(&c.r#type));
            put(&mut out, "eventTime", micro_time(&c.event_time));
            put(&mut out, "series", c.series.as_ref().map(core_series));
            put(&mut out, "action", s(&c.action));
            put(&mut out, "related", c.related.as_ref().map(reference));
            put(&mut out, "reportingComponent", s(&c.reporting_component));
            put(&mut out, "reportingInstance", s(&c.reporting_instance));
        }
        ("events.k8s.io/v1", "Event") => {
            let c = EventV1::decode(raw).map_err(|e| bad("Event", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            put(&mut out, "eventTime", micro_time(&c.event_time));
            put(&mut out, "series", c.series.as_ref().map(events_series));
            put(&mut out, "reportingController", s(&c.reporting_controller));
            put(&mut out, "reportingInstance", s(&c.reporting_instance));
            put(&mut out, "action", s(&c.action));
            put(&mut out, "reason", s(&c.reason));
            put(&mut out, "regarding", c.regarding.as_ref().map(reference));
            put(&mut out, "related", c.related.as_ref().map(reference));
            put(&mut out, "note", s(&c.note));
            put(&mut out, "type", s(&c.r#type));
            put(
                &mut out,
                "deprecatedSource",
                c.deprecated_source.as_ref().map(source),
            );
            put(
                &mut out,
                "deprecatedFirstTimestamp",
                time(&c.deprecated_first_timestamp),
            );
            put(
                &mut out,
                "deprecatedLastTimestamp",
                time(&c.deprecated_last_timestamp),
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
                put(&mut o, "acquireTime", micro_time(&sp.acquire_time));
                put(&mut o, "renewTime", micro_time(&sp.renew_time));
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
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let c = SelfSubjectAccessReview::decode(raw)
                .map_err(|e| bad("SelfSubjectAccessReview", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            let mut spec = Map::new();
            if let Some(sp) = &c.spec {
                access_attributes(
                    &mut spec,
                    sp.resource_attributes.as_ref(),
                    sp.non_resource_attributes.as_ref(),
                );
            }
            out.insert("spec".into(), Value::Object(spec));
        }
        ("authorization.k8s.io/v1", "SubjectAccessReview") => {
            let c = SubjectAccessReview::decode(raw).map_err(|e| bad("SubjectAccessReview", e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            let mut spec = Map::new();
            if let Some(sp) = &c.spec {
                put(&mut spec, "user", s(&sp.user));
                if !sp.groups.is_empty() {
                    spec.insert("groups".into(), json!(sp.groups));
                }
                access_attributes(
                    &mut spec,
                    sp.resource_attributes.as_ref(),
                    sp.non_resource_attributes.as_ref(),
                );
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
