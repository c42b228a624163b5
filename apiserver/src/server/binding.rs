//! HTTP for a Task's `binding` subresource: POST of a Binding (see
//! `rest::binding`), answered 201 with the bound Task.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::{
    Body, Query, Response, Target, decode_object, json_response, read_body, write_options,
};
use crate::error::ApiError;
use crate::rest::{Api, Requester};

pub(super) async fn request(
    api: Api,
    t: Target,
    req: Request<Incoming>,
    requester: Requester,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let name = t.name.as_deref().ok_or(ApiError::PathNotFound)?;
    let q = Query::parse(req.uri().query());
    let mut opts = write_options(&q, req.method(), req.headers())?;
    opts.requester = Some(requester);
    let (parts, body) = read_body(req).await?;
    let binding = decode_object(&parts, &body)?;
    let w = api
        .bind(&t.desc, t.namespace.as_deref(), name, &binding, &opts)
        .await?;
    Ok(json_response(StatusCode::CREATED, &w.object))
}
