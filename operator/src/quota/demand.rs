//! Which namespaces want more quota. The API server tells no one about a request it refused
//! over quota, but controllers show it:
//! - the ReplicaSet controller (so every Deployment) sets the condition `ReplicaFailure` with
//!   the refusal's message on a ReplicaSet short of replicas, and clears it once it has them.
//!   That is state, not an event: the namespace is *waiting* for exactly as long as it shows,
//!   however long that is and however often it was refused before;
//! - the StatefulSet and Job controllers only record a `FailedCreate` event saying "exceeded
//!   quota". Events are sampled (client-go stops recording an object's repeats after a burst),
//!   so such a refusal counts for [`REFUSAL_WINDOW`].
//!
//! A namespace whose usage reached its hard counts too, less strongly, for [`WINDOW`]. When no
//! demand is left, the budget is split evenly again.
//!
//! Apart from demand, [`Demand::held`] tells whose usage is still rising: their hard must not
//! move yet (see `budget::Share::held`).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::Milli;

pub const WINDOW: Duration = Duration::from_secs(30);
/// A refusal is stronger evidence and lasts longer: controllers retry with a growing backoff,
/// and the raise must still be there when they do.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(180);

/// How long a namespace's hard stays as it is after its usage rose: ample time for a pod that
/// quota admission has counted to be stored and reach kube-controller-manager's informer, so
/// the recount a change of hard sets off includes it.
pub const HOLD: Duration = Duration::from_millis(1500);
/// The longest a namespace is held while its usage keeps rising. Without a bound, a tenant
/// churning pods (delete one, create one, forever) would keep its hards from ever being
/// lowered — a child keeping more of its parent's budget than it was left.
pub const MAX_HOLD: Duration = Duration::from_secs(10);
/// Usage readings older than this are forgotten (namespaces deleted meanwhile); a namespace
/// read again afterwards is held once more, which only delays a move by [`HOLD`].
const USAGE_MEMORY: Duration = Duration::from_secs(600);

/// What quota refusals name in their message.
const EXCEEDED_QUOTA: &str = "exceeded quota";

#[derive(Default)]
pub struct Demand {
    saturated: Mutex<HashMap<String, Instant>>,
    refused: Mutex<HashMap<String, Instant>>,
    /// ReplicaSets refused over quota now, by namespace then name, with when we saw it start.
    waiting: Mutex<Waiting>,
    /// Each namespace's last non-zero usage read, with when it last rose.
    usage: Mutex<HashMap<String, Reading>>,
}

/// A namespace's last usage read and the times that decide whether it is held.
struct Reading {
    used: Usage,
    /// When its usage last rose.
    rose: Instant,
    /// When its current run of rises began: a run ends only with a reading that found it
    /// not held (the moves it waited for could then be made).
    rising_since: Instant,
    held: bool,
}

/// The resources a namespace uses any of, in millis.
type Usage = Vec<(String, i128)>;

/// Whether any resource is used more in `now` than in `before`.
fn rose(before: &Usage, now: &Usage) -> bool {
    now.iter().any(|(resource, n)| {
        let was = before
            .iter()
            .find(|(r, _)| r == resource)
            .map_or(0, |(_, v)| *v);
        *n > was
    })
}

/// ReplicaSets waiting for quota, by namespace then name, with when each started waiting.
#[derive(Debug, Default)]
pub struct Waiting(BTreeMap<String, BTreeMap<String, Instant>>);

impl Waiting {
    /// Records whether `namespace/name` waits now. True when that changed.
    pub fn set(&mut self, namespace: &str, name: &str, waits: bool) -> bool {
        if waits {
            let in_ns = self.0.entry(namespace.to_string()).or_default();
            if in_ns.contains_key(name) {
                return false;
            }
            in_ns.insert(name.to_string(), Instant::now());
            true
        } else {
            let Some(in_ns) = self.0.get_mut(namespace) else {
                return false;
            };
            let removed = in_ns.remove(name).is_some();
            if in_ns.is_empty() {
                self.0.remove(namespace);
            }
            removed
        }
    }

    /// Replaces everything with a fresh list (after a relist); returns the namespaces whose
    /// set of waiting ReplicaSets changed. Start times of those still waiting are kept.
    pub fn replace(&mut self, now_waiting: &[(String, String)]) -> BTreeSet<String> {
        let fresh: BTreeSet<(&str, &str)> = now_waiting
            .iter()
            .map(|(ns, n)| (ns.as_str(), n.as_str()))
            .collect();
        let mut changed = BTreeSet::new();
        let old: Vec<(String, String)> = self
            .0
            .iter()
            .flat_map(|(ns, names)| names.keys().map(move |n| (ns.clone(), n.clone())))
            .collect();
        for (ns, name) in old {
            if !fresh.contains(&(ns.as_str(), name.as_str())) && self.set(&ns, &name, false) {
                changed.insert(ns);
            }
        }
        for (ns, name) in fresh {
            if self.set(ns, name, true) {
                changed.insert(ns.to_string());
            }
        }
        changed
    }

