//! An index kept from a watch: which objects are under a key (a namespace, the tenant or
//! profile they name), so that a watch event's mapper or a reconcile finds them by one lookup
//! instead of a scan of every object in the store (whose cost grows with the number of
//! tenants, and is paid on every event).
//!
//! Fed by [`Keyed::follow`] with every event of the watch it indexes (before the controller
//! sees the event, so a mapper never looks up an index older than its event).
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

/// An object's identity in the index: namespace (empty if cluster-scoped) and name.
type Id = (String, String);

/// The objects under each key; see the module docs.
pub struct Keyed<K> {
    inner: Arc<RwLock<Index>>,
    keys: fn(&K) -> Vec<String>,
}

impl<K> Clone for Keyed<K> {
    fn clone(&self) -> Self {
        Keyed {
            inner: self.inner.clone(),
            keys: self.keys,
        }
    }
}

#[derive(Default)]
struct Index {
    keys_of: HashMap<Id, Vec<String>>,
    under: HashMap<String, BTreeSet<Id>>,
    /// A relist under way: what it has shown so far.
    relist: Option<HashMap<Id, Vec<String>>>,
    listed: bool,
}

impl Index {
    fn set(&mut self, id: Id, keys: Vec<String>) {
        self.remove(&id);
        if keys.is_empty() {
            return;
        }
        for key in &keys {
            self.under
                .entry(key.clone())
                .or_default()
                .insert(id.clone());
        }
        self.keys_of.insert(id, keys);
    }

    fn remove(&mut self, id: &Id) {
        for key in self.keys_of.remove(id).unwrap_or_default() {
            if let Some(set) = self.under.get_mut(&key) {
                set.remove(id);
                if set.is_empty() {
                    self.under.remove(&key);
                }
            }
        }
    }
}

fn id_of<K: Resource>(obj: &K) -> Id {
    let m = obj.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

impl<K> Keyed<K>
where
    K: Resource<DynamicType = ()>,
{
    /// An index under the keys `keys` gives each object (an object may be under several,
    /// or none).
    pub fn new(keys: fn(&K) -> Vec<String>) -> Self {
        Keyed {
            inner: Arc::default(),
            keys,
        }
    }

    /// Follows one event of the watch; returns the keys whose objects changed (an object
    /// came, went, or moved between keys), each once.
    pub fn follow(&self, event: &watcher::Event<K>) -> Vec<String> {
        let Ok(mut index) = self.inner.write() else {
            return Vec::new();
        };
        let mut changed = BTreeSet::new();
        let mut note = |before: Option<&Vec<String>>, after: &[String]| {
            let before = before.map(Vec::as_slice).unwrap_or_default();
            if before != after {
                changed.extend(before.iter().chain(after).cloned());
            }
        };
        match event {
            watcher::Event::Apply(obj) => {
                let (id, keys) = (id_of(obj), (self.keys)(obj));
                note(index.keys_of.get(&id), &keys);
                index.set(id, keys);
            }
            watcher::Event::Delete(obj) => {
                let id = id_of(obj);
                note(index.keys_of.get(&id), &[]);
                index.remove(&id);
            }
            watcher::Event::Init => index.relist = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                let keys = (self.keys)(obj);
                index
                    .relist
                    .get_or_insert_default()
                    .insert(id_of(obj), keys);
            }
            // The relist replaces what was known (missed deletes included).
            watcher::Event::InitDone => {
                let relisted = index.relist.take().unwrap_or_default();
                for (id, keys) in &index.keys_of {
                    note(
                        Some(keys),
                        relisted.get(id).map(Vec::as_slice).unwrap_or_default(),
                    );
                }
                for (id, keys) in &relisted {
                    if !index.keys_of.contains_key(id) {
                        note(None, keys);
                    }
                }
                index.keys_of.clear();
                index.under.clear();
                for (id, keys) in relisted {
                    index.set(id, keys);
                }
                index.listed = true;
            }
        }
        changed.into_iter().collect()
    }

    /// The objects under `key`.
    pub fn under(&self, key: &str) -> Vec<ObjectRef<K>> {
        let Ok(index) = self.inner.read() else {
            return Vec::new();
        };
        index
            .under
            .get(key)
            .into_iter()
            .flatten()
            .map(|(ns, name)| {
                let r = ObjectRef::new(name);
                if ns.is_empty() { r } else { r.within(ns) }
            })
            .collect()
    }

    /// How many objects are under `key`.
    pub fn count(&self, key: &str) -> usize {
        self.inner
            .read()
            .map(|i| i.under.get(key).map_or(0, BTreeSet::len))
            .unwrap_or_default()
    }

    /// Whether the watch has listed once (before that, the index is incomplete).
    pub fn listed(&self) -> bool {
        self.inner.read().is_ok_and(|i| i.listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher::Event;

    fn cm(ns: &str, name: &str, keys: &[&str]) -> ConfigMap {
        let data: std::collections::BTreeMap<String, String> = keys
            .iter()
            .map(|k| (k.to_string(), String::new()))
            .collect();
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }

    fn keys(c: &ConfigMap) -> Vec<String> {
        c.data.iter().flat_map(|d| d.keys().cloned()).collect()
    }

    fn names(index: &Keyed<ConfigMap>, key: &str) -> Vec<String> {
        index.under(key).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn objects_are_found_under_their_keys_and_leave_those_they_no_longer_have() {
        let index = Keyed::new(keys);
        assert!(!index.listed());
        index.follow(&Event::Init);
        index.follow(&Event::InitApply(cm("a", "x", &["k1", "k2"])));
        // Until the list is done, nothing is known.
        assert!(names(&index, "k1").is_empty());
        index.follow(&Event::InitDone);
        assert!(index.listed());
        assert_eq!(names(&index, "k1"), ["x"]);
        assert_eq!(index.under("k2")[0].namespace.as_deref(), Some("a"));
        assert_eq!(index.follow(&Event::Apply(cm("b", "y", &["k1"]))), ["k1"]);
        assert_eq!(index.count("k1"), 2);
        // The same keys again (another field changed): no key changed.
        assert!(
            index
                .follow(&Event::Apply(cm("b", "y", &["k1"])))
                .is_empty()
        );
        // x moved from k1, k2 to k3.
        assert_eq!(
            index.follow(&Event::Apply(cm("a", "x", &["k3"]))),
            ["k1", "k2", "k3"]
        );
        assert_eq!(names(&index, "k1"), ["y"]);
        assert!(names(&index, "k2").is_empty());
        assert_eq!(names(&index, "k3"), ["x"]);
        assert_eq!(index.follow(&Event::Delete(cm("b", "y", &["k1"]))), ["k1"]);
        assert_eq!(index.count("k1"), 0);
    }

    #[test]
    fn a_relist_replaces_what_was_known() {
        let index = Keyed::new(keys);
        index.follow(&Event::Apply(cm("a", "x", &["k1"])));
        index.follow(&Event::Apply(cm("a", "gone", &["k1"])));
        index.follow(&Event::Init);
        index.follow(&Event::InitApply(cm("a", "x", &["k2"])));
        index.follow(&Event::InitApply(cm("a", "new", &["k3"])));
        // The old index answers until the relist is done.
        assert_eq!(index.count("k1"), 2);
        assert_eq!(index.follow(&Event::InitDone), ["k1", "k2", "k3"]);
        assert_eq!(index.count("k1"), 0);
        assert_eq!(names(&index, "k2"), ["x"]);
    }
}
