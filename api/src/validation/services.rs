//! The rules of a job's service fields: named ports (beside the container
//! that serves them) and the health check (against the ports it may probe).

use std::collections::BTreeSet;

use super::{Errors, FieldPath};
use crate::health::{HealthCheck, MAX_SECONDS as HEALTH_MAX_SECONDS, MAX_THRESHOLD};
use crate::job::ContainerSpec;
use crate::ports::{MAX_PORTS, PortSpec, env_name, is_port_name};

/// A task's named ports (`spec.ports`), beside the container that serves them.
pub(super) fn ports(errs: &mut Errors, at: &FieldPath, ports: &[PortSpec], c: &ContainerSpec) {
    if ports.is_empty() {
        return;
    }
    if ports.len() > MAX_PORTS {
        errs.too_many(at, ports.len(), MAX_PORTS);
    }
    if c.network == Some(crate::job::NetworkMode::None) {
        errs.forbidden(
            at,
            "a task with network none has no host ports: ports need the host network",
        );
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let name = at.index(i).child("name");
        if !is_port_name(&p.name) {
            errs.invalid(&name, format!("\"{}\"", p.name), "a port name is at most 15 lower-case letters, digits and '-', with a letter, not starting or ending with '-' or holding '--'");
        } else if !names.insert(p.name.as_str()) {
            errs.duplicate(&name, format!("\"{}\"", p.name));
        }
        match p.port {
            Some(0) => errs.invalid(&at.index(i).child("port"), 0, "must be between 1 and 65535"),
            Some(n) if !numbers.insert(n) => errs.duplicate(&at.index(i).child("port"), n),
            _ => {}
        }
    }
    let taken: BTreeSet<String> = ports
        .iter()
        .map(|p| env_name(&p.name))
        .chain((0..ports.len()).map(|i| format!("PORT{i}")))
        .collect();
    for (i, var) in c.env.iter().enumerate() {
        if taken.contains(&var.name) {
            errs.invalid(
                &FieldPath::root("spec")
                    .child("container")
                    .child("env")
                    .index(i)
                    .child("name"),
                format!("\"{}\"", var.name),
                "set from the task's ports",
            );
        }
    }
}

/// A health check (`spec.healthCheck`), against the ports it may probe.
pub(super) fn health_check(
    errs: &mut Errors,
    at: &FieldPath,
    hc: &HealthCheck,
    ports: &[PortSpec],
) {
    let kinds = [hc.http.is_some(), hc.tcp.is_some(), hc.exec.is_some()];
    match kinds.iter().filter(|k| **k).count() {
        0 => errs.required(at, "one of http, tcp or exec"),
        1 => {}
        _ => errs.forbidden(at, "exactly one of http, tcp or exec"),
    }
    let named = |errs: &mut Errors, p: &FieldPath, port: &str| {
        if !ports.iter().any(|q| q.name == port) {
            errs.invalid(
                p,
                format!("\"{port}\""),
                "must name one of the job's ports (spec.ports)",
            );
        }
    };
    if let Some(h) = &hc.http {
        let p = at.child("http");
        named(errs, &p.child("port"), &h.port);
        if !h.path.starts_with('/') || h.path.len() > 2048 || h.path.chars().any(char::is_control) {
            errs.invalid(
                &p.child("path"),
                format!("{:?}", h.path),
                "an absolute path of at most 2048 characters",
            );
        }
        if let Some(s) = h.expected_status
            && !(100..=599).contains(&s)
        {
            errs.invalid(
                &p.child("expectedStatus"),
                s,
                "must be an HTTP status, 100 to 599",
            );
        }
    }
    if let Some(t) = &hc.tcp {
        named(errs, &at.child("tcp").child("port"), &t.port);
    }
    if let Some(e) = &hc.exec
        && e.command.first().is_none_or(String::is_empty)
    {
        errs.required(&at.child("exec").child("command"), "the program to run");
    }
    for (field, v, min) in [
        ("initialDelaySeconds", hc.initial_delay_seconds, 0),
        ("periodSeconds", hc.period_seconds, 1),
        ("timeoutSeconds", hc.timeout_seconds, 1),
    ] {
        if !(min..=HEALTH_MAX_SECONDS).contains(&v) {
            errs.invalid(
                &at.child(field),
                v,
                format!("must be between {min} and {HEALTH_MAX_SECONDS}"),
            );
        }
    }
    for (field, v) in [
        ("successThreshold", hc.success_threshold),
        ("failureThreshold", hc.failure_threshold),
    ] {
        if !(1..=MAX_THRESHOLD).contains(&v) {
            errs.invalid(
                &at.child(field),
                v,
                format!("must be between 1 and {MAX_THRESHOLD}"),
            );
        }
    }
}
