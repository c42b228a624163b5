//! HTTP for a Task's `binding` subresource: POST of a Binding (see
//! `rest::binding`), answered 201 with the bound Task.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use super::body::{decode_object, read_body};
use super::query::{Query, write_options};
use super::request_info::ResourceTarget;
use super::respond::{Body, json_response};
use crate::error::ApiError;
use crate::storage::registry::{Api, Requester};

pub(super) async fn request(
    api: Api,
    t: ResourceTarget,
    req: Request<Bytes>,
    requester: Requester,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let name = t.name.as_deref().ok_or(ApiError::PathNotFound)?;
    let q = Query::parse(req.uri().query());
    let mut opts = write_options(&q, req.method(), req.headers())?;
    opts.requester = Some(requester);
    let (parts, body) = read_body(req);
    let binding = decode_object(&parts, &body)?;
    let w = api
        .bind(&t.desc, t.namespace.as_deref(), name, &binding, &opts)
        .await?;
    Ok(json_response(StatusCode::CREATED, &w.object))
}
