//! The rules, one function per kind (plus `_update` for immutability).

use std::collections::BTreeSet;
use std::sync::RwLock;

use super::disruption::{budget, maintenance};
use super::names::{
    is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name, is_resource_name,
};
use super::services::{health_check, ports};
use super::{Errors, FieldError, FieldPath};
use crate::job::{
    AttributeConstraint, ConstraintOperator, Constraints, ContainerSpec, CronSpec, Job, JobKind,
    MAX_INSTANCES,
};
use crate::node::Node;
use crate::quota::Quota;
use crate::reservation::Reservation;
use crate::resources::{CPUS, MEMORY, Resources};
use crate::role::Role;
use crate::task::{MAX_TASK_EVENTS, Task};

/// The longest a transient-state timeout or partition delay may be: one day.
const MAX_TIMEOUT_SECONDS: u32 = 86_400;
/// The most finished cron runs kept.
const MAX_CRON_HISTORY: u32 = 100;
/// The most attribute constraints on one job.
const MAX_ATTRIBUTE_CONSTRAINTS: usize = 32;
/// The most port ranges one node offers.
const MAX_PORT_RANGES: usize = 64;

/// How amounts in a resource set are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Amounts {
    /// Every amount > 0 (task requests, reservations).
    Positive,
    /// Every amount >= 0 (quotas, node capacity).
    NonNegative,
}

fn resources(errs: &mut Errors, at: &FieldPath, r: &Resources, amounts: Amounts) {
    for (name, q) in &r.0 {
        let p = at.child(name);
        if !is_resource_name(name) {
            errs.invalid(
                &p,
                format!("\"{name}\""),
                "a resource name must be a lowercase DNS label (cpus, memory, disk, gpus), optionally prefixed by a domain (example.com/fpga)",
            );
            continue;
        }
        match q.milli() {
            Err(e) => errs.invalid(&p, format!("\"{q}\""), e.to_string()),
            Ok(v) if amounts == Amounts::Positive && v <= 0 => {
                errs.invalid(&p, q, "must be greater than zero")
            }
            Ok(v) if v < 0 => errs.invalid(&p, q, "must be greater than or equal to zero"),
            Ok(_) => {}
        }
    }
}

fn task_resources(errs: &mut Errors, at: &FieldPath, r: &Resources) {
    for needed in [CPUS, MEMORY] {
        if r.get(needed).is_none() {
            errs.required(&at.child(needed), "every task must request cpus and memory");
        }
    }
    resources(errs, at, r, Amounts::Positive);
}

fn role_ref(errs: &mut Errors, at: &FieldPath, role: &str) {
    if role.is_empty() {
        errs.required(at, "");
    } else if !is_dns1123_label(role) {
        errs.invalid(
            at,
            format!("\"{role}\""),
            "a role name must be a lowercase DNS label (nest roles with spec.parent)",
        );
    }
}

fn image(errs: &mut Errors, at: &FieldPath, image: &str) {
    if image.is_empty() {
        errs.required(at, "");
        return;
    }
    if image.trim() != image || image.contains(char::is_whitespace) {
        errs.invalid(
            at,
            format!("\"{image}\""),
            "an image reference may not contain whitespace",
        );
        return;
    }
    if let Err(e) = parse_image(image) {
        errs.invalid(
            at,
            format!("\"{image}\""),
            format!("not a valid image reference ([registry/]repository[:tag][@digest]): {e}"),
        );
    }
}

/// How many accepted image references [`parse_image`] remembers.
pub(super) const ACCEPTED_IMAGES: usize = 1024;

static ACCEPTED: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// How many image references are remembered now.
#[cfg(test)]
pub(super) fn accepted_images() -> usize {
    ACCEPTED.read().map_or(0, |seen| seen.len())
}

/// Parses an image reference, remembering the ones accepted: the tasks of a
/// job (and a cluster's jobs) share a handful of images, and the reference
/// grammar's regular expression was a third of a task's validation.
fn parse_image(image: &str) -> Result<(), oci_spec::distribution::ParseError> {
    if ACCEPTED.read().is_ok_and(|seen| seen.contains(image)) {
        return Ok(());
    }
    image.parse::<oci_spec::distribution::Reference>()?;
    if let Ok(mut seen) = ACCEPTED.write() {
        if seen.len() >= ACCEPTED_IMAGES {
            seen.clear();
        }
        seen.insert(image.to_owned());
    }
    Ok(())
}

