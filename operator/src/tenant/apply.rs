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
use super::cache::{Caches, Pending, in_namespace};
use crate::api::labels::{ENVIRONMENT, ORPHANED, TENANT_UID};
use crate::api::{DeletionPolicy, Environment, Tenant};
use crate::apply::{Outcome, apply, holds, prepare, send};
use crate::context::Context;
/// Named here too (`apply::publish`) for the code written before it moved to `events`.
pub use crate::events::publish;
use crate::events::{Journal, describe};
use crate::{Error, Result, StepExt};

/// What applying did, for status and events.
#[derive(Debug, Default)]
pub struct Applied {
    pub namespaces: Vec<String>,
    pub journal: Journal,
    /// New namespaces whose users get access once their quota is enforced.
    pub awaiting_quota: Vec<String>,
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
    let name = tenant.name_any();
    // Independent objects go out together (a reconcile waits for the slowest, not the sum):
    // the namespaces side by side, and in each what lives in it once the namespace exists.
    let namespaces = futures::future::try_join_all(
        desired
            .namespaces
            .iter()
            .filter(|res| !skipped.contains(&res.namespace.name_any()))
            .map(|res| apply_namespace(ctx, caches, &name, res, live_namespaces, live_quotas)),
    );
    let roles = Api::<ClusterRole>::all(ctx.client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(ctx.client.clone());
    // Read access for all its people; approve on it for its owners: the two pairs side by side.
    let pairs = [
        (&desired.reader_role, &desired.reader_binding),
        (&desired.approver_role, &desired.approver_binding),
    ];
    let cluster = futures::future::try_join_all(pairs.into_iter().map(|(role, binding)| {
        let (roles, bindings) = (&roles, &bindings);
        async move {
            let mut journal = Journal::default();
            let live_role = caches.cluster_roles.get(None, &role.name_any());
            let live_binding = caches.cluster_role_bindings.get(None, &binding.name_any());
            // The role first: binding a role that does not exist yet is refused to an operator
            // without the escalate verb (the API server cannot check what it would grant).
            let role_outcome = tracked(&caches.pending, roles, role, live_role.as_ref())
                .await
                .at("applying", describe(role))?;
            let binding_outcome =
                tracked(&caches.pending, bindings, binding, live_binding.as_ref())
                    .await
                    .at("applying", describe(binding))?;
            journal.record(ctx, role, role_outcome);
            journal.record(ctx, binding, binding_outcome);
            Ok::<_, Error>(journal)
        }
    }));
    let (namespaces, cluster) = futures::try_join!(namespaces, cluster)?;
    let mut applied = Applied::default();
    for (ns, journal, awaiting) in namespaces {
        applied.journal.absorb(journal);
        if awaiting {
            applied.awaiting_quota.push(ns.clone());
        }
        applied.namespaces.push(ns);
    }
    for journal in cluster {
        applied.journal.absorb(journal);
    }
    Ok(applied)
}

/// One namespace and what lives in it; whether its users' access waits for its quota.
async fn apply_namespace(
    ctx: &Context,
    caches: &Caches,
    name: &str,
    res: &super::build::NamespaceResources,
    live_namespaces: &BTreeMap<String, Namespace>,
    live_quotas: &BTreeMap<String, ResourceQuota>,
) -> Result<(String, Journal, bool)> {
    let mut journal = Journal::default();
    let ns = res.namespace.name_any();
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
    let limits = in_namespace(&caches.limit_ranges, &ns, name);
    let policies = in_namespace(&caches.network_policies, &ns, name);
    let bindings = in_namespace(&caches.role_bindings, &ns, name);
    let enforced = crate::quota::enforced(&res.quota, live_quotas.get(&ns));
    let pending = &caches.pending;
    // No access to a new namespace before its quota binds: the API server admits anything
    // there until kube-controller-manager has synced the quota's status (the quota's watch
    // brings us back then). Access already granted is never taken away for this.
    let grant = enforced || !bindings.is_empty();
    let (q, l, p, b) = futures::try_join!(
        sync_kind(ctx, pending, &ns, std::slice::from_ref(&res.quota), quota),
        sync_kind::<LimitRange>(ctx, pending, &ns, res.limit_range.as_slice(), limits),
        sync_kind(ctx, pending, &ns, &res.network_policies, policies),
        async {
            if grant {
                sync_kind(ctx, pending, &ns, &res.role_bindings, bindings).await
            } else {
                Ok(Journal::default())
            }
        }
    )?;
    for j in [q, l, p, b] {
        journal.absorb(j);
    }
    Ok((ns, journal, !grant))
}

/// Makes the tenant's objects of one kind in `ns` exactly `desired`, given what exists
/// (`live`): an apply for each that differs and a delete for each no longer wanted.
async fn sync_kind<K>(
    ctx: &Context,
    pending: &Pending,
    ns: &str,
    desired: &[K],
    mut live: BTreeMap<String, K>,
) -> Result<Journal>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let mut journal = Journal::default();
    let api = Api::<K>::namespaced(ctx.client.clone(), ns);
    let wanted: Vec<(&K, Option<K>)> = desired
        .iter()
        .map(|obj| (obj, live.remove(&obj.name_any())))
        .collect();
    let outcomes = futures::future::try_join_all(wanted.iter().map(|(obj, live)| {
        let api = &api;
        async move {
            match tracked(pending, api, *obj, live.as_ref()).await {
                // A field the API server will not change in place (a RoleBinding's roleRef,
                // e.g. of one planted under our name before the guard rails existed): replace
                // the object.
                Err(Error::Kube(kube::Error::Api(s)))
                    if s.code == 422 && immutable_field(&s.message) =>
                {
                    delete(api, &obj.name_any())
                        .await
                        .at("deleting", describe(*obj))?;
                    tracked(pending, api, *obj, None)
                        .await
                        .at("applying", describe(*obj))?;
                    Ok(Outcome::Updated)
                }
                other => other.at("applying", describe(*obj)),
            }
        }
    }))
    .await?;
    for ((obj, _), outcome) in wanted.iter().zip(outcomes) {
        journal.record(ctx, *obj, outcome);
    }
    for (name, obj) in live {
        if delete(&api, &name).await.at("deleting", describe(&obj))? {
            journal.removed(ctx, &obj);
        }
    }
    Ok(journal)
}

