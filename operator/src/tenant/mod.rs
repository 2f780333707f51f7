//! The Tenant controller: dereference → validate → build → apply → status.
pub mod apply;
pub mod build;
pub mod cache;
pub mod dereference;
pub mod failure;
pub mod placement;
pub mod status;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::quota;
use crate::tenant_request::budget as carve;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info_span, warn};

use crate::api::conditions::tenant as cond;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE, TENANT};
use crate::api::{QuotaProfile, SharedServiceClaim, Tenant, TenantStatus};
use crate::conditions::stamp;
use crate::context::Context;
use crate::{Error, FIELD_MANAGER, Result, StepExt};

pub const FINALIZER: &str = "citycloud.io/tenant-cleanup";
const CONTROLLER: &str = "tenant";
/// A full resync repairs anything a missed watch event left behind.
const RESYNC: Duration = Duration::from_secs(300);

/// What the tenant controller's reconciles share.
pub struct TenantContext {
    pub base: Arc<Context>,
    pub caches: cache::Caches,
    /// Per-tenant retry delays after failed reconciles.
    pub backoff: failure::Backoff,
    /// Whether the API server enforces nodePlacement, as last checked per namespace.
    pub placement: placement::Verdicts,
}

/// A watch of one kind: every event goes to `follow` (the cache reconciles read), and the
/// stream yields the changes worth a reconcile: not the echo of our own write (see
/// [`cache::Pending`]) unless `echo_matters` says it brings more, and not the first list (the
/// Tenant watch itself starts a reconcile of every tenant then).
fn watch<K>(
    client: &kube::Client,
    config: &watcher::Config,
    pending: &cache::Pending,
    echo_matters: fn(&K, Option<&ResourceQuota>) -> bool,
    follow: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> futures::stream::BoxStream<'static, Result<K, watcher::Error>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let pending = pending.clone();
    let mut listed = false;
    watcher(Api::<K>::all(client.clone()), config.clone())
        // The cache keeps what comparing needs, not the managed fields (memory).
        .modify(|o| o.managed_fields_mut().clear())
        .default_backoff()
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
fn cached<K>(
    client: &kube::Client,
    config: &watcher::Config,
    pending: &cache::Pending,
    echo_matters: fn(&K, Option<&ResourceQuota>) -> bool,
    key: fn(&K) -> Option<String>,
) -> (
    cache::Indexed<K>,
    futures::stream::BoxStream<'static, Result<K, watcher::Error>>,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let cache = cache::Indexed::new(key);
    let follower = cache.clone();
    let stream = watch(client, config, pending, echo_matters, move |e| {
        follower.follow(e)
    });
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

/// Runs the Tenant controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let managed =
        watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE},{TENANT}"));
    let (tenants, tenant_writer) = reflector::store();
    // A Tenant is reconciled when its spec, finalizers or deletion change, or when someone
    // else changed its status; not on the echo of the status this controller wrote.
    let shared_status = ctx.shared.clone();
    // A child created, deleted or given another budget changes what its parent's own
    // namespaces may share: its events reconcile the parent too (through this channel).
    let children = cache::Children::default();
    let (parent_pokes, parents_poked) = futures::channel::mpsc::unbounded();
    let follower = children.clone();
    let tenant_changes = reflector(
        tenant_writer,
        watcher(
            Api::<Tenant>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(|t| t.managed_fields_mut().clear())
        .inspect(move |event| {
            if let Ok(event) = event {
                for parent in follower.follow(event) {
                    let _ = parent_pokes.unbounded_send(ObjectRef::<Tenant>::new(&parent));
                }
            }
        }),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(
        move |t: &Tenant| Some(trigger_hash(t, &shared_status)),
        Default::default(),
    );
    let controller = Controller::for_stream(tenant_changes, tenants.clone())
        .with_config(Config::default().concurrency(concurrency));
    let pending = cache::Pending::default();
    let all = watcher::Config::default();

    use cache::{by_namespace, by_tenant, unindexed};
    let (namespaces, namespace_changes) =
        cached::<Namespace>(&client, &managed, &pending, never, by_tenant);
    let (role_bindings, role_binding_changes) =
        cached::<RoleBinding>(&client, &managed, &pending, never, by_namespace);
    let (limit_ranges, limit_range_changes) =
        cached::<LimitRange>(&client, &managed, &pending, never, by_namespace);
    let (network_policies, network_policy_changes) =
        cached::<NetworkPolicy>(&client, &managed, &pending, never, by_namespace);
    // Quotas are read fresh (see `dereference`): their watch only says when to reconcile.
    let quotas = cache::Indexed::<ResourceQuota>::listing_only();
    let follower = quotas.clone();
    let quota_changes = watch(&client, &managed, &pending, quota_echo_matters, move |e| {
        follower.follow(e)
    });
    let (cluster_roles, cluster_role_changes) =
        cached::<ClusterRole>(&client, &managed, &pending, never, unindexed);
    let (cluster_role_bindings, cluster_role_binding_changes) =
        cached::<ClusterRoleBinding>(&client, &managed, &pending, never, unindexed);
    let (claims, claim_changes) =
        cached::<SharedServiceClaim>(&client, &all, &pending, never, by_namespace);
    // Few and small: a plain store.
    let (profiles, profile_writer) = reflector::store::<QuotaProfile>();
    let profile_changes = reflector(
        profile_writer,
        watcher(Api::<QuotaProfile>::all(client.clone()), all.clone())
            .modify(|p| p.managed_fields_mut().clear()),
    )
    .default_backoff()
    .touched_objects();

    // ReplicaSets waiting for quota: demand for budget, re-reconciling their tenant.
    let (pokes, poked) = futures::channel::mpsc::unbounded();
    let workloads = quota::workloads::watch(
        client.clone(),
        ctx.shared.clone(),
        namespaces.clone(),
        pokes,
    );
    let shared = ctx.shared.clone();
    let (by_namespace, by_claim_namespace) = (namespaces.clone(), namespaces.clone());
    let by_profile = tenants.clone();
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
        backoff: failure::Backoff::default(),
        placement: placement::Verdicts::default(),
    });
    // The generation each profile was last seen at: its status (the tenant count, rewritten
    // as tenants come and go) changes nothing for its tenants; only its spec does.
    let profile_generations = std::sync::Mutex::new(BTreeMap::<String, Option<i64>>::new());
    let profiles_seen = context.caches.profiles.clone();
    controller
        .watches_stream(namespace_changes, by_tenant_label)
        .watches_stream(role_binding_changes, by_tenant_label)
        .watches_stream(limit_range_changes, by_tenant_label)
        .watches_stream(network_policy_changes, by_tenant_label)
        .watches_stream(cluster_role_changes, by_tenant_label)
        .watches_stream(cluster_role_binding_changes, by_tenant_label)
        .watches_stream(quota_changes, by_tenant_label)
        .watches_stream(profile_changes, move |profile| {
            let name = profile.name_any();
            let generation = profile.metadata.generation;
            // A deleted profile is gone from the cache by now: always news.
            let exists = profiles_seen.get(&ObjectRef::new(&name)).is_some();
            if let Ok(mut seen) = profile_generations.lock() {
                let before = if exists {
                    seen.insert(name.clone(), generation)
                } else {
                    seen.remove(&name)
                };
                if exists && before == Some(generation) {
                    return Vec::new();
                }
            }
            // Rare (a platform engineer edits a profile): a scan of the tenants is fine.
            // Their parents too: a child's budget is carved from its parent's.
            by_profile
                .state()
                .into_iter()
                .filter(|t| t.quota_profiles().contains(&name.as_str()))
                .flat_map(|t| {
                    let parent = t.spec.parent.as_deref().map(ObjectRef::<Tenant>::new);
                    std::iter::once(ObjectRef::from_obj(&*t)).chain(parent)
                })
                .collect::<Vec<_>>()
        })
        // A claim bound or revoked changes the tenant's boundServices.
        .watches_stream(claim_changes, move |claim| {
            owner_of(&by_claim_namespace, &claim.namespace()?)
        })
        // StatefulSet and Job controllers refused over quota: demand in that namespace.
        .watches(
            Api::<Event>::all(client),
            watcher::Config::default().fields("reason=FailedCreate"),
            move |event| {
                let ns = quota::demand::quota_refusal(&event)?;
                shared.demand.record_refusal(&ns);
                owner_of(&by_namespace, &ns)
            },
        )
        .reconcile_on(poked)
        .reconcile_on(parents_poked)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
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

async fn reconcile(tenant: Arc<Tenant>, context: Arc<TenantContext>) -> Result<Action> {
    if !context.caches.ready() {
        // Just started: look again once the watches have listed (not counted as a reconcile).
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let span = info_span!("reconcile", controller = CONTROLLER, tenant = %tenant.name_any());
    let ctx = &context.base;
    let _timer = ctx.shared.metrics.time(CONTROLLER);
    let api = Api::<Tenant>::all(ctx.client.clone());
    let name = tenant.name_any();
    let result = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Finalizer::Apply(t) => {
                match provision(&t, ctx, &context.caches, &context.placement).await {
                    Err(e) => {
                        // Seen by the tenant's users, not only in the operator's log.
                        failure::report(ctx, &t, &e).await;
                        Err(e)
                    }
                    ok => ok,
                }
            }
            Finalizer::Cleanup(t) => cleanup(&t, ctx).await,
        }
    })
    .instrument(span)
    .await;
    let result = crate::finalizers::outcome(result);
    ctx.shared.metrics.reconciled(CONTROLLER, &result);
    if result.is_ok() {
        context.backoff.reset(&name);
    }
    result
}

fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<TenantContext>) -> Action {
    let delay = ctx.backoff.next(&tenant.name_any());
    warn!(tenant = %tenant.name_any(), %error, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

async fn provision(
    tenant: &Tenant,
    ctx: &Context,
    caches: &cache::Caches,
    verdicts: &placement::Verdicts,
) -> Result<Action> {
    let name = tenant.name_any();
    let mut found = dereference::dereference(&ctx.client, caches, tenant)
        .await
        .at("reading", format!("the inputs of Tenant {name}"))?;
    let conflicts = validate::conflicts(tenant, &tenant.namespaces(), &found.named);
    let excess = validate::excess_environments(tenant, &found.inputs, &found.named, &conflicts);
    let skipped: Vec<String> = conflicts
        .iter()
        .map(|c| c.namespace.clone())
        .chain(excess.iter().flat_map(|e| e.skipped.clone()))
        .collect();

    // The profile caps first, then the tenant budget split over the namespaces we provision.
    let caps: BTreeMap<String, BTreeMap<String, Quantity>> = build::build(tenant, &found.inputs)
        .namespaces
        .into_iter()
        .filter(|n| {
            n.namespace
                .metadata
                .name
                .as_ref()
                .is_some_and(|ns| !skipped.contains(ns))
        })
        .filter_map(|n| Some((n.namespace.metadata.name?, n.quota.spec?.hard?)))
        .collect();
    let budget = found
        .inputs
        .profiles
        .get(&tenant.spec.quota_profile)
        .map(|p| p.tenant_budget(tenant.spec.quota_overrides.as_ref()))
        .unwrap_or_default();
    // Namespaces kept from dropped environments still use what they use: that comes first.
    let kept = found
        .quotas
        .iter()
        .filter(|(ns, _)| !caps.contains_key(*ns))
        .map(|(_, q)| q);
    let left = quota::remaining(&budget, kept);
    // What the children hold (reserved from requests, or their own budget for children
    // created directly) is not the parent's to use.
    let committed = carve::committed(
        &carve::reservations(tenant),
        &children_budgets(caches, &name),
    );
    let overcommitted: Vec<String> = carve::overcommitted(&budget, &committed)
        .iter()
        .map(ToString::to_string)
        .collect();
    let left = carve::carve(&left, &committed);
    let demand = &ctx.shared.demand;
    demand.expire();
    let levels = demand.levels(caps.keys());
    let allocation = quota::allocate(&left, &caps, &found.quotas, |ns| {
        levels.get(ns).copied().unwrap_or(0)
    });
    allocation.saturated.iter().for_each(|ns| demand.record(ns));
    found.inputs.allocations = allocation.hard;
    found.inputs.operator = ctx.identity.clone();

    let desired = build::build(tenant, &found.inputs);
    let applied = apply::apply_all(
        ctx,
        caches,
        tenant,
        &desired,
        &found.named,
        &found.quotas,
        &skipped,
    )
    .await?;
    applied.journal.publish(ctx, tenant).await;
    // Environments dropped from the spec; conflicted names are never ours to release.
    apply::release_namespaces(ctx, tenant, &found.labelled, &tenant.namespaces()).await?;

    // Use over every namespace of the tenant, kept ones included: they count.
    let quotas: Vec<ResourceQuota> = found
        .quotas
        .iter()
        .filter(|(ns, _)| !conflicts.iter().any(|c| &c.namespace == *ns))
        .map(|(_, q)| q.clone())
        .collect();
    let usage = status::usage(&quotas, &budget);
    let placement = placement::check(
        &ctx.client,
        verdicts,
        tenant,
        &applied.namespaces,
        &caches.namespaces,
    )
    .await;
    let findings = status::Findings {
        conflicts: &conflicts,
        excess: excess.as_ref(),
        missing_profiles: &found.missing_profiles,
        parent_problem: found.parent_problem.as_ref(),
        namespaces: &applied.namespaces,
        awaiting_quota: &applied.awaiting_quota,
        exhausted: status::exhausted(&usage, &budget),
        overcommitted: &overcommitted,
        placement: placement.as_ref().map(|p| &p.condition),
    };
    let conds = status::conditions(tenant, &findings);
    let previous = tenant.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new = TenantStatus {
        observed_generation: tenant.metadata.generation,
        conditions: stamp(
            &previous.conditions,
            &conds,
            tenant.metadata.generation,
            &now,
        ),
        namespaces: applied.namespaces.clone(),
        usage,
        bound_services: bound_services(&caches.claims, &applied.namespaces),
    };
    for c in conds
        .iter()
        .filter(|c| !c.ok && (c.type_ == cond::NAMESPACES_READY || c.type_ == cond::QUOTA_READY))
    {
        let was = crate::api::conditions::find(&previous.conditions, c.type_);
        if was.is_none_or(|w| w.reason != c.reason || w.message != c.message) {
            apply::publish(
                ctx,
                tenant,
                EventType::Warning,
                &c.reason,
                c.message.clone(),
            )
            .await;
        }
    }
    // A new tenant's first status waits (briefly) for its quotas to be enforced: one write.
    let awaiting_since = applied
        .awaiting_quota
        .iter()
        .filter_map(|ns| {
            Some(
                found
                    .quotas
                    .get(ns)?
                    .metadata
                    .creation_timestamp
                    .as_ref()?
                    .0,
            )
        })
        .min();
    let first_status_wait = status::first_status_can_wait(tenant, &conds, awaiting_since, now.0);
    if new != previous && first_status_wait.is_none() {
        write_status(ctx, &name, &new).await?;
    }
    let ready = new
        .conditions
        .iter()
        .any(|c| c.type_ == cond::READY && c.status == "True");
    ctx.shared.tenant_readiness(&name, ready);
    ctx.shared.tenant_usage(&name, &new.usage);
    if applied.journal.writes() > 0 {
        tracing::info!(writes = applied.journal.writes(), ready, "applied changes");
    } else {
        tracing::debug!(ready, "up to date");
    }
    let after = if allocation.settling {
        // A raise waits for another namespace's lowered hard to be enforced.
        Duration::from_secs(1)
    } else if placement.as_ref().is_some_and(|p| !p.settled) {
        Duration::from_secs(10)
    } else if applied.namespaces.iter().any(|ns| demand.active(ns)) {
        // Demand expires: split evenly again afterwards.
        quota::demand::WINDOW
    } else {
        RESYNC
    };
    // A deferred first status is written by this deadline at the latest (the quotas' watch
    // events usually come back sooner).
    Ok(Action::requeue(
        first_status_wait.map_or(after, |w| w.min(after)),
    ))
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
    t.metadata.finalizers.hash(&mut h);
    // Annotations steer it too (budget reservations for children, adopting retained data);
    // labels, because whoever selects tenants by them expects the change to be seen.
    t.metadata.annotations.hash(&mut h);
    t.metadata.labels.hash(&mut h);
    let status = status_hash(t.status.as_ref());
    let ours = shared
        .tenant_status_written
        .lock()
        .ok()
        .and_then(|w| w.get(&t.name_any()).copied());
    if ours != Some(status) {
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

/// Writes the Tenant's status with the operator's own apply (status subresource).
pub(crate) async fn write_status(ctx: &Context, name: &str, status: &TenantStatus) -> Result<()> {
    if let Ok(mut w) = ctx.shared.tenant_status_written.lock() {
        w.insert(name.to_string(), status_hash(Some(status)));
    }
    let patch = json!({"apiVersion": "citycloud.io/v1alpha1", "kind": "Tenant", "status": status});
    Api::<Tenant>::all(ctx.client.clone())
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .at("writing the status of", format!("Tenant {name}"))?;
    Ok(())
}

/// The shared services claimed and bound in the tenant's namespaces, sorted, once each.
fn bound_services(
    claims: &cache::Indexed<SharedServiceClaim>,
    namespaces: &[String],
) -> Vec<String> {
    let services: std::collections::BTreeSet<String> = namespaces
        .iter()
        .flat_map(|ns| claims.under(ns))
        .filter(|c| {
            c.status.as_ref().is_some_and(|s| {
                crate::api::conditions::is_true(&s.conditions, crate::api::conditions::claim::BOUND)
            })
        })
        .map(|c| c.spec.service.clone())
        .collect();
    services.into_iter().collect()
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
