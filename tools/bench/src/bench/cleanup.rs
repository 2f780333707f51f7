//! On a control plane the bench attached to (CITYCLOUD_CLUSTER), it removes what it made:
//! its Tenants (through the operator, whose finalizer keeps their namespaces: Retain), then
//! every namespace and cluster object labelled for one of the run's tenants, then its
//! QuotaProfiles. Namespaces finish terminating in the background.
use std::fmt::Debug;
use std::time::Duration;

use citycloud::api::labels::TENANT;
use citycloud::api::{QuotaProfile, Tenant};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::objects::{MANAGED, Names};
use super::wait_for;

/// Deletes the run's Tenants and waits until they are gone (an operator must be running).
pub async fn tenants(admin: &kube::Client, names: &Names) -> anyhow::Result<()> {
    let api = Api::<Tenant>::all(admin.clone());
    let selector = ListParams::default().labels(&names.selector());
    api.delete_collection(&DeleteParams::default(), &selector)
        .await?;
    wait_for(
        "the bench's Tenants to be deleted",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async { Ok(api.list(&selector).await?.items.is_empty().then_some(())) },
    )
    .await
}

/// Deletes what is left once the Tenants are gone (no operator running any more).
pub async fn leftovers(admin: &kube::Client, names: &Names) -> anyhow::Result<usize> {
    let mut n = delete_labelled::<Namespace>(admin, names).await?;
    n += delete_labelled::<ClusterRole>(admin, names).await?;
    n += delete_labelled::<ClusterRoleBinding>(admin, names).await?;
    let profiles = Api::<QuotaProfile>::all(admin.clone());
    for p in [names.profile(), names.flow_profile()] {
        if profiles.get_opt(&p).await?.is_some() {
            profiles.delete(&p, &DeleteParams::default()).await?;
            n += 1;
        }
    }
    Ok(n)
}

async fn delete_labelled<K>(admin: &kube::Client, names: &Names) -> anyhow::Result<usize>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api = Api::<K>::all(admin.clone());
    let mut n = 0;
    for obj in api.list(&ListParams::default().labels(MANAGED)).await? {
        let tenant = obj.labels().get(TENANT).cloned().unwrap_or_default();
        if tenant.starts_with(&format!("{}-", names.run)) {
            api.delete(&obj.name_any(), &DeleteParams::default())
                .await?;
            n += 1;
        }
    }
    Ok(n)
}
