//! A container's environment: names unique and well formed, and each
//! `valueFrom` naming exactly one source it can be read from.

use std::collections::BTreeSet;

use super::names::{config_key_problems, is_dns1123_label, is_dns1123_subdomain, is_env_var_name};
use super::{Errors, FieldPath};
use crate::job::{EndpointSelector, EnvVar, EnvVarSource, ObjectFieldSelector, TaskField};
use crate::ports::is_port_name;

/// The versions a `fieldRef` may be written against.
const FIELD_API_VERSIONS: [&str; 2] = ["v1", crate::API_VERSION];

/// Checks every variable of `env`, found at `at`.
pub(super) fn check(errs: &mut Errors, at: &FieldPath, env: &[EnvVar]) {
    let mut seen = BTreeSet::new();
    for (i, var) in env.iter().enumerate() {
        let p = at.index(i).child("name");
        if !is_env_var_name(&var.name) {
            errs.invalid(&p, format!("\"{}\"", var.name), "a valid environment variable name must consist of letters, digits, '_', '-' or '.', and must not start with a digit");
        } else if !seen.insert(var.name.as_str()) {
            errs.duplicate(&p, format!("\"{}\"", var.name));
        }
        if let Some(from) = &var.value_from {
            let p = at.index(i).child("valueFrom");
            if !var.value.is_empty() {
                errs.invalid(&p, "", "may not be specified when `value` is not empty");
            }
            source(errs, &p, from);
        }
    }
}

fn source(errs: &mut Errors, at: &FieldPath, from: &EnvVarSource) {
    let named = [
        from.secret_key_ref.is_some(),
        from.field_ref.is_some(),
        from.endpoint_ref.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    match named {
        0 => errs.required(at, "one source: secretKeyRef, fieldRef or endpointRef"),
        1 => {}
        _ => errs.forbidden(
            at,
            "may not have more than one source (secretKeyRef, fieldRef, endpointRef)",
        ),
    }
    if let Some(r) = &from.secret_key_ref {
        let p = at.child("secretKeyRef");
        if r.name.is_empty() {
            errs.required(&p.child("name"), "");
        } else if !is_dns1123_subdomain(&r.name) {
            errs.invalid(
                &p.child("name"),
                format!("\"{}\"", r.name),
                "a Secret's name is a DNS-1123 subdomain",
            );
        }
        if r.key.is_empty() {
            errs.required(&p.child("key"), "");
        } else if let Some(problem) = config_key_problems(&r.key).first() {
            errs.invalid(&p.child("key"), format!("\"{}\"", r.key), *problem);
        }
    }
    if let Some(r) = &from.field_ref {
        field(errs, &at.child("fieldRef"), r);
    }
    if let Some(r) = &from.endpoint_ref {
        endpoint(errs, &at.child("endpointRef"), r);
    }
}

fn field(errs: &mut Errors, at: &FieldPath, r: &ObjectFieldSelector) {
    if let Some(v) = &r.api_version
        && !FIELD_API_VERSIONS.contains(&v.as_str())
    {
        errs.not_supported(
            &at.child("apiVersion"),
            format!("\"{v}\""),
            &FIELD_API_VERSIONS,
        );
    }
    if r.field_path.is_empty() {
        errs.required(&at.child("fieldPath"), "");
    } else if TaskField::parse(&r.field_path).is_none() {
        let paths = TaskField::ALL.map(TaskField::path);
        errs.not_supported(
            &at.child("fieldPath"),
            format!("\"{}\"", r.field_path),
            &paths,
        );
    }
}

fn endpoint(errs: &mut Errors, at: &FieldPath, r: &EndpointSelector) {
    if r.job.is_empty() {
        errs.required(&at.child("job"), "");
    } else if !is_dns1123_label(&r.job) {
        errs.invalid(
            &at.child("job"),
            format!("\"{}\"", r.job),
            "a Job's name is a DNS-1123 label",
        );
    }
    if r.port.is_empty() {
        errs.required(&at.child("port"), "");
    } else if !is_port_name(&r.port) {
        errs.invalid(
            &at.child("port"),
            format!("\"{}\"", r.port),
            "a port's name: lower-case letters, digits and '-', at most 15 characters, with a letter",
        );
    }
}
