//! The SharedService controller: EndpointReady and the number of bound claims in status, and
//! the provider-side `<service>-consumers` Secret.
//!
//! That Secret is written here alone, recomputed from scratch on every reconcile from the
//! bound claims' binding Secrets and applied whole: one writer, so two claims binding at once
//! cannot lose each other's token, and a revoked claim's token cannot linger.
pub mod build;
pub mod isolation;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{Instrument, info_span, warn};

use crate::api::labels::SHARED_SERVICE;
use crate::api::{Credentials, SharedService, SharedServiceClaim};
use crate::claim::build::{claim_id, consumer_key};
use crate::context::Context;
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
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(service: Arc<SharedService>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(service = %service.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(service: Arc<SharedService>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!("reconcile", controller = CONTROLLER, service = %service.name_any());
    let _timer = ctx.shared.metrics.time(CONTROLLER);
    let result = sync(&service, &ctx).instrument(span).await;
    ctx.shared.metrics.reconciled(CONTROLLER, result.is_ok());
    result
}

async fn sync(service: &SharedService, ctx: &Context) -> Result<Action> {
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
    let tokens = if service.spec.credentials == Credentials::PerClaim {
        tokens(ctx, &bound).await?
    } else {
        BTreeMap::new()
    };
    sync_consumers(ctx, service, build::consumers(service, &tokens)).await?;

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new = build::status(service, provider.as_ref(), bound.len(), &now);
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
            // Deleted meanwhile: its consumers Secret goes with it (owner reference).
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(isolation.requeue_after(RESYNC)))
}

/// The tokens of the bound claims, read by name from each claim's binding Secret (in its own
/// namespace: never a list of Secrets). A claim whose Secret is gone, or holds a token the
/// operator did not issue, contributes nothing until the claim controller reissues it.
async fn tokens(ctx: &Context, bound: &[SharedServiceClaim]) -> Result<BTreeMap<String, String>> {
    let mut tokens = BTreeMap::new();
    for claim in bound {
        let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
        let Some(secret_name) = claim.status.as_ref().and_then(|s| s.binding.as_ref()) else {
            continue;
        };
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&secret_name.name)
            .await?;
        if let Some(token) = crate::claim::token::kept(secret.as_ref(), &claim_id(&ns, &name)) {
            tokens.insert(consumer_key(&ns, &name), token);
        }
    }
    Ok(tokens)
}

/// Makes the consumers Secret exactly `desired` (or absent), never touching a Secret of that
/// name that is not the operator's.
async fn sync_consumers(
    ctx: &Context,
    service: &SharedService,
    desired: Option<Secret>,
) -> Result<()> {
    let name = service.consumers_secret_name();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &service.spec.endpoint.namespace);
    let live = api.get_opt(&name).await?;
    let ours = live
        .as_ref()
        .is_none_or(|l| l.labels().get(SHARED_SERVICE) == Some(&service.name_any()));
    if !ours {
        warn!(secret = %name, "a Secret of this name exists and is not the operator's: consumers not written");
        return Ok(());
    }
    match (desired, live) {
        (Some(desired), live) => {
            let outcome = crate::apply::apply(&api, &desired, live.as_ref()).await?;
            if outcome != crate::apply::Outcome::Unchanged {
                count_write(ctx);
            }
            // Entries someone else added are not removed by our apply: remove them.
            let wanted = desired.data.unwrap_or_default();
            let extra: serde_json::Map<String, Value> = live
                .and_then(|l| l.data)
                .unwrap_or_default()
                .into_keys()
                .filter(|k| !wanted.contains_key(k))
                .map(|k| (k, Value::Null))
                .collect();
            if !extra.is_empty() {
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                api.patch(&name, &params, &Patch::Merge(json!({"data": extra})))
                    .await?;
                count_write(ctx);
            }
        }
        (None, Some(live)) => {
            if live.meta().deletion_timestamp.is_none() {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => count_write(ctx),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        (None, None) => {}
    }
    Ok(())
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