fn container(errs: &mut Errors, at: &FieldPath, c: &ContainerSpec) {
    image(errs, &at.child("image"), &c.image);
    if c.network == Some(crate::job::NetworkMode::None)
        && c.runtime == Some(crate::node::RuntimeKind::Process)
    {
        errs.forbidden(
            &at.child("network"),
            "the process runtime runs tasks in the node's network: network none needs a container",
        );
    }
    if let Some(user) = &c.user {
        let part = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
        };
        let ok = match user.split_once(':') {
            Some((u, g)) => part(u) && part(g),
            None => part(user),
        };
        if !ok {
            errs.invalid(
                &at.child("user"),
                format!("{user:?}"),
                "a user is UID[:GID] or NAME[:GROUP] (letters, digits, '.', '_', '-'; at most 32 each)",
            );
        }
    }
    if c.seccomp_profile == Some(crate::job::SeccompProfile::RuntimeDefault)
        && c.runtime == Some(crate::node::RuntimeKind::Process)
    {
        errs.forbidden(
            &at.child("seccompProfile"),
            "a host process has no seccomp filter: RuntimeDefault needs a container",
        );
    }
    if c.read_only_root_filesystem && c.runtime == Some(crate::node::RuntimeKind::Process) {
        errs.forbidden(
            &at.child("readOnlyRootFilesystem"),
            "a host process has the node's filesystem: a read-only root needs a container",
        );
    }
    if c.runtime == Some(crate::node::RuntimeKind::Simulated) {
        errs.not_supported(
            &at.child("runtime"),
            "\"simulated\"",
            &["containerd", "process"],
        );
    }
    for (i, part) in c.command.iter().enumerate() {
        if part.is_empty() && i == 0 {
            errs.invalid(
                &at.child("command").index(i),
                "\"\"",
                "the program may not be empty",
            );
        }
    }
    super::env::check(errs, &at.child("env"), &c.env);
    if let Some(dir) = &c.working_dir
        && !dir.starts_with('/')
    {
        errs.invalid(
            &at.child("workingDir"),
            format!("\"{dir}\""),
            "must be an absolute path",
        );
    }
}

fn attribute(errs: &mut Errors, at: &FieldPath, a: &AttributeConstraint) {
    if !is_qualified_name(&a.name) {
        errs.invalid(
            &at.child("name"),
            format!("\"{}\"", a.name),
            "must be a qualified attribute name (rack, zone, example.com/tier)",
        );
    }
    let values = at.child("values");
    match a.operator {
        ConstraintOperator::In | ConstraintOperator::NotIn if a.values.is_empty() => {
            errs.required(&values, "In and NotIn need at least one value");
        }
        ConstraintOperator::Exists | ConstraintOperator::DoesNotExist if !a.values.is_empty() => {
            errs.forbidden(&values, "Exists and DoesNotExist take no values");
        }
        _ => {}
    }
    for (i, v) in a.values.iter().enumerate() {
        if !is_label_value(v) {
            errs.invalid(
                &values.index(i),
                format!("\"{v}\""),
                "must be a valid attribute value",
            );
        }
    }
}

fn constraints(errs: &mut Errors, at: &FieldPath, c: &Constraints, role: &str) {
    if c.host_limit == Some(0) {
        errs.invalid(&at.child("hostLimit"), 0, "must be at least 1");
    }
    let attrs = at.child("attributes");
    if c.attributes.len() > MAX_ATTRIBUTE_CONSTRAINTS {
        errs.too_many(&attrs, c.attributes.len(), MAX_ATTRIBUTE_CONSTRAINTS);
    }
    for (i, a) in c.attributes.iter().enumerate() {
        attribute(errs, &attrs.index(i), a);
    }
    if let Some(d) = &c.dedicated {
        let p = at.child("dedicated");
        role_ref(errs, &p, d);
        if is_dns1123_label(d) && d != role {
            errs.forbidden(
                &p,
                format!("a job of role \"{role}\" may only ask for nodes dedicated to \"{role}\""),
            );
        }
    }
}

