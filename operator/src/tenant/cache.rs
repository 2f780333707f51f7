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
//!   [`Pending`] (the applied hash, and a ResourceQuota's answer to compare its echo with), so
//!   a reconcile in between does not write it again;
//! - the namespace cache holds every namespace, not only the managed ones: a name that is
//!   someone else's is found there without a read (never take over someone else's);
//! - what must be exact is read fresh: the ResourceQuotas the budget split reads (a cached
//!   one a version behind on `status.used` could let two namespaces together admit more than
//!   the budget).
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::api::labels::CLAIM as CLAIM_LABEL;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE, TENANT};
use crate::api::{QuotaProfile, SharedServiceClaim};
use crate::apply::APPLIED_HASH;

#[derive(Clone)]
pub struct Caches {
    /// Every namespace; the ones the operator manages indexed by their tenant label.
    pub namespaces: Indexed<Namespace>,
    /// The rest of the namespaced kinds: indexed by namespace.
    pub role_bindings: Indexed<RoleBinding>,
    pub limit_ranges: Indexed<LimitRange>,
    pub network_policies: Indexed<NetworkPolicy>,
    pub quotas: Indexed<ResourceQuota>,
    pub cluster_roles: Indexed<ClusterRole>,
    pub cluster_role_bindings: Indexed<ClusterRoleBinding>,
    pub claims: Indexed<SharedServiceClaim>,
    pub profiles: Store<QuotaProfile>,
    /// The Tenants themselves (the controller's own store): ancestors are read from it.
    pub tenants: Store<crate::api::Tenant>,
    /// Each parent's children, from the same watch (see [`Children`]).
    pub children: Children,
    pub pending: Pending,
}

/// Each Tenant's parent, and each parent's children, kept from the Tenant watch: a parent's
/// reconcile finds its children (whose budgets are carved from its own) by key, without a
/// scan of every tenant.
#[derive(Clone, Default)]
pub struct Children {
    inner: Arc<RwLock<ChildIndex>>,
}

#[derive(Default)]
struct ChildIndex {
    /// child → (parent, what of the child sets its budget: profile and overrides).
    parent_of: BTreeMap<String, (String, String)>,
    children: BTreeMap<String, BTreeSet<String>>,
    /// A relist under way: what it has shown so far.
    relist: Option<BTreeMap<String, (String, String)>>,
}

impl ChildIndex {
    fn set(&mut self, parent_of: BTreeMap<String, (String, String)>) {
        self.children.clear();
        for (child, (parent, _)) in &parent_of {
            self.children
                .entry(parent.clone())
                .or_default()
                .insert(child.clone());
        }
        self.parent_of = parent_of;
    }

    fn insert(&mut self, child: String, entry: Option<(String, String)>) {
        if let Some((old, _)) = self.parent_of.remove(&child)
            && let Some(set) = self.children.get_mut(&old)
        {
            set.remove(&child);
            if set.is_empty() {
                self.children.remove(&old);
            }
        }
        if let Some(entry) = entry {
            self.children
                .entry(entry.0.clone())
                .or_default()
                .insert(child.clone());
            self.parent_of.insert(child, entry);
        }
    }
}

/// A child's parent and what sets its budget; None for a top-level tenant.
fn child_entry(t: &crate::api::Tenant) -> Option<(String, String)> {
    let parent = t.spec.parent.clone()?;
    let shape = format!(
        "{}|{}",
        t.spec.quota_profile,
        serde_json::to_string(&t.spec.quota_overrides).unwrap_or_default()
    );
    Some((parent, shape))
}

