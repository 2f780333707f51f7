//! Applies a tenant's desired objects, removes the ones it no longer wants, and keeps or
//! deletes the namespaces of dropped environments as its `deletionPolicy` says.
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{LimitRange, Namespace};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{NamespaceResources, TenantResources, namespace, orphaned};
use super::validate::Conflict;
use crate::Result;
use crate::api::labels::{ENVIRONMENT, ORPHANED, TENANT};
use crate::api::{DeletionPolicy, Environment, Tenant};
use crate::apply::{Outcome, apply};
use crate::context::Context;

/// Label marking objects made for a SharedServiceClaim: the tenant's pruning leaves them alone.
pub const CLAIM_LABEL: &str = "citycloud.io/claim";

/// What applying did, for status and events.
#[derive(Debug, Default)]
pub struct Applied {
    pub namespaces: Vec<String>,
    pub writes: usize,
}

pub async fn apply_all(
    ctx: &Context,
    tenant: &Tenant,
    desired: &TenantResources,
    live_namespaces: &BTreeMap<String, Namespace>,
    conflicts: &[Conflict],
) -> Result<Applied> {
    let mut applied = Applied::default();
    for res in &desired.namespaces {
        let ns = res.namespace.name_any();
        if conflicts.iter().any(|c| c.namespace == ns) {
            continue;
        }
        applied.writes += apply_namespace(ctx, tenant, res, live_namespaces.get(&ns)).await?;
        applied.namespaces.push(ns);
    }
    let roles = Api::<ClusterRole>::all(ctx.client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(ctx.client.clone());
    applied.writes += record(
        ctx,
        tenant,
        &desired.reader_role,
        crate::apply::get_and_apply(&roles, &desired.reader_role).await?,
    )
    .await;
    applied.writes += record(
        ctx,
        tenant,
        &desired.reader_binding,
        crate::apply::get_and_apply(&bindings, &desired.reader_binding).await?,
    )
    .await;
    Ok(applied)
}

async fn apply_namespace(
    ctx: &Context,
    tenant: &Tenant,
    res: &NamespaceResources,
    live: Option<&Namespace>,
) -> Result<usize> {
    let ns = res.namespace.name_any();
    let mut writes = record(
        ctx,
        tenant,
        &res.namespace,
        apply(&Api::all(ctx.client.clone()), &res.namespace, live).await?,
    )
    .await;
    writes += sync_kind(ctx, tenant, &ns, &res.role_bindings).await?;
    writes += sync_kind(ctx, tenant, &ns, std::slice::from_ref(&res.quota)).await?;
    writes += sync_kind::<LimitRange>(ctx, tenant, &ns, res.limit_range.as_slice()).await?;
    writes += sync_kind(ctx, tenant, &ns, &res.network_policies).await?;
    Ok(writes)
}

/// Makes the tenant's objects of one kind in `ns` exactly `desired`: one list, then an apply
/// for each that differs and a delete for each no longer wanted.
async fn sync_kind<K>(ctx: &Context, tenant: &Tenant, ns: &str, desired: &[K]) -> Result<usize>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), ns);
    let selector = format!("{TENANT}={},!{CLAIM_LABEL}", tenant.name_any());
    let mut live: BTreeMap<String, K> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .map(|o| (o.name_any(), o))
        .collect();
    let mut writes = 0;
    for obj in desired {
        let outcome = apply(&api, obj, live.remove(&obj.name_any()).as_ref()).await?;
        writes += record(ctx, tenant, obj, outcome).await;
    }
    for (name, _) in live {
        api.delete(&name, &DeleteParams::default()).await?;
        publish(
            ctx,
            tenant,
            EventType::Normal,
            "Removed",
            format!(
                "Removed {} {ns}/{name}: no longer in the spec",
                K::kind(&())
            ),
        )
        .await;
        writes += 1;
    }
    Ok(writes)
}

/// Counts a write and tells the tenant's users about it.
async fn record<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    tenant: &Tenant,
    obj: &K,
    outcome: Outcome,
) -> usize {
    let what = match obj.meta().namespace.as_deref() {
        Some(ns) => format!(
            "{} {ns}/{}",
            K::kind(&()),
            obj.meta().name.as_deref().unwrap_or_default()
        ),
        None => format!(
            "{} {}",
            K::kind(&()),
            obj.meta().name.as_deref().unwrap_or_default()
        ),
    };
    let (reason, note) = match outcome {
        Outcome::Unchanged => return 0,
        Outcome::Created => ("Created", format!("Created {what}")),
        Outcome::Updated => (
            "Updated",
            format!("Updated {what} to match the spec (changed spec or repaired drift)"),
        ),
    };
    ctx.shared
        .metrics
        .writes
        .get_or_create(&crate::metrics::ControllerLabel {
            controller: "tenant",
        })
        .inc();
    publish(ctx, tenant, EventType::Normal, reason, note).await;
    1
}

pub async fn publish(ctx: &Context, tenant: &Tenant, type_: EventType, reason: &str, note: String) {
    ctx.publish(tenant, type_, reason, note).await;
}

/// Namespaces labelled as the tenant's whose environment is gone from the spec (or all of
/// them, when the tenant itself is deleted): deleted under `Delete`, kept and labelled
/// orphaned under `Retain`.
pub async fn release_namespaces(
    ctx: &Context,
    tenant: &Tenant,
    labelled: &[Namespace],
    keep: &[String],
) -> Result<usize> {
    let api = Api::<Namespace>::all(ctx.client.clone());
    let mut writes = 0;
    for ns in labelled.iter().filter(|ns| !keep.contains(&ns.name_any())) {
        let name = ns.name_any();
        match tenant.spec.deletion_policy {
            DeletionPolicy::Delete => {
                if ns.metadata.deletion_timestamp.is_none() {
                    api.delete(&name, &DeleteParams::default()).await?;
                    publish(
                        ctx,
                        tenant,
                        EventType::Normal,
                        "NamespaceDeleted",
                        format!("Deleted namespace {name} (deletionPolicy: Delete)"),
                    )
                    .await;
                    writes += 1;
                }
            }
            DeletionPolicy::Retain => {
                if ns.labels().get(ORPHANED).map(String::as_str) == Some("true") {
                    continue;
                }
                // Re-apply our own labels plus the orphan mark with the same field manager, so a
                // tenant that adopts it back removes the mark by simply applying again.
                let env = ns.labels().get(ENVIRONMENT).cloned().unwrap_or_default();
                let kept = orphaned(namespace(tenant, &Environment::new(env)));
                if kept.name_any() != name {
                    continue; // not named like ours: leave it exactly as it is
                }
                let outcome = apply(&api, &kept, Some(ns)).await?;
                if outcome != Outcome::Unchanged {
                    publish(ctx, tenant, EventType::Normal, "NamespaceRetained", format!("Kept namespace {name} with its workloads and volumes, labelled {ORPHANED}=true (deletionPolicy: Retain)")).await;
                    writes += 1;
                }
            }
        }
    }
    Ok(writes)
}
