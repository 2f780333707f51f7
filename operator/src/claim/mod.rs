//! The SharedServiceClaim controller: dereference → validate → build → apply → status.
//!
//! A permitted claim gets its binding Secret, the provider-side NetworkPolicy and (egress:
//! Restricted) the egress NetworkPolicy; a refused or deleted one keeps nothing. The
//! provider's `<service>-consumers-<tenant>` Secrets are not written here: the SharedService
//! controller alone recomputes them from the bound claims (one writer, no lost updates).
pub mod apply;
pub mod build;
pub mod dereference;
pub mod events;
pub mod status;
pub mod token;
pub mod validate;
pub mod watch;

#[cfg(test)]
mod fixtures;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{Receiver, UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::{ObjectRef, Store};

use self::build::claim_id;
use crate::api::conditions::claim as cond;
use crate::api::labels::CLAIM as CLAIM_LABEL;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE};
use crate::api::{
    Credentials, SharedService, SharedServiceClaim, SharedServiceClaimStatus, Tenant,
};
use crate::context::Context;
use crate::keyed::Keyed;
use crate::metrics::{ClaimLabels, Metrics};
use crate::{Result, reconciler};

pub use crate::api::finalizers::CLAIM as FINALIZER;
pub(crate) const CONTROLLER: &str = "claim";
/// A full resync repairs anything a missed watch event left behind.
const RESYNC: Duration = Duration::from_secs(300);

/// What the claim controller's reconciles share.
struct ClaimContext {
    base: Arc<Context>,
    watches: watch::BindingWatches,
    states: ClaimStates,
    /// The SharedServices that exist: a claim naming another is counted as `<unknown>`.
    catalogue: Store<SharedService>,
}

/// The claim controller's inputs that other controllers follow too (see [`crate::feed`]).
pub struct Feeds {
    pub tenant_events: Receiver<crate::feed::Event<Tenant>>,
    pub claim_events: Receiver<crate::feed::Event<SharedServiceClaim>>,
    /// The claims' store, kept by their feed.
    pub claims: Store<SharedServiceClaim>,
    pub service_events: Receiver<crate::feed::Event<Service>>,
    /// The SharedServices (the catalogue) and their events.
    pub shared_services: Store<SharedService>,
    pub shared_service_events: Receiver<crate::feed::Event<SharedService>>,
    /// Every namespace's events (the tenant controller follows them too).
    pub namespace_events: Receiver<crate::feed::Event<Namespace>>,
}

