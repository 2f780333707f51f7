//! The tenant's managed objects (and its QuotaProfiles) as the controller's watches last saw
//! them.
//!
//! A reconcile compares what it wants with these instead of reading the API server: a
//! reconcile of a tenant whose objects are as wanted sends no request at all. Every lookup is
//! by key (a namespace, a tenant name, an object name), never a scan of every cached object,
//! so the cost of a reconcile does not grow with the number of tenants.
//!
//! A cache can be a moment behind; that is safe here because:
//! - every write is a server-side apply of the whole desired object (applying what already
//!   exists changes nothing), a delete of something already gone is fine, and the watch event
//!   of any change re-triggers the reconcile;
//! - what the operator itself wrote but the watch has not shown yet is remembered in
//!   [`Pending`] (the applied hash, and a ResourceQuota's whole written object), so a
//!   reconcile in between neither writes it again nor splits the budget on a `hard` older than
//!   the one it wrote (see [`Pending::quota`]);
//! - what must be exact is still read fresh: a namespace named like an environment but not
//!   (yet) labelled as the tenant's (never take over someone else's).
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::apply::CLAIM_LABEL;
use crate::api::labels::TENANT;
use crate::api::{QuotaProfile, SharedServiceClaim};
use crate::apply::APPLIED_HASH;

#[derive(Clone)]
pub struct Caches {
    /// Indexed by the tenant label.
    pub namespaces: Indexed<Namespace>,
    /// The rest of the namespaced kinds: indexed by namespace.
    pub role_bindings: Indexed<RoleBinding>,
    pub limit_ranges: Indexed<LimitRange>,
    pub network_policies: Indexed<NetworkPolicy>,
    pub quotas: Indexed<ResourceQuota>,
    pub cluster_roles: Store<ClusterRole>,
    pub cluster_role_bindings: Store<ClusterRoleBinding>,
    pub claims: Indexed<SharedServiceClaim>,
    pub profiles: Store<QuotaProfile>,
    /// The Tenants themselves (the controller's own store): ancestors are read from it.
    pub tenants: Store<crate::api::Tenant>,
    pub pending: Pending,
}

impl Caches {
    /// Whether every watch has listed once: before that, a missing object in a cache would
    /// look like one to create (and a restart would write what already exists). Never
    /// waits: the controller polls these watches only between reconciles, so a reconcile
    /// waiting for them would wait forever once every worker waits.
    pub fn ready(&self) -> bool {
        listed(&self.namespaces.store)
            && listed(&self.role_bindings.store)
            && listed(&self.limit_ranges.store)
            && listed(&self.network_policies.store)
            && listed(&self.quotas.store)
            && listed(&self.cluster_roles)
            && listed(&self.cluster_role_bindings)
            && listed(&self.claims.store)
            && listed(&self.profiles)
    }
}

fn listed<K: Resource + Clone>(store: &Store<K>) -> bool
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

/// A reflector store with an index from a key (a namespace, a label value) to the names of
/// the objects under it. The index may hold names that moved away or are gone (a relabel, a
/// delete seen before a relist): every lookup checks the object against the key again.
#[derive(Clone)]
pub struct Indexed<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    index: Arc<Mutex<HashMap<String, HashSet<ObjectRef<K>>>>>,
    key: fn(&K) -> Option<String>,
}

/// Index key of namespaced kinds: their namespace.
pub fn by_namespace<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().namespace.clone()
}

/// Index key of Namespaces: the tenant they belong to.
pub fn by_tenant<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().labels.as_ref()?.get(TENANT).cloned()
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Indexed<K> {
    pub fn new(store: Store<K>, key: fn(&K) -> Option<String>) -> Self {
        Indexed {
            store,
            index: Arc::default(),
            key,
        }
    }

    /// Follows one watch event; call it after the reflector has applied the event.
    pub fn follow(&self, event: &watcher::Event<K>) {
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                if let Some(k) = (self.key)(o) {
                    index.entry(k).or_default().insert(ObjectRef::from_obj(o));
                }
            }
            watcher::Event::Delete(o) => {
                if let Some(k) = (self.key)(o)
                    && let Some(set) = index.get_mut(&k)
                {
                    set.remove(&ObjectRef::from_obj(o));
                    if set.is_empty() {
                        index.remove(&k);
                    }
                }
            }
            watcher::Event::Init => {}
            // The store now holds exactly the list: rebuild, dropping every stale name.
            watcher::Event::InitDone => {
                index.clear();
                for o in self.store.state() {
                    if let Some(k) = (self.key)(&o) {
                        index.entry(k).or_default().insert(ObjectRef::from_obj(&*o));
                    }
                }
            }
        }
    }

    /// The cached objects under `key`.
    pub fn under(&self, key: &str) -> Vec<Arc<K>> {
        let refs: Vec<ObjectRef<K>> = match self.index.lock() {
            Ok(index) => index
                .get(key)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            Err(_) => return Vec::new(),
        };
        refs.iter()
            .filter_map(|r| self.store.get(r))
            .filter(|o| (self.key)(o).as_deref() == Some(key))
            .collect()
    }
}

