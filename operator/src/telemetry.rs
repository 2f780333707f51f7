//! Logging through `tracing`, as text or JSON (`CITYCLOUD_LOG_FORMAT`), filtered by `RUST_LOG`.
use tracing_subscriber::EnvFilter;

pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // try_init: tests start several operators in one process.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
