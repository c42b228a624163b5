//! The committed `crds/` matches what the types generate, and every schema is
//! structural (Kubernetes rejects CRDs whose schemas are not).

use std::path::PathBuf;

use serde_json::Value;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

#[test]
fn committed_crds_match_the_types() -> anyhow::Result<()> {
    let rendered = corral_api::crds::render_all()?;
    let mut stale = Vec::new();
    for (file, yaml) in &rendered {
        let path = crds_dir().join(file);
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if &on_disk == yaml => {}
            _ => stale.push(file.clone()),
        }
    }
    let mut extra = Vec::new();
    for entry in std::fs::read_dir(crds_dir())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !rendered.iter().any(|(f, _)| f == &name) {
            extra.push(name);
        }
    }
    assert!(
        stale.is_empty() && extra.is_empty(),
        "crds/ is out of date (stale: {stale:?}, not generated: {extra:?}); run `cargo run -p corral-cli -- crds --out crds`"
    );
    Ok(())
}

/// Checks the structural-schema rules Kubernetes enforces on CRDs: every node has
/// a type (unless int-or-string or preserve-unknown-fields), and value
/// validations (anyOf/allOf/oneOf/not) carry no type, default, description or
/// nullable except the int-or-string pattern.
fn check_structural(path: &str, node: &Value, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !int_or_string && !preserve {
        problems.push(format!("{path}: no type"));
    }
    for forbidden in [
        "$ref",
        "definitions",
        "$defs",
        "propertyNames",
        "const",
        "additionalItems",
    ] {
        if obj.contains_key(forbidden) {
            problems.push(format!("{path}: uses {forbidden}"));
        }
    }
    for junction in ["anyOf", "allOf", "oneOf"] {
        if let Some(Value::Array(items)) = obj.get(junction) {
            for (i, item) in items.iter().enumerate() {
                let allowed_type = int_or_string && junction == "anyOf";
                if let Some(o) = item.as_object() {
                    for key in ["description", "default", "nullable", "additionalProperties"] {
                        if o.contains_key(key) {
                            problems.push(format!("{path}.{junction}[{i}]: has {key}"));
                        }
                    }
                    if o.contains_key("type") && !allowed_type {
                        problems.push(format!("{path}.{junction}[{i}]: has type"));
                    }
                }
            }
        }
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            check_structural(&format!("{path}.{k}"), v, problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(&format!("{path}[]"), items, problems);
    }
    if let Some(ap @ Value::Object(_)) = obj.get("additionalProperties") {
        check_structural(&format!("{path}{{}}"), ap, problems);
    }
}

#[test]
fn every_crd_schema_is_structural() -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for crd in corral_api::crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        for v in &crd.spec.versions {
            let schema = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .ok_or_else(|| anyhow::anyhow!("{name}: no schema"))?;
            let json = serde_json::to_value(schema)?;
            check_structural(&name, &json, &mut problems);
        }
    }
    assert!(
        problems.is_empty(),
        "non-structural schema nodes:\n{}",
        problems.join("\n")
    );
    Ok(())
}

#[test]
fn task_phases_are_the_aurora_names() -> anyhow::Result<()> {
    let crd = corral_api::crds::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "Task")
        .ok_or_else(|| anyhow::anyhow!("no Task CRD"))?;
    let json = serde_json::to_value(&crd)?;
    let phase = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["phase"]["enum"];
    let names: Vec<&str> = phase
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("phase has no enum: {phase}"))?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "PENDING",
            "THROTTLED",
            "ASSIGNED",
            "STARTING",
            "RUNNING",
            "FINISHED",
            "FAILED",
            "KILLING",
            "KILLED",
            "LOST",
            "PREEMPTING",
            "RESTARTING",
            "DRAINING",
            "PARTITIONED"
        ]
    );
    Ok(())
}
