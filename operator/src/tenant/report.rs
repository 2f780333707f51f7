//! The last step of a Tenant's reconcile: what it tells. The status (conditions computed by
//! [`super::status`]), a Warning Event when a namespace or its quota newly goes wrong, the
//! readiness and usage gauges, and when to look again.
use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::apply::{self, Applied};
use super::dereference::Dereferenced;
use super::plan::Plan;
use super::validate::Validated;
use super::{RESYNC, cache, placement, settling, status};
use crate::Result;
use crate::api::conditions::tenant as cond;
use crate::api::{SharedServiceClaim, Tenant, TenantStatus};
use crate::conditions::stamp;
use crate::context::Context;
use crate::quota;
use crate::reconciler::write_status;

/// What the reconcile found and did, for the status.
pub struct Done<'a> {
    pub found: &'a Dereferenced,
    pub valid: &'a Validated,
    pub plan: &'a Plan,
    pub applied: &'a Applied,
}

/// Writes the status (when it changed), warns of new namespace and quota problems, updates
/// the gauges, and says when to reconcile again.
pub async fn update_status(
    ctx: &Context,
    caches: &cache::Caches,
    verdicts: &placement::Verdicts,
    settling: &settling::Settling,
    tenant: &Tenant,
    done: Done<'_>,
) -> Result<Action> {
    let Done {
        found,
        valid,
        plan,
        applied,
    } = done;
    let name = tenant.name_any();
    // Use over every namespace of the tenant, kept ones included: they count.
    let quotas: Vec<ResourceQuota> = found
        .quotas
        .iter()
        .filter(|(ns, _)| !valid.conflicts.iter().any(|c| &c.namespace == *ns))
        .map(|(_, q)| q.clone())
        .collect();
    let usage = status::usage(&quotas, &plan.budget);
    let placement = placement::check(
        &ctx.client,
        verdicts,
        tenant,
        &applied.namespaces,
        &caches.namespaces,
    )
    .await;
    let findings = status::Findings {
        conflicts: &valid.conflicts,
        excess: valid.excess.as_ref(),
        missing_profiles: &found.missing_profiles,
        parent_problem: found.parent_problem.as_ref(),
        namespaces: &applied.namespaces,
        awaiting_quota: &applied.awaiting_quota,
        exhausted: status::exhausted(&usage, &plan.budget),
        overcommitted: &plan.overcommitted,
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
        write_status(ctx, tenant, &new).await?;
    }
    // Reconciled again when the last of the quotas is enforced, not at each (see `settling`).
    // What it found enforced: any held-back event about another quota is news to it.
    let enforced: Vec<String> = applied
        .namespaces
        .iter()
        .filter(|ns| !applied.awaiting_quota.contains(ns))
        .cloned()
        .collect();
    let again = settling.reconciled(
        &name,
        first_status_wait.is_some(),
        &applied.awaiting_quota,
        &enforced,
    );
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
    let demand = &ctx.shared.demand;
    let after = if again {
        // What it waited for came while it ran.
        Duration::ZERO
    } else if plan.allocation.settling {
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

/// The shared services claimed and bound in the tenant's namespaces, sorted, once each. Bound
/// as the SharedService counts it (whose consumers Secret holds the token): a claim whose last
/// reconcile failed keeps its access, so auditors reading this list must still see it.
fn bound_services(
    claims: &cache::Indexed<SharedServiceClaim>,
    namespaces: &[String],
) -> Vec<String> {
    let services: std::collections::BTreeSet<String> = namespaces
        .iter()
        .flat_map(|ns| claims.under(ns))
        .filter(crate::shared_service::build::is_bound)
        .map(|c| c.spec.service.clone())
        .collect();
    services.into_iter().collect()
}
