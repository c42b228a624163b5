//! Any Corral object, decoded from its JSON by `apiVersion` and `kind`.

use serde_json::Value;

use crate::validation::{self, FieldError};
use crate::{API_VERSION, Job, Node, Quota, Reservation, Role, Task};

/// Why a document is not a Corral object.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The document has no `apiVersion` or `kind`.
    #[error("the document has no apiVersion/kind")]
    MissingTypeMeta,
    /// Another API group or version.
    #[error("{api_version} is not served by Corral (expected {API_VERSION})")]
    OtherApiVersion {
        /// The document's apiVersion.
        api_version: String,
    },
    /// An unknown kind in corral.dev.
    #[error("no kind {kind:?} in {API_VERSION}")]
    UnknownKind {
        /// The document's kind.
        kind: String,
    },
    /// The document does not match the kind's schema.
    #[error("decoding {kind}: {source}")]
    Schema {
        /// The kind.
        kind: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// One object of any Corral kind.
#[derive(Debug, Clone, PartialEq)]
pub enum CorralObject {
    /// A Role.
    Role(Role),
    /// A Quota.
    Quota(Quota),
    /// A Reservation.
    Reservation(Reservation),
    /// A Job.
    Job(Job),
    /// A Task.
    Task(Task),
    /// A Node.
    Node(Node),
}

/// Static facts about a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// `Job`.
    pub kind: &'static str,
    /// `jobs`.
    pub plural: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

/// Every kind, in the order they should be created (roles before what uses them).
pub const KINDS: [KindInfo; 6] = [
    KindInfo {
        kind: "Role",
        plural: "roles",
        namespaced: false,
    },
    KindInfo {
        kind: "Quota",
        plural: "quotas",
        namespaced: false,
    },
    KindInfo {
        kind: "Node",
        plural: "nodes",
        namespaced: false,
    },
    KindInfo {
        kind: "Reservation",
        plural: "reservations",
        namespaced: false,
    },
    KindInfo {
        kind: "Job",
        plural: "jobs",
        namespaced: true,
    },
    KindInfo {
        kind: "Task",
        plural: "tasks",
        namespaced: true,
    },
];

/// A document to decode: owned (moved into the typed form) or borrowed.
trait Document {
    fn value(&self) -> &Value;
    fn decode<T: serde::de::DeserializeOwned>(self, kind: &'static str) -> Result<T, DecodeError>;
}

impl Document for Value {
    fn value(&self) -> &Value {
        self
    }
    fn decode<T: serde::de::DeserializeOwned>(self, kind: &'static str) -> Result<T, DecodeError> {
        serde_json::from_value(self).map_err(|source| DecodeError::Schema { kind, source })
    }
}

impl Document for &Value {
    fn value(&self) -> &Value {
        self
    }
    fn decode<T: serde::de::DeserializeOwned>(self, kind: &'static str) -> Result<T, DecodeError> {
        T::deserialize(self).map_err(|source| DecodeError::Schema { kind, source })
    }
}

impl CorralObject {
    /// Decodes a document by its `apiVersion` and `kind`.
    pub fn from_value(v: Value) -> Result<Self, DecodeError> {
        Self::from_document(v)
    }

    /// Decodes a borrowed document by its `apiVersion` and `kind` (no copy
    /// of the document is made).
    pub fn from_value_ref(v: &Value) -> Result<Self, DecodeError> {
        Self::from_document(v)
    }

    fn from_document(v: impl Document) -> Result<Self, DecodeError> {
        let doc = v.value();
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or(DecodeError::MissingTypeMeta)?;
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .ok_or(DecodeError::MissingTypeMeta)?;
        if api_version != API_VERSION {
            return Err(DecodeError::OtherApiVersion {
                api_version: api_version.to_owned(),
            });
        }
        Ok(match kind {
            "Role" => CorralObject::Role(v.decode("Role")?),
            "Quota" => CorralObject::Quota(v.decode("Quota")?),
            "Reservation" => CorralObject::Reservation(v.decode("Reservation")?),
            "Job" => CorralObject::Job(v.decode("Job")?),
            "Task" => CorralObject::Task(v.decode("Task")?),
            "Node" => CorralObject::Node(v.decode("Node")?),
            other => {
                return Err(DecodeError::UnknownKind {
                    kind: other.to_owned(),
                });
            }
        })
    }

    /// The kind's static facts.
    pub fn info(&self) -> KindInfo {
        let kind = match self {
            CorralObject::Role(_) => "Role",
            CorralObject::Quota(_) => "Quota",
            CorralObject::Reservation(_) => "Reservation",
            CorralObject::Job(_) => "Job",
            CorralObject::Task(_) => "Task",
            CorralObject::Node(_) => "Node",
        };
        KINDS
            .into_iter()
            .find(|k| k.kind == kind)
            .unwrap_or(KINDS[0])
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            CorralObject::Role(o) => &o.metadata,
            CorralObject::Quota(o) => &o.metadata,
            CorralObject::Reservation(o) => &o.metadata,
            CorralObject::Job(o) => &o.metadata,
            CorralObject::Task(o) => &o.metadata,
            CorralObject::Node(o) => &o.metadata,
        }
    }

    /// Runs the kind's validation rules.
    pub fn validate(&self) -> Vec<FieldError> {
        match self {
            CorralObject::Role(o) => validation::validate_role(o),
            CorralObject::Quota(o) => validation::validate_quota(o),
            CorralObject::Reservation(o) => validation::validate_reservation(o),
            CorralObject::Job(o) => validation::validate_job(o),
            CorralObject::Task(o) => validation::validate_task(o),
            CorralObject::Node(o) => validation::validate_node(o),
        }
    }

    /// Runs the kind's rules for replacing `old` (immutable fields included).
    /// Objects of different kinds are compared by their own rules only.
    pub fn validate_update(&self, old: &CorralObject) -> Vec<FieldError> {
        match (self, old) {
            (CorralObject::Quota(n), CorralObject::Quota(o)) => {
                validation::validate_quota_update(n, o)
            }
            (CorralObject::Reservation(n), CorralObject::Reservation(o)) => {
                validation::validate_reservation_update(n, o)
            }
            (CorralObject::Job(n), CorralObject::Job(o)) => validation::validate_job_update(n, o),
            (CorralObject::Task(n), CorralObject::Task(o)) => {
                validation::validate_task_update(n, o)
            }
            _ => self.validate(),
        }
    }

    /// The object as JSON.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            CorralObject::Role(o) => serde_json::to_value(o),
            CorralObject::Quota(o) => serde_json::to_value(o),
            CorralObject::Reservation(o) => serde_json::to_value(o),
            CorralObject::Job(o) => serde_json::to_value(o),
            CorralObject::Task(o) => serde_json::to_value(o),
            CorralObject::Node(o) => serde_json::to_value(o),
        }
    }
}
