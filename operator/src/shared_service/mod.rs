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
pub mod apply;
pub mod build;
pub mod dereference;
pub mod isolation;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{Receiver, UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};

use self::apply::Applied;
use crate::api::conditions::{find, shared_service as cond};
use crate::api::{SharedService, SharedServiceClaim, SharedServiceStatus};
use crate::conditions::Cond;
use crate::context::Context;
use crate::{Result, reconciler};

pub(crate) const CONTROLLER: &str = "sharedservice";
/// Binding Secrets are not watched cluster-wide (the operator may not), so a periodic
/// resync catches what no event announced.
const RESYNC: Duration = Duration::from_secs(60);

/// Requests to re-reconcile a SharedService, from outside its own watches.
pub type Pokes = UnboundedReceiver<ObjectRef<SharedService>>;

/// The channel through which the claim controller re-reconciles SharedServices.
pub fn pokes() -> (UnboundedSender<ObjectRef<SharedService>>, Pokes) {
    unbounded()
}

/// Sooner than the resync when some consumers Secret could not be written.
const RETRY: Duration = Duration::from_secs(10);

/// What the SharedService controller's reconciles share.
struct ServiceContext {
    base: Arc<Context>,
    applied: Applied,
}

/// The SharedService controller's inputs that other controllers follow too (see
/// [`crate::feed`]).
pub struct Feeds {
    /// The SharedServices, kept by their feed, and their events.
    pub shared_services: Store<SharedService>,
    pub shared_service_events: Receiver<crate::feed::Event<SharedService>>,
    pub claim_events: Receiver<crate::feed::Event<SharedServiceClaim>>,
    pub service_events: Receiver<crate::feed::Event<Service>>,
}

/// Runs the SharedService controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    pokes: Pokes,
    feeds: Feeds,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let Feeds {
        shared_services: services,
        shared_service_events,
        claim_events,
        service_events,
    } = feeds;
    let controller = Controller::for_stream(
        crate::feed::applied(shared_service_events),
        services.clone(),
    )
    .with_config(Config::default().concurrency(concurrency));
    let context = Arc::new(ServiceContext {
        base: ctx,
        applied: Applied::default(),
    });
    controller
        .reconcile_on(crate::feed::triggers(
            claim_events,
            |claim: &SharedServiceClaim| {
                Some(ObjectRef::<SharedService>::new(claim.service_name()))
            },
        ))
        .reconcile_on(crate::feed::triggers(
            service_events,
            move |svc: &Service| {
                let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
                services
                    .state()
                    .iter()
                    .filter(|s| s.spec.endpoint.namespace == ns && s.spec.endpoint.service == name)
                    .map(|s| ObjectRef::from_obj(&**s))
                    .collect::<Vec<_>>()
            },
        ))
        .reconcile_on(pokes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, reconciler::error_policy, context)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(service: Arc<SharedService>, ctx: Arc<ServiceContext>) -> Result<Action> {
    let (base, applied) = (&ctx.base, &ctx.applied);
    reconciler::reconcile(
        base,
        service,
        |s| async move { sync(&s, base, applied).await },
    )
    .await
}

impl reconciler::Controls for ServiceContext {
    fn base(&self) -> &Context {
        &self.base
    }
}

/// A failed step makes ConsumersPublished False: the tenants' access is not as it should be.
impl reconciler::Reconciled for SharedService {
    type Status = SharedServiceStatus;
    const CONTROLLER: &'static str = CONTROLLER;
    const TOP_CONDITION: &'static str = cond::CONSUMERS_PUBLISHED;
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
    fn status(&self) -> Option<&SharedServiceStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &mut SharedServiceStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn observed_generation(status: &mut SharedServiceStatus) -> &mut Option<i64> {
        &mut status.observed_generation
    }
}

/// isolate the provider namespace → dereference → build → apply → status.
async fn sync(service: &SharedService, ctx: &Context, applied: &Applied) -> Result<Action> {
    // First: the provider namespace admits no tenant but through claims, from the start.
    let isolation = isolation::sync(ctx, service).await?;
    let found = dereference::dereference(ctx, service).await?;
    let secrets = build::consumers(service, &found.tokens);
    // Tenants whose tokens could not all be read keep their Secret as it is.
    let unreadable = found
        .failures
        .iter()
        .filter_map(|f| f.tenant.clone())
        .collect();
    let mut failures = found.failures;
    failures.extend(
        apply::apply_all(ctx, applied, service, &secrets, &found.tokens, &unreadable).await,
    );
    let published = build::published_condition(service, secrets.len(), &failures);
    update_status(
        ctx,
        service,
        found.provider.as_ref(),
        found.bound.len(),
        published,
    )
    .await?;
    let after = if failures.is_empty() { RESYNC } else { RETRY };
    Ok(Action::requeue(isolation.requeue_after(after)))
}

/// Writes the status when it changed, with a Warning Event when publishing newly failed.
async fn update_status(
    ctx: &Context,
    service: &SharedService,
    provider: Option<&Service>,
    bound: usize,
    published: Cond,
) -> Result<()> {
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
    let new = build::status(service, provider, bound, published, &now);
    if service.status.as_ref() != Some(&new) {
        reconciler::write_status(ctx, service, &new).await?;
    }
    Ok(())
}
