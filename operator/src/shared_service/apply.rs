//! Applies a SharedService's consumers Secrets, one per tenant, each on its own: a failure is
//! that tenant's (reported in the ConsumersPublished condition) and stops none of the others.
//! The Secrets of tenants left with no bound claim are removed by one deletecollection.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use tracing::warn;

use super::CONTROLLER;
use super::build::{self, Failure, Tokens};
use crate::api::SharedService;
use crate::api::labels::TENANT;
use crate::context::Context;
use crate::digest::sha256_hex;

/// A consumers Secret is applied again after this long even when its content did not change:
/// it bounds how long a write the operator cannot see (an admin's delete, a stale write of a
/// replica that lost its lease) can last.
const REAPPLY: Duration = Duration::from_secs(600);
/// The consumers Secrets applied so far, by (SharedService uid, tenant): the hash of their
/// content, the resourceVersion the API server answered and when.
#[derive(Default)]
pub struct Applied {
    inner: Mutex<BTreeMap<(String, String), Record>>,
}

#[derive(Clone)]
pub struct Record {
    hash: String,
    resource_version: Option<String>,
    at: Instant,
}

impl Applied {
    fn current(&self, key: &(String, String), hash: &str) -> bool {
        self.inner.lock().is_ok_and(|m| {
            m.get(key)
                .is_some_and(|r| r.hash == hash && r.at.elapsed() < REAPPLY)
        })
    }

    fn get(&self, key: &(String, String)) -> Option<Record> {
        self.inner.lock().ok()?.get(key).cloned()
    }

    fn set(&self, key: (String, String), record: Option<Record>) {
        if let Ok(mut m) = self.inner.lock() {
            match record {
                Some(r) => m.insert(key, r),
                None => m.remove(&key),
            };
        }
    }

    /// Forgets the service's tenants not in `keep` (their Secrets are being removed).
    fn retain(&self, uid: &str, keep: &BTreeSet<String>) {
        if let Ok(mut m) = self.inner.lock() {
            m.retain(|(u, tenant), _| u != uid || keep.contains(tenant));
        }
    }
}

/// Applies every tenant's consumers Secret but those of `unreadable` tenants (some token
/// could not be read: their Secret stays as it is), then removes the Secrets of tenants with
/// no bound claim any more. Returns what failed.
pub async fn apply_all(
    ctx: &Context,
    applied: &Applied,
    service: &SharedService,
    secrets: &[Secret],
    tokens: &Tokens,
    unreadable: &BTreeSet<String>,
) -> Vec<Failure> {
    let mut failures = Vec::new();
    for secret in secrets.iter().filter(|s| {
        s.labels()
            .get(TENANT)
            .is_none_or(|t| !unreadable.contains(t))
    }) {
        if let Err(failure) = publish(ctx, applied, service, secret).await {
            failures.push(failure);
        }
    }
    // Revocation does not wait for the others: whatever failed above, the Secrets of tenants
    // left with no bound claim go.
    if let Err(failure) =
        remove_stale(ctx, applied, service, &tokens.keys().cloned().collect()).await
    {
        failures.push(failure);
    }
    failures
}

/// Applies one tenant's consumers Secret whole, unless what it holds was applied already.
pub async fn publish(
    ctx: &Context,
    applied: &Applied,
    service: &SharedService,
    secret: &Secret,
) -> std::result::Result<(), Failure> {
    let tenant = secret.labels().get(TENANT).cloned().unwrap_or_default();
    let key = (service.uid().unwrap_or_default(), tenant.clone());
    let hash = serde_json::to_vec(secret)
        .map(|bytes| sha256_hex(&bytes))
        .unwrap_or_default();
    if applied.current(&key, &hash) {
        return Ok(());
    }
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &service.spec.endpoint.namespace);
    let name = secret.name_any();
    match api
        .patch(&name, &crate::apply::params(), &Patch::Apply(secret))
        .await
    {
        Ok(live) => {
            let resource_version = live.metadata.resource_version.clone();
            if applied.get(&key).and_then(|r| r.resource_version) != resource_version {
                count_write(ctx);
            }
            applied.set(
                key,
                Some(Record {
                    hash,
                    resource_version,
                    at: Instant::now(),
                }),
            );
            Ok(())
        }
        Err(e) => {
            warn!(secret = %name, error = %e, "could not write a consumers Secret");
            applied.set(key, None);
            Err(Failure {
                tenant: Some(tenant),
                error: e.to_string(),
            })
        }
    }
}

/// Deletes the service's consumers Secrets of tenants not in `keep`, by label: the operator
/// can neither list nor read Secrets in a provider namespace. The admission policy
/// citycloud-operator-secrets refuses it any Secret there not labelled and named as its own.
pub async fn remove_stale(
    ctx: &Context,
    applied: &Applied,
    service: &SharedService,
    keep: &BTreeSet<String>,
) -> std::result::Result<(), Failure> {
    applied.retain(&service.uid().unwrap_or_default(), keep);
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &service.spec.endpoint.namespace);
    let params = ListParams::default().labels(&build::stale_consumers(service, keep));
    match api
        .delete_collection(&DeleteParams::default(), &params)
        .await
    {
        // The answer lists what was deleted (our own Secrets); it is only counted.
        Ok(deleted) => {
            let n = deleted.left().map_or(0, |list| list.items.len());
            (0..n).for_each(|_| count_write(ctx));
            Ok(())
        }
        // The namespace does not exist: nothing to remove.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => {
            warn!(service = %service.name_any(), error = %e, "could not remove stale consumers Secrets");
            Err(Failure {
                tenant: None,
                error: e.to_string(),
            })
        }
    }
}

pub fn count_write(ctx: &Context) {
    ctx.shared
        .metrics
        .writes
        .get_or_create(&crate::metrics::ControllerLabel {
            controller: CONTROLLER,
        })
        .inc();
}
