//! HTTP for the `/scale` subresource: GET answers the Scale, PUT takes one,
//! PATCH takes a JSON, merge or strategic patch of one (see `rest::scale`).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use super::body::{content_type, decode_object, read_body};
use super::query::{Query, write_options};
use super::request_info::ResourceTarget;
use super::respond::{Body, json_response, with_warnings};
use crate::error::ApiError;
use crate::storage::patch::{PatchKind, parse_body};
use crate::storage::registry::{Api, ScaleWrite};

pub(super) async fn request(
    api: Api,
    t: ResourceTarget,
    req: Request<Bytes>,
) -> Result<Response<Body>, ApiError> {
    let q = Query::parse(req.uri().query());
    let ns = t.namespace.as_deref();
    let name = t.name.as_deref().ok_or(ApiError::PathNotFound)?;
    let (opts, write) = match *req.method() {
        Method::GET => {
            let scale = api.get_scale(&t.desc, ns, name).await?;
            return Ok(json_response(StatusCode::OK, &scale));
        }
        Method::PUT => {
            let opts = write_options(&q, req.method(), req.headers())?;
            let (parts, body) = read_body(req);
            (opts, ScaleWrite::Replace(decode_object(&parts, &body)?))
        }
        Method::PATCH => {
            let opts = write_options(&q, req.method(), req.headers())?;
            let (parts, body) = read_body(req);
            // A Scale is a built-in kind: strategic merge is taken.
            let kind = match content_type(&parts).split(';').next().map(str::trim) {
                Some("application/strategic-merge-patch+json") => PatchKind::Strategic,
                _ => PatchKind::from_content_type(&content_type(&parts), &t.desc)?,
            };
            (opts, ScaleWrite::Patch(kind, parse_body(kind, &body)?))
        }
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let w = api.write_scale(&t.desc, ns, name, write, &opts).await?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &w.object),
        &w.warnings,
    ))
}
