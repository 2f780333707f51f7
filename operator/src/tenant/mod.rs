//! The Tenant controller: dereference → validate → build → apply → status.
pub mod apply;
pub mod build;
pub mod dereference;
pub mod status;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::quota;
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
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info_span, warn};

use crate::api::conditions::tenant as cond;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE, TENANT};
use crate::api::{QuotaProfile, SharedServiceClaim, Tenant, TenantStatus};
use crate::conditions::stamp;
use crate::context::Context;
use crate::{Error, FIELD_MANAGER, Result};

pub const FINALIZER: &str = "citycloud.io/tenant-cleanup";
const CONTROLLER: &str = "tenant";
/// A full resync repairs anything a missed watch event left behind.
const RESYNC: Duration = Duration::from_secs(300);

/// Runs the Tenant controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let managed =
        watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE},{TENANT}"));
    let controller = Controller::new(
        Api::<Tenant>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(concurrency));
    let tenants = controller.store();
    // ReplicaSets waiting for quota: demand for budget, re-reconciling their tenant.
    let (pokes, poked) = futures::channel::mpsc::unbounded();
    let workloads =
        quota::workloads::watch(client.clone(), ctx.shared.clone(), tenants.clone(), pokes);
    let (by_namespace, shared) = (tenants.clone(), ctx.shared.clone());
    let (by_claim_namespace, client_for_claims) = (tenants.clone(), client.clone());
    controller
        .watches(
            Api::<Namespace>::all(client.clone()),
            managed.clone(),
            by_tenant_label,
        )
        .watches(
            Api::<RoleBinding>::all(client.clone()),
            managed.clone(),
            by_tenant_label,
        )
        .watches(
            Api::<ResourceQuota>::all(client.clone()),
            managed.clone(),
            by_tenant_label,
        )
        .watches(
            Api::<LimitRange>::all(client.clone()),
            managed.clone(),
            by_tenant_label,
        )
        .watches(
            Api::<NetworkPolicy>::all(client.clone()),
            managed.clone(),
            by_tenant_label,
        )
        .watches(
            Api::<ClusterRole>::all(client.clone()),
            managed.clone(),
            by_tenant_label,
        )
        .watches(
            Api::<ClusterRoleBinding>::all(client.clone()),
            managed,
            by_tenant_label,
        )
        .watches(
            Api::<QuotaProfile>::all(client),
            watcher::Config::default(),
            move |profile| {
                let name = profile.name_any();
                tenants
                    .state()
                    .into_iter()
                    .filter(|t| t.quota_profiles().contains(&name.as_str()))
                    .map(|t| ObjectRef::from_obj(&*t))
                    .collect::<Vec<_>>()
            },
        )
        // A claim bound or revoked changes the tenant's boundServices.
        .watches(
            Api::<SharedServiceClaim>::all(client_for_claims),
            watcher::Config::default(),
            move |claim| {
                let ns = claim.namespace()?;
                by_claim_namespace
                    .state()
                    .into_iter()
                    .find(|t| t.namespaces().contains(&ns))
                    .map(|t| ObjectRef::from_obj(&*t))
            },
        )
        // StatefulSet and Job controllers refused over quota: demand in that namespace.
        .watches(
            Api::<Event>::all(ctx.client.clone()),
            watcher::Config::default().fields("reason=FailedCreate"),
            move |event| {
                let ns = quota::demand::quota_refusal(&event)?;
                shared.demand.record_refusal(&ns);
                by_namespace
                    .state()
                    .into_iter()
                    .find(|t| t.namespaces().contains(&ns))
                    .map(|t| ObjectRef::from_obj(&*t))
            },
        )
        .reconcile_on(poked)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
    workloads.abort();
}

fn by_tenant_label<K: Resource>(obj: K) -> Option<ObjectRef<Tenant>> {
    obj.meta()
        .labels
        .as_ref()?
        .get(TENANT)
        .map(|t| ObjectRef::new(t))
}

async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!("reconcile", controller = CONTROLLER, tenant = %tenant.name_any());
    let _timer = ctx.shared.metrics.time(CONTROLLER);
    let api = Api::<Tenant>::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Finalizer::Apply(t) => provision(&t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup(&t, &ctx).await,
        }
    })
    .instrument(span)
    .await;
    let result = crate::finalizers::outcome(result);
    ctx.shared.metrics.reconciled(CONTROLLER, result.is_ok());
    result
}

