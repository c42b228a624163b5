//! Protobuf bodies of rbac.authorization.k8s.io/v1 Role, ClusterRole,
//! RoleBinding and ClusterRoleBinding (what `kubectl create role|clusterrole|
//! rolebinding|clusterrolebinding` sends), with the field numbers of
//! Kubernetes' `rbac/v1/generated.proto`, turned into their JSON form.

use prost::Message;
use serde_json::{Map, Value, json};

use super::{ObjectMeta, bad, meta, put, s};
use crate::error::ApiError;

#[derive(Clone, PartialEq, Message)]
struct PolicyRule {
    #[prost(string, repeated, tag = "1")]
    verbs: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    api_groups: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    resources: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    resource_names: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    non_resource_urls: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct LabelSelectorRequirement {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(string, optional, tag = "2")]
    operator: Option<String>,
    #[prost(string, repeated, tag = "3")]
    values: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct LabelSelector {
    #[prost(btree_map = "string, string", tag = "1")]
    match_labels: std::collections::BTreeMap<String, String>,
    #[prost(message, repeated, tag = "2")]
    match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, PartialEq, Message)]
struct AggregationRule {
    #[prost(message, repeated, tag = "1")]
    cluster_role_selectors: Vec<LabelSelector>,
}

/// Role and ClusterRole (a Role has no aggregation rule).
#[derive(Clone, PartialEq, Message)]
struct RoleMessage {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    rules: Vec<PolicyRule>,
    #[prost(message, optional, tag = "3")]
    aggregation_rule: Option<AggregationRule>,
}

#[derive(Clone, PartialEq, Message)]
struct Subject {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "2")]
    api_group: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    namespace: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct RoleRef {
    #[prost(string, optional, tag = "1")]
    api_group: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
}

/// RoleBinding and ClusterRoleBinding.
#[derive(Clone, PartialEq, Message)]
struct BindingMessage {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    subjects: Vec<Subject>,
    #[prost(message, optional, tag = "3")]
    role_ref: Option<RoleRef>,
}

fn strings(v: &[String]) -> Option<Value> {
    (!v.is_empty()).then(|| json!(v))
}

fn rule(r: &PolicyRule) -> Value {
    let mut o = Map::new();
    o.insert("verbs".into(), json!(r.verbs));
    put(&mut o, "apiGroups", strings(&r.api_groups));
    put(&mut o, "resources", strings(&r.resources));
    put(&mut o, "resourceNames", strings(&r.resource_names));
    put(&mut o, "nonResourceURLs", strings(&r.non_resource_urls));
    Value::Object(o)
}

fn selector(sel: &LabelSelector) -> Value {
    let mut o = Map::new();
    put(&mut o, "matchLabels", super::string_map(&sel.match_labels));
    if !sel.match_expressions.is_empty() {
        let exprs: Vec<Value> = sel
            .match_expressions
            .iter()
            .map(|e| {
                let mut r = Map::new();
                put(&mut r, "key", s(&e.key));
                put(&mut r, "operator", s(&e.operator));
                put(&mut r, "values", strings(&e.values));
                Value::Object(r)
            })
            .collect();
        o.insert("matchExpressions".into(), json!(exprs));
    }
    Value::Object(o)
}

/// Decodes `raw` as `kind` into `out`; false when `kind` is not an RBAC kind.
pub(super) fn decode(
    kind: &str,
    raw: &[u8],
    out: &mut Map<String, Value>,
) -> Result<bool, ApiError> {
    match kind {
        "Role" | "ClusterRole" => {
            let c = RoleMessage::decode(raw).map_err(|e| bad(kind, e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            out.insert(
                "rules".into(),
                json!(c.rules.iter().map(rule).collect::<Vec<_>>()),
            );
            if let Some(agg) = c
                .aggregation_rule
                .as_ref()
                .filter(|_| kind == "ClusterRole")
            {
                let sels: Vec<Value> = agg.cluster_role_selectors.iter().map(selector).collect();
                out.insert(
                    "aggregationRule".into(),
                    json!({"clusterRoleSelectors": sels}),
                );
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let c = BindingMessage::decode(raw).map_err(|e| bad(kind, e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            if !c.subjects.is_empty() {
                let subjects: Vec<Value> = c
                    .subjects
                    .iter()
                    .map(|sj| {
                        let mut o = Map::new();
                        put(&mut o, "kind", s(&sj.kind));
                        put(&mut o, "apiGroup", s(&sj.api_group));
                        put(&mut o, "name", s(&sj.name));
                        put(&mut o, "namespace", s(&sj.namespace));
                        Value::Object(o)
                    })
                    .collect();
                out.insert("subjects".into(), json!(subjects));
            }
            if let Some(r) = &c.role_ref {
                let mut o = Map::new();
                put(&mut o, "apiGroup", s(&r.api_group));
                put(&mut o, "kind", s(&r.kind));
                put(&mut o, "name", s(&r.name));
                out.insert("roleRef".into(), Value::Object(o));
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = super::super::Unknown {
            type_meta: Some(super::super::TypeMeta {
                api_version: Some("rbac.authorization.k8s.io/v1".into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            ..Default::default()
        };
        let mut body = b"k8s\0".to_vec();
        body.extend(u.encode_to_vec());
        body
    }

    #[test]
    fn roles_and_bindings_decode_to_their_json_form() {
        let role = RoleMessage {
            metadata: Some(ObjectMeta {
                name: Some("team-edit".into()),
                ..Default::default()
            }),
            rules: vec![PolicyRule {
                verbs: vec!["use".into()],
                api_groups: vec!["corral.dev".into()],
                resources: vec!["roles".into()],
                resource_names: vec!["analytics".into()],
                non_resource_urls: vec![],
            }],
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: vec![LabelSelector {
                    match_labels: [("a".to_owned(), "b".to_owned())].into(),
                    match_expressions: vec![],
                }],
            }),
        };
        let v = super::super::decode_object(&envelope("ClusterRole", role.encode_to_vec()))
            .expect("decodes");
        assert_eq!(
            v,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "team-edit"},
                "rules": [{"verbs": ["use"], "apiGroups": ["corral.dev"], "resources": ["roles"], "resourceNames": ["analytics"]}],
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}})
        );
        let binding = BindingMessage {
            metadata: Some(ObjectMeta {
                name: Some("team".into()),
                namespace: Some("analytics".into()),
                ..Default::default()
            }),
            subjects: vec![Subject {
                kind: Some("Group".into()),
                api_group: Some("rbac.authorization.k8s.io".into()),
                name: Some("analytics-team".into()),
                namespace: None,
            }],
            role_ref: Some(RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: Some("ClusterRole".into()),
                name: Some("team-edit".into()),
            }),
        };
        let v = super::super::decode_object(&envelope("RoleBinding", binding.encode_to_vec()))
            .expect("decodes");
        assert_eq!(v["subjects"][0]["name"], "analytics-team");
        assert_eq!(v["roleRef"]["kind"], "ClusterRole");
        // Garbage is a 400, never a panic.
        assert!(super::super::decode_object(&envelope("Role", vec![0xff, 0xff, 0xff])).is_err());
    }
}
