//! Prometheus metrics: reconciles by controller, result and error (the failed step or kind of
//! error, from [`crate::Error::metric_label`]), their duration by controller, tenants by
//! readiness, tenant quota used/hard by resource, claims by service and state.
//!
//! Every label value is bounded by what exists: a deleted tenant's series, a resource dropped
//! from a budget and a claim state no claim is in any more are removed (see
//! `Shared::forget_tenant` and the claim controller's `ClaimStates`), and claims naming a
//! SharedService that does not exist share one label. `/metrics` is served only to authorised
//! readers (see `metrics_auth`).
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    /// success | error
    pub result: &'static str,
    /// Empty (and not exported) on success; else the step that failed ("applying", "reading", …) or the kind of
    /// error ("kube", "finalizer_refused", …): literals of this crate, so bounded.
    pub error: &'static str,
}

/// `error` is left out when empty, so a success is `{controller, result="success"}` as before
/// the label existed (dashboards and alerts on it keep working).
impl EncodeLabelSet for ReconcileLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let mut labels = vec![("controller", self.controller), ("result", self.result)];
        if !self.error.is_empty() {
            labels.push(("error", self.error));
        }
        labels.encode(encoder)
    }
}

/// How a reconcile ended, as the metrics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    error: Option<&'static str>,
}

/// The `error` label of a failure reported only as `ok = false` (no error to classify).
pub const UNCLASSIFIED: &str = "unclassified";

impl From<bool> for Outcome {
    fn from(ok: bool) -> Self {
        Outcome {
            error: (!ok).then_some(UNCLASSIFIED),
        }
    }
}

impl<T> From<&crate::Result<T>> for Outcome {
    fn from(result: &crate::Result<T>) -> Self {
        Outcome {
            error: result.as_ref().err().map(crate::Error::metric_label),
        }
    }
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
            "Reconciles by controller, result and error (the failed step or kind of error; absent on success)",
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

    /// Counts one reconcile: pass its `&Result` (the error is labelled by its step or kind);
    /// a bare `bool` counts a failure as [`UNCLASSIFIED`].
    pub fn reconciled(&self, controller: &'static str, outcome: impl Into<Outcome>) {
        let outcome = outcome.into();
        let labels = ReconcileLabels {
            controller,
            result: if outcome.error.is_none() {
                "success"
            } else {
                "error"
            },
            error: outcome.error.unwrap_or(""),
        };
        self.reconciles.get_or_create(&labels).inc();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, StepExt};

    #[test]
    fn a_failed_reconcile_is_counted_under_its_step() {
        let m = Metrics::default();
        let ok: crate::Result<()> = Ok(());
        let failed: crate::Result<()> =
            Err(Error::Invalid("cannot change roleRef".into())).at("applying", "RoleBinding a/b");
        let refused: crate::Result<()> = Err(Error::FinalizerRefused {
            reason: "Invalid".into(),
            message: "denied".into(),
        });
        m.reconciled("tenant", &ok);
        m.reconciled("tenant", &failed);
        m.reconciled("tenant", &failed);
        m.reconciled("claim", &refused);
        m.reconciled("quotaprofile", false);
        let text = m.encode();
        for line in [
            r#"citycloud_reconciles_total{controller="tenant",result="success"} 1"#,
            r#"citycloud_reconciles_total{controller="tenant",result="error",error="applying"} 2"#,
            r#"citycloud_reconciles_total{controller="claim",result="error",error="finalizer_refused"} 1"#,
            r#"citycloud_reconciles_total{controller="quotaprofile",result="error",error="unclassified"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
