//! What is served and how it is shown: the catalog of kinds (Corral's from
//! the CRD schemas, the core and RBAC kinds from k8s-openapi, views such as
//! events.k8s.io Events over stored core Events), discovery, OpenAPI v2 and
//! v3, tables, the Accept header's forms, and protobuf bodies.

pub mod catalog;
pub mod discovery;
pub mod events_v1;
pub mod openapi;
pub mod openapi_v2;
pub mod protobuf;
pub mod render;
pub mod table;
