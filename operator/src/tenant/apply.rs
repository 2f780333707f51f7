//! Applies a tenant's desired objects, removes the ones it no longer wants, and keeps or
//! deletes the namespaces of dropped environments as its `deletionPolicy` says.
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{QUOTA, REVOKED_ON_RETAIN, TenantResources, frozen_quota, namespace, orphaned};
use super::cache::{Caches, Pending, in_namespace, named};
use crate::api::labels::{ENVIRONMENT, ORPHANED, TENANT_UID};
use crate::api::{DeletionPolicy, Environment, Tenant};
use crate::apply::{Outcome, apply, holds, prepare, send};
use crate::context::Context;
use crate::{Error, Result, StepExt};

/// Label marking objects made for a SharedServiceClaim: the tenant's pruning leaves them alone.
pub const CLAIM_LABEL: &str = "citycloud.io/claim";

/// What applying did, for status and events.
#[derive(Debug, Default)]
pub struct Applied {
    pub namespaces: Vec<String>,
    pub journal: Journal,
    /// New namespaces whose users get access once their quota is enforced.
    pub awaiting_quota: Vec<String>,
}

/// The objects a reconcile created, updated or removed, told to the tenant's users as one
/// Event per kind of change (not one per object: a new tenant is some twenty objects).
#[derive(Debug, Default)]
pub struct Journal {
    created: Vec<String>,
    updated: Vec<String>,
    removed: Vec<String>,
}

/// An Event's note may hold 1 kB; longer lists end with "and N more".
const NOTE_BUDGET: usize = 900;

impl Journal {
    pub fn writes(&self) -> usize {
        self.created.len() + self.updated.len() + self.removed.len()
    }

    /// Notes one object's outcome (and counts a write).
    fn record<K: Resource<DynamicType = ()>>(&mut self, ctx: &Context, obj: &K, outcome: Outcome) {
        let list = match outcome {
            Outcome::Unchanged => return,
            Outcome::Created => &mut self.created,
            Outcome::Updated => &mut self.updated,
        };
        list.push(describe(obj));
        count_write(ctx);
    }

    fn removed<K: Resource<DynamicType = ()>>(&mut self, ctx: &Context, obj: &K) {
        self.removed.push(describe(obj));
        count_write(ctx);
    }

    /// One Event per kind of change, naming the objects.
    pub async fn publish(&self, ctx: &Context, tenant: &Tenant) {
        for (reason, heading, list) in [
            ("Created", "Created", &self.created),
            (
                "Updated",
                "Updated to match the spec (changed spec or repaired drift)",
                &self.updated,
            ),
            ("Removed", "Removed, no longer in the spec", &self.removed),
        ] {
            if !list.is_empty() {
                publish(ctx, tenant, EventType::Normal, reason, note(heading, list)).await;
            }
        }
    }
}

fn count_write(ctx: &Context) {
    ctx.shared
        .metrics
        .writes
        .get_or_create(&crate::metrics::ControllerLabel {
            controller: "tenant",
        })
        .inc();
}

/// "Created 3: Namespace a-prod, RoleBinding a-prod/citycloud-owners, …" within [`NOTE_BUDGET`].
fn note(heading: &str, items: &[String]) -> String {
    let mut out = format!("{heading} {}:", items.len());
    for (i, item) in items.iter().enumerate() {
        if out.len() + item.len() + 2 > NOTE_BUDGET {
            out.push_str(&format!(" and {} more", items.len() - i));
            break;
        }
        out.push_str(if i == 0 { " " } else { ", " });
        out.push_str(item);
    }
    out
}

/// "Kind namespace/name", as events and errors name an object.
pub fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{} {ns}/{name}", K::kind(&())),
        None => format!("{} {name}", K::kind(&())),
    }
}

