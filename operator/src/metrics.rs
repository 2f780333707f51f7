//! Prometheus metrics: reconciles and their duration by controller and result, tenants by
//! readiness, tenant quota used/hard by resource, claims by service and state.
//!
//! Every label value is bounded by what exists: a deleted tenant's series, a resource dropped
//! from a budget and a claim state no claim is in any more are removed (see
//! `Shared::forget_tenant` and the claim controller's `ClaimStates`), and claims naming a
//! SharedService that does not exist share one label. `/metrics` is served only to authorised
//! readers (see `metrics_auth`).
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabel {
    pub ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub tenant: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    pub service: String,
    /// bound | refused
    pub state: &'static str,
}

pub struct Metrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabel, Histogram>,
    pub writes: Family<ControllerLabel, Counter>,
    pub tenants: Family<ReadyLabel, Gauge>,
    pub quota_used: Family<QuotaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub quota_hard: Family<QuotaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub claims: Family<ClaimLabels, Gauge>,
    /// 1 while this replica holds the leader lease (or runs without leader election).
    pub leader: Gauge,
    registry: Mutex<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let writes = Family::<ControllerLabel, Counter>::default();
        let tenants = Family::<ReadyLabel, Gauge>::default();
        let quota_used = Family::default();
        let quota_hard = Family::default();
        let claims = Family::<ClaimLabels, Gauge>::default();
        let leader = Gauge::default();
        let mut registry = Registry::with_prefix("citycloud");
        registry.register(
            "reconciles",
            "Reconciles by controller and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile by controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "writes",
            "Objects created or changed by the operator, by controller",
            writes.clone(),
        );
        registry.register("tenants", "Tenants by readiness", tenants.clone());
        registry.register(
            "tenant_quota_used",
            "Tenant-wide quota used, by tenant and resource",
            quota_used.clone(),
        );
        registry.register(
            "tenant_quota_hard",
            "Tenant-wide quota budget, by tenant and resource",
            quota_hard.clone(),
        );
        registry.register(
            "claims",
            "SharedServiceClaims by service and state (bound, refused); claims naming no existing SharedService count under service <unknown>",
            claims.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica reconciles (holds the leader lease), else 0",
            leader.clone(),
        );
        Metrics {
            reconciles,
            reconcile_duration,
            writes,
            tenants,
            quota_used,
            quota_hard,
            claims,
            leader,
            registry: Mutex::new(registry),
        }
    }
}

impl Metrics {
    /// Starts timing a reconcile; the duration is recorded when the guard drops.
    pub fn time(&self, controller: &'static str) -> DurationGuard<'_> {
        DurationGuard {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    pub fn reconciled(&self, controller: &'static str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

pub struct DurationGuard<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for DurationGuard<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .get_or_create(&ControllerLabel {
                controller: self.controller,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}
