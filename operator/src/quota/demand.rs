//! Which namespaces want more quota. The API server does not tell anyone about a request it
//! refused over quota, but controllers do: the ReplicaSet, Job and StatefulSet controllers
//! record a `FailedCreate` event saying "exceeded quota". A namespace whose usage has reached
//! its hard counts too. Demand lasts [`WINDOW`], then the budget is split evenly again.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;

pub const WINDOW: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Demand {
    seen: Mutex<HashMap<String, Instant>>,
}

impl Demand {
    pub fn record(&self, namespace: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(namespace.to_string(), Instant::now());
        }
    }

    pub fn active(&self, namespace: &str) -> bool {
        self.seen
            .lock()
            .ok()
            .and_then(|s| s.get(namespace).copied())
            .is_some_and(|t| t.elapsed() < WINDOW)
    }

    /// Forgets what has expired (called on every tenant reconcile; the map stays small).
    pub fn expire(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|_, t| t.elapsed() < WINDOW);
        }
    }
}

/// The namespace of an event that reports a controller refused over quota recently.
pub fn quota_refusal(event: &Event) -> Option<String> {
    if event.reason.as_deref() != Some("FailedCreate")
        || !event
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("exceeded quota")
    {
        return None;
    }
    let last = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(event.last_timestamp.as_ref().map(|t| t.0))
        .or(event.event_time.as_ref().map(|t| t.0))?;
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(last);
    (age.as_secs() < WINDOW.as_secs() as i64)
        .then(|| event.metadata.namespace.clone())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn event(reason: &str, message: &str, secs_ago: i64) -> Event {
        let when = k8s_openapi::jiff::Timestamp::now()
            - k8s_openapi::jiff::SignedDuration::from_secs(secs_ago);
        let mut e = Event {
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_timestamp: Some(Time(when)),
            ..Default::default()
        };
        e.metadata.namespace = Some("a-prod".into());
        e
    }

    #[test]
    fn only_recent_quota_refusals_count() {
        let msg = "Error creating: pods \"web-1\" is forbidden: exceeded quota: citycloud-quota, requested: requests.cpu=100m";
        assert_eq!(
            quota_refusal(&event("FailedCreate", msg, 2)),
            Some("a-prod".into())
        );
        assert_eq!(
            quota_refusal(&event("FailedCreate", msg, 300)),
            None,
            "stale"
        );
        assert_eq!(
            quota_refusal(&event("FailedCreate", "image pull", 2)),
            None,
            "not quota"
        );
        assert_eq!(quota_refusal(&event("Scheduled", msg, 2)), None);
    }
}
