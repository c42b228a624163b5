//! OpenAPI v3: an index and one document per group/version, generated from
//! the same schemas that admission uses. Every write operation lists the
//! `fieldValidation` parameter, so kubectl hands validation to the server.

use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::kinds::catalog::{Catalog, ResourceDesc};

/// `api/v1` or `apis/<g>/<v>`.
pub fn doc_key(desc: &ResourceDesc) -> String {
    if desc.group.is_empty() {
        format!("api/{}", desc.version)
    } else {
        format!("apis/{}/{}", desc.group, desc.version)
    }
}

fn gvk(desc: &ResourceDesc) -> Value {
    json!({"group": desc.group, "version": desc.version, "kind": desc.kind})
}

fn query(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": ty}, "uniqueItems": true})
}

fn path_params(desc: &ResourceDesc, item: bool) -> Vec<Value> {
    let mut p = Vec::new();
    if desc.namespaced {
        p.push(json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}}));
    }
    if item {
        p.push(
            json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
        );
    }
    p
}

fn write_params() -> Vec<Value> {
    vec![
        query("dryRun", "string"),
        query("fieldManager", "string"),
        query("fieldValidation", "string"),
    ]
}

fn op(
    desc: &ResourceDesc,
    action: &str,
    op_id: String,
    mut params: Vec<Value>,
    reference: &str,
    body: Option<Value>,
) -> Value {
    let mut o = json!({
        "operationId": op_id,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": reference}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(desc),
    });
    if action == "patch" {
        params.push(query("force", "boolean"));
    }
    o["parameters"] = Value::Array(params);
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn paths_for(desc: &ResourceDesc, out: &mut Map<String, Value>) {
    let base = if desc.group.is_empty() {
        format!("/api/{}", desc.version)
    } else {
        format!("/apis/{}/{}", desc.group, desc.version)
    };
    let scope = if desc.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let collection = format!("{base}{scope}/{}", desc.plural);
    let item = format!("{collection}/{{name}}");
    let reference = format!("#/components/schemas/{}", desc.schema_name());
    let json_body =
        json!({"content": {"application/json": {"schema": {"$ref": reference}}}, "required": true});
    // kubectl chooses strategic merge patch exactly when the PATCH operation
    // lists it, so only built-in kinds list it (custom kinds answer it with 415).
    let mut patch_types = json!({
        "application/apply-patch+yaml": {"schema": {"type": "object"}},
        "application/json-patch+json": {"schema": {"type": "object"}},
        "application/merge-patch+json": {"schema": {"type": "object"}}
    });
    if desc.origin == crate::kinds::catalog::Origin::BuiltIn {
        patch_types["application/strategic-merge-patch+json"] =
            json!({"schema": {"type": "object"}});
    }
    let patch_body = json!({"content": patch_types, "required": true});
    let k = desc.kind;
    let mut item_ops = Map::new();
    item_ops.insert(
        "get".into(),
        op(desc, "get", format!("read{k}"), vec![], &reference, None),
    );
    item_ops.insert(
        "put".into(),
        op(
            desc,
            "put",
            format!("replace{k}"),
            write_params(),
            &reference,
            Some(json_body.clone()),
        ),
    );
    item_ops.insert(
        "patch".into(),
        op(
            desc,
            "patch",
            format!("patch{k}"),
            write_params(),
            &reference,
            Some(patch_body.clone()),
        ),
    );
    item_ops.insert(
        "delete".into(),
        op(
            desc,
            "delete",
            format!("delete{k}"),
            vec![query("dryRun", "string")],
            &reference,
            None,
        ),
    );
    item_ops.insert("parameters".into(), Value::Array(path_params(desc, true)));
    out.insert(item.clone(), Value::Object(item_ops));
    let mut coll_ops = Map::new();
    coll_ops.insert(
        "get".into(),
        op(
            desc,
            "list",
            format!("list{k}"),
            vec![
                query("labelSelector", "string"),
                query("fieldSelector", "string"),
                query("limit", "integer"),
                query("continue", "string"),
                query("watch", "boolean"),
                query("resourceVersion", "string"),
            ],
            &reference,
            None,
        ),
    );
    coll_ops.insert(
        "post".into(),
        op(
            desc,
            "post",
            format!("create{k}"),
            write_params(),
            &reference,
            Some(json_body.clone()),
        ),
    );
    coll_ops.insert(
        "delete".into(),
        op(
            desc,
            "deletecollection",
            format!("deletecollection{k}"),
            vec![
                query("labelSelector", "string"),
                query("fieldSelector", "string"),
            ],
            &reference,
            None,
        ),
    );
    coll_ops.insert("parameters".into(), Value::Array(path_params(desc, false)));
    out.insert(collection, Value::Object(coll_ops));
    if desc.status_subresource {
        let mut st = Map::new();
        st.insert(
            "get".into(),
            op(
                desc,
                "get",
                format!("read{k}Status"),
                vec![],
                &reference,
                None,
            ),
        );
        st.insert(
            "put".into(),
            op(
                desc,
                "put",
                format!("replace{k}Status"),
                write_params(),
                &reference,
                Some(json_body),
            ),
        );
        st.insert(
            "patch".into(),
            op(
                desc,
                "patch",
                format!("patch{k}Status"),
                write_params(),
                &reference,
                Some(patch_body),
            ),
        );
        st.insert("parameters".into(), Value::Array(path_params(desc, true)));
        out.insert(format!("{item}/status"), Value::Object(st));
    }
}

/// Marks `status.conditions` as a list keyed by `type`, as clients expect.
fn annotate_lists(schema: &mut Value) {
    if let Some(c) = schema.pointer_mut("/properties/status/properties/conditions")
        && let Some(o) = c.as_object_mut()
    {
        o.insert("x-kubernetes-list-type".into(), json!("map"));
        o.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
    }
    if let Some(m) = schema
        .pointer_mut("/properties/metadata/properties/finalizers")
        .and_then(Value::as_object_mut)
    {
        m.insert("x-kubernetes-list-type".into(), json!("set"));
    }
    if let Some(m) = schema
        .pointer_mut("/properties/metadata/properties/ownerReferences")
        .and_then(Value::as_object_mut)
    {
        m.insert("x-kubernetes-list-type".into(), json!("map"));
        m.insert("x-kubernetes-list-map-keys".into(), json!(["uid"]));
        m.insert("x-kubernetes-patch-merge-key".into(), json!("uid"));
        m.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
    }
}

/// The document of one group/version (`api/v1`, `apis/corral.dev/v1alpha1`).
pub fn document(registry: &Catalog, key: &str) -> Option<Value> {
    let descs: Vec<_> = registry.served().filter(|d| doc_key(d) == key).collect();
    if descs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for d in descs {
        paths_for(d, &mut paths);
        let mut schema = d.schema.clone();
        annotate_lists(&mut schema);
        if let Some(o) = schema.as_object_mut() {
            o.insert("x-kubernetes-group-version-kind".into(), json!([gvk(d)]));
        }
        schemas.insert(d.schema_name(), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Corral", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// A stable content hash of a document, for `?hash=` URLs.
pub fn hash(doc: &Value) -> String {
    let digest = sha2::Sha256::digest(doc.to_string());
    digest.iter().take(32).map(|b| format!("{b:02X}")).collect()
}

/// `/openapi/v3`.
pub fn index(registry: &Catalog) -> Value {
    let mut keys: Vec<String> = Vec::new();
    for d in registry.served() {
        let k = doc_key(d);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut paths = Map::new();
    for k in keys {
        if let Some(doc) = document(registry, &k) {
            paths.insert(
                k.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}
