//! Metadata rules shared by the writes: type meta, system fields, status
//! subresource, generation, managedFields.

use super::*;

/// Fills in or checks `apiVersion` and `kind`.
pub(super) fn check_type_meta(desc: &ResourceDesc, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = desc.api_version();
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the object must be a JSON object".into()))?;
    match o.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match o.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("kind".into(), json!(desc.kind));
        }
        Some(k) if k == desc.kind => {}
        Some(k) => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                desc.kind
            )));
        }
    }
    Ok(())
}

/// Builds the next version of an object from the current one and what the
/// client proposed: system metadata stays the server's, status follows the
/// subresource rules, and generation grows on spec changes.
pub(super) fn merge_system(
    desc: &ResourceDesc,
    current: &Value,
    proposed: Value,
    status: bool,
) -> Value {
    let mut next = if status {
        // A status write changes only status: the proposed status (moved,
        // not copied) and everything else as it is.
        let mut proposed = proposed;
        let new_status = proposed.as_object_mut().and_then(|o| o.remove("status"));
        let mut n: serde_json::Map<String, Value> = current
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "status")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(s) = new_status {
            n.insert("status".into(), s);
        }
        Value::Object(n)
    } else {
        let mut n = proposed;
        if desc.status_subresource {
            match current.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        n
    };
    let cur_meta = current
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let meta = meta_mut(&mut next);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur_meta.get(field) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    if !meta.contains_key("managedFields")
        && let Some(mf) = cur_meta.get("managedFields")
    {
        meta.insert("managedFields".into(), mf.clone());
    }
    // As in Kubernetes, custom kinds count spec changes in `generation`;
    // the built-in kinds served here (ConfigMap, Secret, Event, Lease,
    // Namespace) have none.
    if desc.origin == crate::kinds::catalog::Origin::Custom && !same_spec_part(current, &next) {
        let g = cur_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(&mut next).insert("generation".into(), json!(g));
    }
    next
}

/// Records the write in `metadata.managedFields` under its manager (see
/// [`crate::storage::ssa`]), unless the client wrote managedFields itself (kubectl's
/// and Flux's migrations) or the write is an apply, which records itself.
pub(super) fn record_manager(
    obj: &mut Value,
    current: Option<&Value>,
    opts: &WriteOptions,
    operation: &str,
    subresource: Option<&str>,
    lists: &crate::storage::ssa::Lists,
) {
    let Some(manager) = opts
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| opts.agent_manager.clone())
    else {
        return;
    };
    if operation == "Apply" {
        return;
    }
    let client_wrote = match current {
        Some(cur) => {
            obj.pointer("/metadata/managedFields") != cur.pointer("/metadata/managedFields")
        }
        None => obj.pointer("/metadata/managedFields").is_some(),
    };
    if client_wrote {
        return;
    }
    crate::storage::ssa::record_update(current, obj, &manager, subresource, &now_time(), lists);
}

/// True when `next` (stored as `next_bytes`) would be stored as `current`
/// is (`stored`, when its stored bytes are at hand): a change that changes
/// nothing is not written. An apply always stamps its managedFields entry;
/// nothing else changes a no-op's bytes.
pub(super) fn unchanged(
    next_bytes: &[u8],
    next: &Value,
    current: &Value,
    stored: Option<&[u8]>,
    operation: &str,
) -> Result<bool, ApiError> {
    let same = match stored {
        Some(bytes) => next_bytes == bytes,
        None => same_but_version(next, current),
    };
    if same || operation != "Apply" {
        return Ok(same);
    }
    let current_bytes = match stored {
        Some(bytes) => std::borrow::Cow::Borrowed(bytes),
        None => std::borrow::Cow::Owned(to_stored(current)?),
    };
    Ok(same_ignoring_manager_time(next_bytes, &current_bytes))
}

