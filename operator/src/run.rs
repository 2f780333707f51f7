//! `citycloud-operator run`: every controller and the HTTP endpoints, until shutdown.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::FutureExt;
use kube::Client;
use tokio::sync::watch;

use crate::context::{Context, Shared};
use crate::leader::{Elector, LeaderElection};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `/metrics`, `/healthz` and `/readyz` listen; `None` serves nothing (tests).
    pub listen: Option<SocketAddr>,
    /// How many objects each controller reconciles at once.
    pub concurrency: u16,
    /// The operator's ServiceAccount when it runs in the cluster.
    pub identity: Option<crate::context::OperatorIdentity>,
    /// Reconcile only while holding this Lease; `None` reconciles at once (one replica).
    pub leader_election: Option<LeaderElection>,
    /// Serve `/metrics` to anyone, without asking the API server who may read it (local
    /// development only: it tells every tenant's usage).
    pub metrics_insecure: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: None,
            concurrency: 12,
            identity: None,
            leader_election: None,
            metrics_insecure: false,
        }
    }
}

/// Runs until `shutdown` resolves, then lets in-flight reconciles finish. With leader
/// election, waits as a standby until it holds the lease; losing the lease stops the
/// controllers and returns an error (the process exits and restarts as a candidate).
pub async fn run(
    client: Client,
    options: Options,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let on_shutdown = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight reconciles");
            let _ = stop_tx.send(true);
        })
    };
    let access = if options.metrics_insecure {
        crate::server::MetricsAccess::Insecure
    } else {
        crate::server::MetricsAccess::Authorized(Box::new(crate::metrics_auth::MetricsAuth::new(
            client.clone(),
        )))
    };
    let server = options.listen.map(|addr| {
        tokio::spawn(crate::server::serve(
            addr,
            shared.clone(),
            access,
            stopped(),
        ))
    });

    let mut elector = None;
    if let Some(config) = options.leader_election.clone() {
        // A standby is healthy and ready: it serves its metrics and waits.
        shared.ready.store(true, Ordering::Relaxed);
        tracing::info!(lease = %config.lease, identity = %config.identity, "waiting to lead");
        let mut candidate = Elector::new(client.clone(), config);
        let won = tokio::select! {
            _ = stopped() => false,
            won = acquire(&mut candidate) => won,
        };
        if !won {
            return finish(server, on_shutdown).await;
        }
        tracing::info!("leading");
        elector = Some(candidate);
    }
    shared.metrics.leader.set(1);
    let lost = Arc::new(AtomicBool::new(false));
    let renewal =
        elector.map(|e| tokio::spawn(keep_leading(e, stop_tx.clone(), lost.clone(), stopped())));

    // Before the first watch starts: how watches list (memory at startup).
    crate::watching::probe(&client).await;
    let ctx = Context::new(client, shared.clone(), options.identity.clone());
    // One watch per kind for the controllers that follow it (see `feed`): Tenants (four
    // controllers), SharedServiceClaims (three), Services, Namespaces, SharedServices and
    // QuotaProfiles (two each).
    let (mut tenant_feed, tenant_store) = crate::feed::Feed::new();
    let (mut profile_feed, profile_store) = crate::feed::Feed::new();
    let (mut shared_service_feed, shared_service_store) = crate::feed::Feed::new();
    let mut namespace_feed = crate::feed::Feed::unstored();
    let (mut claim_feed, claim_store) = crate::feed::Feed::new();
    let mut service_feed = crate::feed::Feed::unstored();
    let tenants = tokio::spawn(crate::tenant::run(
        ctx.clone(),
        options.concurrency,
        crate::tenant::Feeds {
            tenants: tenant_store,
            tenant_events: tenant_feed.subscribe(),
            profiles: profile_store.clone(),
            profile_events: profile_feed.subscribe(),
            claim_events: claim_feed.subscribe(),
            namespace_events: namespace_feed.subscribe(),
        },
        stopped(),
    ));
    let profiles = tokio::spawn(crate::quota_profile::run(
        ctx.clone(),
        profile_store,
        profile_feed.subscribe(),
        tenant_feed.subscribe(),
        stopped(),
    ));
    let requests = tokio::spawn(crate::tenant_request::run(
        ctx.clone(),
        tenant_feed.subscribe(),
        stopped(),
    ));
    // The claim controller re-reconciles a SharedService when a claim's token changes.
    let (service_pokes, pokes) = crate::shared_service::pokes();
    let claim_feeds = crate::claim::Feeds {
        tenant_events: tenant_feed.subscribe(),
        claim_events: claim_feed.subscribe(),
        claims: claim_store,
        service_events: service_feed.subscribe(),
        shared_services: shared_service_store.clone(),
        shared_service_events: shared_service_feed.subscribe(),
        namespace_events: namespace_feed.subscribe(),
    };
    let claims = tokio::spawn(crate::claim::run(
        ctx.clone(),
        options.concurrency,
        claim_feeds,
        service_pokes,
        stopped(),
    ));
    let services = tokio::spawn(crate::shared_service::run(
        ctx.clone(),
        options.concurrency,
        pokes,
        crate::shared_service::Feeds {
            shared_services: shared_service_store,
            shared_service_events: shared_service_feed.subscribe(),
            claim_events: claim_feed.subscribe(),
            service_events: service_feed.subscribe(),
        },
        stopped(),
    ));
    let client = &ctx.client;
    let watches = [
        tokio::spawn(tenant_feed.run(crate::feed::watch_all(client))),
        tokio::spawn(claim_feed.run(crate::feed::watch_all(client))),
        tokio::spawn(service_feed.run(crate::feed::watch_all(client))),
        tokio::spawn(namespace_feed.run(crate::feed::watch_all(client))),
        tokio::spawn(shared_service_feed.run(crate::feed::watch_all(client))),
        tokio::spawn(profile_feed.run(crate::feed::watch_all(client))),
    ];
    shared.ready.store(true, Ordering::Relaxed);
    tracing::info!("citycloud-operator running");

    stopped().await;
    shared.ready.store(false, Ordering::Relaxed);
    tenants.await?;
    claims.await?;
    services.await?;
    profiles.await?;
    requests.await?;
    // Their subscribers are gone; they would end at their next event.
    for watch in watches {
        watch.abort();
    }
    shared.metrics.leader.set(0);
    if let Some(renewal) = renewal {
        let elector = renewal.await?;
        if lost.load(Ordering::Relaxed) {
            finish(server, on_shutdown).await?;
            anyhow::bail!("lost the leader lease: stopped reconciling; restart to stand by again");
        }
        // Hand over at once rather than after the lease expires.
        if let Err(error) = elector.release().await {
            tracing::warn!(%error, "could not release the leader lease; it expires by itself");
        }
    }
    finish(server, on_shutdown).await
}

