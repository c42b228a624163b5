//! Request bodies: read within the size limit before the request takes a
//! slot (and kept for the audit record, once the request is authorized,
//! when its level asks), decoded from JSON, YAML or protobuf. An
//! oversized body is read to its end (within bounds) before its 413 goes
//! out, so HTTP/2 clients get the `Status` rather than a reset stream.

use bytes::{Bytes, BytesMut};
use http::{Request, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use super::MAX_BODY_BYTES;
use super::query::{Query, write_options};
use crate::error::ApiError;
use crate::storage::registry::{Requester, WriteOptions};

/// How much of an oversized body is read and dropped before the 413 goes
/// out, and for how long: a client still sending then gets its answer, not a
/// reset stream (HTTP/2) or a broken connection (HTTP/1.1).
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Receives the whole body (within the size limit) before the request
/// takes a slot or is worked on.
pub(super) async fn buffered(req: Request<Incoming>) -> Result<Request<Bytes>, ApiError> {
    let (parts, mut body) = req.into_parts();
    let mut bytes = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > MAX_BODY_BYTES {
            drain(&mut body, seen).await;
            return Err(ApiError::TooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Request::from_parts(parts, bytes.freeze()))
}

/// A received request's head and body.
pub(super) fn read_body(req: Request<Bytes>) -> (http::request::Parts, Bytes) {
    req.into_parts()
}

/// Keeps an authorized request's body for its audit record, when it has
/// one and the record's level asks.
pub(super) fn audit_body(req: &Request<Bytes>) {
    if let Some(record) = req.extensions().get::<crate::transport::audit::Record>()
        && !req.body().is_empty()
    {
        record.request_body(req.body());
    }
}

/// Reads and drops the rest of an oversized body, within [`DRAIN_BYTES`]
/// (counting the `seen` already read) and [`DRAIN_TIME`].
async fn drain(body: &mut Incoming, mut seen: usize) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while seen < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, Bytes::len),
                _ => return,
            }
        }
    })
    .await;
}

pub(super) fn content_type(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned()
}

/// Decodes an object body (JSON or YAML).
pub(super) fn decode_object(parts: &http::request::Parts, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(parts);
    let media = ct.split(';').next().unwrap_or_default().trim().to_owned();
    let v: Value = match media.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("error decoding the request body as JSON: {e}"))
        })?,
        crate::kinds::protobuf::MEDIA_TYPE => crate::kinds::protobuf::decode_object(body)?,
        "application/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::BadRequest("the request body is not UTF-8".into()))?;
            serde_saphyr::from_str(text).map_err(|e| {
                ApiError::BadRequest(format!("error decoding the request body as YAML: {e}"))
            })?
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
            )));
        }
    };
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    Ok(v)
}

/// A POST that writes what its body holds: its write options (with who
/// asks) and its body decoded; 405 for any other method.
pub(super) fn posted(
    req: Request<Bytes>,
    requester: Requester,
) -> Result<(WriteOptions, Value), ApiError> {
    if req.method() != http::Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let q = Query::parse(req.uri().query());
    let mut opts = write_options(&q, req.method(), req.headers())?;
    opts.requester = Some(requester);
    let (parts, body) = read_body(req);
    let object = decode_object(&parts, &body)?;
    Ok((opts, object))
}
