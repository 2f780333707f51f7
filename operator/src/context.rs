//! What every reconcile shares: the client, metrics, the event recorder and readiness.
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::gauges::TenantGauges;
use crate::metrics::Metrics;

/// Process-wide state, also read by the HTTP endpoints.
#[derive(Default)]
pub struct Shared {
    pub metrics: Metrics,
    /// Set once every controller has started watching.
    pub ready: AtomicBool,
    /// Namespaces that recently wanted more quota.
    pub demand: crate::quota::demand::Demand,
    /// The per-tenant gauges of /metrics (readiness, quota use).
    pub gauges: TenantGauges,
    /// A hash of the status the operator last wrote for each tenant: the echo of its own
    /// status write is no reason to reconcile the tenant again. In memory only, never
    /// persisted: `DefaultHasher` (whose values may change with the toolchain) is fine here;
    /// what is persisted (the applied-hash annotation, claim ids) uses SHA-256 (`digest`).
    pub tenant_status_written: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Retry delays after failed reconciles, by object, for every controller.
    pub backoff: crate::reconciler::Backoff,
}

pub struct Context {
    pub client: Client,
    pub shared: Arc<Shared>,
    /// Events that repeat (the same warning on every retry): one Event, its count rising.
    pub recorder: Recorder,
    /// Who the events say reported them.
    pub reporter: kube::runtime::events::Reporter,
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
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            shared,
            identity,
        })
    }
}

impl Shared {
    /// Records a tenant's readiness for the `citycloud_tenants` gauge.
    pub fn tenant_readiness(&self, tenant: &str, ready: bool) {
        self.gauges.readiness(&self.metrics, tenant, ready);
    }

    /// Publishes a tenant's quota use for `citycloud_tenant_quota_used` / `_hard`.
    pub fn tenant_usage(
        &self,
        tenant: &str,
        usage: &std::collections::BTreeMap<String, crate::api::ResourceUsage>,
    ) {
        self.gauges.usage(&self.metrics, tenant, usage);
    }

    /// Forgets a deleted tenant: its last status written, its readiness and its quota series.
    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut w) = self.tenant_status_written.lock() {
            w.remove(tenant);
        }
        self.gauges.forget(&self.metrics, tenant);
    }
}
