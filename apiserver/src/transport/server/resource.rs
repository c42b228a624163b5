//! The handler of resource requests: the REST verbs (get, list, watch,
//! create, update, patch, delete, deletecollection) and the `status`
//! subresource, in the forms the Accept header asks for.

use bytes::Bytes;
use std::convert::Infallible;

use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use super::body::{content_type, decode_object, read_body};
use super::query::{Query, list_query, watch_timeout, write_options};
use super::request_info::{ResourceTarget, Subresource};
use super::respond::{Body, error_response, full, json_response, with_warnings};
use super::{binding, scale};
use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::kinds::render::{
    Rendering, list_metadata, partial_metadata_list, render_object, rendering,
};
use crate::kinds::table::{IncludeObject, table};
use crate::storage::patch::{PatchKind, parse_body};
use crate::storage::registry::{Api, DeleteOptions, bulk};
use crate::storage::watch::{self, WatchParams};

fn list_response(
    desc: &ResourceDesc,
    page: crate::storage::registry::ListPage,
    render: Rendering,
) -> Response<Body> {
    let rv = page.revision.to_string();
    // Tables and metadata are rendered from the decoded objects; objects
    // are served as the cache keeps them.
    let values = match render {
        Rendering::Object => Vec::new(),
        _ => match page
            .items
            .iter()
            .map(|e| e.value())
            .collect::<Result<Vec<Value>, _>>()
        {
            Ok(values) => values,
            Err(e) => return error_response(&e),
        },
    };
    match render {
        Rendering::Table(include) => {
            return json_response(
                StatusCode::OK,
                &table(desc, &values, &rv, page.continue_token.as_deref(), include),
            );
        }
        Rendering::Metadata(v) => {
            return json_response(
                StatusCode::OK,
                &partial_metadata_list(values.into_iter(), &rv, page.continue_token.as_deref(), v),
            );
        }
        Rendering::Object => {}
    }
    let metadata = list_metadata(&rv, page.continue_token.as_deref());
    // Items are spliced in from their cached encodings, not re-serialized.
    let head = serde_json::json!({"kind": format!("{}List", desc.kind), "apiVersion": desc.api_version(), "metadata": metadata});
    let mut body = head.to_string();
    body.pop();
    let mut out = Vec::with_capacity(
        body.len() + page.items.iter().map(|e| e.json.len() + 1).sum::<usize>() + 16,
    );
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b",\"items\":[");
    for (i, e) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&e.json);
    }
    out.extend_from_slice(b"]}");
    full(StatusCode::OK, "application/json", out)
}

/// `POST namespaces/NS/taskstatuses`: a `TaskList` of status reports,
/// each authorized and written as a patch of its task's status (see
/// `registry::bulk`).
async fn bulk_status(
    api: Api,
    t: ResourceTarget,
    req: Request<Bytes>,
    requester: crate::storage::registry::Requester,
) -> Result<Response<Body>, ApiError> {
    let (opts, body) = super::body::posted(req, requester)?;
    let Some(items) = bulk::list_items(t.desc.kind, &body)? else {
        return Err(ApiError::BadRequest(format!(
            "taskstatuses takes a {}List of status reports",
            t.desc.kind
        )));
    };
    let ns = t.namespace.as_deref();
    let results = api.patch_statuses(&t.desc, ns, items, &opts).await;
    Ok(json_response(
        StatusCode::OK,
        &bulk::answer(&t.desc, &results, 200),
    ))
}

