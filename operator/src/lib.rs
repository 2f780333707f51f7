//! CityCloud: a Kubernetes operator that gives every agency of a city government
//! isolated, consistently provisioned hosting and wires it to the city's shared services.
//!
//! Each controller is a pipeline: read what the spec points to, compute every desired object
//! with pure functions (`build`), apply them with one field manager, then write status.
#![forbid(unsafe_code)]

/// The API types live in their own crate, `citycloud-api` (no runtime dependencies, so clients
/// can use them); `crate::api::…` names them here as before.
pub use citycloud_api as api;
pub mod apply;
pub mod claim;
pub mod cli;
pub mod conditions;
pub mod context;
pub mod crds;
pub mod digest;
pub mod events;
pub mod feed;
pub mod finalizers;
pub mod gauges;
pub mod keyed;
pub mod leader;
pub mod metrics;
pub mod metrics_auth;
pub mod quantity;
pub mod quota;
pub mod quota_profile;
pub mod reconciler;
pub mod run;
pub mod server;
pub mod shared_service;
pub mod telemetry;
pub mod tenant;
pub mod tenant_request;
pub mod watching;

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
    /// The API server refused the object when the operator added its finalizer (an admission
    /// policy, a schema rule, RBAC): not a race, so not retried as one.
    #[error("adding the finalizer was refused ({reason}): {message}")]
    FinalizerRefused { reason: String, message: String },
    #[error("{0}")]
    Invalid(String),
    /// A step of a reconcile failed on one object: what users see in status and events.
    #[error("{step} {object}: {}", summary(source))]
    Step {
        /// What the operator was doing: "reading", "applying", "deleting", "retaining".
        step: &'static str,
        /// The object, as "Kind namespace/name".
        object: String,
        source: Box<Error>,
    },
}

impl Error {
    /// The error with the step and object it happened at.
    pub fn at(self, step: &'static str, object: impl Into<String>) -> Error {
        Error::Step {
            step,
            object: object.into(),
            source: Box::new(self),
        }
    }

    /// What failed, for the `error` label of the reconcile metrics: the step, or the kind of
    /// error when no step wraps it. Bounded: every value is a literal of this crate.
    pub fn metric_label(&self) -> &'static str {
        match self {
            // One word, as metric label values go ("writing the status of" → "writing").
            Error::Step { step, .. } => step.split(' ').next().unwrap_or(step),
            Error::Kube(_) => "kube",
            Error::Serialize { .. } => "serialize",
            Error::Finalizer(_) => "finalizer",
            Error::FinalizerRefused { .. } => "finalizer_refused",
            Error::Invalid(_) => "invalid",
        }
    }

    /// Every reason [`Error::reason`] gives: a condition False with one of these says the
    /// operator failed a step, not that it decided anything.
    pub const REASONS: &[&str] = &[
        api::conditions::reason::READ_FAILED,
        api::conditions::reason::APPLY_FAILED,
        api::conditions::reason::DELETE_FAILED,
        api::conditions::reason::RETAIN_FAILED,
        api::conditions::reason::RECONCILE_FAILED,
    ];

    /// A condition reason for the failed step (CamelCase, as the API conventions want).
    pub fn reason(&self) -> &'static str {
        use api::conditions::reason;
        match self {
            Error::Step { step, .. } => match *step {
                "reading" => reason::READ_FAILED,
                "applying" => reason::APPLY_FAILED,
                "deleting" => reason::DELETE_FAILED,
                "retaining" => reason::RETAIN_FAILED,
                _ => reason::RECONCILE_FAILED,
            },
            _ => reason::RECONCILE_FAILED,
        }
    }
}

/// What went wrong, in the API server's own words when it refused (its message names the
/// field, the policy or the quota), without the client's debug dump.
fn summary(error: &Error) -> String {
    match error {
        Error::Kube(kube::Error::Api(status)) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Attaches the step and object to an error, as [`Error::at`] does.
pub trait StepExt<T> {
    fn at(self, step: &'static str, object: impl Into<String>) -> Result<T>;
}

impl<T, E: Into<Error>> StepExt<T> for std::result::Result<T, E> {
    fn at(self, step: &'static str, object: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().at(step, object))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
