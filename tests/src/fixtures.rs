//! Small helpers tests use to act as a platform engineer would: apply YAML, wait for status.
use std::time::Duration;

use citycloud::api::Tenant;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::eventually;

/// How long a test waits for the operator to converge before it fails.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// Server-side applies a cluster-scoped object written as YAML, as `kubectl apply --server-side`.
pub async fn apply<K>(client: &kube::Client, yaml: &str) -> Result<K, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::Scope: ClusterScoped,
{
    let obj: K = serde_yaml_ng::from_str(yaml).expect("test YAML");
    let name = obj.meta().name.clone().expect("name");
    Api::<K>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("platform-engineer").force(),
            &Patch::Apply(&obj),
        )
        .await
}

/// The same for a namespaced object.
pub async fn apply_in<K>(client: &kube::Client, ns: &str, yaml: &str) -> Result<K, kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let obj: K = serde_yaml_ng::from_str(yaml).expect("test YAML");
    let name = obj.meta().name.clone().expect("name");
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply("platform-engineer").force(),
            &Patch::Apply(&obj),
        )
        .await
}

/// Marker for cluster-scoped kinds.
pub trait ClusterScoped {}
impl ClusterScoped for k8s_openapi::ClusterResourceScope {}

/// Waits until the Tenant's condition `type_` has `status` (and `reason`, when given) for the
/// current generation.
pub async fn wait_condition(
    client: &kube::Client,
    tenant: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> Tenant {
    let api = Api::<Tenant>::all(client.clone());
    eventually(
        &format!("tenant {tenant} {type_}={status} {reason:?}"),
        CONVERGE,
        || async {
            let t = api.get(tenant).await.ok()?;
            let st = t.status.as_ref()?;
            (st.observed_generation == t.metadata.generation).then_some(())?;
            let c = st.conditions.iter().find(|c| c.type_ == type_)?;
            (c.status == status && reason.is_none_or(|r| c.reason == r)).then_some(())?;
            Some(t)
        },
    )
    .await
}

pub async fn wait_ready(client: &kube::Client, tenant: &str) -> Tenant {
    wait_condition(client, tenant, "Ready", "True", None).await
}

/// The Tenant's condition of `type_`; panics naming the conditions it has when there is none.
pub fn condition(tenant: &Tenant, type_: &str) -> Condition {
    let conditions = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "Tenant {} has no condition {type_}: {conditions:?}",
                tenant.name_any()
            )
        })
}

/// Waits until the namespace `name` is deleted: gone, or terminating (its content going).
pub async fn wait_namespace_deleted(client: &kube::Client, name: &str) {
    let namespaces = Api::<Namespace>::all(client.clone());
    eventually(&format!("namespace {name} deleted"), CONVERGE, || async {
        match namespaces.get_opt(name).await {
            Ok(None) => Some(()),
            Ok(Some(ns)) => ns.metadata.deletion_timestamp.map(|_| ()),
            Err(_) => None,
        }
    })
    .await;
}

/// Waits until the Tenant `name` no longer exists (its finalizer done).
pub async fn wait_tenant_gone(client: &kube::Client, name: &str) {
    let tenants = Api::<Tenant>::all(client.clone());
    eventually(&format!("Tenant {name} gone"), CONVERGE, || async {
        matches!(tenants.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

/// The HTTP status of a failed call, for asserting refusals.
pub fn code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Applies a Tenant as untyped YAML, exactly as written (as kubectl sends it), so that invalid
/// values reach the API server's validation.
pub async fn apply_raw_tenant(
    client: &kube::Client,
    yaml: &str,
) -> Result<kube::api::DynamicObject, kube::Error> {
    let obj: kube::api::DynamicObject = serde_yaml_ng::from_str(yaml).expect("test YAML");
    let name = obj.metadata.name.clone().expect("name");
    let resource = kube::api::ApiResource::erase::<Tenant>(&());
    Api::<kube::api::DynamicObject>::all_with(client.clone(), &resource)
        .patch(
            &name,
            &PatchParams::apply("platform-engineer").force(),
            &Patch::Apply(&obj),
        )
        .await
}

/// The pod template of test workloads: restricted Pod Security (what tenant namespaces
/// enforce), an image no node will pull (nothing runs; quota counts pods at admission), and
/// `cpu` requested and limited.
fn pod_spec(cpu: &str) -> serde_json::Value {
    serde_json::json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "registry.invalid/app:1",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}}]
    })
}

/// A bare pod `name` labelled `labels`, requesting `cpu`.
pub fn pod(name: &str, labels: serde_json::Value, cpu: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "spec": pod_spec(cpu),
    }))
    .expect("a valid Pod")
}

/// A Deployment `name` of `replicas` pods labelled `app: <name>`, each requesting `cpu`.
pub fn deployment(name: &str, replicas: i32, cpu: &str) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(cpu)}
        }
    }))
    .expect("a valid Deployment")
}
