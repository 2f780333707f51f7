//! What the Tenant controller remembers while a new tenant settles, so that the watch events
//! its own first steps cause do not each bring another reconcile: the echo of the finalizer
//! it added, and kube-controller-manager enforcing the new quotas one by one.
//!
//! In memory only: after a restart every tenant is reconciled once anyway.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::ResourceExt;

use crate::api::Tenant;
use crate::api::finalizers::TENANT as FINALIZER;
use crate::api::labels::TENANT;

#[derive(Default)]
pub struct Settling {
    /// Tenants this process is adding its finalizer to: the first watch event showing it is
    /// the echo of that patch (or something newer, whose other changes still count).
    finalizer_added: Mutex<HashSet<String>>,
    /// New tenants (no status yet) whose first status waits for their quotas to be enforced,
    /// with the namespaces whose quota is not yet (as their last reconcile read them).
    awaiting: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl Settling {
    /// The finalizer is about to be added to `tenant` (remembered before the patch goes out:
    /// its echo may come back before its answer).
    pub fn adding_finalizer(&self, tenant: &Tenant) {
        if let Ok(mut m) = self.finalizer_added.lock() {
            m.insert(tenant.name_any());
        }
    }

    /// Whether `tenant` (a watch event) shows the finalizer this process added, for the first
    /// time: the reconcile that added it went on with it, so its arrival is no news. Used
    /// once; an event without it (one from before the patch) leaves the record alone.
    pub fn is_finalizer_echo(&self, tenant: &Tenant) -> bool {
        let Ok(mut m) = self.finalizer_added.lock() else {
            return false;
        };
        if m.is_empty() || !tenant.finalizers().iter().any(|f| f == FINALIZER) {
            return false;
        }
        m.remove(&tenant.name_any())
    }

    /// A reconcile of `tenant` begins: every quota event from now on is news until it says
    /// what it still waits for (an event during the reconcile may come after its read).
    pub fn reconciling(&self, tenant: &str) {
        if let Ok(mut m) = self.awaiting.lock() {
            m.remove(tenant);
        }
    }

    /// The reconcile of the new `tenant` ends waiting for the quotas of `namespaces` to be
    /// enforced, its first status deferred until they are.
    pub fn await_quotas(&self, tenant: &str, namespaces: &[String]) {
        if namespaces.is_empty() {
            return;
        }
        if let Ok(mut m) = self.awaiting.lock() {
            m.insert(tenant.to_string(), namespaces.iter().cloned().collect());
        }
    }

    /// Whether a quota's watch event is worth a reconcile of its tenant. Not while that new
    /// tenant still waits for another of its quotas to be enforced: that one's event brings
    /// the reconcile that grants access and writes the first status, in one go, instead of
    /// one reconcile (a quota LIST, an access grant, an Event) per quota. Anything else is
    /// news: a tenant not waiting, a quota not waited for, the last one enforced. An event
    /// of a waited-for quota that is not enforced (our own write's echo; a deletion) waits
    /// with the rest; the deferred status's deadline reconciles the tenant at the latest.
    pub fn quota_event_matters(&self, quota: &ResourceQuota) -> bool {
        let Some(tenant) = quota.labels().get(TENANT) else {
            return true;
        };
        let Ok(mut m) = self.awaiting.lock() else {
            return true;
        };
        let Some(waiting) = m.get_mut(tenant) else {
            return true;
        };
        let Some(ns) = quota.namespace() else {
            return true;
        };
        if !waiting.contains(&ns) {
            return true;
        }
        if !crate::quota::enforced(quota, Some(quota)) {
            return false;
        }
        waiting.remove(&ns);
        if waiting.is_empty() {
            m.remove(tenant);
            return true;
        }
        false
    }

    /// Forgets a deleted tenant.
    pub fn forget(&self, tenant: &str) {
        if let Ok(mut m) = self.finalizer_added.lock() {
            m.remove(tenant);
        }
        self.reconciling(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(ns: &str, enforced: bool) -> ResourceQuota {
        let mut q = serde_json::json!({
            "metadata": {"name": "citycloud-quota", "namespace": ns,
                         "labels": {TENANT: "a"}},
            "spec": {"hard": {"pods": "10"}},
        });
        if enforced {
            q["status"] = serde_json::json!({"hard": {"pods": "10"}, "used": {"pods": "0"}});
        }
        serde_json::from_value(q).expect("a quota")
    }

    #[test]
    fn a_new_tenant_is_reconciled_once_all_its_quotas_are_enforced_not_once_per_quota() {
        let s = Settling::default();
        assert!(s.quota_event_matters(&quota("a-dev", true)), "not waiting");
        s.await_quotas("a", &["a-dev".into(), "a-prod".into()]);
        assert!(!s.quota_event_matters(&quota("a-dev", false)), "echo");
        assert!(!s.quota_event_matters(&quota("a-dev", true)), "one of two");
        assert!(
            s.quota_event_matters(&quota("b-dev", true)),
            "a quota not waited for"
        );
        assert!(
            s.quota_event_matters(&quota("a-prod", true)),
            "the last one"
        );
        assert!(s.quota_event_matters(&quota("a-dev", true)), "done waiting");
    }

    #[test]
    fn quota_events_during_a_reconcile_are_news() {
        let s = Settling::default();
        s.await_quotas("a", &["a-dev".into(), "a-prod".into()]);
        // The next reconcile began: what it read may be older than this event.
        s.reconciling("a");
        assert!(s.quota_event_matters(&quota("a-dev", true)));
    }

    #[test]
    fn the_first_event_showing_the_finalizer_added_is_its_echo_and_only_that_one() {
        let s = Settling::default();
        let mut t: Tenant = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "resourceVersion": "7"},
            "spec": {"displayName": "A", "owners": [{"kind": "Group", "name": "g"}]},
        }))
        .expect("a tenant");
        s.adding_finalizer(&t);
        assert!(!s.is_finalizer_echo(&t), "an event from before the patch");
        t.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
        assert!(s.is_finalizer_echo(&t));
        assert!(!s.is_finalizer_echo(&t), "used once");
        let mut other = t.clone();
        other.metadata.name = Some("b".into());
        assert!(!s.is_finalizer_echo(&other), "not being added to b");
    }
}
