//! OpenAPI v2 (`/openapi/v2`), in protobuf (gnostic's `openapi.v2.Document`,
//! which client-go's `OpenAPISchema()` requires and Argo CD loads) or JSON.
//!
//! Built from the same per-kind schemas as OpenAPI v3: every kind is one
//! definition carrying `x-kubernetes-group-version-kind`. Vendor extensions,
//! enums and defaults travel as YAML text inside gnostic's `Any`, as
//! kube-openapi writes them. Constructs v2 lacks (`anyOf`, `nullable`) are
//! dropped; int-or-string fields keep their `x-kubernetes-int-or-string`
//! marker.

use prost::Message;
use serde_json::{Map, Value, json};

use crate::kinds::catalog::Catalog;

/// The media type of the protobuf document. Clients ask for the older
/// `…spec.v2@v1.0+protobuf` spelling, but Go's media-type parser rejects the
/// `@` in a response, so the answer uses the dotted form, as kube-openapi does.
pub const PROTOBUF_MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Any {
    #[prost(string, tag = "2")]
    pub(crate) yaml: String,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NamedAny {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) value: Option<Any>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub(crate) value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub(crate) schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NamedSchema {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub(crate) additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum AdditionalPropertiesKind {
    #[prost(message, tag = "1")]
    Schema(Box<Schema>),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct AdditionalPropertiesItem {
    #[prost(oneof = "AdditionalPropertiesKind", tags = "1, 2")]
    pub(crate) oneof: Option<AdditionalPropertiesKind>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Schema {
    #[prost(string, tag = "1")]
    pub(crate) r#ref: String,
    #[prost(string, tag = "2")]
    pub(crate) format: String,
    #[prost(string, tag = "4")]
    pub(crate) description: String,
    #[prost(message, optional, tag = "5")]
    pub(crate) default: Option<Any>,
    #[prost(double, tag = "7")]
    pub(crate) maximum: f64,
    #[prost(double, tag = "9")]
    pub(crate) minimum: f64,
    #[prost(string, tag = "13")]
    pub(crate) pattern: String,
    #[prost(string, repeated, tag = "19")]
    pub(crate) required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub(crate) r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub(crate) additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub(crate) r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub(crate) items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub(crate) all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub(crate) properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Info {
    #[prost(string, tag = "1")]
    pub(crate) title: String,
    #[prost(string, tag = "2")]
    pub(crate) version: String,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Paths {
    #[prost(message, repeated, tag = "1")]
    pub(crate) vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub(crate) additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Document {
    #[prost(string, tag = "1")]
    pub(crate) swagger: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub(crate) paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub(crate) definitions: Option<Definitions>,
}

fn yaml(v: &Value) -> Any {
    Any {
        yaml: serde_saphyr::to_string(v).unwrap_or_else(|_| v.to_string()),
    }
}

/// The v2 form of a JSON schema (as JSON), for the JSON document.
fn json_v2(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                match k.as_str() {
                    "anyOf" | "oneOf" | "nullable" => {}
                    "properties" => {
                        let props: Map<String, Value> = v
                            .as_object()
                            .map(|p| p.iter().map(|(k, s)| (k.clone(), json_v2(s))).collect())
                            .unwrap_or_default();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    "items" | "additionalProperties" if v.is_object() => {
                        out.insert(k.clone(), json_v2(v));
                    }
                    "allOf" => {
                        out.insert(
                            k.clone(),
                            Value::Array(
                                v.as_array()
                                    .map(|a| a.iter().map(json_v2).collect())
                                    .unwrap_or_default(),
                            ),
                        );
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The gnostic protobuf form of a JSON schema.
fn proto_schema(s: &Value) -> Schema {
    let mut out = Schema::default();
    let Some(m) = s.as_object() else { return out };
    let text = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    out.r#ref = text("$ref");
    out.format = text("format");
    out.description = text("description");
    out.pattern = text("pattern");
    out.default = m.get("default").map(yaml);
    out.minimum = m.get("minimum").and_then(Value::as_f64).unwrap_or_default();
    out.maximum = m.get("maximum").and_then(Value::as_f64).unwrap_or_default();
    out.required = m
        .get("required")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    out.r#enum = m
        .get("enum")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(yaml).collect())
        .unwrap_or_default();
    if let Some(t) = m.get("type").and_then(Value::as_str) {
        out.r#type = Some(TypeItem {
            value: vec![t.to_owned()],
        });
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        out.properties = Some(Properties {
            additional_properties: props
                .iter()
                .map(|(k, v)| NamedSchema {
                    name: k.clone(),
                    value: Some(proto_schema(v)),
                })
                .collect(),
        });
    }
    match m.get("additionalProperties") {
        Some(v @ Value::Object(_)) => {
            out.additional_properties = Some(Box::new(AdditionalPropertiesItem {
                oneof: Some(AdditionalPropertiesKind::Schema(Box::new(proto_schema(v)))),
            }));
        }
        Some(Value::Bool(b)) => {
            out.additional_properties = Some(Box::new(AdditionalPropertiesItem {
                oneof: Some(AdditionalPropertiesKind::Boolean(*b)),
            }));
        }
        _ => {}
    }
    if let Some(items) = m.get("items") {
        out.items = Some(ItemsItem {
            schema: vec![proto_schema(items)],
        });
    }
    if let Some(all) = m.get("allOf").and_then(Value::as_array) {
        out.all_of = all.iter().map(proto_schema).collect();
    }
    out.vendor_extension = m
        .iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny {
            name: k.clone(),
            value: Some(yaml(v)),
        })
        .collect();
    out
}

fn definitions(registry: &Catalog) -> Vec<(String, Value)> {
    registry
        .served()
        .map(|d| {
            let mut schema = d.schema.clone();
            if let Some(o) = schema.as_object_mut() {
                o.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": d.group, "version": d.version, "kind": d.kind}]),
                );
            }
            (d.schema_name(), schema)
        })
        .collect()
}

/// The JSON document.
pub fn json_document(registry: &Catalog) -> Value {
    let defs: Map<String, Value> = definitions(registry)
        .into_iter()
        .map(|(k, v)| (k, json_v2(&v)))
        .collect();
    json!({"swagger": "2.0", "info": {"title": "Corral", "version": "v1.32.0"}, "paths": {}, "definitions": defs})
}

/// The protobuf document.
pub fn protobuf_document(registry: &Catalog) -> Vec<u8> {
    let doc = Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Corral".into(),
            version: "v1.32.0".into(),
        }),
        paths: Some(Paths::default()),
        definitions: Some(Definitions {
            additional_properties: definitions(registry)
                .into_iter()
                .map(|(name, schema)| NamedSchema {
                    name,
                    value: Some(proto_schema(&schema)),
                })
                .collect(),
        }),
    };
    doc.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_a_definition_with_its_group_version_kind() {
        let registry = Catalog::standard();
        let bytes = protobuf_document(&registry);
        let doc = Document::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(doc.swagger, "2.0");
        let defs = doc.definitions.expect("definitions").additional_properties;
        assert_eq!(defs.len(), registry.served().count());
        let task = defs
            .iter()
            .find(|d| d.name == "dev.corral.v1alpha1.Task")
            .and_then(|d| d.value.clone())
            .expect("Task");
        let gvk = task
            .vendor_extension
            .iter()
            .find(|e| e.name == "x-kubernetes-group-version-kind")
            .expect("gvk");
        let text = &gvk.value.as_ref().expect("value").yaml;
        assert!(
            text.contains("kind: Task") && text.contains("group: corral.dev"),
            "{text}"
        );
        let spec = task
            .properties
            .expect("properties")
            .additional_properties
            .into_iter()
            .find(|p| p.name == "spec")
            .expect("spec");
        assert!(spec.value.expect("schema").properties.is_some());
        let json = json_document(&registry);
        assert!(json["definitions"]["dev.corral.v1alpha1.Job"]["properties"]["spec"]["properties"]["tier"]["enum"].is_array());
    }
}
