//! What every reconcile shares: the client, metrics, the event recorder and readiness.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::metrics::Metrics;

/// Process-wide state, also read by the HTTP endpoints.
#[derive(Default)]
pub struct Shared {
    pub metrics: Metrics,
    /// Set once every controller has started watching.
    pub ready: AtomicBool,
    /// Namespaces that recently wanted more quota.
    pub demand: crate::quota::demand::Demand,
    /// Each tenant's last readiness, by name.
    readiness: std::sync::Mutex<std::collections::BTreeMap<String, bool>>,
    /// The resources of each tenant's published quota series, by tenant, so the series of a
    /// resource dropped from the budget, or of a deleted tenant, are removed.
    usage_series: std::sync::Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// A hash of the status the operator last wrote for each tenant: the echo of its own
    /// status write is no reason to reconcile the tenant again.
    pub tenant_status_written: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

pub struct Context {
    pub client: Client,
    pub shared: Arc<Shared>,
    pub recorder: Recorder,
    /// Who the operator runs as, when it runs in the cluster (see [`OperatorIdentity`]).
    pub identity: Option<OperatorIdentity>,
}

/// The operator's own ServiceAccount. It may not read Secrets cluster-wide: it binds the
/// chart's secrets ClusterRole to itself in each tenant namespace it provisions, where the
/// claims' binding Secrets live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorIdentity {
    pub namespace: String,
    pub service_account: String,
    pub secrets_cluster_role: String,
}

impl OperatorIdentity {
    /// From `CITYCLOUD_OPERATOR_NAMESPACE`, `CITYCLOUD_OPERATOR_SERVICE_ACCOUNT` and
    /// `CITYCLOUD_SECRETS_CLUSTER_ROLE` (the chart sets all three).
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(OperatorIdentity {
            namespace: var("CITYCLOUD_OPERATOR_NAMESPACE")?,
            service_account: var("CITYCLOUD_OPERATOR_SERVICE_ACCOUNT")?,
            secrets_cluster_role: var("CITYCLOUD_SECRETS_CLUSTER_ROLE")?,
        })
    }
}

impl Context {
    pub fn new(
        client: Client,
        shared: Arc<Shared>,
        identity: Option<OperatorIdentity>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: crate::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            shared,
            identity,
        })
    }
}

impl Context {
    /// Publishes a Kubernetes Event on `obj` for its users to read (`kubectl describe`).
    /// Failing to publish is logged, never an error: events are advisory.
    pub async fn publish<K: kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(within(note, NOTE_MAX)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
}

impl Context {
    /// Publishes `events` (type, reason, note) on `obj`, in order, without the reconcile
    /// waiting for them: they are advisory, and a round trip each on a reconcile's path.
    pub fn publish_detached<K: kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        events: Vec<(EventType, &'static str, String)>,
    ) {
        if events.is_empty() {
            return;
        }
        let (recorder, reference) = (self.recorder.clone(), obj.object_ref(&()));
        tokio::spawn(async move {
            for (type_, reason, note) in events {
                let event = Event {
                    type_,
                    reason: reason.into(),
                    note: Some(within(note, NOTE_MAX)),
                    action: "Reconcile".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %e, "could not publish an event");
                }
            }
        });
    }
}