impl Children {
    /// Follows one event of the Tenant watch; returns the parents whose carve it changes (a
    /// child created, deleted, moved, or its profile or overrides changed).
    pub fn follow(&self, event: &watcher::Event<crate::api::Tenant>) -> Vec<String> {
        let Ok(mut index) = self.inner.write() else {
            return Vec::new();
        };
        let changed = |before: Option<&(String, String)>, after: Option<&(String, String)>| {
            if before == after {
                return Vec::new();
            }
            let mut parents: Vec<String> = before
                .into_iter()
                .chain(after)
                .map(|e| e.0.clone())
                .collect();
            parents.dedup();
            parents
        };
        match event {
            watcher::Event::Apply(t) => {
                let entry = child_entry(t);
                let out = changed(index.parent_of.get(&t.name_any()), entry.as_ref());
                index.insert(t.name_any(), entry);
                out
            }
            watcher::Event::Delete(t) => {
                let out = changed(index.parent_of.get(&t.name_any()), None);
                index.insert(t.name_any(), None);
                out
            }
            watcher::Event::Init => {
                index.relist = Some(BTreeMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(t) => {
                if let Some(entry) = child_entry(t)
                    && let Some(relist) = index.relist.as_mut()
                {
                    relist.insert(t.name_any(), entry);
                }
                Vec::new()
            }
            // The relist replaces what was known; every parent whose children differ is news.
            watcher::Event::InitDone => {
                let relisted = index.relist.take().unwrap_or_default();
                let mut parents: BTreeSet<String> = BTreeSet::new();
                for (child, entry) in &index.parent_of {
                    if relisted.get(child) != Some(entry) {
                        parents.insert(entry.0.clone());
                    }
                }
                for (child, entry) in &relisted {
                    if index.parent_of.get(child) != Some(entry) {
                        parents.insert(entry.0.clone());
                    }
                }
                index.set(relisted);
                parents.into_iter().collect()
            }
        }
    }

    /// The names of `parent`'s children, as the watch last showed them.
    pub fn of(&self, parent: &str) -> Vec<String> {
        self.inner
            .read()
            .ok()
            .and_then(|i| i.children.get(parent).map(|c| c.iter().cloned().collect()))
            .unwrap_or_default()
    }
}

impl Caches {
    /// Whether every watch has listed once: before that, a missing object in a cache would
    /// look like one to create (and a restart would write what already exists). Never
    /// waits: the controller polls these watches only between reconciles, so a reconcile
    /// waiting for them would wait forever once every worker waits.
    pub fn ready(&self) -> bool {
        self.namespaces.listed()
            && self.role_bindings.listed()
            && self.limit_ranges.listed()
            && self.network_policies.listed()
            && self.quotas.listed()
            && self.cluster_roles.listed()
            && self.cluster_role_bindings.listed()
            && self.claims.listed()
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

/// A watch's objects, each kept as compact JSON (a third or less of the memory of the parsed
/// object, which matters at tens of thousands of objects) with an index from a key (a
/// namespace, a label value) to the objects under it. Fed by [`Indexed::follow`] with every
/// event of its watch; read by parsing the few objects a reconcile looks at.
///
/// The index may hold names that moved away (a relabel): every lookup checks the object
/// against the key again.
pub struct Indexed<K> {
    inner: Arc<RwLock<Objects>>,
    key: fn(&K) -> Option<String>,
    /// Whether objects are kept, or only that the watch has listed (see
    /// [`Indexed::listing_only`]).
    keep: bool,
}

impl<K> Clone for Indexed<K> {
    fn clone(&self) -> Self {
        Indexed {
            inner: self.inner.clone(),
            key: self.key,
            keep: self.keep,
        }
    }
}

/// Objects as packed JSON (see [`super::packed`]) with their index key, by "namespace/name"
/// ("name" if cluster-scoped).
type Entries = HashMap<String, (Option<String>, Box<[u8]>)>;

#[derive(Default)]
struct Objects {
    json: Entries,
    packer: super::packed::Packer,
    index: HashMap<String, HashSet<String>>,
    /// A relist in progress: what it has listed so far.
    relist: Option<Entries>,
    listed: bool,
}

impl Objects {
    fn insert(&mut self, id: String, key: Option<String>, json: Box<[u8]>) {
        if let Some(k) = &key {
            self.index.entry(k.clone()).or_default().insert(id.clone());
        }
        if let Some((Some(old), _)) = self.json.insert(id.clone(), (key.clone(), json))
            && Some(&old) != key.as_ref()
        {
            self.unindex(&old, &id);
        }
    }

    fn unindex(&mut self, key: &str, id: &str) {
        if let Some(set) = self.index.get_mut(key) {
            set.remove(id);
            if set.is_empty() {
                self.index.remove(key);
            }
        }
    }
}

fn id_of(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Index key of namespaced kinds: their namespace.
pub fn by_namespace<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().namespace.clone()
}

/// Index key of Namespaces: the tenant they belong to, if the operator manages them (the
/// cache holds the others too, to know which names are taken).
pub fn by_tenant<K: Resource>(obj: &K) -> Option<String> {
    let labels = obj.meta().labels.as_ref()?;
    if labels.get(MANAGED_BY).map(String::as_str) != Some(MANAGED_BY_VALUE) {
        return None;
    }
    labels.get(TENANT).cloned()
}

/// No index (objects found by name only).
pub fn unindexed<K>(_: &K) -> Option<String> {
    None
}

impl<K> Indexed<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    pub fn new(key: fn(&K) -> Option<String>) -> Self {
        Indexed {
            inner: Arc::default(),
            key,
            keep: true,
        }
    }

    /// A cache of a kind whose watch only triggers reconciles: it keeps no object, only
    /// whether the watch has listed (the ResourceQuotas, read fresh by every reconcile that
    /// needs them: thousands of objects with a status each, kept for nothing otherwise).
    pub fn listing_only() -> Self {
        Indexed {
            inner: Arc::default(),
            key: |_| None,
            keep: false,
        }
    }

    /// Whether the watch has listed once.
    pub fn listed(&self) -> bool {
        self.inner.read().is_ok_and(|o| o.listed)
    }

    /// Follows one watch event.
    pub fn follow(&self, event: &watcher::Event<K>) {
        let Ok(mut o) = self.inner.write() else {
            return;
        };
        if !self.keep {
            if matches!(event, watcher::Event::InitDone) {
                o.listed = true;
            }
            return;
        }
        let entry = |o: &mut Objects, obj: &K| {
            let id = id_of(obj.meta().namespace.as_deref(), &obj.name_any());
            let ours = obj.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE);
            let json = o
                .packer
                .pack(&serde_json::to_vec(obj).unwrap_or_default(), ours);
            (id, (self.key)(obj), json)
        };
        match event {
            watcher::Event::Apply(obj) => {
                let (id, key, json) = entry(&mut o, obj);
                o.insert(id, key, json);
            }
            watcher::Event::Delete(obj) => {
                let id = id_of(obj.meta().namespace.as_deref(), &obj.name_any());
                if let Some((Some(key), _)) = o.json.remove(&id) {
                    o.unindex(&key, &id);
                }
            }
            watcher::Event::Init => o.relist = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                let (id, key, json) = entry(&mut o, obj);
                o.relist.get_or_insert_default().insert(id, (key, json));
            }
            // The list replaces what was known (missed deletes included).
            watcher::Event::InitDone => {
                let listed = o.relist.take().unwrap_or_default();
                o.json.clear();
                o.index.clear();
                for (id, (key, json)) in listed {
                    o.insert(id, key, json);
                }
                o.json.shrink_to_fit();
                o.listed = true;
            }
        }
    }

    /// The object named `name` (in `namespace`).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<K> {
        let o = self.inner.read().ok()?;
        let (_, packed) = o.json.get(&id_of(namespace, name))?;
        serde_json::from_slice(&o.packer.unpack(packed)?).ok()
    }

