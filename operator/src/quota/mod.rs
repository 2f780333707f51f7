//! Tenant-wide budgets that never overshoot: pure functions (no API server, no other module
//! of the operator but the API types and quantities), used by the Tenant and TenantRequest
//! controllers. The QuotaProfile controller is `crate::quota_profile`.
//!
//! Kubernetes only enforces quota per namespace. We keep, for every budgeted resource, the
//! namespaces' ResourceQuota `hard` values summing to at most the tenant's budget, so the API
//! server's own quota admission can never admit more than the budget in total, whatever the
//! concurrency, and whether or not the operator is running. Unused budget is moved to the
//! namespaces that show demand (see [`budget`]); a parent's budget is shared with its
//! children (see [`carve`]).
pub mod budget;
pub mod carve;
pub mod demand;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{Milli, is_bytes};
use budget::{Share, next_hard, targets, unit_of};

/// The budgeted part of each namespace's ResourceQuota `hard`, by namespace then resource.
#[derive(Debug, Default)]
pub struct Allocation {
    pub hard: BTreeMap<String, BTreeMap<String, Quantity>>,
    /// Some raise waits for another namespace to give budget back first.
    pub settling: bool,
    /// Namespaces whose usage reached their hard (a demand signal).
    pub saturated: Vec<String>,
}

/// The budget left for the namespaces being provisioned once what `kept` (namespaces retained
/// from dropped environments, which still run their workloads) uses is taken out: their use
/// counts against the tenant's budget as long as the tenant exists. Never below zero.
pub fn remaining<'a>(
    budget: &BTreeMap<String, Quantity>,
    kept: impl IntoIterator<Item = &'a ResourceQuota>,
) -> BTreeMap<String, Quantity> {
    let kept: Vec<&ResourceQuota> = kept.into_iter().collect();
    budget
        .iter()
        .map(|(resource, total)| {
            let used: i128 = kept
                .iter()
                .filter_map(|q| get(q.status.as_ref()?.used.as_ref(), resource))
                .map(|m| m.0)
                .sum();
            let left = match Milli::of(total) {
                Ok(t) => Milli((t.0 - used).max(0)).to_quantity(is_bytes(resource)),
                Err(_) => total.clone(),
            };
            (resource.clone(), left)
        })
        .collect()
}

fn get(map: Option<&BTreeMap<String, Quantity>>, resource: &str) -> Option<Milli> {
    map.and_then(|m| m.get(resource))
        .and_then(|q| Milli::of(q).ok())
}

/// Whether the API server enforces `desired` in its namespace yet. Quota admission ignores a
/// ResourceQuota until kube-controller-manager has filled in its `status.hard`: until then a
/// new namespace admits anything. And it refuses everything a resource limits ("status unknown
/// for quota") until kube-controller-manager has counted its usage in `status.used`: it counts
/// a custom resource (count/sharedserviceclaims.citycloud.io) only once it has discovered it.
/// So the tenant's users get access to a namespace only once every resource we limit is in
/// both.
pub fn enforced(desired: &ResourceQuota, live: Option<&ResourceQuota>) -> bool {
    let wanted = desired.spec.as_ref().and_then(|s| s.hard.as_ref());
    let status = live.and_then(|q| q.status.as_ref());
    let (hard, used) = (
        status.and_then(|s| s.hard.as_ref()),
        status.and_then(|s| s.used.as_ref()),
    );
    match (wanted, hard, used) {
        (None, _, _) => true,
        (Some(w), Some(h), Some(u)) => w.keys().all(|k| h.contains_key(k) && u.contains_key(k)),
        (Some(w), _, _) => w.is_empty(),
    }
}