/// True when two objects are equal but for `metadata.resourceVersion`
/// (what storing them leaves out).
fn same_but_version(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let rest_same = a.len() == b.len()
        && a.iter().all(|(k, v)| {
            if k == "metadata" {
                return true;
            }
            b.get(k) == Some(v)
        });
    if !rest_same {
        return false;
    }
    let metas = (
        a.get("metadata").and_then(Value::as_object),
        b.get("metadata").and_then(Value::as_object),
    );
    match metas {
        (Some(ma), Some(mb)) => {
            let keep = |(k, _): &(&String, &Value)| k.as_str() != "resourceVersion";
            ma.iter().filter(keep).eq(mb.iter().filter(keep))
        }
        _ => a.get("metadata") == b.get("metadata"),
    }
}

/// Two stored forms that differ only in managedFields timestamps are the same
/// object: a no-op write must not bump the resourceVersion.
pub(super) fn same_ignoring_manager_time(a: &[u8], b: &[u8]) -> bool {
    let strip = |bytes: &[u8]| -> Option<Value> {
        let mut v: Value = serde_json::from_slice(bytes).ok()?;
        if let Some(entries) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in entries {
                if let Some(o) = e.as_object_mut() {
                    o.remove("time");
                }
            }
        }
        Some(v)
    };
    match (strip(a), strip(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Creates the `default` namespace when it does not exist yet, and resumes
/// the deletions a previous run left under way.
pub async fn ensure_default_namespaces(api: &Api) -> Result<(), ApiError> {
    resume_namespace_terminations(api).await?;
    let resuming = api.clone();
    tokio::spawn(async move {
        if let Err(e) = resuming.resume_held_deletions().await {
            tracing::warn!(error = %e, "resuming foreground and orphan deletions failed");
        }
    });
    let desc = api
        .registry
        .find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::Internal("namespaces are not registered".into()))?;
    // Node Leases live in their own namespace, made here: nodes create none.
    // and so does the controllers' leader election's.
    for ns in [
        "default",
        crate::transport::node_authorizer::LEASE_NAMESPACE,
        corral_api::SYSTEM_NAMESPACE,
    ] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match api
            .create(&desc, None, body, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Resumes the terminations of namespaces marked for deletion (a server
/// that stopped while one was under way).
async fn resume_namespace_terminations(api: &Api) -> Result<(), ApiError> {
    let page = api
        .store
        .range(RangeRequest::prefix("/registry/core/namespaces/"))
        .await?;
    for kv in page.items {
        let ns = super::from_stored(&kv.value, kv.mod_revision)?;
        if meta_str(&ns, "deletionTimestamp").is_some()
            && let Some(name) = meta_str(&ns, "name")
        {
            api.spawn_namespace_termination(name.to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_that_changes_nothing_is_found_with_or_without_stored_bytes() {
        let current = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "resourceVersion": "7", "labels": {"a": "b"}},
            "data": {"k": "v"}});
        let stored = to_stored(&current).expect("encode");
        let mut other_version = current.clone();
        other_version["metadata"]["resourceVersion"] = json!("9");
        let mut no_version = current.clone();
        meta_mut(&mut no_version).remove("resourceVersion");
        let mut changed = current.clone();
        changed["data"]["k"] = json!("w");
        let mut relabelled = current.clone();
        relabelled["metadata"]["labels"]["a"] = json!("c");
        let mut extra = current.clone();
        extra["binaryData"] = json!({});
        let cases = [
            (&current, true),
            (&other_version, true),
            (&no_version, true),
            (&changed, false),
            (&relabelled, false),
            (&extra, false),
        ];
        for (next, want) in cases {
            for bytes in [Some(stored.as_slice()), None] {
                let next_bytes = to_stored(next).expect("encode");
                assert_eq!(
                    unchanged(&next_bytes, next, &current, bytes, "Update").expect("compare"),
                    want,
                    "{next} (stored bytes given: {})",
                    bytes.is_some()
                );
            }
        }
    }
}
