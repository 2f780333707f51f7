//! What the Tenant controller remembers while a new tenant settles, so that the watch events
//! its first steps cause do not each bring another reconcile: kube-controller-manager
//! enforcing the new quotas one by one.
//!
//! In memory only: after a restart every tenant is reconciled once anyway.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::ResourceExt;
use kube::runtime::watcher;

use crate::api::Tenant;
use crate::api::labels::{CLAIM, TENANT};
use crate::events::Journal;

/// A new tenant's quota events, held back.
enum Wait {
    /// Its reconcile runs: every quota event is held back (the reconcile may have read the
    /// quotas before it); the namespaces whose quota was seen enforced meanwhile, and whether
    /// any other event was held back.
    Reconciling {
        enforced: BTreeSet<String>,
        other: bool,
    },
    /// Its reconcile ended waiting for the quotas of these namespaces to be enforced.
    Awaiting(BTreeSet<String>),
}

#[derive(Default)]
pub struct Settling {
    /// New tenants (no status yet) being reconciled, or whose first status waits for their
    /// quotas to be enforced (see [`Wait`]).
    awaiting: Mutex<HashMap<String, Wait>>,
    /// While the Tenant watch re-lists: the tenants listed so far (see [`Settling::follow`]).
    relisted: Mutex<Option<HashSet<String>>>,
    /// What a new tenant's first reconcile created, told together with what the reconcile
    /// that grants access creates (see [`Settling::tell`]).
    untold: Mutex<HashMap<String, Journal>>,
    /// The quotas of a settling tenant as their watch events showed them, by namespace: what
    /// its access-granting reconcile would otherwise LIST (see [`Settling::take_quotas`]).
    /// Only enforced ones, as JSON (a third of the parsed size: at 1,000 new tenants at once
    /// there are thousands).
    seen: Mutex<HashMap<String, BTreeMap<String, Box<str>>>>,
}

impl Settling {
    /// A reconcile of `tenant` begins. For a new tenant (`new`: no status yet) its quota events
    /// are held back until [`Settling::reconciled`] says whether they bring anything it did not
    /// see; for any other, every quota event is news.
    pub fn reconciling(&self, tenant: &str, new: bool) {
        if let Ok(mut m) = self.awaiting.lock() {
            if new {
                m.insert(
                    tenant.to_string(),
                    Wait::Reconciling {
                        enforced: BTreeSet::new(),
                        other: false,
                    },
                );
            } else {
                m.remove(tenant);
                if let Ok(mut seen) = self.seen.lock() {
                    seen.remove(tenant);
                }
            }
        }
    }

    /// The reconcile of `tenant` ends: deferring its first status until the quotas of
    /// `awaiting` are enforced (`deferred`), or not. Whether it must be reconciled again at
    /// once: every quota it waits for was enforced while it ran, or (not deferring) a quota
    /// event was held back meanwhile that it may not have seen: any but the enforcement of a
    /// quota it found enforced already (`enforced`, the namespaces it granted access to).
    pub fn reconciled(
        &self,
        tenant: &str,
        deferred: bool,
        awaiting: &[String],
        enforced: &[String],
    ) -> bool {
        let Ok(mut m) = self.awaiting.lock() else {
            return true;
        };
        let Some(Wait::Reconciling {
            enforced: seen,
            other,
        }) = m.remove(tenant)
        else {
            return false;
        };
        if !deferred {
            return other || seen.iter().any(|ns| !enforced.contains(ns));
        }
        let left: BTreeSet<String> = awaiting
            .iter()
            .filter(|ns| !seen.contains(*ns))
            .cloned()
            .collect();
        if left.is_empty() {
            return true;
        }
        m.insert(tenant.to_string(), Wait::Awaiting(left));
        false
    }

