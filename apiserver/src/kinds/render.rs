//! How a client asked to receive objects, read from its Accept header as
//! kube-apiserver reads it: as themselves, as a `meta.k8s.io` Table
//! (`kubectl get`), or as `PartialObjectMetadata` (client-go's metadata
//! client and informers, controller-runtime's `OnlyMetadata` watches,
//! kube-rs' `metadata_watcher`), which carries only each object's metadata.
//!
//! The media ranges are taken in the client's order and the first one the
//! server can produce wins. Bodies are JSON; a client asking for YAML gets
//! JSON, which every YAML reader reads. A header naming nothing the server
//! produces is a 406.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::kinds::catalog::ResourceDesc;
use crate::kinds::table::{IncludeObject, table};

/// The form objects are sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendering {
    /// The objects themselves.
    Object,
    /// A Table with the kind's printer columns; rows carry the object as
    /// `includeObject` says.
    Table(IncludeObject),
    /// `PartialObjectMetadata` (and `…List`) of this `meta.k8s.io` version.
    Metadata(MetaVersion),
}

/// The `meta.k8s.io` versions that serve Tables and partial metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaVersion {
    /// `meta.k8s.io/v1`.
    V1,
    /// `meta.k8s.io/v1beta1`.
    V1beta1,
}

impl MetaVersion {
    fn parse(v: &str) -> Option<Self> {
        match v {
            "v1" => Some(MetaVersion::V1),
            "v1beta1" => Some(MetaVersion::V1beta1),
            _ => None,
        }
    }

    /// `meta.k8s.io/v1`.
    pub fn api_version(self) -> &'static str {
        match self {
            MetaVersion::V1 => "meta.k8s.io/v1",
            MetaVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// The media types the server answers in, for the 406's message.
const PRODUCED: &str = "application/json, application/yaml";

/// Reads the Accept header of a read (`include` is its `includeObject`).
pub fn rendering(accept: &str, include: IncludeObject) -> Result<Rendering, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Rendering::Object);
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let (mut as_, mut group, mut version) = (None, None, None);
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                match k.trim() {
                    "as" => as_ = Some(v.trim()),
                    "g" => group = Some(v.trim()),
                    "v" => version = Some(v.trim()),
                    _ => {}
                }
            }
        }
        let json_like = matches!(
            media.as_str(),
            "application/json" | "application/yaml" | "application/*" | "*/*" | "*"
        );
        if !json_like {
            continue;
        }
        let meta = (group == Some("meta.k8s.io"))
            .then(|| version.and_then(MetaVersion::parse))
            .flatten();
        match (as_, meta) {
            (None, _) => return Ok(Rendering::Object),
            (Some("Table"), Some(_)) => return Ok(Rendering::Table(include)),
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some(v)) => {
                return Ok(Rendering::Metadata(v));
            }
            _ => {}
        }
    }
    Err(ApiError::NotAcceptable(format!(
        "only the following media types are accepted: {PRODUCED}"
    )))
}

/// One object of `desc` in the form `render` asks for (a Table has one row).
pub fn render_object(desc: &ResourceDesc, obj: Value, render: Rendering) -> Value {
    match render {
        Rendering::Table(include) => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            table(desc, &[obj], &rv, None, include)
        }
        Rendering::Metadata(v) => partial_metadata(&obj, v),
        Rendering::Object => obj,
    }
}

/// A list's `metadata`: its resourceVersion, and its continue token if any.
pub fn list_metadata(resource_version: &str, continue_token: Option<&str>) -> Value {
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    metadata
}

/// `obj` as `PartialObjectMetadata`.
pub fn partial_metadata(obj: &Value, version: MetaVersion) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": version.api_version(),
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A `PartialObjectMetadataList` of `items` at `resource_version`.
pub fn partial_metadata_list(
    items: impl Iterator<Item = Value>,
    resource_version: &str,
    continue_token: Option<&str>,
    version: MetaVersion,
) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": version.api_version(),
        "metadata": list_metadata(resource_version, continue_token),
        "items": items.map(|o| partial_metadata(&o, version)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    const METADATA_CLIENT: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";

    #[test]
    fn the_first_form_the_server_produces_wins() {
        let read = |accept| rendering(accept, IncludeObject::Metadata);
        for (accept, want) in [
            ("", Rendering::Object),
            ("application/json", Rendering::Object),
            ("*/*", Rendering::Object),
            ("application/yaml", Rendering::Object),
            ("application/json;stream=watch", Rendering::Object),
            (
                "application/vnd.kubernetes.protobuf, application/json",
                Rendering::Object,
            ),
            (KUBECTL_GET, Rendering::Table(IncludeObject::Metadata)),
            (METADATA_CLIENT, Rendering::Metadata(MetaVersion::V1)),
            (
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1",
                Rendering::Metadata(MetaVersion::V1beta1),
            ),
            // An unknown rendering falls through to the next range.
            (
                "application/json;as=Other;g=meta.k8s.io;v=v1, application/json",
                Rendering::Object,
            ),
        ] {
            assert_eq!(read(accept).ok(), Some(want), "{accept}");
        }
        for unacceptable in [
            "text/html",
            "application/vnd.kubernetes.protobuf",
            "application/json;as=Table;g=meta.k8s.io;v=v2",
            "application/json;as=PartialObjectMetadata;g=example.com;v=v1",
        ] {
            assert!(
                matches!(read(unacceptable), Err(ApiError::NotAcceptable(_))),
                "{unacceptable}"
            );
        }
    }

    #[test]
    fn partial_metadata_keeps_only_the_metadata() {
        let job = json!({"apiVersion": "corral.dev/v1alpha1", "kind": "Job",
                         "metadata": {"name": "j", "resourceVersion": "7"}, "spec": {"instances": 2}});
        assert_eq!(
            partial_metadata(&job, MetaVersion::V1),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "j", "resourceVersion": "7"}})
        );
        let list = partial_metadata_list([job].into_iter(), "9", Some("c"), MetaVersion::V1beta1);
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["apiVersion"], "meta.k8s.io/v1beta1");
        assert_eq!(
            list["metadata"],
            json!({"resourceVersion": "9", "continue": "c"})
        );
        assert_eq!(list["items"][0]["metadata"]["name"], "j");
    }
}