fn cron(errs: &mut Errors, at: &FieldPath, c: &CronSpec) {
    let p = at.child("schedule");
    if c.schedule.trim().is_empty() {
        errs.required(&p, "");
    } else if let Err(e) = crate::job::parse_schedule(&c.schedule) {
        errs.invalid(
            &p,
            format!("\"{}\"", c.schedule),
            format!("not a valid five-field cron expression: {e}"),
        );
    }
    if jiff::tz::TimeZone::get(&c.timezone).is_err() {
        errs.invalid(
            &at.child("timezone"),
            format!("\"{}\"", c.timezone),
            "unknown time zone (use an IANA name such as UTC or Europe/Paris)",
        );
    }
    if c.history_limit > MAX_CRON_HISTORY {
        errs.invalid(
            &at.child("historyLimit"),
            c.history_limit,
            format!("must be at most {MAX_CRON_HISTORY}"),
        );
    }
}

fn timeout(errs: &mut Errors, at: &FieldPath, seconds: u32) {
    if seconds == 0 || seconds > MAX_TIMEOUT_SECONDS {
        errs.invalid(
            at,
            seconds,
            format!("must be between 1 and {MAX_TIMEOUT_SECONDS} seconds"),
        );
    }
}

fn string_map(errs: &mut Errors, at: &FieldPath, map: &std::collections::BTreeMap<String, String>) {
    for (k, v) in map {
        if !is_qualified_name(k) {
            errs.invalid(
                at,
                format!("\"{k}\""),
                "keys must be qualified names (rack, example.com/zone)",
            );
        } else if !is_label_value(v) {
            errs.invalid(
                &at.key(k),
                format!("\"{v}\""),
                "values must be empty or alphanumerics with '-', '_' or '.'",
            );
        }
    }
}

fn metadata_name_is_label(errs: &mut Errors, name: Option<&str>, what: &str) {
    if let Some(n) = name
        && !n.is_empty()
        && !is_dns1123_label(n)
    {
        errs.invalid(
            &FieldPath::root("metadata").child("name"),
            format!("\"{n}\""),
            format!("a {what} name must be a lowercase DNS label"),
        );
    }
}

/// Rules for a Job.
pub fn validate_job(job: &Job) -> Vec<FieldError> {
    let mut errs = Errors::default();
    // Its tasks carry the name as the value of a label (`corral.dev/job`).
    // Checked when a job is made only: a name never changes, and jobs stored
    // before the rule existed must still take status and spec updates.
    metadata_name_is_label(&mut errs, job.metadata.name.as_deref(), "job");
    errs.0.extend(job_rules(job));
    errs.0
}

