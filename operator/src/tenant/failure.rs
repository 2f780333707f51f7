//! A failed reconcile, made visible: `Ready=False` naming the step and the object, a Warning
//! Event, and a per-tenant exponential backoff instead of a fixed retry.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use crate::Error;
use crate::api::conditions::tenant as cond;
use crate::api::{Tenant, TenantStatus};
use crate::conditions::{Cond, stamp};
use crate::context::Context;

/// The first retry comes after this; each further failure doubles it up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(300);

/// Retry delays by tenant: doubled on each failure, forgotten on success.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<BTreeMap<String, u32>>,
}

impl Backoff {
    /// The delay before retrying `tenant` after one more failure.
    pub fn next(&self, tenant: &str) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut map) => {
                let n = map.entry(tenant.to_string()).or_default();
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        delay(n)
    }

    pub fn reset(&self, tenant: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(tenant);
        }
    }
}

/// The delay after the `n`th consecutive failure (n ≥ 1).
pub fn delay(n: u32) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
    FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// The conditions after a failed step: `Ready=False` with the step's reason and the error as its
/// message; the other conditions stay as they were (they describe what was last seen).
pub fn conditions(previous: &[Cond], error: &Error) -> Vec<Cond> {
    let mut out: Vec<Cond> = previous
        .iter()
        .filter(|c| c.type_ != cond::READY)
        .cloned()
        .collect();
    out.insert(
        0,
        Cond::fail(
            cond::READY,
            error.reason(),
            format!("{error}; the operator retries with backoff"),
        ),
    );
    out
}

/// Writes `Ready=False` naming the failed step and object, and a Warning Event when that is
/// news. Failing to report is logged: the reconcile's own error is what gets retried.
pub async fn report(ctx: &Context, tenant: &Tenant, error: &Error) {
    let name = tenant.name_any();
    let mut status: TenantStatus = tenant.status.clone().unwrap_or_default();
    let previous: Vec<Cond> = status.conditions.iter().filter_map(as_cond).collect();
    let desired = conditions(&previous, error);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let stamped = stamp(
        &status.conditions,
        &desired,
        tenant.metadata.generation,
        &now,
    );
    if stamped == status.conditions {
        return; // already says so: no write, no repeated event
    }
    status.conditions = stamped;
    status.observed_generation = tenant.metadata.generation;
    ctx.publish(
        tenant,
        EventType::Warning,
        error.reason(),
        error.to_string(),
    )
    .await;
    if let Err(e) = super::write_status(ctx, &name, &status).await {
        tracing::warn!(error = %e, "could not report the failure in the Tenant's status");
    }
}

fn as_cond(c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> Option<Cond> {
    // Condition types the tenant controller writes are &'static str: map back to them.
    let type_ = cond::ALL.iter().find(|t| **t == c.type_)?;
    Some(Cond {
        type_,
        ok: c.status == "True",
        reason: c.reason.clone(),
        message: c.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        assert_eq!(delay(1), Duration::from_millis(500));
        assert_eq!(delay(2), Duration::from_secs(1));
        assert_eq!(delay(4), Duration::from_secs(4));
        assert_eq!(delay(30), MAX_DELAY);
        let b = Backoff::default();
        assert_eq!(b.next("a"), delay(1));
        assert_eq!(b.next("a"), delay(2));
        assert_eq!(b.next("b"), delay(1), "per tenant");
        b.reset("a");
        assert_eq!(b.next("a"), delay(1));
    }

    #[test]
    fn a_failed_step_makes_ready_false_naming_the_step_and_object() {
        let previous = [
            Cond::ok(cond::READY, "Provisioned", "2 namespace(s) ready"),
            Cond::ok(cond::RBAC_READY, "Bound", "..."),
        ];
        let error = Error::Invalid("cannot change roleRef".into())
            .at("applying", "RoleBinding a-prod/citycloud-viewers");
        let conds = conditions(&previous, &error);
        assert_eq!(conds[0].type_, cond::READY);
        assert!(!conds[0].ok);
        assert_eq!(conds[0].reason, "ApplyFailed");
        assert!(
            conds[0].message.starts_with(
                "applying RoleBinding a-prod/citycloud-viewers: cannot change roleRef"
            ),
            "{}",
            conds[0].message
        );
        assert_eq!(conds[1], previous[1], "the other conditions stay");
    }
}
