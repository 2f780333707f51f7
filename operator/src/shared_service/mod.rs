//! The SharedService controller: EndpointReady, ConsumersPublished and the number of bound
//! claims in status, and the provider-side consumers Secrets `<service>-consumers-<tenant>`.
//!
//! Those Secrets are written here alone, recomputed from scratch on every reconcile from the
//! bound claims' binding Secrets: one writer, so two claims binding at once cannot lose each
//! other's token, and a revoked claim's token cannot linger. One Secret per tenant, so no
//! tenant can make the publication overflow, or fail, for the others: each is applied on its
//! own, and a failure is reported (condition, Warning event) without stopping the rest.
//!
//! The operator may not read Secrets in provider namespaces (they hold the provider's own
//! keys): it writes there blind. Each consumers Secret is server-side applied whole, which
//! also removes the entries of its previous apply that are gone; it is skipped when its
//! content hash equals the one last applied (kept in memory: after a restart each is applied
//! once more, which the API server finds unchanged and does not write). The Secrets of tenants
//! that have no bound claim any more are removed by one deletecollection by label.
pub mod build;
pub mod isolation;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use tracing::{Instrument, info_span, warn};

use self::build::{Failure, Tokens};
use crate::api::conditions::{find, shared_service as cond};
use crate::api::labels::TENANT;
use crate::api::{Credentials, SharedService, SharedServiceClaim};
use crate::claim::build::{claim_id, consumer_key};
use crate::claim::dereference::tenant_of;
use crate::context::Context;
use crate::digest::sha256_hex;
use crate::{Error, FIELD_MANAGER, Result};

const CONTROLLER: &str = "sharedservice";
/// Binding Secrets are not watched cluster-wide (the operator may not), so a periodic
/// resync catches what no event announced.
const RESYNC: Duration = Duration::from_secs(60);

/// Requests to re-reconcile a SharedService, from outside its own watches.
pub type Pokes = UnboundedReceiver<ObjectRef<SharedService>>;

/// The channel through which the claim controller re-reconciles SharedServices.
pub fn pokes() -> (UnboundedSender<ObjectRef<SharedService>>, Pokes) {
    unbounded()
}

/// A consumers Secret is applied again after this long even when its content did not change:
/// it bounds how long a write the operator cannot see (an admin's delete, a stale write of a
/// replica that lost its lease) can last.
const REAPPLY: Duration = Duration::from_secs(600);
/// Sooner than the resync when some consumers Secret could not be written.
const RETRY: Duration = Duration::from_secs(10);

/// What the SharedService controller's reconciles share.
struct ServiceContext {
    base: Arc<Context>,
    applied: Applied,
}

/// The consumers Secrets applied so far, by (SharedService uid, tenant): the hash of their
/// content, the resourceVersion the API server answered and when.
#[derive(Default)]
struct Applied {
    inner: Mutex<BTreeMap<(String, String), Record>>,
}

