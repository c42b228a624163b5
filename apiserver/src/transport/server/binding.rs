//! HTTP for a Task's `binding` subresource: POST of a Binding (see
//! `registry::binding`), answered 201 with the bound Task; for
//! `namespaces/NS/bindings`, many tasks bound in one request; and for its
//! `eviction` subresource, POST of an Eviction (see `registry::eviction`),
//! answered 201 with a `Success` Status, or 429 when the job's disruption
//! budget forbids it.

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::body::posted;
use super::request_info::ResourceTarget;
use super::respond::{Body, json_response};
use crate::error::ApiError;
use crate::storage::registry::eviction::Evicted;
use crate::storage::registry::{Api, Requester, WriteOptions, bulk};

pub(super) async fn request(
    api: Api,
    t: ResourceTarget,
    req: Request<Bytes>,
    requester: Requester,
) -> Result<Response<Body>, ApiError> {
    let (opts, binding) = posted(req, requester)?;
    let ns = t.namespace.as_deref();
    let Some(name) = t.name.as_deref() else {
        return bindings(&api, &t, binding, &opts).await;
    };
    let w = api.bind(&t.desc, ns, name, &binding, &opts).await?;
    Ok(json_response(StatusCode::CREATED, &w.object))
}

/// `POST namespaces/NS/bindings`: a `BindingList` binds each of its items
/// (answered with a `Status` each, see `registry::bulk`); a single
/// `Binding` names its task in `metadata.name` and is answered as
/// Kubernetes answers `POST bindings`, with a `Success` Status.
async fn bindings(
    api: &Api,
    t: &ResourceTarget,
    body: serde_json::Value,
    opts: &WriteOptions,
) -> Result<Response<Body>, ApiError> {
    let ns = t.namespace.as_deref();
    if let Some(items) = bulk::list_items("Binding", &body)? {
        let results = api.bind_many(&t.desc, ns, items, opts).await;
        return Ok(json_response(
            StatusCode::OK,
            &bulk::answer(&t.desc, &results, 201),
        ));
    }
    let mut results = api.bind_many(&t.desc, ns, vec![body], opts).await;
    let w = results.pop().expect("one binding, one result")?;
    Ok(json_response(
        StatusCode::CREATED,
        &bulk::answer(&t.desc, &[Ok(w)], 201)["items"][0],
    ))
}

/// `POST namespaces/NS/tasks/NAME/eviction`.
pub(super) async fn eviction(
    api: Api,
    t: ResourceTarget,
    req: Request<Bytes>,
    requester: Requester,
) -> Result<Response<Body>, ApiError> {
    let (opts, body) = posted(req, requester)?;
    let Some(name) = t.name.as_deref() else {
        return Err(ApiError::MethodNotAllowed);
    };
    let done = api
        .evict(&t.desc, t.namespace.as_deref(), name, &body, &opts)
        .await?;
    let message = match done {
        Evicted::Draining => format!("task {name} is draining"),
        Evicted::NothingToDo(why) => format!("nothing to evict: {why}"),
    };
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success", "code": 201, "message": message}),
    ))
}
