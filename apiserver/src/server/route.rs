//! From a request's path to what it names: the resource target (kind,
//! namespace, name, subresource) and the authorization attributes.

use std::sync::Arc;

use http::Method;

use super::{Query, Subresource, Target};
use crate::auth::Attributes;
use crate::error::ApiError;
use crate::registry::ResourceDesc;
use crate::rest::Api;

/// The authorization attributes of a resource request.
pub(super) fn attributes(t: &Target, method: &Method, query: Option<&str>) -> Attributes {
    let query = Query::parse(query);
    let watch = query.flag("watch");
    let verb = match (method, t.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    };
    Attributes {
        verb: verb.to_owned(),
        group: t.desc.group.to_owned(),
        resource: t.desc.plural.to_owned(),
        subresource: t.sub.map(|s| s.name().to_owned()),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        field_selector: query.get("fieldSelector").map(str::to_owned),
    }
}

/// Maps `/api/v1/...` and `/apis/<g>/<v>/...` to a resource target.
pub(super) fn resolve(api: &Api, segs: &[&str]) -> Result<Target, ApiError> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::PathNotFound),
    };
    let find = |plural: &str| {
        api.registry
            .find(group, version, plural)
            .ok_or(ApiError::PathNotFound)
    };
    let t = |desc: Arc<ResourceDesc>,
             ns: Option<&str>,
             name: Option<&str>,
             sub: Option<Subresource>| Target {
        desc,
        namespace: ns.map(str::to_owned),
        name: name.map(str::to_owned),
        sub,
    };
    let status = Some(Subresource::Status);
    let scale = |desc: Arc<ResourceDesc>, ns: Option<&str>, name: &str| {
        t(desc, ns, Some(name), Some(Subresource::Scale))
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if api
                .registry
                .find(group, version, plural)
                .is_some_and(|d| d.namespaced) =>
        {
            let desc = find(plural)?;
            match tail {
                [] => Ok(t(desc, Some(ns), None, None)),
                [name] => Ok(t(desc, Some(ns), Some(name), None)),
                [name, "status"] if desc.status_subresource => {
                    Ok(t(desc, Some(ns), Some(name), status))
                }
                [name, "scale"] if desc.scale.is_some() => Ok(scale(desc, Some(ns), name)),
                [name, "binding"] if crate::rest::binding::is_bindable(&desc) => {
                    Ok(t(desc, Some(ns), Some(name), Some(Subresource::Binding)))
                }
                _ => Err(ApiError::PathNotFound),
            }
        }
        [plural, tail @ ..] => {
            let desc = find(plural)?;
            match tail {
                [] => Ok(t(desc, None, None, None)),
                [name] if !desc.namespaced => Ok(t(desc, None, Some(name), None)),
                [name, "status"] if !desc.namespaced && desc.status_subresource => {
                    Ok(t(desc, None, Some(name), status))
                }
                [name, "scale"] if !desc.namespaced && desc.scale.is_some() => {
                    Ok(scale(desc, None, name))
                }
                [name, "finalize"] if desc.kind == "Namespace" => {
                    Ok(t(desc, None, Some(name), None))
                }
                _ => Err(ApiError::PathNotFound),
            }
        }
        _ => Err(ApiError::PathNotFound),
    }
}
