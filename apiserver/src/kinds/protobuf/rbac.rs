//! Protobuf bodies of rbac.authorization.k8s.io/v1 Role, ClusterRole,
//! RoleBinding and ClusterRoleBinding (what `kubectl create role|clusterrole|
//! rolebinding|clusterrolebinding` sends), decoded with `k8s-pb`'s messages
//! and turned into their JSON form.

use prost::Message;
use serde_json::{Map, Value, json};

use k8s_pb::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_pb::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{bad, meta, put, s};
use crate::error::ApiError;

fn strings(v: &[String]) -> Option<Value> {
    (!v.is_empty()).then(|| json!(v))
}

fn rule(r: &PolicyRule) -> Value {
    let mut o = Map::new();
    o.insert("verbs".into(), json!(r.verbs));
    put(&mut o, "apiGroups", strings(&r.api_groups));
    put(&mut o, "resources", strings(&r.resources));
    put(&mut o, "resourceNames", strings(&r.resource_names));
    put(&mut o, "nonResourceURLs", strings(&r.non_resource_ur_ls));
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

fn rules(out: &mut Map<String, Value>, rules: &[PolicyRule]) {
    out.insert(
        "rules".into(),
        json!(rules.iter().map(rule).collect::<Vec<_>>()),
    );
}

fn binding(out: &mut Map<String, Value>, subjects: &[Subject], role_ref: Option<&RoleRef>) {
    if !subjects.is_empty() {
        let subjects: Vec<Value> = subjects
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
    if let Some(r) = role_ref {
        let mut o = Map::new();
        put(&mut o, "apiGroup", s(&r.api_group));
        put(&mut o, "kind", s(&r.kind));
        put(&mut o, "name", s(&r.name));
        out.insert("roleRef".into(), Value::Object(o));
    }
}

/// Decodes `raw` as `kind` into `out`; false when `kind` is not an RBAC kind.
pub(super) fn decode(
    kind: &str,
    raw: &[u8],
    out: &mut Map<String, Value>,
) -> Result<bool, ApiError> {
    match kind {
        "Role" => {
            let c = Role::decode(raw).map_err(|e| bad(kind, e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            rules(out, &c.rules);
        }
        "ClusterRole" => {
            let c = ClusterRole::decode(raw).map_err(|e| bad(kind, e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            rules(out, &c.rules);
            if let Some(agg) = &c.aggregation_rule {
                let sels: Vec<Value> = agg.cluster_role_selectors.iter().map(selector).collect();
                out.insert(
                    "aggregationRule".into(),
                    json!({"clusterRoleSelectors": sels}),
                );
            }
        }
        "RoleBinding" => {
            let c = RoleBinding::decode(raw).map_err(|e| bad(kind, e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            binding(out, &c.subjects, c.role_ref.as_ref());
        }
        "ClusterRoleBinding" => {
            let c = ClusterRoleBinding::decode(raw).map_err(|e| bad(kind, e))?;
            out.insert("metadata".into(), meta(&c.metadata));
            binding(out, &c.subjects, c.role_ref.as_ref());
        }
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::rbac::v1::AggregationRule;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
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
        let role = ClusterRole {
            metadata: Some(ObjectMeta {
                name: Some("team-edit".into()),
                ..Default::default()
            }),
            rules: vec![PolicyRule {
                verbs: vec!["use".into()],
                api_groups: vec!["corral.dev".into()],
                resources: vec!["roles".into()],
                resource_names: vec!["analytics".into()],
                ..Default::default()
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
        let binding = RoleBinding {
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
