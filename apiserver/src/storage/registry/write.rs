//! Writes: create, update (main resource and `/status`), patch and
//! server-side apply, all through one read-admit-write loop that keeps
//! resourceVersion, generation and managedFields semantics.

use super::*;

impl Api {
    /// A namespaced kind needs its namespace to exist, and not to be
    /// terminating (Kubernetes' NamespaceLifecycle admission).
    async fn require_namespace(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(ns) = ns.filter(|_| desc.namespaced) else {
            return Ok(());
        };
        let key = format!("/registry/core/namespaces/{ns}");
        let refuse = || {
            ApiError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))
        };
        // The cache answers "present" cheaply; "absent" is confirmed with the store
        // (a namespace created a moment ago may not be cached yet).
        if let Some(entry) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return if entry.deleting {
                Err(refuse())
            } else {
                Ok(())
            };
        }
        match self.store.get(&key).await? {
            Some(kv) if Entry::from_stored(&kv.value, kv.mod_revision)?.deleting => Err(refuse()),
            Some(_) => Ok(()),
            None => Err(ApiError::NotFound {
                resource: "namespaces".into(),
                name: ns.to_owned(),
            }),
        }
    }

    /// Creates an object (POST).
    pub async fn create(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !body.is_object() {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        }
        check_type_meta(desc, &mut body)?;
        if let Some(view) = &desc.view {
            generate_name(&mut body);
            let mut warnings = admit_view(desc, view, &mut body, None, opts)?;
            let mut written =
                Box::pin(self.create(&view.storage, ns, (view.to_storage)(body), opts))
                    .await
                    .map_err(|e| as_view_error(e, desc))?;
            written.object = (view.to_view)(written.object);
            warnings.append(&mut written.warnings);
            written.warnings = warnings;
            return Ok(written);
        }
        let meta = meta_mut(&mut body);
        if let (Some(url_ns), Some(body_ns)) = (ns, meta.get("namespace").and_then(Value::as_str))
            && !body_ns.is_empty()
            && url_ns != body_ns
        {
            return Err(ApiError::BadRequest(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({url_ns})"
            )));
        }
        if desc.namespaced {
            if let Some(n) = ns {
                meta.insert("namespace".into(), json!(n));
            }
        } else {
            meta.remove("namespace");
        }
        generate_name(&mut body);
        let meta = meta_mut(&mut body);
        for system in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            meta.remove(system);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_time()));
        if desc.status_subresource
            && desc.kind != "Namespace"
            && let Some(o) = body.as_object_mut()
        {
            o.remove("status");
        }
        if desc.kind == "Namespace" {
            body["status"] = json!({"phase": "Active"});
        }
        born::give_initial_status(desc, &mut body, opts, jiff::Timestamp::now())?;
        if desc.origin == crate::kinds::catalog::Origin::Custom {
            meta_mut(&mut body).insert("generation".into(), json!(1));
        }
        let warnings = admit(desc, &mut body, None, opts.field_validation)?;
        self.admit_pod(desc, &mut body, None, false, opts).await?;
        may_use_role(desc, &body, None, opts)?;
        may_be_privileged(desc, &body, None, opts)?;
        self.admit_role_and_tier(desc, &body, None, opts).await?;
        self.admit_owner(desc, &body, opts).await?;
        may_grant(desc, &body, opts)?;
        crate::storage::admission::task_transitions::check(desc, &body, None, opts)?;
        self.restrict_nodes(desc, &body, None, opts)?;
        record_manager(&mut body, None, opts, "Update", None, &desc.lists);
        let name = meta_str(&body, "name").unwrap_or_default().to_owned();
        let ns_of_obj = meta_str(&body, "namespace").map(str::to_owned);
        self.require_namespace(desc, ns_of_obj.as_deref()).await?;
        if opts.dry_run {
            return Ok(Written {
                object: body,
                created: true,
                warnings,
            });
        }
        let kv = self
            .store
            .create(&desc.key(ns_of_obj.as_deref(), &name), to_stored(&body)?)
            .await
            .map_err(|e| ApiError::from_store(e, &desc.group_resource(), &name))?;
        meta_mut(&mut body).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        Ok(Written {
            object: body,
            created: true,
            warnings,
        })
    }

    /// Replaces an object (PUT), or its status (`status = true`).
    pub async fn update(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if !body.is_object() {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        }
        if let Some(body_name) = meta_str(&body, "name")
            && body_name != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = meta_str(&body, "resourceVersion")
            .map(parse_rv)
            .transpose()?;
        self.modify(
            desc,
            ns,
            name,
            precondition,
            opts,
            move |_current| Ok(body.clone()),
            status,
            "Update",
        )
        .await
    }

    /// Patches an object (PATCH), or its status.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        patch: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if kind == PatchKind::Apply {
            return self.apply(desc, ns, name, patch, status, opts).await;
        }
        // A resourceVersion inside the patch is a precondition (kubectl diff, SSA migration).
        let precondition = match kind {
            PatchKind::Json => crate::storage::patch::json_patch_resource_version(&patch),
            _ => patch
                .get("metadata")
                .and_then(|m| m.get("resourceVersion"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
        .map(|rv| parse_rv(&rv))
        .transpose()?;
        let operation = "Update";
        self.modify(
            desc,
            ns,
            name,
            precondition,
            opts,
            move |current| {
                let mut target = current.clone();
                apply_patch(kind, &mut target, &patch, &desc.lists)?;
                Ok(target)
            },
            status,
            operation,
        )
        .await
    }

    /// Server-side apply: create if absent, else merge the applied fields.
    async fn apply(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        applied: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let manager = opts
            .field_manager
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::Invalid {
                kind: "PatchOptions.meta.k8s.io".into(),
                name: String::new(),
                errors: vec![corral_api::validation::FieldError {
                    type_: corral_api::validation::FieldErrorType::Required,
                    field: "fieldManager".into(),
                    value: None,
                    detail: "is required for apply patch".into(),
                }],
            })?;
        if !applied.is_object() {
            return Err(ApiError::BadRequest(
                "the apply patch must be an object".into(),
            ));
        }
        for field in ["apiVersion", "kind"] {
            if applied
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::BadRequest(format!(
                    "an apply patch must set {field} (the object's {field} is {})",
                    if field == "kind" {
                        desc.kind.to_owned()
                    } else {
                        desc.api_version()
                    }
                )));
            }
        }
        if let Some(n) = meta_str(&applied, "name")
            && n != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let mut opts = opts.clone();
        opts.field_manager = Some(manager.clone());
        let force = opts.force;
        let lists = desc.lists.clone();
        match self.get(desc, ns, name).await {
            Err(ApiError::NotFound { .. }) if !status => {
                let skeleton = json!({"apiVersion": desc.api_version(), "kind": desc.kind, "metadata": {"name": name}});
                let mut body = crate::storage::ssa::apply(
                    &skeleton,
                    &applied,
                    &manager,
                    force,
                    &now_time(),
                    &desc.lists,
                )
                .map_err(|conflicts| ApiError::ApplyConflict { conflicts })?;
                meta_mut(&mut body).insert("name".into(), json!(name));
                self.create(desc, ns, body, &opts).await
            }
            Err(e) => Err(e),
            Ok(_) => {
                let precondition = meta_str(&applied, "resourceVersion")
                    .map(parse_rv)
                    .transpose()?;
                self.modify(
                    desc,
                    ns,
                    name,
                    precondition,
                    &opts,
                    move |current| {
                        crate::storage::ssa::apply(
                            current,
                            &applied,
                            &manager,
                            force,
                            &now_time(),
                            &lists,
                        )
                        .map_err(|conflicts| ApiError::ApplyConflict { conflicts })
                    },
                    status,
                    "Apply",
                )
                .await
            }
        }
    }

    /// The read-modify-write loop shared by update and patch. Through a
    /// view, `change` sees and returns the view's form of the object, which
    /// is checked as the view's before it is stored as the stored kind's.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn modify<F>(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        precondition: Option<i64>,
        opts: &WriteOptions,
        change: F,
        status: bool,
        operation: &str,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let Some(view) = &desc.view else {
            return self
                .modify_stored(
                    desc,
                    ns,
                    name,
                    precondition,
                    opts,
                    change,
                    status,
                    operation,
                )
                .await;
        };
        let view_warnings = std::sync::Mutex::new(Vec::new());
        let through_view = |current: &Value| {
            let before = (view.to_view)(current.clone());
            let mut next = change(&before)?;
            check_type_meta(desc, &mut next)?;
            let warnings = admit_view(desc, view, &mut next, Some(&before), opts)?;
            if let Ok(mut w) = view_warnings.lock() {
                *w = warnings;
            }
            Ok((view.to_storage)(next))
        };
        let mut written = self
            .modify_stored(
                &view.storage,
                ns,
                name,
                precondition,
                opts,
                through_view,
                status,
                operation,
            )
            .await
            .map_err(|e| as_view_error(e, desc))?;
        written.object = (view.to_view)(written.object);
        let mut warnings = view_warnings.into_inner().unwrap_or_default();
        warnings.append(&mut written.warnings);
        written.warnings = warnings;
        Ok(written)
    }

    /// [`Api::modify`] on a stored kind.
    #[allow(clippy::too_many_arguments)]
    async fn modify_stored<F>(
        &self,
        desc: &ResourceDesc,
        ns: Option<&str>,
        name: &str,
        precondition: Option<i64>,
        opts: &WriteOptions,
        change: F,
        status: bool,
        operation: &str,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let key = desc.key(ns, name);
        let resource = desc.group_resource();
        for _ in 0..MAX_RETRIES {
            let (stored, revision, current) = match self.cached_at(&key, precondition)? {
                Some((revision, current)) => (None, revision, current),
                None => {
                    let kv = self
                        .store
                        .get(&key)
                        .await
                        .map_err(|e| ApiError::from_store(e, &resource, name))?
                        .ok_or_else(|| ApiError::NotFound {
                            resource: resource.clone(),
                            name: name.to_owned(),
                        })?;
                    if let Some(p) = precondition
                        && p != kv.mod_revision
                    {
                        return Err(ApiError::from_store(
                            StoreError::Conflict {
                                key: key.clone(),
                                expected: p,
                                current: Box::new(kv),
                            },
                            &resource,
                            name,
                        ));
                    }
                    let current = from_stored(&kv.value, kv.mod_revision)?;
                    (Some(kv.value), kv.mod_revision, current)
                }
            };
            let mut proposed = change(&current)?;
            if !proposed.is_object() {
                return Err(ApiError::BadRequest(
                    "the result of the change is not an object".into(),
                ));
            }
            // A patch may not move the object (kube-apiserver's checkName).
            if let Some(n) = meta_str(&proposed, "name").filter(|n| !n.is_empty() && *n != name) {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            if let Some(n) =
                meta_str(&proposed, "namespace").filter(|n| !n.is_empty() && Some(*n) != ns)
            {
                return Err(ApiError::BadRequest(format!(
                    "the namespace of the provided object ({n}) does not match the namespace sent on the request ({})",
                    ns.unwrap_or_default()
                )));
            }
            check_type_meta(desc, &mut proposed)?;
            // A binding writes spec and status at once.
            let bound_status = opts
                .binding
                .then(|| proposed.get("status").cloned())
                .flatten();
            let mut next = merge_system(desc, &current, proposed, status);
            if let Some(s) = bound_status {
                next["status"] = s;
            }
            let warnings = admit(desc, &mut next, Some(&current), opts.field_validation)?;
            self.admit_pod(desc, &mut next, Some(&current), status, opts)
                .await?;
            may_use_role(desc, &next, Some(&current), opts)?;
            may_be_privileged(desc, &next, Some(&current), opts)?;
            self.admit_role_and_tier(desc, &next, Some(&current), opts)
                .await?;
            may_grant(desc, &next, opts)?;
            crate::storage::admission::task_transitions::check(desc, &next, Some(&current), opts)?;
            self.restrict_nodes(desc, &next, Some(&current), opts)?;
            record_manager(
                &mut next,
                Some(&current),
                opts,
                operation,
                status.then_some("status"),
                &desc.lists,
            );
            let deleting =
                meta_str(&next, "deletionTimestamp").is_some() && finalizers(&next).is_empty();
            if opts.dry_run {
                // Nothing is written: the answer carries the version it was
                // computed from, and a change that changes nothing is the
                // object as stored (a GitOps tool's drift check compares them).
                let no_op = !deleting
                    && unchanged(
                        &to_stored(&next)?,
                        &next,
                        &current,
                        stored.as_deref(),
                        operation,
                    )?;
                if no_op {
                    next = current;
                } else {
                    meta_mut(&mut next)
                        .insert("resourceVersion".into(), json!(revision.to_string()));
                }
                return Ok(Written {
                    object: next,
                    created: false,
                    warnings,
                });
            }
            if deleting {
                match self.store.delete(&key, Some(revision)).await {
                    Ok(d) => {
                        self.spawn_collect_dependents(&current);
                        let mut last = next;
                        meta_mut(&mut last)
                            .insert("resourceVersion".into(), json!(d.revision.to_string()));
                        return Ok(Written {
                            object: last,
                            created: false,
                            warnings,
                        });
                    }
                    Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                    Err(e) => return Err(ApiError::from_store(e, &resource, name)),
                }
            }
            let bytes = to_stored(&next)?;
            if unchanged(&bytes, &next, &current, stored.as_deref(), operation)? {
                return Ok(Written {
                    object: current,
                    created: false,
                    warnings,
                });
            }
            match self.store.update(&key, bytes, revision).await {
                Ok(new_kv) => {
                    meta_mut(&mut next).insert(
                        "resourceVersion".into(),
                        json!(new_kv.mod_revision.to_string()),
                    );
                    return Ok(Written {
                        object: next,
                        created: false,
                        warnings,
                    });
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(ApiError::from_store(e, &resource, name)),
            }
        }
        Err(ApiError::Conflict {
            resource,
            name: name.to_owned(),
            message: "the object kept changing; please try again".into(),
        })
    }
}

impl Api {
    /// The object at `key` as the watch cache holds it, when it holds it at
    /// exactly `precondition`: a write conditional on that version reads it
    /// there instead of from the store. The write stays as fresh as a store
    /// read would make it, since the store takes it only at that version.
    /// Returns the version and the object (and no stored bytes: the cache
    /// keeps the object as it is served).
    fn cached_at(
        &self,
        key: &str,
        precondition: Option<i64>,
    ) -> Result<Option<(i64, Value)>, ApiError> {
        let (Some(cache), Some(p)) = (self.cache.as_ref(), precondition) else {
            return Ok(None);
        };
        let Some(entry) = cache.get(key) else {
            return Ok(None);
        };
        if entry.revision != p {
            return Ok(None);
        }
        let current = entry.value()?;
        Ok(Some((p, current)))
    }
}

/// Names an object that asks for a generated name (`generateName` and no
/// `name`).
fn generate_name(obj: &mut Value) {
    let meta = meta_mut(obj);
    if meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && let Some(prefix) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .map(str::to_owned)
    {
        meta.insert(
            "name".into(),
            json!(format!("{prefix}{}", generated_suffix())),
        );
    }
}

/// The requester and role of a request's write of a Corral Job or Task
/// that names a role: what `use` of the role is checked for (the server's
/// own writes carry no requester).
fn role_writer<'a>(
    desc: &ResourceDesc,
    obj: &'a Value,
    opts: &'a WriteOptions,
) -> Option<(&'a Requester, &'a str)> {
    let r = opts.requester.as_ref()?;
    if desc.group != "corral.dev" || !matches!(desc.kind, "Job" | "Task") {
        return None;
    }
    let role = obj["spec"]["role"].as_str().filter(|r| !r.is_empty())?;
    Some((r, role))
}

