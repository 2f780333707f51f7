//! The Tenant controller: dereference → validate → build → apply → status.
pub mod apply;
pub mod build;
pub mod cache;
pub mod dereference;
pub mod packed;
pub mod placement;
pub mod plan;
pub mod profiles;
pub mod report;
pub mod settling;
pub mod status;
pub mod turns;
pub mod validate;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use crate::quota;
use crate::quota::carve;
use futures::StreamExt;
use futures::channel::mpsc::Receiver;
use k8s_openapi::api::core::v1::{Event, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::api::conditions::tenant as cond;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE, TENANT};
use crate::api::{QuotaProfile, SharedServiceClaim, Tenant, TenantStatus};
use crate::context::Context;
use crate::{Result, StepExt, reconciler};
use profiles::ProfileNews;

pub use crate::api::finalizers::TENANT as FINALIZER;
pub(crate) const CONTROLLER: &str = "tenant";
/// A full resync repairs anything a missed watch event left behind.
pub(crate) const RESYNC: Duration = Duration::from_secs(300);

/// What the tenant controller's reconciles share.
pub struct TenantContext {
    pub base: Arc<Context>,
    pub caches: cache::Caches,
    /// Whether the API server enforces nodePlacement, as last checked per namespace.
    pub placement: placement::Verdicts,
    /// New tenants' first steps, whose watch echoes need no reconcile each.
    pub settling: Arc<settling::Settling>,
    /// Turns to reconcile, `concurrency` at a time (see [`turns`]).
    pub turns: turns::Turns,
}

/// Every object of a kind the selector matches, without what the caches never read: the managed
/// fields, the uid and the creation time (memory: ~90 bytes of ~20,000 objects at 1,000
/// tenants).
fn source<K: crate::feed::Watched>(
    client: &kube::Client,
    config: &watcher::Config,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    watcher(Api::<K>::all(client.clone()), config.clone())
        .modify(lean)
        .default_backoff()
}

/// What the caches need not keep of an object (memory): its managed fields, uid and creation
/// time.
fn lean<K: kube::Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    meta.uid = None;
    meta.creation_timestamp = None;
}

/// The events of a feed other controllers follow too (see [`crate::feed`]), as [`source`] gives
/// them: [`lean`].
fn from_feed<K: kube::Resource + Clone + Send + Sync + 'static>(
    events: Receiver<crate::feed::Event<K>>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    events.map(|event| Ok((*event).clone().modify(lean)))
}

/// A watch of one kind: every event goes to `follow` (the cache reconciles read), and the
/// stream yields the changes worth a reconcile: not the echo of our own write (see
/// [`cache::Pending`]) unless `echo_matters` says it brings more, and not the first list (the
/// Tenant watch itself starts a reconcile of every tenant then).
fn watch<K: crate::feed::Watched>(
    source: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    pending: &cache::Pending,
    echo_matters: fn(&K, Option<&ResourceQuota>) -> bool,
    follow: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> futures::stream::BoxStream<'static, Result<K, watcher::Error>> {
    let pending = pending.clone();
    let mut listed = false;
    source
        .filter_map(move |event| {
            let out = match event {
                Err(e) => Some(Err(e)),
                Ok(event) => {
                    follow(&event);
                    match event {
                        watcher::Event::Apply(o) => match pending.seen(&o, false) {
                            cache::Seen::News => Some(Ok(o)),
                            cache::Seen::Echo(written) => {
                                echo_matters(&o, written.as_deref()).then_some(Ok(o))
                            }
                        },
                        watcher::Event::Delete(o) => {
                            pending.seen(&o, true);
                            Some(Ok(o))
                        }
                        // A relist after a lost watch: anything may have changed meanwhile.
                        watcher::Event::InitApply(o) => {
                            pending.seen(&o, false);
                            listed.then_some(Ok(o))
                        }
                        watcher::Event::InitDone => {
                            listed = true;
                            None
                        }
                        watcher::Event::Init => None,
                    }
                }
            };
            futures::future::ready(out)
        })
        .boxed()
}

