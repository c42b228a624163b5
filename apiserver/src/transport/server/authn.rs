//! The authentication layer: a bearer token or a client certificate makes
//! the caller a user (401 otherwise), then `Impersonate-*` headers, when the
//! user may impersonate, make the request act as another. The audit record
//! learns both.

use http::{Request, header};
use hyper::body::Incoming;

use super::Shared;
use crate::error::ApiError;
use crate::transport::audit::Record;
use crate::transport::auth::{CertIdentity, User};

/// The user `req` acts as.
pub(super) fn authenticate(
    sec: &Shared,
    cert: Option<&CertIdentity>,
    req: &Request<Incoming>,
    audit: Option<&Record>,
) -> Result<User, ApiError> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let authenticated = sec.authn.authenticate(authorization, cert)?;
    if let Some(a) = audit {
        a.user(&authenticated, &authenticated);
    }
    let user = crate::transport::impersonation::effective_user(
        req.headers(),
        authenticated.clone(),
        sec.authz.as_ref(),
    )?;
    if let Some(a) = audit {
        a.user(&authenticated, &user);
    }
    Ok(user)
}