/// The API server refuses an Event whose note is longer than 1 kB.
const NOTE_MAX: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, marked with "…" when cut.
pub fn within(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

impl Shared {
    /// Records a tenant's readiness for the `citycloud_tenants` gauge.
    pub fn tenant_readiness(&self, tenant: &str, ready: bool) {
        if let Ok(mut map) = self.readiness.lock() {
            map.insert(tenant.to_string(), ready);
            self.publish_readiness(&map);
        }
    }

    /// Publishes a tenant's quota use for `citycloud_tenant_quota_used` / `_hard`, and
    /// removes the series of resources no longer in its budget.
    pub fn tenant_usage(&self, tenant: &str, usage: &BTreeMap<String, crate::api::ResourceUsage>) {
        let Ok(mut series) = self.usage_series.lock() else {
            return;
        };
        let value = |q| {
            crate::quantity::Milli::of(q)
                .map(|m| m.0 as f64 / 1000.0)
                .unwrap_or_default()
        };
        for (resource, u) in usage {
            let labels = quota_labels(tenant, resource);
            self.metrics
                .quota_used
                .get_or_create(&labels)
                .set(value(&u.used));
            self.metrics
                .quota_hard
                .get_or_create(&labels)
                .set(value(&u.hard));
        }
        let now: BTreeSet<String> = usage.keys().cloned().collect();
        let before = series.insert(tenant.to_string(), now).unwrap_or_default();
        for resource in before.iter().filter(|r| !usage.contains_key(*r)) {
            self.remove_usage_series(tenant, resource);
        }
    }

    /// Forgets a deleted tenant: its readiness and its quota series.
    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut w) = self.tenant_status_written.lock() {
            w.remove(tenant);
        }
        if let Ok(mut map) = self.readiness.lock() {
            map.remove(tenant);
            self.publish_readiness(&map);
        }
        if let Ok(mut series) = self.usage_series.lock() {
            for resource in series.remove(tenant).unwrap_or_default() {
                self.remove_usage_series(tenant, &resource);
            }
        }
    }

    fn remove_usage_series(&self, tenant: &str, resource: &str) {
        let labels = quota_labels(tenant, resource);
        self.metrics.quota_used.remove(&labels);
        self.metrics.quota_hard.remove(&labels);
    }

    fn publish_readiness(&self, map: &std::collections::BTreeMap<String, bool>) {
        let ready = map.values().filter(|r| **r).count() as i64;
        let labels = |ready| crate::metrics::ReadyLabel { ready };
        self.metrics
            .tenants
            .get_or_create(&labels("true"))
            .set(ready);
        self.metrics
            .tenants
            .get_or_create(&labels("false"))
            .set(map.len() as i64 - ready);
    }
}

fn quota_labels(tenant: &str, resource: &str) -> crate::metrics::QuotaLabels {
    crate::metrics::QuotaLabels {
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
        let shared = Shared::default();
        shared.tenant_readiness("a", true);
        shared.tenant_readiness("b", true);
        shared.tenant_usage(
            "a",
            &usage(&[("pods", "2", "8"), ("requests.cpu", "500m", "4")]),
        );
        shared.tenant_usage("b", &usage(&[("pods", "1", "5")]));
        let text = shared.metrics.encode();
        assert!(
            text.contains(r#"citycloud_tenant_quota_hard{tenant="a",resource="pods"} 8"#),
            "{text}"
        );
        assert!(
            text.contains(r#"citycloud_tenant_quota_used{tenant="a",resource="requests.cpu"} 0.5"#),
            "{text}"
        );

        shared.forget_tenant("a");
        let text = shared.metrics.encode();
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
        let shared = Shared::default();
        shared.tenant_usage(
            "a",
            &usage(&[("pods", "2", "8"), ("requests.cpu", "1", "4")]),
        );
        shared.tenant_usage("a", &usage(&[("pods", "3", "8")]));
        let text = shared.metrics.encode();
        assert!(!text.contains("requests.cpu"), "{text}");
        assert!(
            text.contains(r#"citycloud_tenant_quota_used{tenant="a",resource="pods"} 3"#),
            "{text}"
        );
    }
}

#[cfg(test)]
mod note_tests {
    use super::within;

    #[test]
    fn a_long_note_is_cut_on_a_character_boundary_within_the_limit() {
        let long = "Ủy ban nhân dân ".repeat(200);
        let cut = within(long.clone(), 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'), "{}", cut.len());
        assert!(long.starts_with(cut.trim_end_matches('…')));
        assert_eq!(within("short".into(), 1024), "short");
    }
}
