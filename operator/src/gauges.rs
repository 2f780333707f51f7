//! The per-tenant gauges of /metrics: how many tenants are Ready (`citycloud_tenants`), and
//! each tenant's quota use (`citycloud_tenant_quota_used` / `_hard`). Series of a deleted
//! tenant, or of a resource dropped from its budget, are removed, so /metrics does not grow
//! with every tenant that ever existed.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::api::ResourceUsage;
use crate::metrics::{Metrics, QuotaLabels, ReadyLabel};
use crate::quantity::Milli;

/// What the gauges were last set from, to recount readiness and to remove stale series.
#[derive(Default)]
pub struct TenantGauges {
    /// Each tenant's last readiness, by name.
    readiness: Mutex<BTreeMap<String, bool>>,
    /// The resources of each tenant's published quota series, by tenant.
    usage_series: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl TenantGauges {
    /// Records a tenant's readiness and recounts `citycloud_tenants`.
    pub fn readiness(&self, metrics: &Metrics, tenant: &str, ready: bool) {
        if let Ok(mut map) = self.readiness.lock() {
            map.insert(tenant.to_string(), ready);
            publish_readiness(metrics, &map);
        }
    }

    /// Publishes a tenant's quota use, and removes the series of resources no longer in its
    /// budget.
    pub fn usage(&self, metrics: &Metrics, tenant: &str, usage: &BTreeMap<String, ResourceUsage>) {
        let Ok(mut series) = self.usage_series.lock() else {
            return;
        };
        let value = |q| {
            Milli::of(q)
                .map(|m| m.0 as f64 / 1000.0)
                .unwrap_or_default()
        };
        for (resource, u) in usage {
            let labels = quota_labels(tenant, resource);
            metrics
                .quota_used
                .get_or_create(&labels)
                .set(value(&u.used));
            metrics
                .quota_hard
                .get_or_create(&labels)
                .set(value(&u.hard));
        }
        let now: BTreeSet<String> = usage.keys().cloned().collect();
        let before = series.insert(tenant.to_string(), now).unwrap_or_default();
        for resource in before.iter().filter(|r| !usage.contains_key(*r)) {
            remove_usage_series(metrics, tenant, resource);
        }
    }

    /// Forgets a deleted tenant: its readiness and its quota series.
    pub fn forget(&self, metrics: &Metrics, tenant: &str) {
        if let Ok(mut map) = self.readiness.lock() {
            map.remove(tenant);
            publish_readiness(metrics, &map);
        }
        if let Ok(mut series) = self.usage_series.lock() {
            for resource in series.remove(tenant).unwrap_or_default() {
                remove_usage_series(metrics, tenant, &resource);
            }
        }
    }
}

fn remove_usage_series(metrics: &Metrics, tenant: &str, resource: &str) {
    let labels = quota_labels(tenant, resource);
    metrics.quota_used.remove(&labels);
    metrics.quota_hard.remove(&labels);
}

fn publish_readiness(metrics: &Metrics, map: &BTreeMap<String, bool>) {
    let ready = map.values().filter(|r| **r).count() as i64;
    let labels = |ready| ReadyLabel { ready };
    metrics.tenants.get_or_create(&labels("true")).set(ready);
    metrics
        .tenants
        .get_or_create(&labels("false"))
        .set(map.len() as i64 - ready);
}

fn quota_labels(tenant: &str, resource: &str) -> QuotaLabels {
    QuotaLabels {
        tenant: tenant.to_string(),
        resource: resource.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResourceUsage;

    fn usage(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, ResourceUsage> {
        pairs
            .iter()
            .map(|(r, used, hard)| {
                let u: ResourceUsage =
                    serde_json::from_value(serde_json::json!({"used": used, "hard": hard}))
                        .expect("usage");
                (r.to_string(), u)
            })
            .collect()
    }

    #[test]
    fn a_deleted_tenants_quota_series_disappear_and_others_stay() {
        let (metrics, gauges) = (Metrics::default(), TenantGauges::default());
        gauges.readiness(&metrics, "a", true);
        gauges.readiness(&metrics, "b", true);
        gauges.usage(
            &metrics,
            "a",
            &usage(&[("pods", "2", "8"), ("requests.cpu", "500m", "4")]),
        );
        gauges.usage(&metrics, "b", &usage(&[("pods", "1", "5")]));
        let text = metrics.encode();
        assert!(
            text.contains(r#"citycloud_tenant_quota_hard{tenant="a",resource="pods"} 8"#),
            "{text}"
        );
        assert!(
            text.contains(r#"citycloud_tenant_quota_used{tenant="a",resource="requests.cpu"} 0.5"#),
            "{text}"
        );

        gauges.forget(&metrics, "a");
        let text = metrics.encode();
        assert!(!text.contains(r#"tenant="a""#), "{text}");
        assert!(
            text.contains(r#"citycloud_tenant_quota_hard{tenant="b",resource="pods"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"citycloud_tenants{ready="true"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_resource_dropped_from_the_budget_loses_its_series() {
        let (metrics, gauges) = (Metrics::default(), TenantGauges::default());
        gauges.usage(
            &metrics,
            "a",
            &usage(&[("pods", "2", "8"), ("requests.cpu", "1", "4")]),
        );
        gauges.usage(&metrics, "a", &usage(&[("pods", "3", "8")]));
        let text = metrics.encode();
        assert!(!text.contains("requests.cpu"), "{text}");
        assert!(
            text.contains(r#"citycloud_tenant_quota_used{tenant="a",resource="pods"} 3"#),
            "{text}"
        );
    }
}
