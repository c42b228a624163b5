//! The handler, after every layer: from what a request names to what
//! answers it — the REST verbs and subresources of served kinds, a task's
//! log (proxied from its agent), the kinds answered without being stored
//! (access reviews, node certificates), discovery, OpenAPI and `/metrics`.
//! Health and version are answered before authentication.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use super::Shared;
use super::body::{decode_object, read_body};
use super::request_info::{RequestInfo, Subresource, Target};
use super::respond::{Body, WithContentType, full, json_response};
use crate::error::ApiError;
use crate::kinds::discovery;
use crate::kinds::openapi;
use crate::storage::registry::{Api, Requester};
use crate::transport::auth::User;

/// The answers that need no caller: health, version and the UI's page and
/// code (which hold no data; see [`crate::transport::ui`]).
pub(super) fn unauthenticated(info: &RequestInfo) -> Option<Response<Body>> {
    match info.path.as_str() {
        "/healthz" | "/livez" | "/readyz" => Some(full(StatusCode::OK, "text/plain", "ok")),
        "/version" => Some(json_response(StatusCode::OK, &discovery::version())),
        _ => crate::transport::ui::asset(info),
    }
}

fn get_only(m: &Method) -> Result<(), ApiError> {
    if *m == Method::GET {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed)
    }
}

/// Answers `req`, authorized for `user` (see the module doc).
pub(super) async fn handle(
    api: Api,
    sec: Shared,
    user: User,
    req: Request<Bytes>,
    info: Arc<RequestInfo>,
) -> Result<Response<Body>, ApiError> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if info.watch && asks_for_websocket(&req) {
        // Answered at once, never upgraded nor streamed: a client that asks
        // for a watch over WebSocket (fabric8's, Spark's) falls back to a
        // plain HTTP watch on a 503, where a streamed 200 would leave it
        // waiting for an upgrade forever.
        return Err(ApiError::Unavailable(
            "watches over WebSocket are not served: watch over HTTP".into(),
        ));
    }
    match &info.target {
        Target::Resource(t) if t.sub == Some(Subresource::Log) => {
            get_only(req.method())?;
            let Some(link) = &sec.agents else {
                return Err(ApiError::Unavailable(
                    "this server has no client certificate to reach agents with".into(),
                ));
            };
            let (ns, name) = (
                t.namespace.as_deref().unwrap_or_default(),
                t.name.as_deref().unwrap_or_default(),
            );
            let of_pod = t.desc.kind == "Pod";
            crate::transport::logs::proxy(&api, link, (ns, name, of_pod), req.uri().query()).await
        }
        Target::Resource(t) => {
            let requester = Requester {
                user,
                authz: sec.authz.clone(),
            };
            super::resource::resource(api, t.clone(), req, &accept, requester).await
        }
        Target::Virtual {
            group,
            version,
            plural,
        } => virtual_kind(&api, &sec, &user, req, group, version, plural).await,
        Target::Unserved => Err(ApiError::PathNotFound),
        Target::NonResource => {
            if info.segments() == ["ui", "api", "history"] {
                sec.history.refresh(&api).await;
            }
            non_resource(&api, &sec, &user, &req, &info, &accept)
        }
    }
}