/// Splits `budget` over `caps` (the namespaces' profile caps) given their live quotas, each
/// namespace's demand level and whether its hard is held (see [`budget::Share::held`]).
pub fn allocate(
    budget: &BTreeMap<String, Quantity>,
    caps: &BTreeMap<String, BTreeMap<String, Quantity>>,
    live: &BTreeMap<String, ResourceQuota>,
    demand: impl Fn(&str) -> u8,
    held: impl Fn(&str) -> bool,
) -> Allocation {
    let mut out = Allocation::default();
    for (resource, total) in budget {
        let Ok(total) = Milli::of(total) else {
            continue;
        };
        let shares: Vec<Share> = caps
            .iter()
            .map(|(ns, cap)| {
                let rq = live.get(ns);
                let spec = rq
                    .and_then(|q| q.spec.as_ref())
                    .and_then(|s| s.hard.as_ref());
                let status = rq.and_then(|q| q.status.as_ref());
                let used = get(status.and_then(|s| s.used.as_ref()), resource).unwrap_or_default();
                let status_hard = get(status.and_then(|s| s.hard.as_ref()), resource);
                let saturated = used.0 > 0 && status_hard.is_some_and(|h| used >= h);
                if saturated && !out.saturated.contains(ns) {
                    out.saturated.push(ns.clone());
                }
                Share {
                    namespace: ns.clone(),
                    cap: get(Some(cap), resource),
                    used,
                    spec_hard: get(spec, resource),
                    status_hard,
                    demand: demand(ns).max(u8::from(saturated)),
                    held: held(ns),
                }
            })
            .collect();
        let unit = unit_of(resource);
        let next = next_hard(total, unit, &shares);
        if next != targets(total, unit, &shares) {
            out.settling = true;
        }
        for (share, hard) in shares.iter().zip(next) {
            out.hard
                .entry(share.namespace.clone())
                .or_default()
                .insert(resource.clone(), hard.to_quantity(is_bytes(resource)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(v: &str) -> Quantity {
        Quantity(v.to_string())
    }

    #[test]
    fn what_retained_namespaces_use_comes_out_of_the_budget_never_below_zero() {
        let used = |cpu: &str| ResourceQuota {
            status: Some(k8s_openapi::api::core::v1::ResourceQuotaStatus {
                used: Some(BTreeMap::from([("requests.cpu".to_string(), q(cpu))])),
                hard: None,
            }),
            ..Default::default()
        };
        let budget = BTreeMap::from([
            ("requests.cpu".to_string(), q("1")),
            ("requests.memory".to_string(), q("1Gi")),
        ]);
        let kept = [used("400m"), used("100m")];
        let left = remaining(&budget, &kept);
        assert_eq!(left["requests.cpu"].0, "500m");
        assert_eq!(left["requests.memory"].0, "1Gi", "nothing used");
        let over = [used("3")];
        assert_eq!(remaining(&budget, &over)["requests.cpu"].0, "0");
    }

    #[test]
    fn a_quota_is_enforced_only_once_its_status_lists_every_limited_resource() {
        let list = |keys: &[&str]| -> BTreeMap<String, Quantity> {
            keys.iter().map(|k| (k.to_string(), q("1"))).collect()
        };
        let quota = |spec: &[&str], hard: Option<&[&str]>, used: Option<&[&str]>| ResourceQuota {
            spec: Some(k8s_openapi::api::core::v1::ResourceQuotaSpec {
                hard: Some(list(spec)),
                ..Default::default()
            }),
            status: hard.map(|h| k8s_openapi::api::core::v1::ResourceQuotaStatus {
                hard: Some(list(h)),
                used: used.map(list),
            }),
            ..Default::default()
        };
        let both: &[&str] = &["pods", "requests.cpu"];
        let desired = quota(both, None, None);
        assert!(!enforced(&desired, None), "not created yet");
        assert!(
            !enforced(&desired, Some(&quota(both, None, None))),
            "not synced"
        );
        assert!(
            !enforced(
                &desired,
                Some(&quota(&["pods"], Some(&["pods"]), Some(&["pods"])))
            ),
            "cpu not yet"
        );
        assert!(
            !enforced(&desired, Some(&quota(both, Some(both), Some(&["pods"])))),
            "cpu usage not counted yet: admission refuses it all"
        );
        assert!(enforced(
            &desired,
            Some(&quota(both, Some(both), Some(both)))
        ));
    }

    #[test]
    fn every_kind_of_quota_resource_splits_in_its_own_unit_and_never_beyond_the_budget() {
        let budget: BTreeMap<String, Quantity> = [
            ("requests.cpu", "1"),
            ("limits.memory", "3Gi"),
            ("requests.storage", "10Gi"),
            ("requests.ephemeral-storage", "5G"),
            ("requests.nvidia.com/gpu", "3"),
            ("count/deployments.apps", "5"),
            ("services.loadbalancers", "1"),
            ("persistentvolumeclaims", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), q(v)))
        .collect();
        let caps: BTreeMap<String, BTreeMap<String, Quantity>> = ["t-a", "t-b"]
            .into_iter()
            .map(|ns| (ns.to_string(), BTreeMap::new()))
            .collect();
        let out = allocate(&budget, &caps, &BTreeMap::new(), |_| 0, |_| false);
        for (resource, total) in &budget {
            let parts: Vec<Milli> = out
                .hard
                .values()
                .map(|h| Milli::of(&h[resource]).expect("a valid quantity"))
                .collect();
            let sum: i128 = parts.iter().map(|p| p.0).sum();
            assert!(sum <= Milli::of(total).unwrap().0, "{resource}: {parts:?}");
            let unit = if resource.contains("cpu") { 1 } else { 1000 };
            assert!(
                parts.iter().all(|p| p.0 % unit == 0),
                "{resource} split into fractions: {parts:?}"
            );
            // Nothing stranded: at most one unit is left over by the even split.
            assert!(
                Milli::of(total).unwrap().0 - sum < unit * 2,
                "{resource}: {parts:?}"
            );
        }
        assert_eq!(out.hard["t-a"]["requests.nvidia.com/gpu"], q("2"));
        assert_eq!(out.hard["t-b"]["requests.nvidia.com/gpu"], q("1"));
        assert_eq!(out.hard["t-a"]["services.loadbalancers"], q("1"));
        assert_eq!(out.hard["t-b"]["services.loadbalancers"], q("0"));
    }
}