/// [`watch`] into an [`cache::Indexed`] cache.
fn cached<K: crate::feed::Watched + serde::Serialize>(
    source: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    pending: &cache::Pending,
    echo_matters: fn(&K, Option<&ResourceQuota>) -> bool,
    key: fn(&K) -> Option<String>,
) -> (
    cache::Indexed<K>,
    futures::stream::BoxStream<'static, Result<K, watcher::Error>>,
) {
    let cache = cache::Indexed::new(key);
    let follower = cache.clone();
    let stream = watch(source, pending, echo_matters, move |e| follower.follow(e));
    (cache, stream)
}

fn never<K>(_: &K, _: Option<&ResourceQuota>) -> bool {
    false
}

/// A ResourceQuota's status (enforced, usage counted) is kube-controller-manager's: the echo
/// of our write matters unless it shows the very status the API server answered the write
/// with (then the reconcile that wrote it saw that status already; any later change of it
/// comes as an event of its own). Without the answer (the echo came first), it matters.
fn quota_echo_matters(echo: &ResourceQuota, written: Option<&ResourceQuota>) -> bool {
    written.is_none_or(|w| w.status != echo.status)
}

/// The Tenant controller's inputs that other controllers follow too (see [`crate::feed`]).
pub struct Feeds {
    /// The Tenants, kept by their feed, and their events.
    pub tenants: reflector::Store<Tenant>,
    pub tenant_events: Receiver<crate::feed::Event<Tenant>>,
    /// The QuotaProfiles, kept by their feed, and their events.
    pub profiles: reflector::Store<QuotaProfile>,
    pub profile_events: Receiver<crate::feed::Event<QuotaProfile>>,
    pub claim_events: Receiver<crate::feed::Event<SharedServiceClaim>>,
    pub namespace_events: Receiver<crate::feed::Event<Namespace>>,
}

