//! Corral's Kubernetes-compatible API server.
//!
//! Serves the `corral.dev/v1alpha1` kinds and the core kinds clients need
//! (Namespace, ConfigMap, Secret, Event, Lease) over the [`corral_store::Store`],
//! so that kubectl, Helm and kube-rs work against Corral unmodified.
//!
//! - [`registry`]: what is served, from the same schemas as the CRDs.
//! - [`rest`]: the verbs (get, list, create, update, patch, delete) and their
//!   resourceVersion / generation / finalizer semantics.
//! - [`watch`]: watch streams from a list or a resourceVersion.
//! - [`admission`] and [`schema_check`]: schema and rule validation.
//! - [`discovery`], [`openapi`], [`openapi_v2`], [`table`]: what clients read to understand it.
//! - [`ssa`]: managedFields and server-side apply.
//! - [`auth`]: authentication (tokens, client certificates) and the authorization layer.
//! - [`server`]: TLS, routing. [`pki`]: certificates and tokens.
//!
//! - [`cache`]: the watch cache that serves lists and watches.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod discovery;
pub mod error;
pub mod events_v1;
pub mod impersonation;
pub mod logs;
pub mod metrics;
pub mod node_authorizer;
pub mod node_certificates;
pub mod objects;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod rbac;
pub mod registry;
pub mod render;
pub mod rest;
pub mod reviews;
pub mod schema_check;
pub mod selectors;
pub mod server;
pub mod ssa;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watch;

pub use auth::{AllowAuthenticated, Authn, Authorizer};
pub use error::ApiError;
pub use registry::Registry;
pub use rest::Api;
pub use server::{
    InFlight, InFlightLimits, RunningServer, ServeOptions, serve, serve_with_authorizer,
    serve_with_options,
};
