//! Reads what a Tenant's spec points to: its QuotaProfiles, its ancestors, and the live
//! namespaces that carry its names or its label.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::build::{Inputs, QUOTA};
use super::cache::Caches;
use crate::Result;
use crate::api::Tenant;
use crate::api::labels::CLAIM as CLAIM_LABEL;
use crate::api::labels::TENANT;

/// How deep a hierarchy may go before it is reported as a cycle.
const MAX_DEPTH: usize = 16;

/// A problem with `spec.parent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParentProblem {
    NotFound(String),
    Cycle(Vec<String>),
}

pub struct Dereferenced {
    pub inputs: Inputs,
    pub missing_profiles: Vec<String>,
    pub parent_problem: Option<ParentProblem>,
    /// Live namespaces named like the tenant's environments, by name.
    pub named: BTreeMap<String, Namespace>,
    /// Live namespaces labelled as this tenant's (including ones of dropped environments).
    pub labelled: Vec<Namespace>,
    /// The live `citycloud-quota` of each of the tenant's namespaces, by namespace.
    pub quotas: BTreeMap<String, ResourceQuota>,
}

/// Reads from the controller's caches (see [`super::cache`]); only the tenant's quotas, and
/// ancestors not cached yet, are read from the API server.
pub async fn dereference(
    client: &Client,
    caches: &Caches,
    tenant: &Tenant,
    settled: Option<BTreeMap<String, ResourceQuota>>,
) -> Result<Dereferenced> {
    let name = tenant.name_any();
    let mut profiles = BTreeMap::new();
    let mut missing_profiles = Vec::new();
    for wanted in tenant.quota_profiles().into_iter().collect::<BTreeSet<_>>() {
        match caches.profiles.get(&ObjectRef::new(wanted)) {
            Some(p) => {
                profiles.insert(wanted.to_string(), (*p).clone());
            }
            None => missing_profiles.push(wanted.to_string()),
        }
    }

    let (ancestor_owners, parent_problem) = ancestors(client, &caches.tenants, tenant).await?;

    let labelled: Vec<Namespace> = caches.namespaces.under(&name);
    // The cache holds every namespace: a name not labelled as ours is looked up there, to
    // find someone else's namespace of that name before we would take it over. Only names
    // we applied moments ago whose echo the cache has not shown yet are read, and only when
    // the tenant lists more environments than its profile allows (which of them exist then
    // decides which are skipped, see `validate::excess_environments`); otherwise they are
    // ours, as written.
    let wanted = tenant.namespaces();
    let within_max = profiles
        .get(&tenant.spec.quota_profile)
        .is_none_or(|p| usize::try_from(p.spec.max_environments).is_ok_and(|m| wanted.len() <= m));
    let mut named: BTreeMap<String, Namespace> = BTreeMap::new();
    let mut unseen = Vec::new();
    for ns in &wanted {
        if let Some(live) = labelled.iter().find(|n| &n.name_any() == ns) {
            named.insert(ns.clone(), live.clone());
        } else if let Some(live) = caches.namespaces.get(None, ns) {
            named.insert(ns.clone(), live);
        } else if !within_max && caches.pending.touched::<Namespace>(None, ns) {
            unseen.push(ns.clone());
        }
    }
    let ns_api = Api::<Namespace>::all(client.clone());
    let reads = futures::future::try_join_all(unseen.iter().map(|ns| ns_api.get_opt(ns)));
    // Read fresh, never from a cache: the budget split must see every admission so far. A
    // cached quota can be a version behind on `status.used`/`status.hard` (pods admitted, or
    // a raise enforced, since), and splitting on it lets two namespaces together admit more
    // than the budget (seen in CI: 11 pods of 100m under 1 CPU). One GET per namespace of
    // the tenant, side by side (a LIST by label would make the API server filter every quota
    // of the cluster, a cost per reconcile that grows with the number of tenants), unless
    // the tenant has no namespace at all (see `has_no_namespace`), or it is a new tenant
    // whose quotas were all just seen enforced and no user of it has access anywhere yet
    // (`settled`, see `Settling::take_quotas`): nothing can have been admitted since.
    let settled = settled.filter(|_| no_access_yet(caches, &labelled, &name));
    let read_quotas = async {
        if has_no_namespace(caches, tenant, &labelled) {
            return Ok(Vec::new());
        }
        if let Some(settled) = settled {
            return Ok(settled.into_values().collect());
        }
        let namespaces: BTreeSet<String> = wanted
            .iter()
            .cloned()
            .chain(labelled.iter().map(|ns| ns.name_any()))
            .collect();
        let found = futures::future::try_join_all(namespaces.iter().map(|ns| async move {
            Api::<ResourceQuota>::namespaced(client.clone(), ns)
                .get_opt(QUOTA)
                .await
        }))
        .await?;
        Ok::<_, kube::Error>(found.into_iter().flatten().collect())
    };
    let (unseen_live, quotas) = futures::try_join!(reads, read_quotas)?;
    for (ns, live) in unseen.into_iter().zip(unseen_live) {
        if let Some(live) = live {
            named.insert(ns, live);
        }
    }
    // Only the tenant's own quota, as the operator labels it (not a claim's, nor one planted
    // under that name by someone else: that one is taken over by the next apply).
    let quotas = quotas
        .into_iter()
        .filter(|q| q.name_any() == QUOTA && is_tenants_quota(q, &name))
        .filter_map(|q| Some((q.namespace()?, q)))
        .collect();
    Ok(Dereferenced {
        inputs: Inputs {
            profiles,
            ancestor_owners,
            allocations: BTreeMap::new(),
            operator: None,
        },
        missing_profiles,
        parent_problem,
        named,
        labelled,
        quotas,
    })
}