    /// When the namespace's most recent waiting ReplicaSet started waiting.
    pub fn since(&self, namespace: &str) -> Option<Instant> {
        self.0.get(namespace)?.values().max().copied()
    }
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

    /// Records whether the ReplicaSet `namespace/name` waits for quota now; true when that
    /// changed (the tenant then needs a reconcile).
    pub fn set_waiting(&self, namespace: &str, name: &str, waits: bool) -> bool {
        self.waiting
            .lock()
            .is_ok_and(|mut w| w.set(namespace, name, waits))
    }

    /// After a relist of every ReplicaSet: the namespaces whose waiting changed.
    pub fn replace_waiting(&self, now_waiting: &[(String, String)]) -> BTreeSet<String> {
        self.waiting
            .lock()
            .map(|mut w| w.replace(now_waiting))
            .unwrap_or_default()
    }

    /// When a controller was last refused over quota in the namespace: a ReplicaSet waiting
    /// now, or a refusal event within [`REFUSAL_WINDOW`].
    pub fn last_refusal(&self, namespace: &str) -> Option<Instant> {
        let waiting = self.waiting.lock().ok().and_then(|w| w.since(namespace));
        let event = self.refused.lock().ok().and_then(|seen| {
            seen.get(namespace)
                .copied()
                .filter(|t| t.elapsed() < REFUSAL_WINDOW)
        });
        waiting.max(event)
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

    /// 2 while refused (or after a recent refusal event), 1 after recent saturation, else 0.
    pub fn level(&self, namespace: &str) -> u8 {
        let recent = |m: &Mutex<HashMap<String, Instant>>, window: Duration| {
            m.lock()
                .ok()
                .and_then(|s| s.get(namespace).copied())
                .is_some_and(|t| t.elapsed() < window)
        };
        if self.last_refusal(namespace).is_some() {
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

    /// Records the namespace's usage as just read fresh from its ResourceQuota's `status.used`;
    /// true while it rose within [`HOLD`], for at most [`MAX_HOLD`] of rises in a row. A
    /// namespace first seen using anything counts as having just risen: nothing tells how
    /// recently it did.
    pub fn held(&self, namespace: &str, used: &BTreeMap<String, Quantity>) -> bool {
        self.held_at(namespace, used, Instant::now())
    }

    fn held_at(&self, namespace: &str, used: &BTreeMap<String, Quantity>, now: Instant) -> bool {
        let used: Usage = used
            .iter()
            .filter_map(|(r, q)| Some((r.clone(), Milli::of(q).ok()?.0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let Ok(mut seen) = self.usage.lock() else {
            return false;
        };
        if used.is_empty() {
            // Nothing used: nothing a recount could forget. Not remembered, so the map holds
            // only namespaces that run something.
            seen.remove(namespace);
            return false;
        }
        let mut reading = match seen.get(namespace) {
            Some(r) if !rose(&r.used, &used) => Reading { used, ..*r },
            Some(r) if r.held => Reading {
                used,
                rose: now,
                ..*r
            },
            _ => Reading {
                used,
                rose: now,
                rising_since: now,
                held: true,
            },
        };
        let held = now.saturating_duration_since(reading.rose) < HOLD
            && now.saturating_duration_since(reading.rising_since) < MAX_HOLD;
        reading.held = held;
        seen.insert(namespace.to_string(), reading);
        held
    }

    /// Forgets what has expired (called on every tenant reconcile; the maps stay small).
    pub fn expire(&self) {
        for (map, window) in [(&self.saturated, WINDOW), (&self.refused, REFUSAL_WINDOW)] {
            if let Ok(mut seen) = map.lock() {
                seen.retain(|_, t| t.elapsed() < window);
            }
        }
        if let Ok(mut seen) = self.usage.lock() {
            seen.retain(|_, r| r.rose.elapsed() < USAGE_MEMORY);
        }
    }
}

/// Whether a ReplicaSet is short of replicas because quota refused its pods: its controller
/// sets `ReplicaFailure` with the refusal's message, and clears it once the pods exist.
pub fn waits_for_quota(rs: &ReplicaSet) -> bool {
    let wanted = rs.spec.replicas.unwrap_or(1);
    let Some(status) = rs.status.as_ref() else {
        return false;
    };
    status.replicas < wanted
        && status.conditions.iter().flatten().any(|c| {
            c.type_.as_deref() == Some("ReplicaFailure")
                && c.status.as_deref() == Some("True")
                && c.message
                    .as_deref()
                    .is_some_and(|m| m.contains(EXCEEDED_QUOTA))
        })
}

/// The namespace of an event that reports a controller refused over quota recently.
/// ReplicaSets' events are left out: their condition says more (see [`waits_for_quota`]).
pub fn quota_refusal(event: &Event) -> Option<String> {
    if event.reason.as_deref() != Some("FailedCreate")
        || event.involved_object.kind.as_deref() == Some("ReplicaSet")
        || !event
            .message
            .as_deref()
            .unwrap_or_default()
            .contains(EXCEEDED_QUOTA)
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

    fn replica_set(wanted: i32, have: i32, failure: Option<&str>) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-7d9", "namespace": "a-prod"},
            "spec": {"replicas": wanted, "selector": {}},
            "status": {"replicas": have, "conditions": failure.map(|m| vec![serde_json::json!({
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": m
            })])}
        }))
        .expect("a ReplicaSet")
    }

    #[test]
    fn a_replica_set_waits_while_quota_refuses_its_missing_pods() {
        let refused = "pods \"api-7d9-x\" is forbidden: exceeded quota: citycloud-quota, requested: requests.cpu=100m";
        assert!(waits_for_quota(&replica_set(2, 0, Some(refused))));
        assert!(
            !waits_for_quota(&replica_set(2, 2, Some(refused))),
            "has its pods"
        );
        assert!(!waits_for_quota(&replica_set(2, 0, None)), "not refused");
        assert!(
            !waits_for_quota(&replica_set(2, 0, Some("serviceaccount \"x\" not found"))),
            "refused for another reason"
        );
    }

    #[test]
    fn waiting_is_state_and_a_relist_reports_what_changed() {
        let d = Demand::default();
        assert!(d.set_waiting("a", "web-1", true));
        assert!(!d.set_waiting("a", "web-1", true), "no change");
        assert_eq!(d.level("a"), 2);
        // A refusal event from long ago would have expired; a waiting ReplicaSet does not.
        assert!(d.last_refusal("a").is_some());
        let now = vec![("b".to_string(), "api-1".to_string())];
        let changed = d.replace_waiting(&now);
        assert_eq!(changed, ["a", "b"].map(String::from).into());
        assert_eq!((d.level("a"), d.level("b")), (0, 2));
        assert!(d.set_waiting("b", "api-1", false));
        assert_eq!(d.level("b"), 0);
    }

    fn used(cpu: &str, pods: &str) -> BTreeMap<String, Quantity> {
        [("requests.cpu", cpu), ("pods", pods)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    #[test]
    fn a_namespace_is_held_while_its_usage_rises_and_released_once_it_stops() {
        let d = Demand::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(!d.held_at("a", &used("0", "0"), t0), "nothing used");
        assert!(
            d.held_at("a", &used("100m", "1"), t0),
            "first seen using: held"
        );
        assert!(!d.held_at("b", &used("0", "0"), t0));
        assert!(
            d.held_at("a", &used("50m", "1"), at(1000)),
            "a fall keeps the hold"
        );
        assert!(
            !d.held_at("a", &used("50m", "1"), at(1500)),
            "steady since the rise"
        );
        assert!(
            d.held_at("a", &used("50m", "2"), at(1600)),
            "one more pod: held"
        );
        assert!(!d.held_at("a", &used("0", "0"), at(1700)));
        assert!(
            d.held_at("a", &used("100m", "1"), at(1800)),
            "forgot the zero"
        );
    }

    #[test]
    fn a_tenant_churning_pods_is_held_no_longer_than_max_hold() {
        let d = Demand::default();
        let t0 = Instant::now();
        // A pod deleted and another created every second, for a minute: read each second,
        // it is found not held (its hards may move) at least every MAX_HOLD.
        let (mut streak, mut longest) = (0u64, 0u64);
        for s in 0..60u64 {
            let pods = if s % 2 == 0 { "2" } else { "1" };
            if d.held_at("a", &used("100m", pods), t0 + Duration::from_secs(s)) {
                streak += 1;
                longest = longest.max(streak);
            } else {
                streak = 0;
            }
        }
        assert!(longest > 1, "the rises were held at all ({longest} s)");
        assert!(longest <= MAX_HOLD.as_secs(), "held {longest} s in a row");
        // Once quiet for HOLD, a new rise is held again.
        let quiet = t0 + Duration::from_secs(60) + HOLD;
        assert!(!d.held_at("a", &used("100m", "1"), quiet));
        assert!(d.held_at("a", &used("100m", "2"), quiet + Duration::from_millis(100)));
    }

    #[test]
    fn replica_set_events_are_left_to_the_condition() {
        let msg = "Error creating: pods \"web-1\" is forbidden: exceeded quota: citycloud-quota";
        let mut e = event("FailedCreate", msg, 2);
        e.involved_object.kind = Some("ReplicaSet".into());
        assert_eq!(quota_refusal(&e), None);
        e.involved_object.kind = Some("StatefulSet".into());
        assert_eq!(quota_refusal(&e), Some("a-prod".into()));
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
