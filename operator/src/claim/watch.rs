//! Watches of binding Secrets, one per namespace that has claims.
//!
//! The operator may not list or watch Secrets cluster-wide (it holds Secrets access only in
//! tenant and provider namespaces), yet it must notice at once when a binding Secret is
//! deleted (that is how a token is rotated) or changed. So each namespace where a claim is
//! bound gets its own metadata-only watch of the Secrets labelled for claims; an event
//! re-reconciles the claim, and the SharedService it names (whose consumers Secret holds the
//! claim's token).
use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::task::AbortHandle;

use crate::api::labels::CLAIM as CLAIM_LABEL;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE};
use crate::api::{SharedService, SharedServiceClaim};
use crate::keyed::Keyed;

pub struct BindingWatches {
    client: Client,
    claims: Store<SharedServiceClaim>,
    index: Keyed<SharedServiceClaim>,
    claim_tx: UnboundedSender<ObjectRef<SharedServiceClaim>>,
    service_tx: UnboundedSender<ObjectRef<SharedService>>,
    running: Mutex<BTreeMap<String, AbortHandle>>,
}

impl BindingWatches {
    pub fn new(
        client: Client,
        claims: Store<SharedServiceClaim>,
        index: Keyed<SharedServiceClaim>,
        claim_tx: UnboundedSender<ObjectRef<SharedServiceClaim>>,
        service_tx: UnboundedSender<ObjectRef<SharedService>>,
    ) -> Self {
        BindingWatches {
            client,
            claims,
            index,
            claim_tx,
            service_tx,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts watching the binding Secrets of `namespace`, unless already watching.
    pub fn ensure(&self, namespace: &str) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if running.get(namespace).is_some_and(|h| !h.is_finished()) {
            return;
        }
        // Metadata only: the watch never carries a Secret's data (the tokens).
        let api = Api::<PartialObjectMeta<Secret>>::namespaced(self.client.clone(), namespace);
        let config = crate::watching::config()
            .labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE},{CLAIM_LABEL}"));
        let (claims, index, claim_tx, service_tx) = (
            self.claims.clone(),
            self.index.clone(),
            self.claim_tx.clone(),
            self.service_tx.clone(),
        );
        let ns = namespace.to_string();
        let task = tokio::spawn(async move {
            watcher(api, config)
                .default_backoff()
                .touched_objects()
                .for_each(|secret| {
                    if let Ok(secret) = secret
                        && let Some(id) = secret.labels().get(CLAIM_LABEL)
                    {
                        // By the claim's id: one lookup, whatever the number of claims.
                        for claim in super::claims_with_id(&index, id)
                            .into_iter()
                            .filter(|c| c.namespace.as_deref() == Some(&ns))
                        {
                            if let Some(c) = claims.get(&claim) {
                                let _ = service_tx.unbounded_send(ObjectRef::new(c.service_name()));
                            }
                            let _ = claim_tx.unbounded_send(claim);
                        }
                    }
                    futures::future::ready(())
                })
                .await;
        });
        running.insert(namespace.to_string(), task.abort_handle());
    }

    /// Stops watching `namespace` when no claim other than `leaving` is left there.
    pub fn release(&self, namespace: &str, leaving: &SharedServiceClaim) {
        let others = super::claims_in(&self.index, namespace)
            .iter()
            .any(|c| c.name != leaving.name_any());
        if others {
            return;
        }
        if let Ok(mut running) = self.running.lock()
            && let Some(handle) = running.remove(namespace)
        {
            handle.abort();
        }
    }
}

impl Drop for BindingWatches {
    fn drop(&mut self) {
        if let Ok(running) = self.running.lock() {
            for handle in running.values() {
                handle.abort();
            }
        }
    }
}
