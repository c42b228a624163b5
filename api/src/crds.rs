//! CustomResourceDefinitions generated from the types.
//!
//! `crds/` in the repository holds [`render_all`]'s output (written by
//! `corral crds --out crds`); a test fails when the two differ, so the YAML is
//! never edited by hand.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Job, Node, Quota, Reservation, Role, Task};

/// Why CRDs could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// YAML serialization failed.
    #[error("rendering {name} as YAML")]
    Render {
        /// The CRD's name.
        name: String,
        /// The cause.
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// Every Corral CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        Role::crd(),
        Quota::crd(),
        Reservation::crd(),
        Job::crd(),
        Task::crd(),
        Node::crd(),
    ]
}

/// `(file name, YAML)` for every CRD: `jobs.corral.dev.yaml`, …
pub fn render_all() -> Result<Vec<(String, String)>, CrdError> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_saphyr::to_string(&crd).map_err(|source| CrdError::Render {
                name: name.clone(),
                source,
            })?;
            Ok((
                format!("{name}.yaml"),
                format!("# Generated from api/ by `corral crds --out crds`. Do not edit.\n{body}"),
            ))
        })
        .collect()
}
