//! `citycloud-operator run`: every controller and the HTTP endpoints, until shutdown.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use kube::Client;
use tokio::sync::watch;

use crate::context::{Context, Shared};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `/metrics`, `/healthz` and `/readyz` listen; `None` serves nothing (tests).
    pub listen: Option<SocketAddr>,
    /// How many objects each controller reconciles at once.
    pub concurrency: u16,
    /// The operator's ServiceAccount when it runs in the cluster.
    pub identity: Option<crate::context::OperatorIdentity>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: None,
            concurrency: 8,
            identity: None,
        }
    }
}

/// Runs until `shutdown` resolves, then lets in-flight reconciles finish.
pub async fn run(
    client: Client,
    options: Options,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let ctx = Context::new(client, shared.clone(), options.identity.clone());
    let tenants = tokio::spawn(crate::tenant::run(
        ctx.clone(),
        options.concurrency,
        stopped(),
    ));
    let profiles = tokio::spawn(crate::quota::profile::run(ctx.clone(), stopped()));
    // The claim controller re-reconciles a SharedService when a claim's token changes.
    let (service_pokes, pokes) = crate::shared_service::pokes();
    let claims = tokio::spawn(crate::claim::run(
        ctx.clone(),
        options.concurrency,
        service_pokes,
        stopped(),
    ));
    let services = tokio::spawn(crate::shared_service::run(
        ctx.clone(),
        options.concurrency,
        pokes,
        stopped(),
    ));
    let server = options
        .listen
        .map(|addr| tokio::spawn(crate::server::serve(addr, shared.clone(), stopped())));
    shared.ready.store(true, Ordering::Relaxed);
    tracing::info!("citycloud-operator running");

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight reconciles");
    shared.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    tenants.await?;
    claims.await?;
    services.await?;
    profiles.await?;
    if let Some(server) = server {
        server.map(|r| r.map_err(anyhow::Error::from)).await??;
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