/// A kind answered and never stored: an access review, a plan, or a node
/// certificate request.
async fn virtual_kind(
    api: &Api,
    sec: &Shared,
    user: &User,
    req: Request<Bytes>,
    group: &str,
    version: &str,
    plural: &str,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let (parts, body) = read_body(req);
    let object = decode_object(&parts, &body)?;
    if crate::transport::plans::is_plan(group, version, plural) {
        let answer =
            crate::transport::plans::answer(api, &sec.plans, object, user, sec.authz.as_ref())
                .await?;
        return Ok(json_response(StatusCode::CREATED, &answer));
    }
    let answer = match crate::transport::reviews::find(group, version, plural) {
        Some(review) => {
            crate::transport::reviews::answer(review, object, user, sec.authz.as_ref())?
        }
        None => crate::transport::node_certificates::answer(
            object,
            user,
            sec.authz.as_ref(),
            sec.signer.as_deref(),
            jiff::Timestamp::now(),
        )?,
    };
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// Discovery, OpenAPI, `/metrics` and the UI's history; any other path is
/// not found.
fn non_resource(
    api: &Api,
    sec: &Shared,
    user: &User,
    req: &Request<Bytes>,
    info: &RequestInfo,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let segs = info.segments();
    match segs.as_slice() {
        ["ui", "api", "history"] => {
            get_only(req.method())?;
            let answer = serde_json::to_value(sec.history.answer(user, sec.authz.as_ref()))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(json_response(StatusCode::OK, &answer))
        }
        ["metrics"] => {
            get_only(req.method())?;
            let objects = api
                .cache
                .as_ref()
                .map(|c| {
                    let counts = c.object_counts();
                    api.registry
                        .all()
                        .iter()
                        .zip(counts)
                        .map(|(d, n)| (d.group_resource(), i64::try_from(n).unwrap_or(i64::MAX)))
                        .collect()
                })
                .unwrap_or_default();
            let watchers = api.cache.as_ref().map_or(0, |c| c.watcher_count());
            let text = sec
                .metrics
                .encode(&crate::transport::metrics::Snapshot {
                    inflight: sec.inflight.taken(),
                    by_level: sec
                        .inflight
                        .taken_by_level()
                        .into_iter()
                        .map(|(level, n)| (level.name(), n))
                        .collect(),
                    objects,
                    watchers: i64::try_from(watchers).unwrap_or(i64::MAX),
                })
                .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
            Ok(full(
                StatusCode::OK,
                crate::transport::metrics::CONTENT_TYPE,
                text,
            ))
        }
        ["api"] => {
            get_only(req.method())?;
            Ok(if discovery::wants_aggregated(accept) {
                json_response(StatusCode::OK, &discovery::aggregated(&api.registry, true))
                    .with_content_type(discovery::AGGREGATED_CONTENT_TYPE)
            } else {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("127.0.0.1")
                    .to_owned();
                json_response(StatusCode::OK, &discovery::api_versions(&host))
            })
        }
        ["apis"] => {
            get_only(req.method())?;
            Ok(if discovery::wants_aggregated(accept) {
                json_response(StatusCode::OK, &discovery::aggregated(&api.registry, false))
                    .with_content_type(discovery::AGGREGATED_CONTENT_TYPE)
            } else {
                json_response(StatusCode::OK, &discovery::api_group_list(&api.registry))
            })
        }
        ["api", v] => {
            get_only(req.method())?;
            discovery::resource_list(&api.registry, "", v)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or(ApiError::PathNotFound)
        }
        ["apis", g] => {
            get_only(req.method())?;
            discovery::api_group(&api.registry, g)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or(ApiError::PathNotFound)
        }
        ["apis", g, v] => {
            get_only(req.method())?;
            discovery::resource_list(&api.registry, g, v)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or(ApiError::PathNotFound)
        }
        ["openapi", "v2"] => {
            get_only(req.method())?;
            Ok(if accept.contains("protobuf") {
                full(
                    StatusCode::OK,
                    crate::kinds::openapi_v2::PROTOBUF_MEDIA_TYPE,
                    crate::kinds::openapi_v2::protobuf_document(&api.registry),
                )
            } else {
                json_response(
                    StatusCode::OK,
                    &crate::kinds::openapi_v2::json_document(&api.registry),
                )
            })
        }
        ["openapi", "v3"] => {
            get_only(req.method())?;
            Ok(json_response(
                StatusCode::OK,
                &openapi::index(&api.registry),
            ))
        }
        ["openapi", "v3", rest @ ..] => {
            get_only(req.method())?;
            let key = rest.join("/");
            let doc = openapi::document(&api.registry, &key).ok_or(ApiError::PathNotFound)?;
            let mut r = json_response(StatusCode::OK, &doc);
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", openapi::hash(&doc))) {
                r.headers_mut().insert(header::ETAG, etag);
            }
            Ok(r)
        }
        _ => Err(ApiError::PathNotFound),
    }
}

/// True when `req` asks to be upgraded to a WebSocket.
fn asks_for_websocket(req: &Request<Bytes>) -> bool {
    req.headers().get_all(header::UPGRADE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("websocket"))
    })
}