    /// Whether a quota's watch event is worth a reconcile of its tenant. Not while that new
    /// tenant still waits for another of its quotas to be enforced: that one's event brings
    /// the reconcile that grants access and writes the first status, in one go, instead of
    /// one reconcile (a quota LIST, an access grant, an Event) per quota. Not while a new
    /// tenant's reconcile runs (see [`Settling::reconciled`]). Anything else is news: a
    /// tenant not waiting, a quota not waited for, the last one enforced. An event of a
    /// waited-for quota that is not enforced (our own write's echo; a deletion) waits with
    /// the rest; the deferred status's deadline reconciles the tenant at the latest.
    pub fn quota_event_matters(&self, quota: &ResourceQuota) -> bool {
        let Some(tenant) = quota.labels().get(TENANT) else {
            return true;
        };
        let (Ok(mut m), Some(ns)) = (self.awaiting.lock(), quota.namespace()) else {
            return true;
        };
        let enforced = crate::quota::enforced(quota, Some(quota));
        // The tenant's own quota only (one per namespace), as the LIST it stands in for.
        let ours = quota.name_any() == super::build::QUOTA && !quota.labels().contains_key(CLAIM);
        if ours
            && m.contains_key(tenant)
            && let Ok(mut seen) = self.seen.lock()
        {
            let kept = seen.entry(tenant.clone()).or_default();
            match serde_json::to_string(quota) {
                Ok(json) if enforced => kept.insert(ns.clone(), json.into_boxed_str()),
                _ => kept.remove(&ns),
            };
        }
        match m.get_mut(tenant) {
            None => true,
            Some(Wait::Reconciling {
                enforced: seen,
                other,
            }) => {
                if enforced {
                    seen.insert(ns);
                } else {
                    *other = true;
                }
                false
            }
            Some(Wait::Awaiting(waiting)) => {
                if !waiting.contains(&ns) {
                    return true;
                }
                if !enforced {
                    return false;
                }
                waiting.remove(&ns);
                if waiting.is_empty() {
                    m.remove(tenant);
                    return true;
                }
                false
            }
        }
    }

    /// What of `journal` to tell now, for a reconcile of `tenant` (`new`: it had no status
    /// when the reconcile began) whose namespaces `awaiting` still wait for their quotas
    /// before their users get access. A new tenant's objects come in two reconciles (all but
    /// the access, then the access); told as they come, that is two Events of the same reason
    /// on the Tenant, and the API server's event series keeps the first one's note only. So
    /// the first reconcile's journal waits here for the second, and one Event names all.
    /// Nothing is lost if the process stops in between: the restart's reconcile tells what it
    /// does, and the objects are there to see.
    pub fn tell(&self, tenant: &str, new: bool, awaiting: &[String], journal: Journal) -> Journal {
        let Ok(mut m) = self.untold.lock() else {
            return journal;
        };
        let mut all = m.remove(tenant).unwrap_or_default();
        all.absorb(journal);
        if new && !awaiting.is_empty() {
            m.insert(tenant.to_string(), all);
            return Journal::default();
        }
        all
    }

    /// The quotas of `tenant`'s namespaces `wanted` as the watch showed them while it settled,
    /// if it showed every one of them enforced; taken (the next reconcile lists again). For
    /// the reconcile that grants a new tenant access: until then no user of the tenant can
    /// have used anything there, so the quotas' events are as good as a fresh LIST.
    pub fn take_quotas(
        &self,
        tenant: &str,
        wanted: &[String],
    ) -> Option<BTreeMap<String, ResourceQuota>> {
        let seen = self.seen.lock().ok()?.remove(tenant)?;
        let quotas: BTreeMap<String, ResourceQuota> = seen
            .into_iter()
            .filter_map(|(ns, json)| Some((ns, serde_json::from_str(&json).ok()?)))
            .collect();
        wanted
            .iter()
            .all(|ns| quotas.contains_key(ns))
            .then_some(quotas)
    }

    /// Forgets a deleted tenant.
    pub fn forget(&self, tenant: &str) {
        if let Ok(mut m) = self.seen.lock() {
            m.remove(tenant);
        }
        if let Ok(mut m) = self.awaiting.lock() {
            m.remove(tenant);
        }
        if let Ok(mut m) = self.untold.lock() {
            m.remove(tenant);
        }
    }

