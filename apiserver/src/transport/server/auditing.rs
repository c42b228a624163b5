//! The audit layer's HTTP side: a record begun for each request (when
//! auditing), and its response stages written as the response leaves —
//! `ResponseComplete` with the code (and the body, at `RequestResponse`),
//! or for a long-running response `ResponseStarted` now and
//! `ResponseComplete` when its body ends. See [`crate::transport::audit`].

use std::net::SocketAddr;

use futures::StreamExt;
use http::{Request, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde_json::Value;

use super::respond::{Body, error_response};
use crate::error::ApiError;
use crate::transport::audit::Record;

/// Begins `req`'s record when `auditor` is set, and puts it in the
/// request's extensions for the layers after.
pub(super) fn begin(
    auditor: Option<&std::sync::Arc<crate::transport::audit::Auditor>>,
    req: &mut Request<Incoming>,
    peer: SocketAddr,
) -> Option<Record> {
    let record = Record::new(
        auditor?.clone(),
        // The path and query, as kube-apiserver records it (HTTP/2
        // requests carry the scheme and authority too).
        req.uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned()),
        req.method(),
        peer.ip(),
        req.headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    req.extensions_mut().insert(record.clone());
    Some(record)
}

/// The error's response, recorded in the audit log when auditing.
pub(super) fn audited_error(e: &ApiError, audit: Option<&Record>) -> Response<Body> {
    if let Some(record) = audit {
        record.response_complete(e.code().as_u16(), Some(&e.status()), Some(&e.status()));
    }
    error_response(e)
}

/// A complete response, recorded in the audit log (with its body when the
/// level keeps it: such bodies are whole in memory already).
pub(super) async fn audited(response: Response<Body>, record: &Record) -> Response<Body> {
    let code = response.status().as_u16();
    if !record.wants_response() {
        record.response_complete(code, None, None);
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    let object = serde_json::from_slice::<Value>(&bytes).ok();
    record.response_complete(code, None, object.as_ref());
    Response::from_parts(parts, BodyExt::boxed(http_body_util::Full::new(bytes)))
}

/// A long-running response: `ResponseStarted` now, `ResponseComplete` when
/// its body ends (or its client goes away).
pub(super) fn audited_stream(response: Response<Body>, record: Record) -> Response<Body> {
    let code = response.status().as_u16();
    record.response_started(code);
    struct Completes(Record, u16);
    impl Drop for Completes {
        fn drop(&mut self) {
            self.0.response_complete(self.1, None, None);
        }
    }
    let guard = Completes(record, code);
    response.map(|body| {
        BodyExt::boxed(StreamBody::new(http_body_util::BodyStream::new(body).map(
            move |frame| {
                let _ = &guard;
                frame
            },
        )))
    })
}