/// The tenant's objects of one kind in `namespace` (not those made for claims), by name.
pub fn in_namespace<K>(
    cache: &Indexed<K>,
    namespace: &str,
    tenant: &str,
) -> std::collections::BTreeMap<String, K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone,
{
    cache
        .under(namespace)
        .iter()
        .filter(|o| {
            let labels = o.labels();
            labels.get(TENANT).map(String::as_str) == Some(tenant)
                && !labels.contains_key(CLAIM_LABEL)
        })
        .map(|o| (o.name_any(), (**o).clone()))
        .collect()
}

/// A cluster-scoped object by name.
pub fn named<K>(store: &Store<K>, name: &str) -> Option<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&ObjectRef::new(name)).map(|o| (*o).clone())
}

/// How long a write is trusted over a cache that has not shown it: a safety valve for a write
/// whose echo never comes with our hash (someone replaced the annotation at once).
const PENDING_FOR: Duration = Duration::from_secs(30);

/// Writes of ours that the watches have not shown yet, by kind, namespace and name.
#[derive(Clone, Default)]
pub struct Pending {
    writes: Arc<Mutex<PendingWrites>>,
}

#[derive(Default)]
struct PendingWrites {
    by_key: HashMap<PendingKey, Written>,
    /// When entries past [`PENDING_FOR`] were last dropped.
    expired: Option<Instant>,
}