/// Runs the Tenant controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    feeds: Feeds,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let Feeds {
        tenants,
        tenant_events,
        profiles,
        profile_events,
        claim_events,
        namespace_events,
    } = feeds;
    let client = ctx.client.clone();
    let managed =
        crate::watching::config().labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE},{TENANT}"));
    // A Tenant is reconciled when its spec, finalizers or deletion change, or when someone
    // else changed its status; not on the echo of the status this controller wrote.
    let shared_status = ctx.shared.clone();
    let settling = Arc::new(settling::Settling::default());
    // A child created, deleted or given another budget changes what its parent's own
    // namespaces may share: its events reconcile the parent too (through this channel).
    let children = cache::Children::default();
    let (parent_pokes, parents_poked) = futures::channel::mpsc::unbounded();
    let follower = children.clone();
    let forgetting = settling.clone();
    let tenant_changes = tenant_events
        .flat_map(move |event| {
            forgetting.follow(&event);
            for parent in follower.follow(&event) {
                let _ = parent_pokes.unbounded_send(ObjectRef::<Tenant>::new(&parent));
            }
            let touched = crate::feed::touched(&event)
                .cloned()
                .map(Ok::<_, watcher::Error>);
            futures::stream::iter(touched)
        })
        .predicate_filter(
            move |t: &Tenant| Some(trigger_hash(t, &shared_status)),
            Default::default(),
        );
    let controller = Controller::for_stream(tenant_changes, tenants.clone())
        // Unbounded here, bounded by `turns`, which serves tenants under way first and each lane
        // in order (kube-runtime's own limit serves waiting objects in hash order).
        .with_config(Config::default().concurrency(0));
    let turns = turns::Turns::new(usize::from(concurrency));
    // Stopping: the reconciles still waiting for a turn end at once (graceful shutdown
    // finishes only those running).
    let closing = turns.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    let pending = cache::Pending::default();

    use cache::{by_namespace, by_tenant, unindexed};
    // Every namespace, not only ours: whether a name is taken (someone else's namespace a
    // new environment must not take over) is a cache lookup, not a GET per new namespace.
    let (namespaces, namespace_changes) =
        cached::<Namespace>(from_feed(namespace_events), &pending, never, by_tenant);
    let (role_bindings, role_binding_changes) =
        cached::<RoleBinding>(source(&client, &managed), &pending, never, by_namespace);
    let (limit_ranges, limit_range_changes) =
        cached::<LimitRange>(source(&client, &managed), &pending, never, by_namespace);
    let (network_policies, network_policy_changes) =
        cached::<NetworkPolicy>(source(&client, &managed), &pending, never, by_namespace);
    // Quotas are read fresh (see `dereference`): their watch only says when to reconcile.
    let quotas = cache::Indexed::<ResourceQuota>::listing_only();
    let follower = quotas.clone();
    let quota_changes = watch(
        source(&client, &managed),
        &pending,
        quota_echo_matters,
        move |e| follower.follow(e),
    );
    let (cluster_roles, cluster_role_changes) =
        cached::<ClusterRole>(source(&client, &managed), &pending, never, unindexed);
    let (cluster_role_bindings, cluster_role_binding_changes) =
        cached::<ClusterRoleBinding>(source(&client, &managed), &pending, never, unindexed);
    let (claims, claim_changes) =
        cached::<SharedServiceClaim>(from_feed(claim_events), &pending, never, by_namespace);
    // Few and small: the feed's plain store. A profile's spec changing, or the profile going, reconciles
    // its tenants (rare: a platform engineer edits a profile, so a scan of the tenants is
    // fine), and their parents: a child's budget is carved from its parent's.
    let mut profile_news = ProfileNews::default();
    let by_profile = tenants.clone();
    let profile_changes = profile_events.flat_map(move |event| {
        let changed = profile_news.news(&event);
        let refs: Vec<ObjectRef<Tenant>> = if changed.is_empty() {
            Vec::new()
        } else {
            by_profile
                .state()
                .into_iter()
                .filter(|t| {
                    t.quota_profiles()
                        .iter()
                        .any(|p| changed.iter().any(|c| c == p))
                })
                .flat_map(|t| {
                    let parent = t.spec.parent.as_deref().map(ObjectRef::<Tenant>::new);
                    std::iter::once(ObjectRef::from_obj(&*t)).chain(parent)
                })
                .collect()
        };
        futures::stream::iter(refs)
    });

    // ReplicaSets waiting for quota: demand for budget, re-reconciling their tenant.
    let (pokes, poked) = futures::channel::mpsc::unbounded();
    let workloads = workloads::watch(
        client.clone(),
        ctx.shared.clone(),
        namespaces.clone(),
        pokes,
    );
    let shared = ctx.shared.clone();
    let (by_namespace, by_claim_namespace) = (namespaces.clone(), namespaces.clone());
    let context = Arc::new(TenantContext {
        base: ctx.clone(),
        caches: cache::Caches {
            namespaces,
            role_bindings,
            limit_ranges,
            network_policies,
            quotas,
            cluster_roles,
            cluster_role_bindings,
            claims,
            profiles,
            tenants: tenants.clone(),
            children,
            pending,
        },
        placement: placement::Verdicts::default(),
        settling: settling.clone(),
        turns,
    });
    controller
        .watches_stream(namespace_changes, |ns| {
            cache::by_tenant(&ns).map(|t| ObjectRef::new(&t))
        })
        .watches_stream(role_binding_changes, by_tenant_label)
        .watches_stream(limit_range_changes, by_tenant_label)
        .watches_stream(network_policy_changes, by_tenant_label)
        .watches_stream(cluster_role_changes, by_tenant_label)
        .watches_stream(cluster_role_binding_changes, by_tenant_label)
        // While a new tenant waits for its quotas to be enforced, only the last one's event.
        .watches_stream(quota_changes, move |quota| {
            settling
                .quota_event_matters(&quota)
                .then(|| by_tenant_label(quota))
                .flatten()
        })
        // A claim bound or revoked changes the tenant's boundServices.
        .watches_stream(claim_changes, move |claim| {
            owner_of(&by_claim_namespace, &claim.namespace()?)
        })
        // StatefulSet and Job controllers refused over quota: demand in that namespace.
        .watches(
            Api::<Event>::all(client),
            crate::watching::config().fields("reason=FailedCreate"),
            move |event| {
                let ns = quota::demand::quota_refusal(&event)?;
                shared.demand.record_refusal(&ns);
                owner_of(&by_namespace, &ns)
            },
        )
        .reconcile_on(poked)
        .reconcile_on(parents_poked)
        .reconcile_on(profile_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, reconciler::error_policy, context)
        .for_each(|_| async {})
        .await;
    workloads.abort();
}

