//! The authorization layer: a resource request is decided by the
//! server's authorizer from its attributes (403 in kube-apiserver's words
//! otherwise), and the audit record learns what was asked and decided. The
//! kinds answered without being stored decide for themselves, from their
//! bodies (a node asks a certificate for the node its body names), and bulk
//! status reports item by item (`registry::bulk`); any other
//! path (discovery, OpenAPI, `/metrics`) is decided by its verb and path,
//! except a resource that is not served, answered 404 to whoever asks,
//! as RBAC's `nonResourceURLs` say (the bootstrap `system:discovery` lets
//! every authenticated caller read discovery and OpenAPI).

use super::Shared;
use super::request_info::{RequestInfo, Target};
use crate::error::ApiError;
use crate::transport::audit::Record;
use crate::transport::auth::{User, authorize as decide};

/// Authorizes `info` for `user`.
pub(super) fn authorize(
    sec: &Shared,
    user: &User,
    info: &RequestInfo,
    audit: Option<&Record>,
) -> Result<(), ApiError> {
    if matches!(info.target, Target::Unserved) {
        return Err(ApiError::PathNotFound);
    }
    let Some(attrs) = info.attributes() else {
        let verb = info.verb();
        let allowed = sec.authz.allows_path(user, &verb, &info.path);
        if let Some(a) = audit {
            a.decision(allowed);
        }
        return if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "forbidden: User \"{}\" cannot {verb} path \"{}\"",
                user.name, info.path
            )))
        };
    };
    if let Some(a) = audit {
        a.attributes(&attrs);
    }
    // These decide for themselves: from their bodies (the virtual kinds),
    // or item by item (bulk status reports).
    match &info.target {
        Target::Virtual { .. } => return Ok(()),
        Target::Resource(t) if t.bulk_status() => return Ok(()),
        _ => {}
    }
    let decided = decide(sec.authz.as_ref(), user, &attrs);
    if let Some(a) = audit {
        a.decision(decided.is_ok());
    }
    decided
}
