//! Request bodies: read within the size limit (and kept for the audit
//! record when its level asks), decoded from JSON, YAML or protobuf.

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use super::MAX_BODY_BYTES;
use crate::error::ApiError;

pub(super) async fn read_body(
    req: Request<Incoming>,
) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let collected = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::BadRequest(format!("reading the request body: {e}"))
            }
        })?;
    let bytes = collected.to_bytes();
    if let Some(record) = parts.extensions.get::<crate::transport::audit::Record>() {
        record.request_body(&bytes);
    }
    Ok((parts, bytes))
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