/// Runs the claim controller until `shutdown` resolves. `services` re-reconciles a
/// SharedService (the SharedService controller's input) when a claim's token changes.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    feeds: Feeds,
    services: UnboundedSender<ObjectRef<SharedService>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let Feeds {
        tenant_events,
        claim_events,
        claims,
        service_events,
        shared_services,
        shared_service_events,
        namespace_events,
    } = feeds;
    // The claims by namespace, id and service, kept from the claims' own watch: every mapper
    // below finds its claims by one lookup, not a scan of every claim.
    let index = Keyed::new(claim_keys);
    let follower = index.clone();
    // Created or changed (kube's `applied_objects`): a deleted claim's cleanup ran on the
    // change that set its deletion time.
    let claim_changes = crate::feed::applied(claim_events.inspect(move |event| {
        follower.follow(event);
    }));
    let controller = Controller::for_stream(claim_changes, claims.clone())
        .with_config(Config::default().concurrency(concurrency));
    let (claim_tx, claim_rx) = unbounded();

    let context = Arc::new(ClaimContext {
        base: ctx,
        watches: watch::BindingWatches::new(
            client.clone(),
            claims,
            index.clone(),
            claim_tx,
            services,
        ),
        states: ClaimStates::default(),
        catalogue: shared_services.clone(),
    });
    let (by_tenant, by_namespace, by_policy, by_service, by_catalogue) = (
        index.clone(),
        index.clone(),
        index.clone(),
        index.clone(),
        index,
    );
    controller
        .reconcile_on(crate::feed::triggers(
            tenant_events,
            move |tenant: &Tenant| {
                let mut namespaces = tenant.namespaces();
                namespaces.extend(tenant.status.iter().flat_map(|s| s.namespaces.clone()));
                in_namespaces(&by_tenant, &namespaces)
            },
        ))
        // A namespace labelled for another tenant, or no longer one's, or gone: its claims.
        .reconcile_on(crate::feed::triggers(
            namespace_events,
            move |ns: &Namespace| in_namespaces(&by_namespace, &[ns.name_any()]),
        ))
        .watches(
            Api::<NetworkPolicy>::all(client.clone()),
            crate::watching::config()
                .labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE},{CLAIM_LABEL}")),
            move |policy| {
                let id = policy
                    .labels()
                    .get(CLAIM_LABEL)
                    .cloned()
                    .unwrap_or_default();
                by_policy.under(&id_key(&id))
            },
        )
        .reconcile_on(crate::feed::triggers(
            service_events,
            move |svc: &Service| {
                let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
                shared_services
                    .state()
                    .iter()
                    .filter(|s| s.spec.endpoint.namespace == ns && s.spec.endpoint.service == name)
                    .flat_map(|s| naming(&by_service, &s.name_any()))
                    .collect::<Vec<_>>()
            },
        ))
        // A SharedService created, its access changed, or deleted: the claims naming it.
        .reconcile_on(crate::feed::triggers(
            shared_service_events,
            move |service: &SharedService| naming(&by_catalogue, &service.name_any()),
        ))
        .reconcile_on(claim_rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, reconciler::error_policy, context)
        .for_each(|_| async {})
        .await;
}

/// A claim's keys in the claim index: its namespace, its id (the label on what is made for
/// it) and the SharedService it names.
fn claim_keys(c: &SharedServiceClaim) -> Vec<String> {
    let ns = c.namespace().unwrap_or_default();
    vec![
        namespace_key(&ns),
        id_key(&claim_id(&ns, &c.name_any())),
        format!("service:{}", c.service_name()),
    ]
}

fn namespace_key(ns: &str) -> String {
    format!("namespace:{ns}")
}

fn id_key(id: &str) -> String {
    format!("id:{id}")
}

/// The claims that name the SharedService `service`.
fn naming(claims: &Keyed<SharedServiceClaim>, service: &str) -> Vec<ObjectRef<SharedServiceClaim>> {
    claims.under(&format!("service:{service}"))
}

/// The claims whose id is `id`.
pub(crate) fn claims_with_id(
    claims: &Keyed<SharedServiceClaim>,
    id: &str,
) -> Vec<ObjectRef<SharedServiceClaim>> {
    claims.under(&id_key(id))
}

/// The claims in `namespace`.
pub(crate) fn claims_in(
    claims: &Keyed<SharedServiceClaim>,
    namespace: &str,
) -> Vec<ObjectRef<SharedServiceClaim>> {
    claims.under(&namespace_key(namespace))
}

/// The claims in any of `namespaces`.
fn in_namespaces(
    claims: &Keyed<SharedServiceClaim>,
    namespaces: &[String],
) -> Vec<ObjectRef<SharedServiceClaim>> {
    namespaces
        .iter()
        .flat_map(|ns| claims.under(&namespace_key(ns)))
        .collect()
}

async fn reconcile(claim: Arc<SharedServiceClaim>, ctx: Arc<ClaimContext>) -> Result<Action> {
    reconciler::finalized(&ctx.base, claim, FINALIZER, |event| async {
        match event {
            Finalizer::Apply(c) => provision(&c, &ctx).await,
            Finalizer::Cleanup(c) => cleanup(&c, &ctx).await,
        }
    })
    .await
}

impl reconciler::Controls for ClaimContext {
    fn base(&self) -> &Context {
        &self.base
    }
}

