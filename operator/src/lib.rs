//! CityCloud: a Kubernetes operator that gives every agency of a city government
//! isolated, consistently provisioned hosting and wires it to the city's shared services.
//!
//! Each controller is a pipeline: read what the spec points to, compute every desired object
//! with pure functions (`build`), apply them with one field manager, then write status.

pub mod api;
pub mod apply;
pub mod claim;
pub mod cli;
pub mod conditions;
pub mod context;
pub mod crds;
pub mod finalizers;
pub mod leader;
pub mod metrics;
pub mod metrics_auth;
pub mod quantity;
pub mod quota;
pub mod run;
pub mod server;
pub mod shared_service;
pub mod telemetry;
pub mod tenant;

/// The operator's version, as `citycloud-operator version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The single field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "citycloud-operator";

/// Errors of a reconcile: each is retried with backoff, and none stops the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing {kind}: {source}")]
    Serialize {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
