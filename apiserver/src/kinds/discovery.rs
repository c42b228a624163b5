//! Discovery documents: legacy (`APIVersions`, `APIGroupList`,
//! `APIResourceList`) and aggregated (`apidiscovery.k8s.io/v2`).

use serde_json::{Value, json};

use crate::kinds::catalog::{Catalog, ResourceDesc};

/// The response Content-Type clients require for aggregated discovery.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The verbs every resource serves.
pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// True when the Accept header prefers aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList") && accept.contains("v=v2")
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0-corral.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "corral",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn storage_hash(desc: &ResourceDesc) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}/{}/{}", desc.group, desc.version, desc.kind));
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

/// `/api/v1` or `/apis/<g>/<v>`: the legacy resource list.
pub fn resource_list(registry: &Catalog, group: &str, version: &str) -> Option<Value> {
    let descs: Vec<_> = registry
        .served()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    let reviews = crate::transport::reviews::of(group, version);
    if descs.is_empty() && reviews.is_empty() {
        return None;
    }
    let mut resources: Vec<Value> = reviews
        .iter()
        .map(|r| json!({"name": r.plural, "singularName": "", "namespaced": false, "kind": r.kind, "verbs": ["create"]}))
        .collect();
    for d in descs {
        let mut r = json!({
            "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced, "kind": d.kind,
            "verbs": VERBS, "storageVersionHash": storage_hash(d),
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        if d.status_subresource {
            resources.push(json!({"name": format!("{}/status", d.plural), "singularName": "", "namespaced": d.namespaced, "kind": d.kind, "verbs": ["get", "patch", "update"]}));
        }
        if d.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", d.plural), "singularName": "", "namespaced": d.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if crate::storage::registry::binding::is_bindable(d) {
            resources.push(json!({"name": format!("{}/binding", d.plural), "singularName": "", "namespaced": d.namespaced, "kind": "Binding", "verbs": ["create"]}));
            resources.push(json!({"name": format!("{}/eviction", d.plural), "singularName": "", "namespaced": d.namespaced, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// `/api`, legacy.
pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

/// The named groups served: the registry's, then the reviews'.
fn groups(registry: &Catalog) -> Vec<&'static str> {
    let mut out = registry.groups();
    for r in &crate::transport::reviews::REVIEWS {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// The versions of `group`: its kinds', then its reviews'.
fn versions(registry: &Catalog, group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    let kinds = registry.served().map(|d| (d.group, d.version));
    let reviews = crate::transport::reviews::REVIEWS
        .iter()
        .map(|r| (r.group, r.version));
    for (g, v) in kinds.chain(reviews) {
        if g == group && !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn group_doc(registry: &Catalog, group: &str) -> Value {
    let versions = versions(registry, group);
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis/<g>`.
pub fn api_group(registry: &Catalog, group: &str) -> Option<Value> {
    if !groups(registry).contains(&group) {
        return None;
    }
    let mut g = group_doc(registry, group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `/apis`, legacy.
pub fn api_group_list(registry: &Catalog) -> Value {
    let groups: Vec<Value> = groups(registry)
        .into_iter()
        .map(|g| group_doc(registry, g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn aggregated_resource(d: &ResourceDesc) -> Value {
    let kind = json!({"group": d.group, "version": d.version, "kind": d.kind});
    let mut r = json!({
        "resource": d.plural, "singularResource": d.singular,
        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
        "responseKind": kind, "verbs": VERBS,
    });
    if !d.short_names.is_empty() {
        r["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        r["categories"] = json!(d.categories);
    }
    let mut subresources = Vec::new();
    if d.status_subresource {
        subresources.push(json!({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}));
    }
    if d.scale.is_some() {
        subresources.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
    }
    if crate::storage::registry::binding::is_bindable(d) {
        subresources.push(json!({"subresource": "binding", "responseKind": {"group": d.group, "version": d.version, "kind": "Binding"}, "verbs": ["create"]}));
        subresources.push(json!({"subresource": "eviction", "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "verbs": ["create"]}));
    }
    if !subresources.is_empty() {
        r["subresources"] = json!(subresources);
    }
    r
}

fn aggregated_group(registry: &Catalog, group: &str) -> Value {
    let vs: Vec<Value> = versions(registry, group)
        .iter()
        .map(|v| {
            let reviews = crate::transport::reviews::of(group, v)
                .into_iter()
                .map(|r| {
                    json!({"resource": r.plural, "scope": "Cluster", "verbs": ["create"],
                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind}})
                });
            let resources: Vec<Value> = registry
                .served()
                .filter(|d| d.group == group && d.version == *v)
                .map(|d| aggregated_resource(d))
                .chain(reviews)
                .collect();
            json!({"version": v, "freshness": "Current", "resources": resources})
        })
        .collect();
    let metadata = if group.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": group, "creationTimestamp": null})
    };
    json!({"metadata": metadata, "versions": vs})
}

/// `/api` or `/apis`, aggregated.
pub fn aggregated(registry: &Catalog, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(registry, "")]
    } else {
        groups(registry)
            .into_iter()
            .map(|g| aggregated_group(registry, g))
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
