//! The deadline layer: a request that is not long-running is worked on in
//! a task of its own and answered 504 at its deadline (`--request-timeout`,
//! or its `timeout` parameter, whichever is shorter), keeping its in-flight
//! slot until its work ends; a panic there is a 500, never a dropped
//! connection. A long-running one (a watch, a task's log) has no deadline
//! but ends cleanly when the server shuts down.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};

use super::auditing::{audited, audited_error, audited_stream};
use super::query;
use super::request_info::RequestInfo;
use super::respond::Body;
use crate::error::ApiError;
use crate::transport::audit::Record;

/// A long-running response whose body ends cleanly (as a watch does at its
/// timeout) once the server starts shutting down, so shutdown does not wait
/// on streams that never end by themselves, and their clients reconnect
/// (in an HA control plane, to another server) at once.
pub(super) fn until_closing(
    response: Response<Body>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> Response<Body> {
    response.map(|body| {
        let closed = async move {
            // A server whose handle was dropped without a shutdown serves on.
            if closing.wait_for(|closing| *closing).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        BodyExt::boxed(StreamBody::new(
            http_body_util::BodyStream::new(body).take_until(closed),
        ))
    })
}

/// Runs `work` (the layers after this one) as `info`'s class asks: a
/// long-running request until it ends or the server closes, any other
/// within its deadline. Every answer, failures included, is recorded in
/// `audit`.
pub(super) async fn run<F>(
    info: &RequestInfo,
    request_timeout: Duration,
    closing: tokio::sync::watch::Receiver<bool>,
    audit: Option<&Record>,
    work: F,
) -> Response<Body>
where
    F: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
{
    if info.long_running() {
        return match work.await {
            Ok(r) => {
                let r = until_closing(r, closing);
                match audit {
                    Some(record) => audited_stream(r, record.clone()),
                    None => r,
                }
            }
            Err(e) => audited_error(&e, audit),
        };
    }
    let limit = match query::deadline(info.params(), request_timeout) {
        Ok(limit) => limit,
        Err(e) => return audited_error(&e, audit),
    };
    match tokio::time::timeout(limit, tokio::spawn(work)).await {
        Ok(Ok(Ok(r))) => match audit {
            Some(record) => audited(r, record).await,
            None => r,
        },
        Ok(Ok(Err(e))) => audited_error(&e, audit),
        Ok(Err(failed)) => {
            tracing::error!(method = %info.method, path = %info.path, error = %failed, "a request's handler failed");
            audited_error(
                &ApiError::Internal("the request's handler failed".into()),
                audit,
            )
        }
        Err(_) => audited_error(&ApiError::Timeout, audit),
    }
}
