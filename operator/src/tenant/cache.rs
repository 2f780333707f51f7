//! The tenant's managed objects as the controller's watches last saw them.
//!
//! A reconcile compares what it wants with these instead of listing every kind in every
//! namespace (that was ~20 reads per reconcile). A cache can be a moment behind; that is safe
//! here because every write is a server-side apply of the whole desired object (applying what
//! already exists changes nothing), a delete of something already gone is fine, and the watch
//! event of any change re-triggers the reconcile. What must be exact is read fresh instead:
//! ResourceQuotas (the budget split), the namespaces named like the tenant's environments
//! (never take over someone else's) and the namespaces to release.
use std::collections::BTreeMap;

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{LimitRange, Namespace};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::apply::CLAIM_LABEL;
use crate::api::SharedServiceClaim;
use crate::api::labels::TENANT;

#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<Namespace>,
    pub role_bindings: Store<RoleBinding>,
    pub limit_ranges: Store<LimitRange>,
    pub network_policies: Store<NetworkPolicy>,
    pub cluster_roles: Store<ClusterRole>,
    pub cluster_role_bindings: Store<ClusterRoleBinding>,
    pub claims: Store<SharedServiceClaim>,
}

impl Caches {
    /// Whether every watch has listed once: before that, a missing object in a cache would
    /// look like one to create (and a restart would write what already exists). Never
    /// waits: the controller polls these watches only between reconciles, so a reconcile
    /// waiting for them would wait forever once every worker waits.
    pub fn ready(&self) -> bool {
        fn listed<K: Resource + Clone>(store: &Store<K>) -> bool
        where
            K::DynamicType: std::hash::Hash + Eq + Clone,
        {
            store
                .wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok())
        }
        listed(&self.namespaces)
            && listed(&self.role_bindings)
            && listed(&self.limit_ranges)
            && listed(&self.network_policies)
            && listed(&self.cluster_roles)
            && listed(&self.cluster_role_bindings)
            && listed(&self.claims)
    }
}

/// The tenant's objects of one kind in `namespace` (not those made for claims), by name.
pub fn in_namespace<K>(store: &Store<K>, namespace: &str, tenant: &str) -> BTreeMap<String, K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone,
{
    store
        .state()
        .iter()
        .filter(|o| {
            let labels = o.labels();
            o.namespace().as_deref() == Some(namespace)
                && labels.get(TENANT).map(String::as_str) == Some(tenant)
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