    /// Whether anything is indexed under `key` (a hint, without parsing: see [`Indexed::under`]
    /// for what is there).
    pub fn any_under(&self, key: &str) -> bool {
        self.inner
            .read()
            .is_ok_and(|o| o.index.get(key).is_some_and(|ids| !ids.is_empty()))
    }

    /// The objects under `key`.
    pub fn under(&self, key: &str) -> Vec<K> {
        let Ok(o) = self.inner.read() else {
            return Vec::new();
        };
        o.index
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| o.json.get(id))
            .filter_map(|(_, packed)| serde_json::from_slice::<K>(&o.packer.unpack(packed)?).ok())
            .filter(|obj| (self.key)(obj).as_deref() == Some(key))
            .collect()
    }

    /// Objects kept.
    pub fn count(&self) -> usize {
        self.inner.read().map(|o| o.json.len()).unwrap_or_default()
    }
}

/// The tenant's objects of one kind in `namespace` (not those made for claims), by name.
pub fn in_namespace<K>(
    cache: &Indexed<K>,
    namespace: &str,
    tenant: &str,
) -> std::collections::BTreeMap<String, K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    cache
        .under(namespace)
        .into_iter()
        .filter(|o| {
            let labels = o.labels();
            labels.get(TENANT).map(String::as_str) == Some(tenant)
                && !labels.contains_key(CLAIM_LABEL)
        })
        .map(|o| (o.name_any(), o))
        .collect()
}