impl reconciler::Reconciled for SharedServiceClaim {
    type Status = SharedServiceClaimStatus;
    const CONTROLLER: &'static str = CONTROLLER;
    const TOP_CONDITION: &'static str = cond::BOUND;
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
    fn status(&self) -> Option<&SharedServiceClaimStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &mut SharedServiceClaimStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn observed_generation(status: &mut SharedServiceClaimStatus) -> &mut Option<i64> {
        &mut status.observed_generation
    }
}

/// dereference → validate → bind (token, build, apply) or revoke → status → events.
async fn provision(cached: &SharedServiceClaim, ctx: &ClaimContext) -> Result<Action> {
    let base = &ctx.base;
    let Some(claim) = &dereference::fresh(&base.client, cached).await? else {
        return Ok(Action::await_change());
    };
    let found = dereference::dereference(&base.client, claim).await?;
    let outcome = match validate::decide(claim, &found) {
        Ok(permit) => Ok(bind(ctx, claim, &permit, &found).await?),
        Err(refusal) => Err((refusal, apply::prune(base, claim, None).await?)),
    };
    let previous = claim.status.clone().unwrap_or_default();
    let result = outcome
        .as_ref()
        .map(|_| claim.secret_name())
        .map_err(|(r, _)| r.clone());
    let token_digest = outcome.as_ref().ok().and_then(|b| b.token_digest.clone());
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new = status::status(claim, &result, token_digest, &now);
    if new != previous {
        reconciler::write_status(base, claim, &new).await?;
    }
    events::announce(base, claim, &previous, &outcome).await;
    let exists = found.service.is_some()
        || ctx
            .catalogue
            .get(&ObjectRef::new(claim.service_name()))
            .is_some();
    let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
    ctx.states.set(
        &base.shared.metrics,
        format!("{ns}/{name}"),
        exists.then_some(claim.service_name()),
        outcome.is_ok(),
    );
    Ok(Action::requeue(RESYNC))
}

/// What binding a permitted claim did.
struct Bound {
    /// The digest of the token in the binding Secret, recorded in the status by the same
    /// reconcile (after the Secret: a crash between the two issues a new token next time).
    token_digest: Option<String>,
    /// A new token was issued (none was kept, or the kept one was not the operator's).
    issued: bool,
    /// The binding Secret was created.
    secret_created: bool,
}

/// The token (kept, or a new one), the claim's objects built with it, applied.
async fn bind(
    ctx: &ClaimContext,
    claim: &SharedServiceClaim,
    permit: &build::Permit<'_>,
    found: &dereference::Found,
) -> Result<Bound> {
    let ns = claim.namespace().unwrap_or_default();
    ctx.watches.ensure(&ns);
    let recorded = claim
        .status
        .as_ref()
        .and_then(|s| s.token_digest.as_deref());
    let (token, issued) = match permit.service.spec.credentials {
        Credentials::None => (None, false),
        Credentials::PerClaim => {
            let id = claim_id(&ns, &claim.name_any());
            match token::kept(found.secret.as_ref(), &id, recorded) {
                Some(t) => (Some(t), false),
                None => (Some(token::issue()?), true),
            }
        }
    };
    let desired = build::build(claim, permit, found.provider.as_ref(), token.as_deref());
    let applied = apply::bind(&ctx.base, claim, &desired, found.secret.as_ref()).await?;
    Ok(Bound {
        token_digest: token.as_deref().map(token::digest),
        issued,
        secret_created: applied.secret_created,
    })
}

async fn cleanup(claim: &SharedServiceClaim, ctx: &ClaimContext) -> Result<Action> {
    let ns = claim.namespace().unwrap_or_default();
    let removed = apply::prune(&ctx.base, claim, None).await?;
    if removed > 0 {
        events::publish(
            &ctx.base,
            claim,
            EventType::Normal,
            "Revoked",
            "Claim deleted: removed its binding Secret and the NetworkPolicies on both sides"
                .into(),
        )
        .await;
    }
    ctx.watches.release(&ns, claim);
    ctx.states.forget(
        &ctx.base.shared.metrics,
        &format!("{ns}/{}", claim.name_any()),
    );
    Ok(Action::await_change())
}