/// Whether the tenant provably has no namespace, hence no ResourceQuota for the budget split
/// to read (a brand-new tenant's first reconcile): none labelled as its in the cache, none of
/// its environments' names written by us and not yet shown by the cache, and none in its
/// status. Only the operator labels a namespace (and its quota) as a tenant's (the admission
/// policies refuse the label to anyone else), and the cache has listed everything before the
/// first reconcile, so a namespace of the tenant is either in the cache or pending.
fn has_no_namespace(caches: &Caches, tenant: &Tenant, labelled: &[Namespace]) -> bool {
    labelled.is_empty()
        && tenant
            .status
            .as_ref()
            .is_none_or(|s| s.namespaces.is_empty())
        && tenant
            .namespaces()
            .iter()
            .all(|ns| !caches.pending.touched::<Namespace>(None, ns))
}

/// Whether `quota` carries the operator's label for `tenant` and is not a claim's.
fn is_tenants_quota(quota: &ResourceQuota, tenant: &str) -> bool {
    let labels = quota.labels();
    labels.get(TENANT).map(String::as_str) == Some(tenant) && !labels.contains_key(CLAIM_LABEL)
}

/// Whether none of the tenant's namespaces has a RoleBinding of the tenant's (its users have
/// been granted access nowhere yet).
fn no_access_yet(caches: &Caches, labelled: &[Namespace], tenant: &str) -> bool {
    labelled.iter().all(|ns| {
        super::cache::in_namespace(&caches.role_bindings, &ns.name_any(), tenant).is_empty()
    })
}

async fn ancestors(
    client: &Client,
    tenants: &kube::runtime::reflector::Store<Tenant>,
    tenant: &Tenant,
) -> Result<(Vec<crate::api::Subject>, Option<ParentProblem>)> {
    let api = Api::<Tenant>::all(client.clone());
    let mut chain = vec![tenant.name_any()];
    let mut owners = Vec::new();
    let mut next = tenant.spec.parent.clone();
    while let Some(parent) = next {
        if chain.contains(&parent) || chain.len() > MAX_DEPTH {
            chain.push(parent);
            return Ok((owners, Some(ParentProblem::Cycle(chain))));
        }
        // From the controller's cache; read when not there (created a moment ago).
        let cached = tenants.get(&ObjectRef::new(&parent)).map(|p| (*p).clone());
        let found = match cached {
            Some(p) => Some(p),
            None => api.get_opt(&parent).await?,
        };
        let Some(p) = found else {
            return Ok((owners, Some(ParentProblem::NotFound(parent))));
        };
        owners.extend(p.spec.owners.iter().cloned());
        chain.push(parent);
        next = p.spec.parent.clone();
    }
    Ok((owners, None))
}