/// How long a write is trusted over a cache that has not shown it. Its echo always comes (a
/// watch misses no event; a write that changed nothing is not recorded): this only bounds
/// memory, and is long because a busy operator may read its watches late.
const PENDING_FOR: Duration = Duration::from_secs(300);

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
    /// The API server's answer to the write, for ResourceQuotas: its echo is compared with it
    /// (a status kube-controller-manager changed since is worth a reconcile).
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
    /// Notes that we are about to apply `desired` with `hash`: before sending, because the
    /// watch may show the write (and end what is pending) before its answer comes back.
    pub fn begin<K: Resource<DynamicType = ()>>(&self, desired: &K, hash: &str) {
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
                    quota: None,
                },
            );
        }
    }

    /// The write begun with [`Pending::begin`] came back: `answer` (kept for ResourceQuotas)
    /// is what the API server holds now, unless the watch has shown it already. A write that
    /// failed or changed nothing (`changed` false) brings no event to wait for.
    pub fn done<K: Resource<DynamicType = ()>>(
        &self,
        desired: &K,
        hash: &str,
        changed: bool,
        answer: Option<ResourceQuota>,
    ) {
        let Ok(mut w) = self.writes.lock() else {
            return;
        };
        let key = key_of(desired);
        if !changed {
            if w.by_key.get(&key).is_some_and(|p| p.hash == hash) {
                w.by_key.remove(&key);
            }
            return;
        }
        if let Some(p) = w.by_key.get_mut(&key)
            && p.hash == hash
        {
            p.quota = answer;
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

    /// Whether a write of ours to the `K` named `name` (in `namespace`) is pending, whatever
    /// it wrote.
    pub fn touched<K: Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let Ok(w) = self.writes.lock() else {
            // Not knowing is not "untouched".
            return true;
        };
        w.by_key.contains_key(&(
            kind_of::<K>(),
            namespace.unwrap_or_default().to_string(),
            name.to_string(),
        ))
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
        let hash = obj
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH));
        if hash != Some(&p.hash) {
            // An event from before our write: the cache is still behind.
            return Seen::News;
        }
        let written = w.by_key.remove(&key).and_then(|p| p.quota).map(Box::new);
        Seen::Echo(written)
    }
}

/// What a watch event was, for [`Pending::seen`].
pub enum Seen {
    /// Someone else's change (or ours, before the cache showed it): worth a reconcile.
    News,
    /// The echo of our own write; for a ResourceQuota, with what we wrote.
    Echo(Option<Box<ResourceQuota>>),
}

