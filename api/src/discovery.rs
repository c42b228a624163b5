//! Well-known labels of the EndpointSlices Corral's discovery controller
//! keeps for each service job (`discovery.k8s.io/v1`), read by whoever looks
//! a job's endpoints up: the command line, node agents resolving an
//! `endpointRef`, and stock Kubernetes clients.

/// The label naming the service (here: the job) a slice serves.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Corral's discovery controller, as [`MANAGED_BY_LABEL`] names it.
pub const ENDPOINTS_MANAGER: &str = "endpoints-controller.corral.dev";
