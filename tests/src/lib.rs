//! The test bed: a real local control plane (etcd, kube-apiserver, kube-controller-manager,
//! built from their Go modules by `tests/cluster/build.sh`) and the identities to act on it.
//!
//! Integration tests call [`TestEnv::new`]; the first call in a test binary starts one control
//! plane for the whole run (or attaches to the one named by `CITYCLOUD_CLUSTER`), later calls
//! share it. Every test gets a unique name prefix so tests run in parallel.

pub mod binaries;
pub mod builders;
pub mod controlplane;
pub mod env;
pub mod fixtures;
pub mod http;
pub mod identity;
pub mod launch;
pub mod metrics_reader;
pub mod node;
pub mod operator;
pub mod phase;
pub mod poll;
pub mod relay;

pub use controlplane::ControlPlane;
pub use env::{TestEnv, eventually};
pub use identity::Identity;

/// Errors of the test bed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the control plane's binaries failed: {0}")]
    Build(String),
    #[error("{component} did not become ready within {seconds}s; its log is at {log}")]
    NotReady {
        component: String,
        seconds: u64,
        log: String,
    },
    #[error("{0}")]
    Pki(String),
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A step that reports in words (helm, applying samples).
    #[error("{0}")]
    Step(String),
}

impl From<String> for Error {
    fn from(what: String) -> Self {
        Error::Step(what)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}