/// [`apply`], minding our writes the cache has not shown yet: what we applied moments ago is
/// not applied again, and what we apply is remembered (see [`Pending`]).
async fn tracked<K>(
    pending: &Pending,
    api: &Api<K>,
    desired: &K,
    live: Option<&K>,
) -> Result<Outcome>
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
    pending.begin(desired, &prepared.hash);
    // Forgotten unless it lands: a write that failed, or whose future was dropped mid-flight
    // (a sibling write failed and `try_join!` gave up on this one), may never have happened,
    // and a write remembered as pending is not sent again (see `Pending::holds`).
    let mut in_flight = InFlight {
        pending,
        desired,
        hash: &prepared.hash,
        landed: false,
    };
    let answer = send(api, desired, &prepared).await?;
    in_flight.landed = true;
    // The budget split needs the quota we wrote until the cache shows it.
    let quota = (K::kind(&()) == "ResourceQuota")
        .then(|| serde_json::to_value(&answer).ok())
        .flatten()
        .and_then(|v| serde_json::from_value::<ResourceQuota>(v).ok());
    // A write that changed nothing (the cache was behind) brings no watch event to wait for.
    let unchanged = live.is_some_and(|l| {
        l.meta().resource_version.is_some()
            && l.meta().resource_version == answer.meta().resource_version
    });
    pending.done(desired, &prepared.hash, !unchanged, quota);
    Ok(if live.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    })
}

/// A write begun with [`Pending::begin`], ended as not changing anything when dropped before
/// it landed.
struct InFlight<'a, K: Resource<DynamicType = ()>> {
    pending: &'a Pending,
    desired: &'a K,
    hash: &'a str,
    landed: bool,
}

impl<K: Resource<DynamicType = ()>> Drop for InFlight<'_, K> {
    fn drop(&mut self) {
        if !self.landed {
            self.pending.done(self.desired, self.hash, false, None);
        }
    }
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
    use super::{InFlight, Pending};

    #[test]
    fn a_write_dropped_before_it_landed_is_not_taken_as_pending() {
        let pending = Pending::default();
        let rq: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "citycloud-quota", "namespace": "a-dev"}}),
        )
        .expect("a ResourceQuota");
        pending.begin(&rq, "h1");
        assert!(pending.holds(&rq, "h1"));
        // A sibling write failed: try_join! dropped this one mid-flight.
        drop(InFlight {
            pending: &pending,
            desired: &rq,
            hash: "h1",
            landed: false,
        });
        assert!(!pending.holds(&rq, "h1"), "sent again next time");
        // One that landed stays pending until its watch event comes.
        pending.begin(&rq, "h2");
        drop(InFlight {
            pending: &pending,
            desired: &rq,
            hash: "h2",
            landed: true,
        });
        assert!(pending.holds(&rq, "h2"));
    }
}