fn error_policy(tenant: Arc<Tenant>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(tenant = %tenant.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn provision(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let name = tenant.name_any();
    let mut found = dereference::dereference(&ctx.client, tenant).await?;
    let conflicts = validate::conflicts(&name, &tenant.namespaces(), &found.named);

    // The profile caps first, then the tenant budget split over the namespaces we provision.
    let caps: BTreeMap<String, BTreeMap<String, Quantity>> = build::build(tenant, &found.inputs)
        .namespaces
        .into_iter()
        .filter(|n| {
            !conflicts
                .iter()
                .any(|c| Some(&c.namespace) == n.namespace.metadata.name.as_ref())
        })
        .filter_map(|n| Some((n.namespace.metadata.name?, n.quota.spec?.hard?)))
        .collect();
    let budget = found
        .inputs
        .profiles
        .get(&tenant.spec.quota_profile)
        .map(|p| p.tenant_budget(tenant.spec.quota_overrides.as_ref()))
        .unwrap_or_default();
    let demand = &ctx.shared.demand;
    demand.expire();
    let levels = demand.levels(caps.keys());
    let allocation = quota::allocate(&budget, &caps, &found.quotas, |ns| {
        levels.get(ns).copied().unwrap_or(0)
    });
    allocation.saturated.iter().for_each(|ns| demand.record(ns));
    found.inputs.allocations = allocation.hard;
    found.inputs.operator = ctx.identity.clone();

    let desired = build::build(tenant, &found.inputs);
    let applied = apply::apply_all(ctx, tenant, &desired, &found.named, &conflicts).await?;
    // Environments dropped from the spec; conflicted names are never ours to release.
    apply::release_namespaces(ctx, tenant, &found.labelled, &tenant.namespaces()).await?;

    let quotas: Vec<ResourceQuota> = found
        .quotas
        .iter()
        .filter(|(ns, _)| applied.namespaces.contains(ns))
        .map(|(_, q)| q.clone())
        .collect();
    let usage = status::usage(&quotas, &budget);
    let findings = status::Findings {
        conflicts: &conflicts,
        missing_profiles: &found.missing_profiles,
        parent_problem: found.parent_problem.as_ref(),
        namespaces: &applied.namespaces,
        exhausted: status::exhausted(&usage, &budget),
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
        bound_services: bound_services(ctx, &applied.namespaces).await?,
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
    if new != previous {
        let patch = json!({"apiVersion": "citycloud.io/v1alpha1", "kind": "Tenant", "status": new});
        Api::<Tenant>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
    }
    let ready = new
        .conditions
        .iter()
        .any(|c| c.type_ == cond::READY && c.status == "True");
    ctx.shared.tenant_readiness(&name, ready);
    ctx.shared.tenant_usage(&name, &new.usage);
    if applied.writes > 0 {
        tracing::info!(writes = applied.writes, ready, "applied changes");
    } else {
        tracing::debug!(ready, "up to date");
    }
    Ok(if allocation.settling {
        // A raise waits for another namespace's lowered hard to be enforced.
        Action::requeue(Duration::from_secs(1))
    } else if applied.namespaces.iter().any(|ns| demand.active(ns)) {
        // Demand expires: split evenly again afterwards.
        Action::requeue(quota::demand::WINDOW)
    } else {
        Action::requeue(RESYNC)
    })
}

/// The shared services claimed and bound in the tenant's namespaces, sorted, once each.
async fn bound_services(ctx: &Context, namespaces: &[String]) -> Result<Vec<String>> {
    let mut services = std::collections::BTreeSet::new();
    for ns in namespaces {
        let claims = Api::<SharedServiceClaim>::namespaced(ctx.client.clone(), ns)
            .list(&ListParams::default())
            .await?;
        for claim in claims {
            let bound = claim.status.as_ref().is_some_and(|s| {
                crate::api::conditions::is_true(&s.conditions, crate::api::conditions::claim::BOUND)
            });
            if bound {
                services.insert(claim.spec.service.clone());
            }
        }
    }
    Ok(services.into_iter().collect())
}

async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let name = tenant.name_any();
    let labelled = Api::<Namespace>::all(ctx.client.clone())
        .list(&ListParams::default().labels(&format!("{TENANT}={name}")))
        .await?
        .items;
    apply::release_namespaces(ctx, tenant, &labelled, &[]).await?;
    ctx.shared.forget_tenant(&name);
    Ok(Action::await_change())
}
