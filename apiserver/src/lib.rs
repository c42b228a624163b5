//! Corral's Kubernetes-compatible API server.
//!
//! Serves the `corral.dev/v1alpha1` kinds and the core kinds clients need
//! (Namespace, ConfigMap, Secret, Event, Lease, the RBAC kinds) over the
//! [`corral_store::Store`], so that kubectl, Helm and kube-rs work against
//! Corral unmodified. Three rooms:
//!
//! - [`transport`]: how requests arrive and who may make them — the
//!   server and its layers (request info, audit, deadline, authentication,
//!   in-flight limits, authorization), RBAC and the Node authorizer,
//!   impersonation, access reviews, node certificates, metrics, the task
//!   log proxy, and the PKI.
//! - [`storage`]: what requests do to the store — the per-kind verbs with
//!   their resourceVersion, generation and finalizer semantics
//!   ([`storage::registry`], as Kubernetes names per-resource storage), the
//!   watch cache and watches, admission and schema checks, server-side
//!   apply and patches.
//! - [`kinds`]: what is served and how it is shown — the catalog of kinds
//!   (from the same schemas as the CRDs, and views of stored kinds),
//!   discovery, OpenAPI, tables, protobuf.

pub mod error;
pub mod kinds;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;

pub use error::ApiError;
pub use kinds::catalog::Catalog;
pub use storage::registry::Api;
pub use transport::auth::{AllowAuthenticated, Authn, Authorizer};
pub use transport::server::{
    InFlight, InFlightLimits, RunningServer, ServeOptions, serve, serve_with_authorizer,
    serve_with_options,
};