/// Applies everything the tenant wants but the `skipped` namespaces (conflicts, environments
/// over the profile's maximum). `live_namespaces` and `live_quotas` are read fresh; the rest of
/// what exists comes from `caches`.
pub async fn apply_all(
    ctx: &Context,
    caches: &Caches,
    tenant: &Tenant,
    desired: &TenantResources,
    live_namespaces: &BTreeMap<String, Namespace>,
    live_quotas: &BTreeMap<String, ResourceQuota>,
    skipped: &[String],
) -> Result<Applied> {
    let mut applied = Applied::default();
    let journal = &mut applied.journal;
    let name = tenant.name_any();
    for res in &desired.namespaces {
        let ns = res.namespace.name_any();
        if skipped.contains(&ns) {
            continue;
        }
        let outcome = tracked(
            &caches.pending,
            &Api::all(ctx.client.clone()),
            &res.namespace,
            live_namespaces.get(&ns),
        )
        .await
        .at("applying", describe(&res.namespace))?;
        journal.record(ctx, &res.namespace, outcome);
        let quota = live_quotas
            .get(&ns)
            .map(|q| (q.name_any(), q.clone()))
            .into_iter()
            .collect();
        let limits = in_namespace(&caches.limit_ranges, &ns, &name);
        let policies = in_namespace(&caches.network_policies, &ns, &name);
        let bindings = in_namespace(&caches.role_bindings, &ns, &name);
        let enforced = crate::quota::enforced(&res.quota, live_quotas.get(&ns));
        let pending = &caches.pending;
        sync_kind(ctx, pending, journal, &ns, std::slice::from_ref(&res.quota), quota).await?;
        sync_kind::<LimitRange>(ctx, pending, journal, &ns, res.limit_range.as_slice(), limits)
            .await?;
        sync_kind(ctx, pending, journal, &ns, &res.network_policies, policies).await?;
        // No access to a new namespace before its quota binds: the API server admits anything
        // there until kube-controller-manager has synced the quota's status (the quota's watch
        // brings us back then). Access already granted is never taken away for this.
        if enforced || !bindings.is_empty() {
            sync_kind(ctx, pending, journal, &ns, &res.role_bindings, bindings).await?;
        } else {
            applied.awaiting_quota.push(ns.clone());
        }
        applied.namespaces.push(ns);
    }
    let roles = Api::<ClusterRole>::all(ctx.client.clone());
    let live_role = named(&caches.cluster_roles, &desired.reader_role.name_any());
    let outcome = tracked(&caches.pending, &roles, &desired.reader_role, live_role.as_ref())
        .await
        .at("applying", describe(&desired.reader_role))?;
    journal.record(ctx, &desired.reader_role, outcome);
    let bindings = Api::<ClusterRoleBinding>::all(ctx.client.clone());
    let live_binding = named(
        &caches.cluster_role_bindings,
        &desired.reader_binding.name_any(),
    );
    let outcome = tracked(
        &caches.pending,
        &bindings,
        &desired.reader_binding,
        live_binding.as_ref(),
    )
    .await
        .at("applying", describe(&desired.reader_binding))?;
    journal.record(ctx, &desired.reader_binding, outcome);
    Ok(applied)
}

/// Makes the tenant's objects of one kind in `ns` exactly `desired`, given what exists
/// (`live`): an apply for each that differs and a delete for each no longer wanted.
async fn sync_kind<K>(
    ctx: &Context,
    pending: &Pending,
    journal: &mut Journal,
    ns: &str,
    desired: &[K],
    mut live: BTreeMap<String, K>,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), ns);
    for obj in desired {
        let live = live.remove(&obj.name_any());
        let outcome = match tracked(pending, &api, obj, live.as_ref()).await {
            // A field the API server will not change in place (a RoleBinding's roleRef, e.g. of
            // one planted under our name before the guard rails existed): replace the object.
            Err(Error::Kube(kube::Error::Api(s)))
                if s.code == 422 && immutable_field(&s.message) =>
            {
                delete(&api, &obj.name_any())
                    .await
                    .at("deleting", describe(obj))?;
                tracked(pending, &api, obj, None)
                    .await
                    .at("applying", describe(obj))?;
                Outcome::Updated
            }
            other => other.at("applying", describe(obj))?,
        };
        journal.record(ctx, obj, outcome);
    }
    for (name, obj) in live {
        if delete(&api, &name).await.at("deleting", describe(&obj))? {
            journal.removed(ctx, &obj);
        }
    }
    Ok(())
}

/// [`apply`], minding our writes the cache has not shown yet: what we applied moments ago is
/// not applied again, and what we apply is remembered (see [`Pending`]).
async fn tracked<K>(pending: &Pending, api: &Api<K>, desired: &K, live: Option<&K>) -> Result<Outcome>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let prepared = prepare(desired)?;
    if let Some(live) = live
        && holds(live, &prepared)?
    {
        return Ok(Outcome::Unchanged);
    }
    if pending.holds(desired, &prepared.hash) {
        return Ok(Outcome::Unchanged);
    }
    let answer = send(api, desired, &prepared).await?;
    // The budget split needs the quota we wrote until the cache shows it.
    let quota = (K::kind(&()) == "ResourceQuota")
        .then(|| serde_json::to_value(&answer).ok())
        .flatten()
        .and_then(|v| serde_json::from_value::<ResourceQuota>(v).ok());
    pending.wrote(desired, &prepared.hash, quota);
    Ok(if live.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    })
}

/// Whether an API server's 422 is about a field that cannot be changed in place.
fn immutable_field(message: &str) -> bool {
    message.contains("cannot change roleRef") || message.contains("field is immutable")
}

