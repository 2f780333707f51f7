//! The operator's HTTP endpoints: `/metrics`, `/healthz` (alive) and `/readyz` (controllers
//! have started and their caches are filled).
//!
//! `/metrics` tells every tenant's usage, so it is served only to callers the API server
//! allows `get` on `/metrics` (see [`crate::metrics_auth`]); `/healthz` and `/readyz` stay open
//! for the kubelet's probes and tell nothing about tenants.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::context::Shared;
use crate::metrics_auth::{Decision, MetricsAuth};

/// Who may read `/metrics`.
pub enum MetricsAccess {
    /// Callers whose bearer token the API server allows `get` on `/metrics`.
    Authorized(Box<MetricsAuth>),
    /// Anyone who reaches the port (`--metrics-insecure`: local development only).
    Insecure,
}

struct AppState {
    shared: Arc<Shared>,
    access: MetricsAccess,
}

pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    access: MetricsAccess,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let secured = matches!(access, MetricsAccess::Authorized(_));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(AppState { shared, access }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    if secured {
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics (to authorised callers only)");
    } else {
        tracing::warn!(%addr, "serving /healthz, /readyz and /metrics to ANYONE (--metrics-insecure): every tenant's usage is readable");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let MetricsAccess::Authorized(auth) = &state.access {
        // A header that is not visible ASCII carries no bearer token we could accept.
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth.decide(authorization).await {
            Ok(Decision::Allowed) => {}
            Ok(Decision::Unauthenticated) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "Unauthorized: send a bearer token of a user allowed get on /metrics\n",
                )
                    .into_response();
            }
            Ok(Decision::Forbidden) => {
                return (
                    StatusCode::FORBIDDEN,
                    "Forbidden: this user may not get /metrics (bind the metrics-reader ClusterRole)\n",
                )
                    .into_response();
            }
            Err(error) => {
                tracing::warn!(%error, "could not decide who may read /metrics");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not check access to /metrics with the API server\n",
                )
                    .into_response();
            }
        }
    }
    state.shared.metrics.encode().into_response()
}

async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if state.shared.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
