//! The watch that tells [`Demand`](crate::quota::demand::Demand) which ReplicaSets wait for quota.
//!
//! Only the edges matter: a ReplicaSet starting or ceasing to wait re-reconciles its tenant.
//! Nothing of the ReplicaSets is kept but the names of those waiting, so the watch costs no
//! memory to speak of however many workloads the cluster runs.
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;

use crate::api::Tenant;
use crate::context::Shared;
use crate::quota::demand::waits_for_quota;

/// Watches every ReplicaSet until aborted; sends the tenant owning a namespace whose waiting
/// changed.
pub fn watch(
    client: Client,
    shared: Arc<Shared>,
    namespaces: super::cache::Indexed<Namespace>,
    pokes: UnboundedSender<ObjectRef<Tenant>>,
) -> JoinHandle<()> {
    let poke = move |namespace: &str| {
        if let Some(tenant) = super::owner_of(&namespaces, namespace) {
            let _ = pokes.unbounded_send(tenant);
        }
    };
    tokio::spawn(async move {
        // A relist is gathered whole, then replaces what we knew (missed deletes included).
        let mut relist: Vec<(String, String)> = Vec::new();
        let mut events = std::pin::pin!(
            watcher(
                Api::<ReplicaSet>::all(client),
                crate::watching::config().any_semantic()
            )
            .default_backoff()
        );
        let update = |rs: &ReplicaSet, waits: bool| {
            let (ns, name) = (rs.namespace().unwrap_or_default(), rs.name_any());
            if shared.demand.set_waiting(&ns, &name, waits) {
                tracing::debug!(namespace = %ns, replicaset = %name, waits, "quota demand");
                poke(&ns);
            }
        };
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(error) => {
                    tracing::warn!(%error, "watching ReplicaSets for quota demand");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => relist.clear(),
                watcher::Event::InitApply(rs) => {
                    if waits_for_quota(&rs) {
                        relist.push((rs.namespace().unwrap_or_default(), rs.name_any()));
                    }
                }
                watcher::Event::InitDone => {
                    for ns in shared.demand.replace_waiting(&relist) {
                        poke(&ns);
                    }
                    relist.clear();
                }
                watcher::Event::Apply(rs) => update(&rs, waits_for_quota(&rs)),
                watcher::Event::Delete(rs) => update(&rs, false),
            }
        }
    })
}