/// Whether `r` may `use` Corral role `role` (with `subresource`, one of its
/// grants) in the namespace of `obj`; else the 403 saying what it needs.
fn may_use(
    desc: &ResourceDesc,
    obj: &Value,
    (r, role): (&Requester, &str),
    subresource: Option<&str>,
    (cannot, fields): (&str, &str),
) -> Result<(), ApiError> {
    let ns = meta_str(obj, "namespace").map(str::to_owned);
    let attrs = crate::transport::auth::Attributes {
        verb: "use".into(),
        group: "corral.dev".into(),
        resource: "roles".into(),
        subresource: subresource.map(str::to_owned),
        namespace: ns.clone(),
        name: Some(role.to_owned()),
        field_selector: None,
        label_selector: None,
    };
    if r.authz.allows(&r.user, &attrs) {
        return Ok(());
    }
    let needs = match subresource {
        Some(sub) => format!("roles.corral.dev/{role} subresource {sub}"),
        None => format!("roles.corral.dev/{role}"),
    };
    Err(ApiError::Forbidden(format!(
        "{}.{} \"{}\" is forbidden: User \"{}\" cannot {cannot} in the namespace \"{}\": it needs the verb use on {needs} there{fields}",
        desc.plural,
        desc.group,
        meta_str(obj, "name").unwrap_or_default(),
        r.user.name,
        ns.unwrap_or_default(),
    )))
}