    /// Follows one event of the Tenant watch: a tenant gone from the cluster is forgotten
    /// however it went. [`Settling::forget`] covers a deletion this process cleans up; a
    /// tenant whose finalizer someone else removed (the way out of a stuck deletion, or another
    /// operator's cleanup) brings no cleanup here, and one deleted while the watch was down is
    /// seen only as missing from the re-list. Without this, their entries stayed for the life
    /// of the process, one per such tenant.
    pub fn follow(&self, event: &watcher::Event<Tenant>) {
        let Ok(mut relisted) = self.relisted.lock() else {
            return;
        };
        match event {
            watcher::Event::Apply(_) => {}
            watcher::Event::Delete(t) => self.forget(&t.name_any()),
            watcher::Event::Init => *relisted = Some(HashSet::new()),
            // Every listed name, not only those with an entry now: a reconcile may add one
            // before the re-list ends.
            watcher::Event::InitApply(t) => {
                if let Some(names) = relisted.as_mut() {
                    names.insert(t.name_any());
                }
            }
            watcher::Event::InitDone => {
                let listed = relisted.take().unwrap_or_default();
                if let Ok(mut m) = self.awaiting.lock() {
                    m.retain(|tenant, _| listed.contains(tenant));
                }
                if let Ok(mut m) = self.untold.lock() {
                    m.retain(|tenant, _| listed.contains(tenant));
                }
                if let Ok(mut m) = self.seen.lock() {
                    m.retain(|tenant, _| listed.contains(tenant));
                }
            }
        }
    }

    /// The tenants it holds an entry for, in order.
    #[cfg(test)]
    fn tracked(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .awaiting
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(ns: &str, enforced: bool) -> ResourceQuota {
        quota_of("a", ns, enforced)
    }

    fn quota_of(tenant: &str, ns: &str, enforced: bool) -> ResourceQuota {
        let mut q = serde_json::json!({
            "metadata": {"name": "citycloud-quota", "namespace": ns,
                         "labels": {TENANT: tenant}},
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
        s.reconciling("a", true);
        assert!(!s.reconciled("a", true, &["a-dev".into(), "a-prod".into()], &[]));
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
    fn quota_events_held_back_during_a_reconcile_are_not_lost() {
        let s = Settling::default();
        let both = ["a-dev".to_string(), "a-prod".to_string()];
        // Enforced while the reconcile ran (after its read): waited for no longer.
        s.reconciling("a", true);
        assert!(!s.quota_event_matters(&quota("a-dev", true)));
        assert!(!s.reconciled("a", true, &both, &[]));
        assert!(
            s.quota_event_matters(&quota("a-prod", true)),
            "the last one"
        );
        // All of them: reconciled again at once.
        s.reconciling("a", true);
        assert!(!s.quota_event_matters(&quota("a-dev", true)));
        assert!(s.reconciled("a", true, &["a-dev".into()], &["a-prod".into()]));
        // Not deferring its status: an event it may not have seen brings it back...
        s.reconciling("a", true);
        assert!(!s.quota_event_matters(&quota("a-dev", false)));
        assert!(s.reconciled("a", false, &[], &both));
        s.reconciling("a", true);
        assert!(!s.quota_event_matters(&quota("a-dev", true)));
        assert!(s.reconciled("a", false, &[], &["a-prod".into()]));
        // ...the enforcement of a quota it found enforced does not.
        s.reconciling("a", true);
        assert!(!s.quota_event_matters(&quota("a-dev", true)));
        assert!(!s.reconciled("a", false, &[], &both));
        s.reconciling("a", true);
        assert!(!s.reconciled("a", false, &[], &[]), "nothing held back");
        // A tenant with a status: nothing is held back.
        s.reconciling("a", false);
        assert!(s.quota_event_matters(&quota("a-dev", false)));
        assert!(!s.reconciled("a", false, &[], &[]));
    }

    fn tenant(name: &str) -> Tenant {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"displayName": name, "owners": [{"kind": "Group", "name": "g"}]},
        }))
        .expect("a tenant")
    }