/// The rules a Job follows on every write.
fn job_rules(job: &Job) -> Vec<FieldError> {
    let mut errs = Errors::default();
    let spec = FieldPath::root("spec");
    let s = &job.spec;
    role_ref(&mut errs, &spec.child("role"), &s.role);
    if s.environment.is_empty() {
        errs.required(&spec.child("environment"), "");
    } else if !is_dns1123_label(&s.environment) {
        errs.invalid(
            &spec.child("environment"),
            format!("\"{}\"", s.environment),
            "must be a lowercase DNS label (prod, devel, test)",
        );
    }
    let min_instances = if s.kind == JobKind::Service { 0 } else { 1 };
    if s.instances < min_instances || s.instances > MAX_INSTANCES {
        errs.invalid(
            &spec.child("instances"),
            s.instances,
            format!("must be between {min_instances} and {MAX_INSTANCES}"),
        );
    }
    task_resources(&mut errs, &spec.child("resources"), &s.resources);
    if s.max_task_failures < -1 {
        errs.invalid(
            &spec.child("maxTaskFailures"),
            s.max_task_failures,
            "must be -1 (unlimited) or at least 0",
        );
    }
    container(&mut errs, &spec.child("container"), &s.container);
    ports(&mut errs, &spec.child("ports"), &s.ports, &s.container);
    if let Some(hc) = &s.health_check {
        health_check(&mut errs, &spec.child("healthCheck"), hc, &s.ports);
    }
    constraints(
        &mut errs,
        &spec.child("constraints"),
        &s.constraints,
        &s.role,
    );
    match (&s.cron, s.kind) {
        (Some(c), JobKind::Cron) => cron(&mut errs, &spec.child("cron"), c),
        (None, JobKind::Cron) => errs.required(&spec.child("cron"), "a cron job needs a schedule"),
        (Some(_), _) => errs.forbidden(&spec.child("cron"), "only cron jobs take a schedule"),
        (None, _) => {}
    }
    if let Some(p) = &s.partition_policy
        && p.delay_seconds > MAX_TIMEOUT_SECONDS
    {
        errs.invalid(
            &spec.child("partitionPolicy").child("delaySeconds"),
            p.delay_seconds,
            format!("must be at most {MAX_TIMEOUT_SECONDS}"),
        );
    }
    if let Some(u) = &s.update {
        if u.batch_size == 0 {
            errs.invalid(
                &spec.child("update").child("batchSize"),
                u.batch_size,
                "must be at least 1",
            );
        }
        if u.min_healthy_seconds > MAX_TIMEOUT_SECONDS {
            errs.invalid(
                &spec.child("update").child("minHealthySeconds"),
                u.min_healthy_seconds,
                format!("must be at most {MAX_TIMEOUT_SECONDS}"),
            );
        }
    }
    if let Some(b) = &s.disruption_budget {
        budget(&mut errs, &spec.child("disruptionBudget"), b);
    }
    if let Some(g) = &s.gang
        && (g.min_instances == 0 || g.min_instances > s.instances)
    {
        errs.invalid(
            &spec.child("gang").child("minInstances"),
            g.min_instances,
            format!("must be from 1 to the job's instances ({})", s.instances),
        );
    }
    if let Some(t) = &s.timeouts {
        timeout(
            &mut errs,
            &spec.child("timeouts").child("assignSeconds"),
            t.assign_seconds,
        );
        timeout(
            &mut errs,
            &spec.child("timeouts").child("startSeconds"),
            t.start_seconds,
        );
    }
    errs.0
}

/// Rules for a Job replacing `old`: the kind and role are fixed for a job's life.
pub fn validate_job_update(new: &Job, old: &Job) -> Vec<FieldError> {
    let mut errs = Errors(job_rules(new));
    let spec = FieldPath::root("spec");
    if new.spec.kind != old.spec.kind {
        errs.immutable(
            &spec.child("kind"),
            format!("{:?}", new.spec.kind).to_lowercase(),
        );
    }
    if new.spec.role != old.spec.role {
        errs.immutable(&spec.child("role"), format!("\"{}\"", new.spec.role));
    }
    errs.0
}

/// Rules for a Task.
pub fn validate_task(task: &Task) -> Vec<FieldError> {
    let mut errs = Errors::default();
    let spec = FieldPath::root("spec");
    let s = &task.spec;
    if s.job.is_empty() {
        errs.required(&spec.child("job"), "");
    } else if !is_dns1123_subdomain(&s.job) {
        errs.invalid(
            &spec.child("job"),
            format!("\"{}\"", s.job),
            "must be a job name",
        );
    }
    role_ref(&mut errs, &spec.child("role"), &s.role);
    if s.instance_id >= MAX_INSTANCES {
        errs.invalid(
            &spec.child("instanceId"),
            s.instance_id,
            format!("must be below {MAX_INSTANCES}"),
        );
    }
    task_resources(&mut errs, &spec.child("resources"), &s.resources);
    container(&mut errs, &spec.child("container"), &s.container);
    ports(&mut errs, &spec.child("ports"), &s.ports, &s.container);
    if let Some(hc) = &s.health_check {
        health_check(&mut errs, &spec.child("healthCheck"), hc, &s.ports);
    }
    constraints(
        &mut errs,
        &spec.child("constraints"),
        &s.constraints,
        &s.role,
    );
    if let Some(n) = &s.node_name
        && !is_dns1123_subdomain(n)
    {
        errs.invalid(
            &spec.child("nodeName"),
            format!("\"{n}\""),
            "must be a node name",
        );
    }
    if let Some(st) = &task.status
        && st.task_events.len() > MAX_TASK_EVENTS
    {
        errs.too_many(
            &FieldPath::root("status").child("taskEvents"),
            st.task_events.len(),
            MAX_TASK_EVENTS,
        );
    }
    errs.0
}