type PendingKey = (&'static str, String, String);

struct Written {
    hash: String,
    at: Instant,
    /// The API server's answer to the write, for ResourceQuotas.
    quota: Option<ResourceQuota>,
}

fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> PendingKey {
    let m = obj.meta();
    (
        kind_of::<K>(),
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    // Distinct per kind the tenant writes; a static str keeps the key small.
    match K::kind(&()).as_ref() {
        "Namespace" => "Namespace",
        "RoleBinding" => "RoleBinding",
        "LimitRange" => "LimitRange",
        "NetworkPolicy" => "NetworkPolicy",
        "ResourceQuota" => "ResourceQuota",
        "ClusterRole" => "ClusterRole",
        "ClusterRoleBinding" => "ClusterRoleBinding",
        _ => "other",
    }
}

impl Pending {
    /// Remembers that we just applied `desired` with `hash`; `answer` is what the API server
    /// returned (kept for ResourceQuotas).
    pub fn wrote<K: Resource<DynamicType = ()>>(&self, desired: &K, hash: &str, answer: Option<ResourceQuota>) {
        if let Ok(mut w) = self.writes.lock() {
            // Bounded memory whatever happens, at one pass per PENDING_FOR.
            if w.expired.is_none_or(|t| t.elapsed() >= PENDING_FOR) {
                w.by_key.retain(|_, p| p.at.elapsed() < PENDING_FOR);
                w.expired = Some(Instant::now());
            }
            w.by_key.insert(
                key_of(desired),
                Written {
                    hash: hash.to_string(),
                    at: Instant::now(),
                    quota: answer,
                },
            );
        }
    }

    /// Whether we applied exactly `hash` to this object moments ago (its watch event is on the
    /// way): applying it again would change nothing.
    pub fn holds<K: Resource<DynamicType = ()>>(&self, desired: &K, hash: &str) -> bool {
        let Ok(w) = self.writes.lock() else {
            return false;
        };
        w.by_key
            .get(&key_of(desired))
            .is_some_and(|p| p.hash == hash && p.at.elapsed() < PENDING_FOR)
    }

    /// The ResourceQuota we wrote in `namespace` named `name`, when the cache has not shown
    /// it yet. Used instead of the cache, whose `spec.hard` may be older than ours: splitting
    /// the budget on an older, lower `hard` would hand the difference to another namespace.
    pub fn quota(&self, namespace: &str, name: &str) -> Option<ResourceQuota> {
        let w = self.writes.lock().ok()?;
        w.by_key
            .get(&("ResourceQuota", namespace.to_string(), name.to_string()))
            .filter(|p| p.at.elapsed() < PENDING_FOR)
            .and_then(|p| p.quota.clone())
    }

    /// Follows a watch event of `obj`: the echo of our write (it carries our hash) or its
    /// deletion ends what was pending. Returns whether the event is only that echo (nothing a
    /// reconcile needs to look at), given `same_status` for kinds with a status of interest.
    pub fn seen<K: Resource<DynamicType = ()>>(&self, obj: &K, deleted: bool) -> Seen {
        let Ok(mut w) = self.writes.lock() else {
            return Seen::News;
        };
        let key = key_of(obj);
        let Some(p) = w.by_key.get(&key) else {
            return Seen::News;
        };
        if deleted {
            w.by_key.remove(&key);
            return Seen::News;
        }
        let hash = obj.meta().annotations.as_ref().and_then(|a| a.get(APPLIED_HASH));
        if hash != Some(&p.hash) {
            // An event from before our write: the cache is still behind.
            return Seen::News;
        }
        let written = w.by_key.remove(&key).and_then(|p| p.quota);
        Seen::Echo(written)
    }
}

/// What a watch event was, for [`Pending::seen`].
pub enum Seen {
    /// Someone else's change (or ours, before the cache showed it): worth a reconcile.
    News,
    /// The echo of our own write; for a ResourceQuota, with what we wrote.
    Echo(Option<ResourceQuota>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn rb(ns: &str, name: &str, hash: &str) -> RoleBinding {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {APPLIED_HASH: hash}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        }))
        .expect("a RoleBinding")
    }

    fn ns(name: &str, tenant: &str) -> Namespace {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {TENANT: tenant}},
        }))
        .expect("a Namespace")
    }

    #[test]
    fn the_index_finds_objects_by_key_and_never_a_moved_or_deleted_one() {
        let (store, mut writer) = reflector::store::<Namespace>();
        let cache = Indexed::new(store, by_tenant);
        let mut see = |e: Event<Namespace>| {
            writer.apply_watcher_event(&e);
            cache.follow(&e);
        };
        see(Event::Init);
        see(Event::InitApply(ns("a-prod", "a")));
        see(Event::InitApply(ns("b-prod", "b")));
        see(Event::InitDone);
        see(Event::Apply(ns("a-dev", "a")));
        let names = |t: &str| {
            let mut v: Vec<String> = cache.under(t).iter().map(|n| n.name_any()).collect();
            v.sort();
            v
        };
        assert_eq!(names("a"), ["a-dev", "a-prod"]);
        // Relabelled to another tenant: found under the new one only.
        see(Event::Apply(ns("a-dev", "b")));
        assert_eq!(names("a"), ["a-prod"]);
        assert_eq!(names("b"), ["a-dev", "b-prod"]);
        see(Event::Delete(ns("b-prod", "b")));
        assert_eq!(names("b"), ["a-dev"]);
        // A relist drops what is gone.
        see(Event::Init);
        see(Event::InitApply(ns("a-prod", "a")));
        see(Event::InitDone);
        assert_eq!(names("a"), ["a-prod"]);
        assert!(names("b").is_empty());
    }

    #[test]
    fn our_write_is_pending_until_its_echo_and_an_older_event_does_not_end_it() {
        let pending = Pending::default();
        let wanted = rb("a-prod", "owners", "h2");
        assert!(!pending.holds(&wanted, "h2"));
        pending.wrote(&wanted, "h2", None);
        assert!(pending.holds(&wanted, "h2"), "written, echo not seen yet");
        assert!(!pending.holds(&wanted, "h3"), "another content is not held");
        // An event from before our write (the old hash) is news and leaves it pending.
        assert!(matches!(
            pending.seen(&rb("a-prod", "owners", "h1"), false),
            Seen::News
        ));
        assert!(pending.holds(&wanted, "h2"));
        // The echo ends it and is no news.
        assert!(matches!(
            pending.seen(&rb("a-prod", "owners", "h2"), false),
            Seen::Echo(None)
        ));
        assert!(!pending.holds(&wanted, "h2"));
        // Later events (someone's edit) are news again.
        assert!(matches!(
            pending.seen(&rb("a-prod", "owners", "h2"), false),
            Seen::News
        ));
        // A delete ends what was pending: the object must be written again.
        pending.wrote(&wanted, "h2", None);
        assert!(matches!(
            pending.seen(&rb("a-prod", "owners", "h2"), true),
            Seen::News
        ));
        assert!(!pending.holds(&wanted, "h2"));
    }

    #[test]
    fn a_quota_we_wrote_is_used_until_the_cache_shows_it() {
        let pending = Pending::default();
        let q: ResourceQuota = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "citycloud-quota", "namespace": "a-prod",
                         "annotations": {APPLIED_HASH: "h"}},
            "spec": {"hard": {"requests.cpu": "3"}},
        }))
        .expect("a quota");
        pending.wrote(&q, "h", Some(q.clone()));
        assert_eq!(pending.quota("a-prod", "citycloud-quota"), Some(q.clone()));
        assert!(pending.quota("a-dev", "citycloud-quota").is_none());
        assert!(matches!(pending.seen(&q, false), Seen::Echo(Some(_))));
        assert!(pending.quota("a-prod", "citycloud-quota").is_none());
    }
}