/// A Job or Task may name a Corral Role only if its writer may `use` it in
/// the object's namespace (RBAC verb `use` on `roles.corral.dev`, the role
/// in `resourceNames`), as PodSecurityPolicy's `use` worked: granting `edit`
/// in a namespace grants no role's quota or tier. Checked when the role is
/// set or changed by a request.
pub(super) fn may_use_role(
    desc: &ResourceDesc,
    obj: &Value,
    old: Option<&Value>,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    let Some(writer @ (_, role)) = role_writer(desc, obj, opts) else {
        return Ok(());
    };
    if old.is_some_and(|o| o["spec"]["role"].as_str() == Some(role)) {
        return Ok(());
    }
    may_use(
        desc,
        obj,
        writer,
        None,
        (&format!("use role \"{role}\""), ""),
    )
}

/// A Job or Task is privileged (runs as root, `container.user` `0` or
/// `root`, or without the seccomp filter) only if its writer may `use` its
/// role's privileges: RBAC verb `use` on `roles/privileged`, the role in
/// `resourceNames`, in the object's namespace, as Pod Security's privileged
/// level is granted per namespace. Without it tasks run as other users (the
/// image's, or nobody) and filtered. Checked when a request makes an object
/// privileged, or moves a privileged one to another role.
pub(super) fn may_be_privileged(
    desc: &ResourceDesc,
    obj: &Value,
    old: Option<&Value>,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    let Some(writer @ (_, role)) = role_writer(desc, obj, opts) else {
        return Ok(());
    };
    let privileged = |v: &Value| {
        <corral_api::job::ContainerSpec as serde::Deserialize>::deserialize(&v["spec"]["container"])
            .is_ok_and(|c| c.is_privileged())
    };
    if !privileged(obj)
        || old.is_some_and(|o| privileged(o) && o["spec"]["role"].as_str() == Some(role))
    {
        return Ok(());
    }
    may_use(
        desc,
        obj,
        writer,
        Some("privileged"),
        (
            &format!("run privileged tasks (as root, or unconfined) with role \"{role}\""),
            " (spec.container.user, spec.container.seccompProfile)",
        ),
    )
}

