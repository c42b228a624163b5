//! How requests arrive and who may make them: the server and its layers,
//! authentication, authorization (RBAC, the Node authorizer), impersonation,
//! the audit log, access reviews, node certificates, metrics, the task log
//! proxy, and the TLS material.

pub mod audit;
pub mod auth;
pub mod impersonation;
pub mod logs;
pub mod metrics;
pub mod node_authorizer;
pub mod node_certificates;
pub mod pki;
pub mod plans;
pub mod rbac;
pub mod reviews;
pub mod server;
pub mod ui;