/// Deletes `name`; `false` when it was already gone (a cache a moment behind).
async fn delete<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub async fn publish(ctx: &Context, tenant: &Tenant, type_: EventType, reason: &str, note: String) {
    ctx.publish(tenant, type_, reason, note).await;
}

/// Namespaces labelled as the tenant's whose environment is gone from the spec (or all of
/// them, when the tenant itself is deleted): deleted under `Delete` when this very Tenant
/// created them (its uid) and they are not retained from earlier; under `Retain` (and for
/// everything `Delete` may not delete) kept with their data, write access revoked, growth
/// frozen and labelled orphaned.
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
        if ns.labels().get(ORPHANED).map(String::as_str) == Some("true")
            || ns.metadata.deletion_timestamp.is_some()
        {
            continue; // retained before (never deleted, see below), or already going
        }
        let created_here = ns.annotations().get(TENANT_UID) == tenant.metadata.uid.as_ref();
        if tenant.spec.deletion_policy == DeletionPolicy::Delete && created_here {
            // The list may come from a cache a moment behind: gone already is done.
            if !delete(&api, &name)
                .await
                .at("deleting", format!("Namespace {name}"))?
            {
                continue;
            }
            publish(
                ctx,
                tenant,
                EventType::Normal,
                "NamespaceDeleted",
                format!("Deleted namespace {name} (deletionPolicy: Delete)"),
            )
            .await;
            writes += 1;
            continue;
        }
        // Re-apply our own labels plus the orphan mark with the same field manager, so a
        // tenant that adopts it back removes the mark by simply applying again.
        let env = ns.labels().get(ENVIRONMENT).cloned().unwrap_or_default();
        let kept = orphaned(namespace(tenant, &Environment::new(env)));
        if kept.name_any() != name {
            continue; // not named like ours: leave it exactly as it is
        }
        writes += retain(ctx, tenant, &name).await?;
        // Marked last: a retry after a failure above finds it unmarked and finishes the job.
        let outcome = apply(&api, &kept, Some(ns))
            .await
            .at("retaining", format!("Namespace {name}"))?;
        if outcome != Outcome::Unchanged {
            let why = if tenant.spec.deletion_policy == DeletionPolicy::Delete {
                "deletionPolicy: Delete, but this Tenant did not create it"
            } else {
                "deletionPolicy: Retain"
            };
            publish(ctx, tenant, EventType::Normal, "NamespaceRetained", format!("Kept namespace {name} with its workloads and volumes, labelled {ORPHANED}=true ({why}); owners' and members' access revoked (viewers keep read), nothing new may start there"))
            .await;
            writes += 1;
        }
    }
    Ok(writes)
}

/// Revokes write access to a retained namespace (owners and members; viewers and the parent's
/// owners keep read) and freezes its quota so it grows no further.
async fn retain(ctx: &Context, tenant: &Tenant, ns: &str) -> Result<usize> {
    let mut writes = 0;
    let quotas = Api::<ResourceQuota>::namespaced(ctx.client.clone(), ns);
    let live = quotas
        .get_opt(QUOTA)
        .await
        .at("reading", format!("ResourceQuota {ns}/{QUOTA}"))?;
    let limited: Vec<String> = live
        .as_ref()
        .and_then(|q| q.spec.as_ref()?.hard.as_ref())
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default();
    let frozen = frozen_quota(&tenant.name_any(), ns, &limited);
    if apply(&quotas, &frozen, live.as_ref())
        .await
        .at("retaining", describe(&frozen))?
        != Outcome::Unchanged
    {
        writes += 1;
    }
    let bindings = Api::<RoleBinding>::namespaced(ctx.client.clone(), ns);
    for name in REVOKED_ON_RETAIN {
        if delete(&bindings, name)
            .await
            .at("retaining", format!("RoleBinding {ns}/{name}"))?
        {
            writes += 1;
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::note;

    #[test]
    fn an_event_note_names_the_objects_and_stays_within_an_events_limit() {
        let few = [
            "Namespace a-prod".to_string(),
            "RoleBinding a-prod/citycloud-owners".into(),
        ];
        assert_eq!(
            note("Created", &few),
            "Created 2: Namespace a-prod, RoleBinding a-prod/citycloud-owners"
        );
        let many: Vec<String> = (0..100)
            .map(|i| format!("NetworkPolicy ward-{i}-prod/citycloud-ingress"))
            .collect();
        let long = note("Created", &many);
        assert!(long.len() <= 1024, "{} bytes", long.len());
        assert!(long.starts_with("Created 100: NetworkPolicy ward-0-prod/"));
        assert!(long.ends_with(" more"), "{long}");
    }
}
