//! Which namespaces want more quota. The API server does not tell anyone about a request it
//! refused over quota, but controllers do: the ReplicaSet, Job and StatefulSet controllers
//! record a `FailedCreate` event saying "exceeded quota". A namespace whose usage has reached
//! its hard counts too, less strongly. Demand lasts [`REFUSAL_WINDOW`] or [`WINDOW`], then the
//! budget is split evenly again.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;

pub const WINDOW: Duration = Duration::from_secs(30);
/// A refusal is stronger evidence and lasts longer: controllers retry with a growing backoff,
/// and the raise must still be there when they do.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(180);

#[derive(Default)]
pub struct Demand {
    saturated: Mutex<HashMap<String, Instant>>,
    refused: Mutex<HashMap<String, Instant>>,
}

impl Demand {
    /// The namespace's usage reached its hard.
    pub fn record(&self, namespace: &str) {
        if let Ok(mut seen) = self.saturated.lock() {
            seen.insert(namespace.to_string(), Instant::now());
        }
    }

    /// A controller was refused over quota in the namespace.
    pub fn record_refusal(&self, namespace: &str) {
        if let Ok(mut seen) = self.refused.lock() {
            seen.insert(namespace.to_string(), Instant::now());
        }
    }

    /// When a controller was last refused over quota in the namespace, if recently.
    pub fn last_refusal(&self, namespace: &str) -> Option<Instant> {
        let seen = self.refused.lock().ok()?;
        seen.get(namespace)
            .copied()
            .filter(|t| t.elapsed() < REFUSAL_WINDOW)
    }

    /// Demand levels for a tenant's namespaces: 2 for the one most recently refused (the one
    /// waiting now — headroom goes to it whole, not in fragments too small for a pod), 1 for
    /// other recent refusals or saturation, else 0.
    pub fn levels<'a>(
        &self,
        namespaces: impl IntoIterator<Item = &'a String>,
    ) -> HashMap<String, u8> {
        let namespaces: Vec<&String> = namespaces.into_iter().collect();
        let freshest = namespaces
            .iter()
            .filter_map(|ns| Some((self.last_refusal(ns)?, *ns)))
            .max()
            .map(|(_, ns)| ns.clone());
        namespaces
            .into_iter()
            .map(|ns| {
                let level = if Some(ns) == freshest.as_ref() {
                    2
                } else {
                    self.level(ns).min(1)
                };
                (ns.clone(), level)
            })
            .collect()
    }

    /// 2 after a recent refusal, 1 after recent saturation, else 0.
    pub fn level(&self, namespace: &str) -> u8 {
        let recent = |m: &Mutex<HashMap<String, Instant>>, window: Duration| {
            m.lock()
                .ok()
                .and_then(|s| s.get(namespace).copied())
                .is_some_and(|t| t.elapsed() < window)
        };
        if recent(&self.refused, REFUSAL_WINDOW) {
            2
        } else if recent(&self.saturated, WINDOW) {
            1
        } else {
            0
        }
    }

    pub fn active(&self, namespace: &str) -> bool {
        self.level(namespace) > 0
    }

    /// Forgets what has expired (called on every tenant reconcile; the maps stay small).
    pub fn expire(&self) {
        for (map, window) in [(&self.saturated, WINDOW), (&self.refused, REFUSAL_WINDOW)] {
            if let Ok(mut seen) = map.lock() {
                seen.retain(|_, t| t.elapsed() < window);
            }
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
    (age.as_secs() < REFUSAL_WINDOW.as_secs() as i64)
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
    fn the_most_recently_refused_namespace_alone_gets_the_top_level() {
        let d = Demand::default();
        d.record_refusal("a");
        std::thread::sleep(std::time::Duration::from_millis(5));
        d.record_refusal("b");
        d.record("c");
        let names = ["a", "b", "c", "d"].map(String::from);
        let levels = d.levels(names.iter());
        assert_eq!(
            (levels["a"], levels["b"], levels["c"], levels["d"]),
            (1, 2, 1, 0)
        );
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