#[derive(Clone)]
struct Record {
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

/// Runs the SharedService controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    pokes: Pokes,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<SharedService>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(concurrency));
    let services = controller.store();
    let context = Arc::new(ServiceContext {
        base: ctx,
        applied: Applied::default(),
    });
    controller
        .watches(
            Api::<SharedServiceClaim>::all(client.clone()),
            watcher::Config::default(),
            |claim| Some(ObjectRef::<SharedService>::new(claim.service_name())),
        )
        .watches(
            Api::<Service>::all(client),
            watcher::Config::default(),
            move |svc| {
                let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
                services
                    .state()
                    .iter()
                    .filter(|s| s.spec.endpoint.namespace == ns && s.spec.endpoint.service == name)
                    .map(|s| ObjectRef::from_obj(&**s))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(pokes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy(service: Arc<SharedService>, error: &Error, _ctx: Arc<ServiceContext>) -> Action {
    warn!(service = %service.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(service: Arc<SharedService>, ctx: Arc<ServiceContext>) -> Result<Action> {
    let span = info_span!("reconcile", controller = CONTROLLER, service = %service.name_any());
    let base = &ctx.base;
    let _timer = base.shared.metrics.time(CONTROLLER);
    let result = sync(&service, base, &ctx.applied).instrument(span).await;
    base.shared.metrics.reconciled(CONTROLLER, &result);
    result
}

async fn sync(service: &SharedService, ctx: &Context, applied: &Applied) -> Result<Action> {
    let name = service.name_any();
    // First: the provider namespace admits no tenant but through claims, from the start.
    let isolation = isolation::sync(ctx, service).await?;
    let endpoint = &service.spec.endpoint;
    let provider = Api::<Service>::namespaced(ctx.client.clone(), &endpoint.namespace)
        .get_opt(&endpoint.service)
        .await?;
    let bound: Vec<SharedServiceClaim> = Api::<SharedServiceClaim>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.service_name() == name && build::is_bound(c))
        .collect();
    let (tokens, mut failures) = if service.spec.credentials == Credentials::PerClaim {
        tokens(ctx, &bound).await?
    } else {
        (Tokens::new(), Vec::new())
    };
    let secrets = build::consumers(service, &tokens);
    // Tenants whose tokens could not all be read keep their Secret as it is.
    let unreadable: BTreeSet<String> = failures.iter().filter_map(|f| f.tenant.clone()).collect();
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

    let published = build::published_condition(service, secrets.len(), &failures);
    let previous = service
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions, cond::CONSUMERS_PUBLISHED))
        .map(|c| c.message.clone());
    if !published.ok && previous.as_ref() != Some(&published.message) {
        ctx.publish(
            service,
            EventType::Warning,
            &published.reason,
            published.message.clone(),
        )
        .await;
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new = build::status(service, provider.as_ref(), bound.len(), published, &now);
    if service.status.as_ref() != Some(&new) {
        let patch =
            json!({"apiVersion": "citycloud.io/v1alpha1", "kind": "SharedService", "status": new});
        let patched = Api::<SharedService>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await;
        match patched {
            Ok(_) => {}
            // Deleted meanwhile: its consumers Secrets go with it (owner reference).
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    let after = if failures.is_empty() { RESYNC } else { RETRY };
    Ok(Action::requeue(isolation.requeue_after(after)))
}

/// The tokens of the bound claims, by tenant (the claim namespace's `citycloud.io/tenant`,
/// which only the operator may set), each read by name from the claim's binding Secret (in
/// its own namespace: never a list of Secrets) and published only if its digest is the one
/// the claim's status recorded when the operator issued it. A tenant with bound claims has an
/// entry even when none of its tokens is valid yet. A binding Secret that cannot be read is a
/// failure of its tenant only.
async fn tokens(ctx: &Context, bound: &[SharedServiceClaim]) -> Result<(Tokens, Vec<Failure>)> {
    let mut tenants: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut tokens = Tokens::new();
    let mut failures = Vec::new();
    for claim in bound {
        let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
        if !tenants.contains_key(&ns) {
            let namespace = Api::<Namespace>::all(ctx.client.clone())
                .get_opt(&ns)
                .await?;
            let tenant = namespace.as_ref().and_then(tenant_of).map(str::to_string);
            tenants.insert(ns.clone(), tenant);
        }
        // A namespace of no tenant (any more): its claims are being revoked.
        let Some(Some(tenant)) = tenants.get(&ns) else {
            continue;
        };
        let entries = tokens.entry(tenant.clone()).or_default();
        let status = claim.status.as_ref();
        let Some(binding) = status.and_then(|s| s.binding.as_ref()) else {
            continue;
        };
        let secret = match Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&binding.name)
            .await
        {
            Ok(secret) => secret,
            Err(e) => {
                failures.push(Failure {
                    tenant: Some(tenant.clone()),
                    error: format!("reading the binding Secret {ns}/{}: {e}", binding.name),
                });
                continue;
            }
        };
        let recorded = status.and_then(|s| s.token_digest.as_deref());
        if let Some(token) =
            crate::claim::token::kept(secret.as_ref(), &claim_id(&ns, &name), recorded)
        {
            entries.insert(consumer_key(&ns, &name), token);
        }
    }
    Ok((tokens, failures))
}

/// Applies one tenant's consumers Secret whole, unless what it holds was applied already.
async fn publish(
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
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(secret),
        )
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
async fn remove_stale(
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

fn count_write(ctx: &Context) {
    ctx.shared
        .metrics
        .writes
        .get_or_create(&crate::metrics::ControllerLabel {
            controller: CONTROLLER,
        })
        .inc();
}