/// The tenant whose environment `namespace` is: the tenant label of the cached namespace (one
/// lookup, whatever the number of tenants). Only the operator sets that label (the admission
/// policies refuse it to anyone else).
pub fn owner_of(
    namespaces: &cache::Indexed<Namespace>,
    namespace: &str,
) -> Option<ObjectRef<Tenant>> {
    let ns = namespaces.get(None, namespace)?;
    cache::by_tenant(&ns).map(|t| ObjectRef::new(&t))
}

fn by_tenant_label<K: Resource>(obj: K) -> Option<ObjectRef<Tenant>> {
    obj.meta()
        .labels
        .as_ref()?
        .get(TENANT)
        .map(|t| ObjectRef::new(t))
}

/// Waits for a turn (see [`turns`]), then reconciles the tenant as the cache shows it then:
/// the wait may have outlasted the snapshot it was handed.
async fn reconcile(tenant: Arc<Tenant>, context: Arc<TenantContext>) -> Result<Action> {
    // Under way: a new tenant whose namespaces exist (its next step grants access).
    let lane = if tenant.status.is_none() && context.caches.namespaces.any_under(&tenant.name_any())
    {
        turns::Lane::Started
    } else {
        turns::Lane::Other
    };
    let Some(_turn) = context.turns.take(lane).await else {
        // Shutting down: not started, so nothing to finish. A restart reconciles it.
        return Ok(Action::await_change());
    };
    let Some(tenant) = context.caches.tenants.get(&ObjectRef::from_obj(&*tenant)) else {
        // Gone from the cluster while it waited (its deletion is done): nothing to do.
        return Ok(Action::await_change());
    };
    // Boxed: a reconcile's state is allocated when it runs, not by each one waiting.
    Box::pin(reconcile_now(tenant, context)).await
}