impl Api {
    /// NodeRestriction for a write by a node (see
    /// [`crate::storage::admission::node_restriction`]), with tasks looked up in the
    /// watch cache.
    fn restrict_nodes(
        &self,
        desc: &ResourceDesc,
        next: &Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> Result<(), ApiError> {
        crate::storage::admission::node_restriction::check(desc, next, old, opts, |ns, name| {
            let tasks = self.registry.find("corral.dev", "v1alpha1", "tasks");
            crate::storage::admission::node_restriction::cached_task_node(
                self.cache.as_ref(),
                tasks.as_deref(),
                ns,
                name,
            )
        })
    }
}

/// An RBAC object may grant only what its writer holds, unless the writer
/// may `escalate` the role or `bind` it (see [`crate::transport::rbac::escalation`]).
fn may_grant(desc: &ResourceDesc, obj: &Value, opts: &WriteOptions) -> Result<(), ApiError> {
    let Some(r) = &opts.requester else {
        return Ok(());
    };
    if desc.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    match crate::transport::rbac::escalation::grant_of(desc.kind, obj) {
        Some(grant) => crate::transport::rbac::escalation::check(r.authz.as_ref(), &r.user, &grant),
        None => Ok(()),
    }
}

/// Admits a write through a view in the view's form: its schema (with
/// `fieldValidation`), the metadata rules, then the view's own rules.
/// Returns the warnings to send.
fn admit_view(
    desc: &ResourceDesc,
    view: &crate::kinds::catalog::View,
    obj: &mut Value,
    old: Option<&Value>,
    opts: &WriteOptions,
) -> Result<Vec<String>, ApiError> {
    let warnings = admit(desc, obj, old, opts.field_validation)?;
    let errors = (view.validate)(obj, old);
    if !errors.is_empty() {
        return Err(ApiError::Invalid {
            kind: format!("{}.{}", desc.kind, desc.group),
            name: meta_str(obj, "name").unwrap_or_default().to_owned(),
            errors,
        });
    }
    Ok(warnings)
}