    #[test]
    fn a_tenant_gone_from_the_cluster_is_forgotten_even_without_its_cleanup() {
        let s = Settling::default();
        let both = ["a-dev".to_string(), "a-prod".to_string()];
        // Deleted while its quotas settle, its finalizer removed by someone else (or another
        // operator cleaned up): no cleanup runs here, only the watch says it is gone.
        s.reconciling("a", true);
        assert!(!s.reconciled("a", true, &both, &[]));
        s.follow(&watcher::Event::Apply(tenant("a")));
        assert_eq!(s.tracked(), ["a"], "still there: still waited for");
        s.follow(&watcher::Event::Delete(tenant("a")));
        assert!(s.tracked().is_empty(), "a deleted tenant's entry lingers");
        assert!(
            s.quota_event_matters(&quota("a-dev", true)),
            "a new tenant of the same name waits for nothing yet"
        );

        // Deleted while the watch was down: missing from the re-list. A tenant listed keeps
        // its entry, also one its reconcile makes while the re-list runs.
        s.reconciling("a", true);
        assert!(!s.reconciled("a", true, &both, &[]));
        s.reconciling("b", true);
        s.follow(&watcher::Event::Init);
        s.follow(&watcher::Event::InitApply(tenant("b")));
        s.follow(&watcher::Event::InitApply(tenant("c")));
        s.reconciling("c", true);
        assert!(!s.reconciled("c", true, &["c-dev".into()], &[]));
        s.follow(&watcher::Event::InitDone);
        assert_eq!(s.tracked(), ["b", "c"]);
        assert!(
            !s.quota_event_matters(&quota_of("c", "c-dev", false)),
            "c still waits for its quota"
        );
        // b's reconcile ran across the re-list: what it held back still counts.
        assert!(!s.quota_event_matters(&quota_of("b", "b-dev", false)));
        assert!(s.reconciled("b", false, &[], &[]));
    }

    #[test]
    fn a_new_tenants_objects_are_told_once_with_its_access_and_a_deleted_ones_not_kept() {
        let s = Settling::default();
        let first = Journal::of_created(&["Namespace a-prod", "ResourceQuota a-prod/q"]);
        let waiting = ["a-prod".to_string()];
        // First reconcile: access waits for the quota, so nothing is told yet.
        assert_eq!(s.tell("a", true, &waiting, first).writes(), 0);
        // The reconcile that grants access tells both.
        let grant = Journal::of_created(&["RoleBinding a-prod/owners"]);
        assert_eq!(s.tell("a", true, &[], grant).writes(), 3);
        // Nothing left over: the next change is told alone.
        let next = Journal::of_created(&["NetworkPolicy a-prod/x"]);
        assert_eq!(s.tell("a", false, &[], next).writes(), 1);
        // A tenant with a status tells at once, waiting or not.
        let old = Journal::of_created(&["Namespace b-dev"]);
        assert_eq!(s.tell("b", false, &["b-dev".to_string()], old).writes(), 1);
        // A new tenant deleted before its access: its untold journal goes with it.
        let gone = Journal::of_created(&["Namespace c-prod"]);
        assert_eq!(s.tell("c", true, &["c-prod".to_string()], gone).writes(), 0);
        s.forget("c");
        assert_eq!(s.tell("c", true, &[], Journal::default()).writes(), 0);
    }

    #[test]
    fn the_quotas_seen_enforced_while_settling_stand_in_for_a_list_only_when_all_are_there() {
        let s = Settling::default();
        let both = ["a-dev".to_string(), "a-prod".to_string()];
        // Not settling: nothing is kept.
        s.quota_event_matters(&quota("a-dev", true));
        assert!(s.take_quotas("a", &both).is_none());
        s.reconciling("a", true);
        assert!(!s.reconciled("a", true, &both, &[]));
        s.quota_event_matters(&quota("a-dev", true));
        // One of two seen enforced: not enough; taken all the same (the next one lists).
        assert!(s.take_quotas("a", &both).is_none());
        s.quota_event_matters(&quota("a-dev", true));
        s.quota_event_matters(&quota("a-prod", false));
        assert!(s.take_quotas("a", &both).is_none(), "one not enforced");
        // Both enforced, the last event the freshest; someone else's quota in a namespace
        // (a claim's) does not stand in for the tenant's.
        s.reconciling("a", true);
        assert!(!s.reconciled("a", true, &both, &[]));
        s.quota_event_matters(&quota("a-dev", true));
        s.quota_event_matters(&quota("a-prod", true));
        let mut claims: ResourceQuota = quota("a-prod", false);
        claims.metadata.name = Some("citycloud-claims".into());
        s.quota_event_matters(&claims);
        let seen = s.take_quotas("a", &both).expect("both seen enforced");
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["a-dev", "a-prod"]);
        assert!(
            seen.values()
                .all(|q| q.metadata.name.as_deref() == Some("citycloud-quota"))
        );
        assert!(s.take_quotas("a", &both).is_none(), "taken once");
        // A tenant that got its status lists again: what was seen is dropped.
        s.reconciling("a", true);
        s.quota_event_matters(&quota("a-dev", true));
        s.quota_event_matters(&quota("a-prod", true));
        s.reconciling("a", false);
        assert!(s.take_quotas("a", &both).is_none());
    }
}