#[cfg(test)]
mod tests {
    use super::*;
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
            "metadata": {"name": name, "labels": {TENANT: tenant, MANAGED_BY: MANAGED_BY_VALUE}},
        }))
        .expect("a Namespace")
    }

    fn foreign(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
            .expect("a Namespace")
    }

    #[test]
    fn the_cache_finds_objects_by_key_and_never_a_moved_or_deleted_one() {
        let cache = Indexed::new(by_tenant);
        let see = |e: Event<Namespace>| cache.follow(&e);
        assert!(!cache.listed());
        see(Event::Init);
        see(Event::InitApply(ns("a-prod", "a")));
        see(Event::InitApply(ns("b-prod", "b")));
        see(Event::InitDone);
        assert!(cache.listed());
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
        assert_eq!(cache.count(), 1);
        assert_eq!(
            cache
                .get(None, "a-prod")
                .map(|n| n.labels()[TENANT].clone()),
            Some("a".to_string())
        );
        assert!(cache.get(None, "b-prod").is_none());
        // Someone else's namespaces are kept (their names are taken) but under no tenant:
        // not ours without our managed-by label, whatever tenant label they carry.
        see(Event::Apply(foreign("kube-system", serde_json::json!({}))));
        see(Event::Apply(foreign(
            "a-test",
            serde_json::json!({TENANT: "a"}),
        )));
        assert_eq!(names("a"), ["a-prod"]);
        assert!(cache.get(None, "kube-system").is_some());
        assert!(cache.get(None, "a-test").is_some());
    }

    #[test]
    fn our_write_is_pending_until_its_echo_and_an_older_event_does_not_end_it() {
        let pending = Pending::default();
        let wanted = rb("a-prod", "owners", "h2");
        assert!(!pending.holds(&wanted, "h2"));
        pending.begin(&wanted, "h2");
        pending.done(&wanted, "h2", true, None);
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
        pending.begin(&wanted, "h2");
        assert!(matches!(
            pending.seen(&rb("a-prod", "owners", "h2"), true),
            Seen::News
        ));
        assert!(!pending.holds(&wanted, "h2"));
    }

    #[test]
    fn the_echo_of_a_quota_we_wrote_carries_the_answer_and_ends_the_write() {
        let pending = Pending::default();
        let q: ResourceQuota = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "citycloud-quota", "namespace": "a-prod",
                         "annotations": {APPLIED_HASH: "h"}},
            "spec": {"hard": {"requests.cpu": "3"}},
        }))
        .expect("a quota");
        pending.begin(&q, "h");
        pending.done(&q, "h", true, Some(q.clone()));
        assert!(pending.holds(&q, "h"), "pending until its echo");
        match pending.seen(&q, false) {
            Seen::Echo(Some(answer)) => assert_eq!(*answer, q),
            _ => panic!("the echo carries the answer"),
        }
        assert!(!pending.holds(&q, "h"), "the echo ends the write");
    }

    #[test]
    fn an_echo_seen_before_the_answer_ends_the_write_and_the_answer_does_not_revive_it() {
        let pending = Pending::default();
        let q: ResourceQuota = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "citycloud-quota", "namespace": "a-prod",
                         "annotations": {APPLIED_HASH: "h"}},
        }))
        .expect("a quota");
        pending.begin(&q, "h");
        assert!(matches!(pending.seen(&q, false), Seen::Echo(None)));
        pending.done(&q, "h", true, Some(q.clone()));
        assert!(
            !pending.holds(&q, "h"),
            "the cache is newer than the answer"
        );
        // A write that changed nothing brings no echo: nothing stays pending.
        pending.begin(&q, "h");
        pending.done(&q, "h", false, None);
        assert!(!pending.holds(&q, "h"));
    }

    fn tenant(name: &str, parent: Option<&str>, profile: &str) -> crate::api::Tenant {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"displayName": name, "owners": [{"kind": "Group", "name": "g"}],
                     "parent": parent, "quotaProfile": profile},
        }))
        .expect("a tenant")
    }

    #[test]
    fn a_childs_creation_change_move_and_deletion_name_the_parents_to_reconcile() {
        let children = Children::default();
        let a = tenant("a", Some("quan"), "small");
        assert_eq!(children.follow(&watcher::Event::Apply(a.clone())), ["quan"]);
        assert_eq!(children.of("quan"), ["a"]);
        // Nothing of its budget changed (a label, a status): no parent reconcile.
        assert!(
            children
                .follow(&watcher::Event::Apply(a.clone()))
                .is_empty()
        );
        // Another profile: the parent's carve changes.
        let bigger = tenant("a", Some("quan"), "medium");
        assert_eq!(children.follow(&watcher::Event::Apply(bigger)), ["quan"]);
        // Moved to another parent: both.
        let moved = tenant("a", Some("huyen"), "medium");
        assert_eq!(
            children.follow(&watcher::Event::Apply(moved.clone())),
            ["quan", "huyen"]
        );
        assert!(children.of("quan").is_empty());
        assert_eq!(children.of("huyen"), ["a"]);
        // A top-level tenant is nobody's child.
        let top = tenant("top", None, "large");
        assert!(children.follow(&watcher::Event::Apply(top)).is_empty());
        assert_eq!(children.follow(&watcher::Event::Delete(moved)), ["huyen"]);
        assert!(children.of("huyen").is_empty());
    }

    #[test]
    fn a_relist_replaces_the_index_and_names_the_parents_whose_children_changed() {
        let children = Children::default();
        children.follow(&watcher::Event::Apply(tenant("a", Some("quan"), "small")));
        children.follow(&watcher::Event::Apply(tenant("b", Some("huyen"), "small")));
        assert!(children.follow(&watcher::Event::Init).is_empty());
        // b deleted and c created while the watch was lost; a unchanged.
        for t in [
            tenant("a", Some("quan"), "small"),
            tenant("c", Some("xa"), "small"),
        ] {
            assert!(children.follow(&watcher::Event::InitApply(t)).is_empty());
        }
        // Until the relist is done, the old index answers.
        assert_eq!(children.of("huyen"), ["b"]);
        assert_eq!(children.follow(&watcher::Event::InitDone), ["huyen", "xa"]);
        assert_eq!(children.of("quan"), ["a"]);
        assert!(children.of("huyen").is_empty());
        assert_eq!(children.of("xa"), ["c"]);
    }
}
