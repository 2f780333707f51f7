//! Reads what a claim points to: its namespace (and through its label, the tenant), the
//! SharedService it names, the provider's namespace and Service, and the live binding Secret.
//!
//! Secrets are only ever read by name, in the claim's namespace, once that is known to be a
//! tenant's: the operator holds no Secrets access cluster-wide.
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::api::labels::{ORPHANED, TENANT};
use crate::api::{SharedService, SharedServiceClaim, Tenant};
use crate::reconciler::object_name;
use crate::{Result, StepExt};

/// What a claim's reconcile works from.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The claim's namespace.
    pub namespace: Option<Namespace>,
    /// The tenant the namespace's `citycloud.io/tenant` label names.
    pub tenant: Option<Tenant>,
    /// The SharedService `spec.service` names.
    pub service: Option<SharedService>,
    /// Whether the namespace of the service's endpoint exists.
    pub provider_namespace: bool,
    /// The Service of the service's endpoint.
    pub provider: Option<Service>,
    /// The Secret named `spec.secretName` (or the claim's name) in the claim's namespace.
    pub secret: Option<Secret>,
}

/// The tenant a namespace belongs to: its `citycloud.io/tenant` label, unless it was kept
/// after its tenant or environment went away (`citycloud.io/orphaned=true`).
pub fn tenant_of(namespace: &Namespace) -> Option<&str> {
    let labels = namespace.metadata.labels.as_ref()?;
    if labels.get(ORPHANED).is_some_and(|v| v == "true") {
        return None;
    }
    labels.get(TENANT).map(String::as_str)
}

/// The claim as stored now. The cache may not show yet the status the previous reconcile
/// wrote, and with it the digest of the token just issued, which would then be taken for a
/// stranger's and replaced. `None` when it is gone.
pub async fn fresh(
    client: &Client,
    claim: &SharedServiceClaim,
) -> Result<Option<SharedServiceClaim>> {
    let ns = claim.namespace().unwrap_or_default();
    Api::<SharedServiceClaim>::namespaced(client.clone(), &ns)
        .get_opt(&claim.name_any())
        .await
        .at("reading", object_name(claim))
}

pub async fn dereference(client: &Client, claim: &SharedServiceClaim) -> Result<Found> {
    let ns = claim.namespace().unwrap_or_default();
    let mut found = Found {
        namespace: Api::<Namespace>::all(client.clone())
            .get_opt(&ns)
            .await
            .at("reading", format!("Namespace {ns}"))?,
        ..Found::default()
    };
    let Some(tenant) = found.namespace.as_ref().and_then(tenant_of) else {
        return Ok(found);
    };
    found.tenant = Api::<Tenant>::all(client.clone())
        .get_opt(tenant)
        .await
        .at("reading", format!("Tenant {tenant}"))?;
    let service = claim.service_name();
    found.service = Api::<SharedService>::all(client.clone())
        .get_opt(service)
        .await
        .at("reading", format!("SharedService {service}"))?;
    if let Some(service) = &found.service {
        let endpoint = &service.spec.endpoint;
        found.provider_namespace = Api::<Namespace>::all(client.clone())
            .get_opt(&endpoint.namespace)
            .await
            .at("reading", format!("Namespace {}", endpoint.namespace))?
            .is_some();
        if found.provider_namespace {
            found.provider = Api::<Service>::namespaced(client.clone(), &endpoint.namespace)
                .get_opt(&endpoint.service)
                .await
                .at(
                    "reading",
                    format!("Service {}/{}", endpoint.namespace, endpoint.service),
                )?;
        }
    }
    let secret = claim.secret_name();
    found.secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get_opt(&secret)
        .await
        .at("reading", format!("Secret {ns}/{secret}"))?;
    Ok(found)
}