async fn finish(
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    on_shutdown: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    on_shutdown.abort();
    if let Some(server) = server {
        server.map(|r| r.map_err(anyhow::Error::from)).await??;
    }
    Ok(())
}

/// Tries for the lease every renew period until it is ours.
async fn acquire(elector: &mut Elector) -> bool {
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "could not read or take the leader lease"),
        }
        tokio::time::sleep(elector.config().renew_every()).await;
    }
}

/// Renews the lease until `stopped`; stops everything (sets `lost`) when another replica
/// holds it or it could not be renewed within the renew deadline. Returns the elector so
/// the lease can be released.
async fn keep_leading(
    mut elector: Elector,
    stop: Arc<watch::Sender<bool>>,
    lost: Arc<AtomicBool>,
    stopped: impl Future<Output = ()>,
) -> Elector {
    let mut stopped = std::pin::pin!(stopped);
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = &mut stopped => return elector,
            _ = tokio::time::sleep(elector.config().renew_every()) => {}
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::error!("another replica holds the leader lease");
                break;
            }
            Err(error) => tracing::warn!(%error, "could not renew the leader lease"),
        }
        if renewed.elapsed() >= elector.config().renew_deadline() {
            tracing::error!("could not renew the leader lease in time");
            break;
        }
    }
    lost.store(true, Ordering::Relaxed);
    let _ = stop.send(true);
    elector
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
