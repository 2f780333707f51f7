//! Tenant-wide budgets that never overshoot, and the QuotaProfile controller.
//!
//! Kubernetes only enforces quota per namespace. We keep, for every budgeted resource, the
//! namespaces' ResourceQuota `hard` values summing to at most the tenant's budget, so the API
//! server's own quota admission can never admit more than the budget in total, whatever the
//! concurrency, and whether or not the operator is running. Unused budget is moved to the
//! namespaces that show demand (see [`budget`]).
pub mod budget;
pub mod demand;
pub mod profile;
pub mod workloads;

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

fn get(map: Option<&BTreeMap<String, Quantity>>, resource: &str) -> Option<Milli> {
    map.and_then(|m| m.get(resource))
        .and_then(|q| Milli::of(q).ok())
}

/// Splits `budget` over `caps` (the namespaces' profile caps) given their live quotas.
pub fn allocate(
    budget: &BTreeMap<String, Quantity>,
    caps: &BTreeMap<String, BTreeMap<String, Quantity>>,
    live: &BTreeMap<String, ResourceQuota>,
    demand: impl Fn(&str) -> u8,
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
