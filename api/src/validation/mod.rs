//! Validation rules for every kind, as pure functions the API server calls.
//!
//! Each `validate_*` returns every problem found (not just the first), each with
//! the JSON field path and a Kubernetes field-error type, so the API server can
//! answer `422 Invalid` with one cause per problem. `validate_*_update` adds the
//! rules that compare with the stored object (immutable fields).

mod disruption;
mod env;
mod names;
mod rules;
mod services;

use std::fmt;

pub use names::{
    config_key_problems, is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name,
    is_resource_name,
};
pub use rules::{
    validate_job, validate_job_update, validate_node, validate_quota, validate_quota_update,
    validate_reservation, validate_reservation_update, validate_role, validate_task,
    validate_task_update,
};

/// The kind of a field error, as Kubernetes names them (`FieldValueInvalid`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorType {
    /// A required field is missing or empty.
    Required,
    /// The value is malformed or out of range.
    Invalid,
    /// The value is not one of the supported ones.
    NotSupported,
    /// The value repeats one given before.
    Duplicate,
    /// The value is longer than allowed.
    TooLong,
    /// The list has more items than allowed.
    TooMany,
    /// The field may not be set (here, or to this value).
    Forbidden,
    /// The value names something that does not exist.
    NotFound,
}

impl FieldErrorType {
    /// The `reason` of the Status cause (`FieldValueInvalid`).
    pub fn cause_reason(self) -> &'static str {
        match self {
            FieldErrorType::Required => "FieldValueRequired",
            FieldErrorType::Invalid => "FieldValueInvalid",
            FieldErrorType::NotSupported => "FieldValueNotSupported",
            FieldErrorType::Duplicate => "FieldValueDuplicate",
            FieldErrorType::TooLong => "FieldValueTooLong",
            FieldErrorType::TooMany => "FieldValueTooMany",
            FieldErrorType::Forbidden => "FieldValueForbidden",
            FieldErrorType::NotFound => "FieldValueNotFound",
        }
    }

    fn label(self) -> &'static str {
        match self {
            FieldErrorType::Required => "Required value",
            FieldErrorType::Invalid => "Invalid value",
            FieldErrorType::NotSupported => "Unsupported value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::TooLong => "Too long",
            FieldErrorType::TooMany => "Too many",
            FieldErrorType::Forbidden => "Forbidden",
            FieldErrorType::NotFound => "Not found",
        }
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What is wrong.
    pub type_: FieldErrorType,
    /// The field's path: `spec.resources.cpus`, `spec.constraints.attributes[0].values`.
    pub field: String,
    /// The offending value as JSON text, when there is one.
    pub value: Option<String>,
    /// Why, for humans.
    pub detail: String,
}

impl fmt::Display for FieldError {
    /// Kubernetes' form: `spec.instances: Invalid value: -1: must be at least 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.type_.label())?;
        if let Some(v) = &self.value {
            write!(f, ": {v}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// A field path under construction (`spec` → `spec.resources` → `spec.resources.cpus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    /// A root path (`spec`, `metadata`).
    pub fn root(name: &str) -> Self {
        FieldPath(name.to_owned())
    }

    /// A child field.
    pub fn child(&self, name: &str) -> Self {
        FieldPath(format!("{}.{name}", self.0))
    }

    /// A list item.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// A map entry.
    pub fn key(&self, k: &str) -> Self {
        FieldPath(format!("{}[{k}]", self.0))
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Collects field errors.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    fn push(
        &mut self,
        type_: FieldErrorType,
        at: &FieldPath,
        value: Option<String>,
        detail: impl Into<String>,
    ) {
        self.0.push(FieldError {
            type_,
            field: at.as_str().to_owned(),
            value,
            detail: detail.into(),
        });
    }

    pub(crate) fn required(&mut self, at: &FieldPath, detail: impl Into<String>) {
        self.push(FieldErrorType::Required, at, None, detail);
    }

    pub(crate) fn invalid(
        &mut self,
        at: &FieldPath,
        value: impl fmt::Display,
        detail: impl Into<String>,
    ) {
        self.push(FieldErrorType::Invalid, at, Some(value.to_string()), detail);
    }

    /// Kubernetes' wording: `supported values: "a", "b"`.
    pub(crate) fn not_supported(
        &mut self,
        at: &FieldPath,
        value: impl fmt::Display,
        supported: &[&str],
    ) {
        let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        self.push(
            FieldErrorType::NotSupported,
            at,
            Some(value.to_string()),
            format!("supported values: {}", quoted.join(", ")),
        );
    }

    pub(crate) fn duplicate(&mut self, at: &FieldPath, value: impl fmt::Display) {
        self.push(FieldErrorType::Duplicate, at, Some(value.to_string()), "");
    }

    pub(crate) fn too_many(&mut self, at: &FieldPath, have: usize, max: usize) {
        self.push(
            FieldErrorType::TooMany,
            at,
            Some(have.to_string()),
            format!("must have at most {max} items"),
        );
    }

    pub(crate) fn forbidden(&mut self, at: &FieldPath, detail: impl Into<String>) {
        self.push(FieldErrorType::Forbidden, at, None, detail);
    }

    pub(crate) fn immutable(&mut self, at: &FieldPath, value: impl fmt::Display) {
        self.push(
            FieldErrorType::Invalid,
            at,
            Some(value.to_string()),
            "field is immutable",
        );
    }
}

#[cfg(test)]
mod tests;