async fn reconcile_now(tenant: Arc<Tenant>, context: Arc<TenantContext>) -> Result<Action> {
    if !context.caches.ready() {
        // Just started: look again once the watches have listed (not counted as a reconcile).
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let ctx = &context.base;
    let settling = &context.settling;
    // A new tenant gets its finalizer and its objects in one reconcile; the finalizer's echo
    // is then no news (see `trigger_hash`).
    reconciler::finalized_at_once(ctx, tenant, FINALIZER, |event| async {
        match event {
            Finalizer::Apply(t) => provision(&t, ctx, &context).await,
            Finalizer::Cleanup(t) => {
                settling.forget(&t.name_any());
                cleanup(&t, ctx).await
            }
        }
    })
    .await
}

impl reconciler::Controls for TenantContext {
    fn base(&self) -> &Context {
        &self.base
    }
}

/// dereference → validate → plan (the budget split) → build → apply → status.
async fn provision(tenant: &Tenant, ctx: &Context, context: &TenantContext) -> Result<Action> {
    let (caches, verdicts) = (&context.caches, &context.placement);
    let name = tenant.name_any();
    // Quota events from here on are news until this reconcile says what it waits for.
    context.settling.reconciling(&name, tenant.status.is_none());
    let settled = tenant
        .status
        .is_none()
        .then(|| context.settling.take_quotas(&name, &tenant.namespaces()))
        .flatten();
    let mut found = dereference::dereference(&ctx.client, caches, tenant, settled)
        .await
        .at("reading", format!("the inputs of Tenant {name}"))?;
    let valid = validate::validate(tenant, &found);
    let plan = split_budget(ctx, caches, tenant, &found, &valid);
    found.inputs.allocations = plan.allocation.hard.clone();
    found.inputs.operator = ctx.identity.clone();
    let desired = build::build(tenant, &found.inputs);
    let applied = apply::apply_all(
        ctx,
        caches,
        tenant,
        &desired,
        &found.named,
        &found.quotas,
        &valid.skipped,
    )
    .await?;
    // A new tenant's first Created Event waits for the access its next reconcile grants.
    let new = tenant.status.is_none();
    context
        .settling
        .tell(&name, new, &applied.awaiting_quota, applied.journal.clone())
        .publish(ctx, tenant)
        .await;
    // Environments dropped from the spec; conflicted names are never ours to release.
    apply::release_namespaces(ctx, tenant, &found.labelled, &tenant.namespaces()).await?;
    let done = report::Done {
        found: &found,
        valid: &valid,
        plan: &plan,
        applied: &applied,
    };
    report::update_status(ctx, caches, verdicts, &context.settling, tenant, done).await
}

/// The plan step: the budget split ([`plan::plan`], pure) over what the process knows — the
/// children's budgets (cached) and each namespace's recent demand, which it updates.
fn split_budget(
    ctx: &Context,
    caches: &cache::Caches,
    tenant: &Tenant,
    found: &dereference::Dereferenced,
    valid: &validate::Validated,
) -> plan::Plan {
    let caps = plan::caps(tenant, &found.inputs, &valid.skipped);
    let committed = plan::committed(tenant, &children_budgets(caches, &tenant.name_any()));
    let demand = &ctx.shared.demand;
    demand.expire();
    let levels = demand.levels(caps.keys());
    // `found.quotas` are read fresh here: a rise in them is as recent as it gets.
    let held = caps
        .keys()
        .filter(|ns| {
            found
                .quotas
                .get(*ns)
                .and_then(|q| q.status.as_ref()?.used.as_ref())
                .is_some_and(|used| demand.held(ns, used))
        })
        .cloned()
        .collect::<std::collections::BTreeSet<String>>();
    if !held.is_empty() {
        tracing::debug!(
            ?held,
            "usage rising: those namespaces' hards stay as they are"
        );
    }
    let plan = plan::plan(
        tenant,
        &found.inputs,
        &found.quotas,
        &caps,
        &committed,
        &levels,
        &held,
    );
    for ns in &plan.allocation.saturated {
        demand.record(ns);
    }
    plan
}

/// The carvable tenant budget of each of `parent`'s children, from the caches (the index of
/// children, the Tenant store, the QuotaProfiles): by key, no scan of every tenant.
fn children_budgets(caches: &cache::Caches, parent: &str) -> carve::Children {
    caches
        .children
        .of(parent)
        .into_iter()
        .filter_map(|child| {
            let t = caches.tenants.get(&ObjectRef::new(&child))?;
            // The index may be a moment ahead of the store: trust the store.
            if t.spec.parent.as_deref() != Some(parent) {
                return None;
            }
            let budget = caches
                .profiles
                .get(&ObjectRef::new(&t.spec.quota_profile))
                .map(|p| carve::carvable(p.tenant_budget(t.spec.quota_overrides.as_ref())));
            Some((child, budget))
        })
        .collect()
}

/// What of a Tenant is worth a reconcile when it changes (see `run`).
fn trigger_hash(t: &Tenant, shared: &crate::context::Shared) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.metadata.generation.hash(&mut h);
    t.metadata.deletion_timestamp.is_some().hash(&mut h);
    // Our finalizer arriving is no news: the reconcile that added it went on with the tenant
    // it returned (see `reconciler::finalized_at_once`). Its going away is, once the tenant
    // was provisioned (has a status; before that a reconcile comes anyway): it is put back.
    let has_ours = t.finalizers().iter().any(|f| f == FINALIZER);
    t.finalizers()
        .iter()
        .filter(|f| f.as_str() != FINALIZER)
        .collect::<Vec<_>>()
        .hash(&mut h);
    (!has_ours && t.status.is_some()).hash(&mut h);
    // Annotations steer it too (budget reservations for children, adopting retained data);
    // labels, because whoever selects tenants by them expects the change to be seen.
    t.metadata.annotations.hash(&mut h);
    t.metadata.labels.hash(&mut h);
    // The status counts when someone else wrote it. Ours (the last one this process wrote,
    // or none yet on a new tenant) hashes alike whatever it says: the echo of our first
    // status write is no change from the tenant without one.
    let status = status_hash(t.status.as_ref());
    let ours = shared
        .tenant_status_written
        .lock()
        .ok()
        .and_then(|w| w.get(&t.name_any()).copied());
    let mine = match ours {
        Some(written) => written == status,
        None => t.status.is_none(),
    };
    if !mine {
        status.hash(&mut h);
    }
    h.finish()
}

