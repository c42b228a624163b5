//! Answers: a body of bytes with its content type, JSON, a failure as a
//! `Status`, warnings as `Warning` headers.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::Value;

use crate::error::ApiError;

/// Every response's body.
pub(super) type Body = BoxBody<Bytes, Infallible>;

pub(super) fn full(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(super) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    // Encoding a `Value` cannot fail (its keys are strings).
    let body = serde_json::to_vec(v).unwrap_or_default();
    full(status, "application/json", body)
}

pub(super) fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code(), &e.status());
    if matches!(e, ApiError::TooManyRequests) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

pub(super) trait WithContentType {
    fn with_content_type(self, ct: &str) -> Self;
}

impl WithContentType for Response<Body> {
    fn with_content_type(mut self, ct: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(ct) {
            self.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        self
    }
}

pub(super) fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}