/// Rules for a Task replacing `old`: the spec is fixed, except that `nodeName`
/// may be set once.
pub fn validate_task_update(new: &Task, old: &Task) -> Vec<FieldError> {
    let mut errs = Errors(validate_task(new));
    let spec = FieldPath::root("spec");
    match (&old.spec.node_name, &new.spec.node_name) {
        (None, _) => {}
        (Some(a), Some(b)) if a == b => {}
        (Some(_), b) => errs.immutable(&spec.child("nodeName"), format!("{b:?}")),
    }
    let mut old_rest = old.spec.clone();
    old_rest.node_name = new.spec.node_name.clone();
    if old_rest != new.spec {
        let fields = [
            ("job", old.spec.job != new.spec.job),
            ("role", old.spec.role != new.spec.role),
            ("instanceId", old.spec.instance_id != new.spec.instance_id),
            ("resources", old.spec.resources != new.spec.resources),
            ("tier", old.spec.tier != new.spec.tier),
            ("priority", old.spec.priority != new.spec.priority),
            ("container", old.spec.container != new.spec.container),
            ("constraints", old.spec.constraints != new.spec.constraints),
            ("ports", old.spec.ports != new.spec.ports),
            (
                "healthCheck",
                old.spec.health_check != new.spec.health_check,
            ),
        ];
        for (name, changed) in fields {
            if changed {
                errs.push_immutable(&spec.child(name));
            }
        }
    }
    errs.0
}

/// Rules for a Role.
pub fn validate_role(role: &Role) -> Vec<FieldError> {
    let mut errs = Errors::default();
    metadata_name_is_label(&mut errs, role.metadata.name.as_deref(), "role");
    let spec = FieldPath::root("spec");
    if !(role.spec.weight.is_finite() && role.spec.weight > 0.0) {
        errs.invalid(
            &spec.child("weight"),
            role.spec.weight,
            "must be a positive number",
        );
    }
    if let Some(parent) = &role.spec.parent {
        role_ref(&mut errs, &spec.child("parent"), parent);
        if role.metadata.name.as_deref() == Some(parent.as_str()) {
            errs.invalid(
                &spec.child("parent"),
                format!("\"{parent}\""),
                "a role cannot be its own parent",
            );
        }
    }
    errs.0
}

/// Rules for a Quota.
pub fn validate_quota(q: &Quota) -> Vec<FieldError> {
    let mut errs = Errors::default();
    let spec = FieldPath::root("spec");
    role_ref(&mut errs, &spec.child("role"), &q.spec.role);
    resources(
        &mut errs,
        &spec.child("guarantee"),
        &q.spec.guarantee,
        Amounts::NonNegative,
    );
    resources(
        &mut errs,
        &spec.child("limit"),
        &q.spec.limit,
        Amounts::NonNegative,
    );
    resources(
        &mut errs,
        &spec.child("borrowingLimit"),
        &q.spec.borrowing_limit,
        Amounts::NonNegative,
    );
    if !q.spec.borrowing_limit.is_empty() && !q.spec.borrow {
        errs.invalid(
            &spec.child("borrowingLimit"),
            "set",
            "a role that may not borrow (borrow: false) has nothing to cap",
        );
    }
    for (name, g) in &q.spec.guarantee.0 {
        if let (Some(l), Ok(gv)) = (q.spec.limit.get(name), g.milli())
            && let Ok(lv) = l.milli()
            && gv > lv
        {
            errs.invalid(
                &spec.child("guarantee").child(name),
                g,
                format!("must be less than or equal to the limit {l}"),
            );
        }
    }
    errs.0
}

/// Rules for a Quota replacing `old`: its role is fixed.
pub fn validate_quota_update(new: &Quota, old: &Quota) -> Vec<FieldError> {
    let mut errs = Errors(validate_quota(new));
    if new.spec.role != old.spec.role {
        errs.immutable(
            &FieldPath::root("spec").child("role"),
            format!("\"{}\"", new.spec.role),
        );
    }
    errs.0
}