/// The `service` label of claims naming a SharedService that does not exist: one label for
/// all of them, so made-up names cannot create series (no SharedService is named so).
const UNKNOWN_SERVICE: &str = "<unknown>";

/// Each claim's last state, for the `citycloud_claims{service,state}` gauge.
#[derive(Default)]
struct ClaimStates {
    inner: Mutex<StatesInner>,
}

#[derive(Default)]
struct StatesInner {
    /// "<namespace>/<name>" → (service label, bound).
    claims: BTreeMap<String, (String, bool)>,
    /// Claims per label set, kept as claims come and go: a reconcile updates the label sets
    /// it moves a claim between, not a recount of every claim.
    counts: BTreeMap<(String, &'static str), i64>,
}

fn state_of(bound: bool) -> &'static str {
    if bound { "bound" } else { "refused" }
}

impl ClaimStates {
    /// Records a claim's state; `service` is `None` when the SharedService it names does not
    /// exist.
    fn set(&self, metrics: &Metrics, key: String, service: Option<&str>, bound: bool) {
        if let Ok(mut inner) = self.inner.lock() {
            let service = service.unwrap_or(UNKNOWN_SERVICE).to_string();
            let before = inner.claims.insert(key, (service.clone(), bound));
            if before.as_ref() != Some(&(service.clone(), bound)) {
                if let Some((s, b)) = before {
                    inner.add(metrics, (s, state_of(b)), -1);
                }
                inner.add(metrics, (service, state_of(bound)), 1);
            }
        }
    }

    fn forget(&self, metrics: &Metrics, key: &str) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some((s, b)) = inner.claims.remove(key)
        {
            inner.add(metrics, (s, state_of(b)), -1);
        }
    }
}

impl StatesInner {
    /// Moves one label set's count by `by`; a set whose count reaches zero is removed.
    fn add(&mut self, metrics: &Metrics, key: (String, &'static str), by: i64) {
        let labels = ClaimLabels {
            service: key.0.clone(),
            state: key.1,
        };
        let count = self.counts.entry(key.clone()).or_default();
        *count += by;
        if *count <= 0 {
            self.counts.remove(&key);
            metrics.claims.remove(&labels);
        } else {
            metrics.claims.get_or_create(&labels).set(*count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claims_gauge_counts_by_service_and_state_and_removes_empty_series() {
        let metrics = Metrics::default();
        let states = ClaimStates::default();
        states.set(&metrics, "a/x".into(), Some("sso"), true);
        states.set(&metrics, "b/x".into(), Some("sso"), true);
        states.set(&metrics, "c/x".into(), Some("sso"), false);
        let text = metrics.encode();
        assert!(
            text.contains(r#"citycloud_claims{service="sso",state="bound"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"citycloud_claims{service="sso",state="refused"} 1"#),
            "{text}"
        );
        states.forget(&metrics, "c/x");
        let text = metrics.encode();
        assert!(!text.contains(r#"state="refused""#), "{text}");
        // A claim that changes state leaves no series behind either.
        states.set(&metrics, "b/x".into(), Some("sso"), false);
        states.forget(&metrics, "a/x");
        states.forget(&metrics, "b/x");
        let text = metrics.encode();
        assert!(!text.contains(r#"service="sso""#), "{text}");
    }

    #[test]
    fn claims_naming_no_existing_service_share_one_label() {
        let metrics = Metrics::default();
        let states = ClaimStates::default();
        for i in 0..50 {
            states.set(&metrics, format!("a/x{i}"), None, false);
        }
        states.set(&metrics, "a/real".into(), Some("lgsp"), true);
        let text = metrics.encode();
        let mut series = text
            .lines()
            .filter(|l| l.starts_with("citycloud_claims{"))
            .collect::<Vec<_>>();
        series.sort();
        assert_eq!(
            series,
            [
                r#"citycloud_claims{service="<unknown>",state="refused"} 50"#,
                r#"citycloud_claims{service="lgsp",state="bound"} 1"#,
            ],
            "{text}"
        );
    }
}
