//! Every failure as a Kubernetes `Status`, in one place.

use corral_api::validation::FieldError;
use corral_store::StoreError;
use http::StatusCode;
use serde_json::{Value, json};

/// A cause inside a Status (`details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldManagerConflict`, …
    pub reason: String,
    /// For humans.
    pub message: String,
    /// The field path.
    pub field: String,
}

/// Why a request failed. Each variant maps to one HTTP code and Status reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// An object that does not exist.
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// `tasks.corral.dev`.
        resource: String,
        /// The name.
        name: String,
    },
    /// A path the server does not serve.
    #[error("the server could not find the requested resource")]
    PathNotFound,
    /// Create of an existing object.
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        /// `tasks.corral.dev`.
        resource: String,
        /// The name.
        name: String,
    },
    /// A resourceVersion or uid precondition failed.
    #[error("conflict on {resource} {name:?}: {message}")]
    Conflict {
        /// `tasks.corral.dev`.
        resource: String,
        /// The name.
        name: String,
        /// Why.
        message: String,
    },
    /// Server-side apply would change fields other managers own.
    #[error("apply conflicts")]
    ApplyConflict {
        /// The conflicting fields.
        conflicts: Vec<crate::storage::ssa::Conflict>,
    },
    /// Validation failed.
    #[error("{kind} {name:?} is invalid")]
    Invalid {
        /// `Task.corral.dev`.
        kind: String,
        /// The name.
        name: String,
        /// The field errors.
        errors: Vec<FieldError>,
    },
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// A body in a format the endpoint does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An Accept header naming no form the server answers in.
    #[error("{0}")]
    NotAcceptable(String),
    /// A verb the endpoint does not take.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// No or bad credentials.
    #[error("Unauthorized")]
    Unauthorized,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A body over the limit.
    #[error("Request entity too large: limit is {limit}")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A resourceVersion older than the history kept.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The resourceVersion asked for.
        requested: i64,
        /// The oldest available.
        oldest: i64,
    },
    /// The store is out of space: writes fail until an operator frees some.
    #[error(
        "the store is out of space ({0}): writes are refused until space is freed; reads still work"
    )]
    InsufficientStorage(String),
    /// The storage is unreachable: retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A read asked for a resourceVersion the store has not reached.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion {
        /// The resourceVersion asked for.
        requested: i64,
        /// The store's current one.
        current: i64,
    },
    /// The request took longer than its deadline; it may still complete.
    #[error("request did not complete within requested timeout - context deadline exceeded")]
    Timeout,
    /// Too many requests of its class are in flight: retry after a second.
    #[error("Too many requests, please try again later.")]
    TooManyRequests,
    /// An eviction the task's job's disruption budget forbids now (429,
    /// as Kubernetes answers an eviction a PodDisruptionBudget forbids).
    #[error("Cannot evict task as it would violate the job's disruption budget.")]
    DisruptionBudget {
        /// The task.
        name: String,
        /// Which budget, and how it stands.
        cause: String,
    },
    /// A bug: the server broke an invariant.
    #[error("internal error: {0}")]
    Internal(String),
    /// A node agent the request is proxied to failed or could not be
    /// reached (502: not retried by clients, unlike a storage outage).
    #[error("{0}")]
    AgentUnreachable(String),
}

impl ApiError {
    /// The HTTP code.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::PathNotFound => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Expired { .. } => StatusCode::GONE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::TooManyRequests | ApiError::DisruptionBudget { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Timeout | ApiError::TooLargeResourceVersion { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::AgentUnreachable(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::PathNotFound => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::TooLarge { .. } => "RequestEntityTooLarge",
            ApiError::Expired { .. } => "Expired",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::InsufficientStorage(_) => "InsufficientStorage",
            ApiError::TooManyRequests | ApiError::DisruptionBudget { .. } => "TooManyRequests",
            ApiError::Timeout | ApiError::TooLargeResourceVersion { .. } => "Timeout",
            ApiError::Internal(_) | ApiError::AgentUnreachable(_) => "InternalError",
        }
    }

    /// The message, in kube-apiserver's words.
    pub fn message(&self) -> String {
        match self {
            ApiError::NotFound { resource, name } => format!("{resource} \"{name}\" not found"),
            ApiError::AlreadyExists { resource, name } => {
                format!("{resource} \"{name}\" already exists")
            }
            ApiError::Conflict {
                resource,
                name,
                message,
            } => {
                format!("Operation cannot be fulfilled on {resource} \"{name}\": {message}")
            }
            ApiError::ApplyConflict { conflicts } => {
                crate::storage::ssa::conflict_message(conflicts)
            }
            ApiError::Invalid { kind, name, errors } => {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                match list.as_slice() {
                    [one] => format!("{kind} \"{name}\" is invalid: {one}"),
                    many => format!("{kind} \"{name}\" is invalid: [{}]", many.join(", ")),
                }
            }
            other => other.to_string(),
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let code = self.code().as_u16();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": code,
        });
        let details = match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource.as_str(), ""));
                Some(json!({"name": name, "group": group, "kind": kind}))
            }
            ApiError::Invalid { kind, name, errors } => {
                let (k, group) = kind.split_once('.').unwrap_or((kind.as_str(), ""));
                let causes: Vec<Value> = errors
                    .iter()
                    .map(|e| {
                        json!({
                            "reason": e.type_.cause_reason(),
                            "message": e.to_string().split_once(": ").map(|(_, m)| m.to_owned()).unwrap_or_default(),
                            "field": e.field,
                        })
                    })
                    .collect();
                Some(json!({"name": name, "group": group, "kind": k, "causes": causes}))
            }
            ApiError::ApplyConflict { conflicts } => {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                            "field": c.field,
                        })
                    })
                    .collect();
                Some(json!({"causes": causes}))
            }
            ApiError::TooManyRequests => Some(json!({"retryAfterSeconds": 1})),
            ApiError::DisruptionBudget { name, cause } => Some(json!({
                "name": name, "group": "corral.dev", "kind": "tasks",
                "causes": [{"reason": "DisruptionBudget", "message": cause}],
            })),
            // client-go recognises it by this cause.
            ApiError::TooLargeResourceVersion { .. } => Some(json!({"causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ], "retryAfterSeconds": 1})),
            ApiError::Expired { .. } => None,
            _ => None,
        };
        if let (Some(d), Some(o)) = (details, status.as_object_mut()) {
            o.insert("details".into(), d);
        }
        status
    }

    /// Maps a store error on one object.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound {
                resource: resource.to_owned(),
                name: name.to_owned(),
            },
            StoreError::AlreadyExists { .. } => ApiError::AlreadyExists {
                resource: resource.to_owned(),
                name: name.to_owned(),
            },
            StoreError::Conflict { .. } => ApiError::Conflict {
                resource: resource.to_owned(),
                name: name.to_owned(),
                message: "the object has been modified; please apply your changes to the latest version and try again"
                    .to_owned(),
            },
            StoreError::Compacted { requested, compacted } => ApiError::Expired {
                requested,
                oldest: compacted,
            },
            StoreError::FutureRevision { requested, current } => ApiError::BadRequest(format!(
                "resourceVersion {requested} is newer than the server's {current}"
            )),
            StoreError::TooLarge { limit, .. } => ApiError::TooLarge { limit },
            StoreError::Unavailable { message } => ApiError::Unavailable(message),
            StoreError::NoSpace { message } => ApiError::InsufficientStorage(message),
        }
    }
}

/// Store errors outside one object (lists, watches).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from_store(e, "", "")
    }
}