pub(super) async fn resource(
    api: Api,
    t: ResourceTarget,
    req: Request<Bytes>,
    accept: &str,
    requester: crate::storage::registry::Requester,
) -> Result<Response<Body>, ApiError> {
    match t.sub {
        Some(Subresource::Scale) => return scale::request(api, t, req).await,
        Some(Subresource::Binding) => return binding::request(api, t, req, requester).await,
        Some(Subresource::Eviction) => return binding::eviction(api, t, req, requester).await,
        // Routed to the agent's log endpoint before this handler.
        Some(Subresource::Log) => return Err(ApiError::MethodNotAllowed),
        Some(Subresource::Status) | None => {}
    }
    if t.bulk_status() {
        return bulk_status(api, t, req, requester).await;
    }
    let q = Query::parse(req.uri().query());
    let desc = t.desc.clone();
    let ns = t.namespace.as_deref();
    let include = IncludeObject::parse(q.get("includeObject"));
    // The form of what a read sends (writes answer with the object).
    let render = if req.method() == Method::GET {
        rendering(accept, include)?
    } else {
        Rendering::Object
    };
    match (req.method().clone(), t.name.as_deref()) {
        (Method::GET, None) if q.flag("watch") => {
            let lq = list_query(&q, &desc)?;
            let params = WatchParams {
                resource_version: q.get("resourceVersion").map(str::to_owned),
                bookmarks: q.flag("allowWatchBookmarks"),
                timeout: watch_timeout(&q)?,
                send_initial: q.optional_bool("sendInitialEvents")?,
                labels: lq.labels,
                fields: lq.fields,
                render,
            };
            let rx = watch::start(api, desc, t.namespace.clone(), params).await?;
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        (Method::GET, None) => {
            let lq = list_query(&q, &desc)?;
            let page = api.list(&desc, ns, &lq).await?;
            Ok(list_response(&desc, page, render))
        }
        (Method::GET, Some(name)) => {
            let obj = api.get(&desc, ns, name).await?;
            Ok(json_response(
                StatusCode::OK,
                &render_object(&desc, obj, render),
            ))
        }
        (Method::POST, None) => {
            let mut opts = write_options(&q, req.method(), req.headers())?;
            opts.requester = Some(requester.clone());
            let (parts, body) = read_body(req);
            let obj = decode_object(&parts, &body)?;
            if let Some(items) = bulk::list_items(desc.kind, &obj)? {
                let results = api.create_many(&desc, ns, items, &opts).await;
                return Ok(json_response(
                    StatusCode::OK,
                    &bulk::answer(&desc, &results, 201),
                ));
            }
            let w = api.create(&desc, ns, obj, &opts).await?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &w.object),
                &w.warnings,
            ))
        }
        (Method::PUT, Some(name)) => {
            let mut opts = write_options(&q, req.method(), req.headers())?;
            opts.requester = Some(requester.clone());
            let (parts, body) = read_body(req);
            let obj = decode_object(&parts, &body)?;
            let w = api.update(&desc, ns, name, obj, t.status(), &opts).await?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &w.object),
                &w.warnings,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let mut opts = write_options(&q, req.method(), req.headers())?;
            opts.requester = Some(requester.clone());
            let (parts, body) = read_body(req);
            let kind = PatchKind::from_content_type(&content_type(&parts), &desc)?;
            let patch = parse_body(kind, &body)?;
            let w = api
                .patch(&desc, ns, name, kind, patch, t.status(), &opts)
                .await?;
            let code = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_warnings(json_response(code, &w.object), &w.warnings))
        }
        (Method::DELETE, name) => {
            let (parts, body) = read_body(req);
            let body = if body.is_empty() {
                None
            } else if content_type(&parts).starts_with(crate::kinds::protobuf::MEDIA_TYPE) {
                Some(crate::kinds::protobuf::decode_delete_options(&body)?)
            } else {
                Some(serde_json::from_slice::<Value>(&body).map_err(|e| {
                    ApiError::BadRequest(format!("error decoding DeleteOptions: {e}"))
                })?)
            };
            let opts = DeleteOptions::from_request(
                q.get("propagationPolicy"),
                q.optional_bool("orphanDependents")?,
                q.get("dryRun") == Some("All"),
                body.as_ref(),
            )?;
            match name {
                Some(name) => {
                    let obj = api.delete(&desc, ns, name, &opts).await?;
                    Ok(json_response(StatusCode::OK, &obj))
                }
                None => {
                    let lq = list_query(&q, &desc)?;
                    let page = api.delete_collection(&desc, ns, &lq, &opts).await?;
                    Ok(list_response(&desc, page, Rendering::Object))
                }
            }
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}