/// Rules for a Reservation.
pub fn validate_reservation(r: &Reservation) -> Vec<FieldError> {
    let mut errs = Errors::default();
    let spec = FieldPath::root("spec");
    if r.spec.node.is_empty() {
        errs.required(&spec.child("node"), "");
    } else if !is_dns1123_subdomain(&r.spec.node) {
        errs.invalid(
            &spec.child("node"),
            format!("\"{}\"", r.spec.node),
            "must be a node name",
        );
    }
    role_ref(&mut errs, &spec.child("role"), &r.spec.role);
    if r.spec.resources.is_empty() {
        errs.required(
            &spec.child("resources"),
            "a reservation must reserve something",
        );
    }
    resources(
        &mut errs,
        &spec.child("resources"),
        &r.spec.resources,
        Amounts::Positive,
    );
    string_map(&mut errs, &spec.child("labels"), &r.spec.labels);
    errs.0
}

/// Rules for a Reservation replacing `old`: node, role and type are fixed.
pub fn validate_reservation_update(new: &Reservation, old: &Reservation) -> Vec<FieldError> {
    let mut errs = Errors(validate_reservation(new));
    let spec = FieldPath::root("spec");
    if new.spec.node != old.spec.node {
        errs.immutable(&spec.child("node"), format!("\"{}\"", new.spec.node));
    }
    if new.spec.role != old.spec.role {
        errs.immutable(&spec.child("role"), format!("\"{}\"", new.spec.role));
    }
    if new.spec.type_ != old.spec.type_ {
        errs.immutable(
            &spec.child("type"),
            format!("{:?}", new.spec.type_).to_lowercase(),
        );
    }
    errs.0
}

/// Rules for a Node.
pub fn validate_node(n: &Node) -> Vec<FieldError> {
    let mut errs = Errors::default();
    string_map(
        &mut errs,
        &FieldPath::root("spec").child("attributes"),
        &n.spec.attributes,
    );
    if let Some(w) = &n.spec.maintenance {
        maintenance(&mut errs, &FieldPath::root("spec").child("maintenance"), w);
    }
    if let Some(st) = &n.status {
        let status = FieldPath::root("status");
        resources(
            &mut errs,
            &status.child("total"),
            &st.total,
            Amounts::NonNegative,
        );
        resources(
            &mut errs,
            &status.child("allocatable"),
            &st.allocatable,
            Amounts::NonNegative,
        );
        resources(
            &mut errs,
            &status.child("revocable"),
            &st.revocable,
            Amounts::NonNegative,
        );
        if st.port_ranges.len() > MAX_PORT_RANGES {
            errs.too_many(
                &status.child("portRanges"),
                st.port_ranges.len(),
                MAX_PORT_RANGES,
            );
        }
        for (i, r) in st.port_ranges.iter().enumerate() {
            if r.begin == 0 || r.is_empty() {
                errs.invalid(
                    &status.child("portRanges").index(i),
                    r,
                    "a range is begin-end with 1 <= begin <= end",
                );
            }
        }
        for (i, a) in st.addresses.iter().enumerate() {
            if a.address.is_empty() || a.address.len() > 253 {
                errs.invalid(
                    &status.child("addresses").index(i).child("address"),
                    format!("\"{}\"", a.address),
                    "an address is a host name or IP address of at most 253 characters",
                );
            }
        }
        for (i, r) in st.static_reservations.iter().enumerate() {
            let p = status.child("staticReservations").index(i);
            role_ref(&mut errs, &p.child("role"), &r.role);
            resources(
                &mut errs,
                &p.child("resources"),
                &r.resources,
                Amounts::Positive,
            );
        }
    }
    errs.0
}

impl Errors {
    fn push_immutable(&mut self, at: &FieldPath) {
        self.0.push(FieldError {
            type_: super::FieldErrorType::Invalid,
            field: at.as_str().to_owned(),
            value: None,
            detail: "field is immutable".to_owned(),
        });
    }
}