fn status_hash(status: Option<&TenantStatus>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&status)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

impl reconciler::Reconciled for Tenant {
    type Status = TenantStatus;
    const CONTROLLER: &'static str = CONTROLLER;
    const TOP_CONDITION: &'static str = cond::READY;
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
    fn status(&self) -> Option<&TenantStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &mut TenantStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn observed_generation(status: &mut TenantStatus) -> &mut Option<i64> {
        &mut status.observed_generation
    }
    /// Remembered, so the echo of this write does not reconcile the tenant again (see `run`).
    fn writing(&self, ctx: &Context, status: &TenantStatus) {
        if let Ok(mut w) = ctx.shared.tenant_status_written.lock() {
            w.insert(self.name_any(), status_hash(Some(status)));
        }
    }
}

async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let name = tenant.name_any();
    let labelled = Api::<Namespace>::all(ctx.client.clone())
        .list(&ListParams::default().labels(&format!("{TENANT}={name}")))
        .await
        .at("reading", format!("the namespaces of Tenant {name}"))?
        .items;
    apply::release_namespaces(ctx, tenant, &labelled, &[]).await?;
    ctx.shared.forget_tenant(&name);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_this_controller_adds_is_no_news_but_taking_it_away_is() {
        let shared = crate::context::Shared::default();
        let mut t: Tenant = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "generation": 1},
            "spec": {"displayName": "A", "owners": [{"kind": "Group", "name": "g"}]},
        }))
        .expect("a tenant");
        let created = trigger_hash(&t, &shared);
        t.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
        assert_eq!(trigger_hash(&t, &shared), created, "the echo of adding it");
        t.status = Some(TenantStatus::default());
        let provisioned = trigger_hash(&t, &shared);
        t.metadata.finalizers = Some(vec![]);
        assert_ne!(
            trigger_hash(&t, &shared),
            provisioned,
            "taken away: put back"
        );
        t.metadata.finalizers = Some(vec![FINALIZER.to_string(), "other/x".to_string()]);
        assert_ne!(trigger_hash(&t, &shared), provisioned, "someone else's");
    }

    #[test]
    fn the_echo_of_our_status_is_no_news_and_someone_elses_status_is() {
        let shared = crate::context::Shared::default();
        let mut t: Tenant = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "generation": 1, "finalizers": [FINALIZER]},
            "spec": {"displayName": "A", "owners": [{"kind": "Group", "name": "g"}]},
        }))
        .expect("a tenant");
        let created = trigger_hash(&t, &shared);
        let mut written = TenantStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        // What `Reconciled::writing` records before the write.
        shared
            .tenant_status_written
            .lock()
            .expect("not poisoned")
            .insert("a".into(), status_hash(Some(&written)));
        t.status = Some(written.clone());
        assert_eq!(
            trigger_hash(&t, &shared),
            created,
            "our first status's echo"
        );
        written.observed_generation = Some(7);
        t.status = Some(written);
        assert_ne!(trigger_hash(&t, &shared), created, "someone else's");
        t.status = None;
        assert_ne!(trigger_hash(&t, &shared), created, "ours taken away");
    }
}
