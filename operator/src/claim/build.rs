//! Everything a permitted claim becomes, computed without touching the API server: the
//! binding Secret in the Service Binding layout, the NetworkPolicy in the provider namespace
//! admitting the claim's namespace, and (for tenants with `egress: Restricted`) the egress
//! NetworkPolicy in the claim's namespace.
use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::labels::CLAIM as CLAIM_LABEL;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE, TENANT};
use crate::api::{Egress, SharedService, SharedServiceClaim, Tenant};

/// Prefix of the NetworkPolicies made for a claim, on both sides.
pub const POLICY_PREFIX: &str = "citycloud-claim-";
/// The binding Secret's type is `servicebinding.io/<bindingType>`.
pub const SECRET_TYPE_PREFIX: &str = "servicebinding.io/";
/// The binding Secret's key holding the PerClaim token.
pub const TOKEN_KEY: &str = "token";
/// The label every namespace carries with its own name (set by the API server).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Longest label value.
const LABEL_VALUE_MAX: usize = 63;
/// Longest Secret data key.
const SECRET_KEY_MAX: usize = 253;

/// What validation found the claim may have.
#[derive(Clone, Copy, Debug)]
pub struct Permit<'a> {
    pub tenant: &'a Tenant,
    pub service: &'a SharedService,
    pub environment: &'a str,
}

/// The desired objects of a bound claim.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimResources {
    /// The binding Secret, in the claim's namespace.
    pub secret: Secret,
    /// Admits the claim's namespace to the service, in the provider namespace.
    pub provider_policy: NetworkPolicy,
    /// Lets the claim's namespace reach the service, when its tenant restricts egress.
    pub egress_policy: Option<NetworkPolicy>,
}

impl ClaimResources {
    /// Both NetworkPolicies (the egress one only when the tenant restricts egress).
    pub fn policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        std::iter::once(&self.provider_policy).chain(&self.egress_policy)
    }
}

/// Identifies a claim where at most 63 characters fit (the value of [`CLAIM_LABEL`], the
/// NetworkPolicy names): `<namespace>.<name>`, or when that is too long, a prefix of it and
/// 128 bits of the SHA-256 of the whole. A namespace holds no '.', so the form is
/// unambiguous; SHA-256 makes a second claim with the same id (say, in another tenant's
/// namespace sharing the prefix) infeasible to construct.
pub fn claim_id(namespace: &str, name: &str) -> String {
    shortened(&format!("{namespace}.{name}"), LABEL_VALUE_MAX)
}

/// The id [`claim_id`] gave before it used SHA-256 (a 64-bit FNV-1a hash, whose collisions
/// are easy to construct), where it differs: so that objects labelled with it before an
/// upgrade are still found, and removed. Remove once every installation has upgraded.
pub fn legacy_claim_id(namespace: &str, name: &str) -> Option<String> {
    let full = format!("{namespace}.{name}");
    if full.len() <= LABEL_VALUE_MAX {
        return None;
    }
    let prefix =
        full[..LABEL_VALUE_MAX - 17].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let fnv = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Some(format!("{prefix}-{fnv:016x}"))
}

/// The claim's key in its tenant's provider-side Secret `<service>-consumers-<tenant>`:
/// `<namespace>.<name>` (at most 127 characters, since a claim's name has at most 63;
/// shortened like [`claim_id`] past the 253 characters a Secret key may have).
pub fn consumer_key(namespace: &str, name: &str) -> String {
    shortened(&format!("{namespace}.{name}"), SECRET_KEY_MAX)
}

/// Hex digits of the hash in a shortened id: 128 bits.
const HASH_HEX: usize = 32;

/// `full` when it fits in `max`, else `<prefix>-<the first 32 hex digits of its SHA-256>`.
/// The names are ASCII (DNS names), so slicing by bytes is safe.
fn shortened(full: &str, max: usize) -> String {
    if full.len() <= max {
        return full.to_string();
    }
    let prefix = full[..max - HASH_HEX - 1].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let digest = crate::digest::sha256_hex(full.as_bytes());
    format!("{prefix}-{}", &digest[..HASH_HEX])
}

/// Labels of everything made for a claim: managed, the claim's tenant, the claim.
pub fn claim_labels(tenant: &str, claim: &SharedServiceClaim) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.into(), MANAGED_BY_VALUE.into()),
        (TENANT.into(), tenant.into()),
        (
            CLAIM_LABEL.into(),
            claim_id(&claim.namespace().unwrap_or_default(), &claim.name_any()),
        ),
    ])
}

/// The name of both NetworkPolicies of a claim.
pub fn policy_name(claim: &SharedServiceClaim) -> String {
    format!(
        "{POLICY_PREFIX}{}",
        claim_id(&claim.namespace().unwrap_or_default(), &claim.name_any())
    )
}

/// The entries of the binding Secret (Service Binding layout): type, provider, host, port,
/// uri, every bindingData entry, and the token when there is one. bindingData never
/// overrides what the operator fills.
pub fn binding_data(service: &SharedService, token: Option<&str>) -> BTreeMap<String, String> {
    let spec = &service.spec;
    let mut data: BTreeMap<String, String> = spec
        .binding_data
        .iter()
        .filter(|(k, _)| !crate::api::shared_service::RESERVED_BINDING_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    data.insert("type".into(), spec.binding_type.clone());
    data.insert("provider".into(), service.name_any());
    data.insert("host".into(), spec.endpoint.host());
    data.insert("port".into(), spec.endpoint.port.to_string());
    data.insert("uri".into(), spec.endpoint.uri());
    if let Some(token) = token {
        data.insert(TOKEN_KEY.into(), token.into());
    }
    data
}

/// The port pods of the service listen on, as a NetworkPolicy sees it (after the Service's
/// translation): the `targetPort` of the Service's port `endpoint.port` when the Service
/// exists and has it (a number or a named container port), else `endpoint.port`; and its
/// protocol (TCP unless the Service says otherwise).
pub fn pod_port(service: &SharedService, provider: Option<&Service>) -> NetworkPolicyPort {
    let port = service.spec.endpoint.port;
    let found = provider
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == port));
    NetworkPolicyPort {
        port: Some(
            found
                .and_then(|p| p.target_port.clone())
                .unwrap_or(IntOrString::Int(port)),
        ),
        protocol: Some(
            found
                .and_then(|p| p.protocol.clone())
                .unwrap_or_else(|| "TCP".into()),
        ),
        end_port: None,
    }
}

/// The pods behind the service: the Service's selector, or every pod of the provider
/// namespace when the Service does not exist (yet) or selects nothing by label.
pub fn service_pods(provider: Option<&Service>) -> LabelSelector {
    LabelSelector {
        match_labels: provider
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.selector.clone())
            .filter(|s| !s.is_empty()),
        match_expressions: None,
    }
}

fn namespace_named(ns: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(NAMESPACE_NAME_LABEL.into(), ns.into())])),
        match_expressions: None,
    }
}

pub fn build(
    claim: &SharedServiceClaim,
    permit: &Permit,
    provider: Option<&Service>,
    token: Option<&str>,
) -> ClaimResources {
    let claim_ns = claim.namespace().unwrap_or_default();
    let tenant = permit.tenant.name_any();
    let labels = claim_labels(&tenant, claim);
    let endpoint = &permit.service.spec.endpoint;
    let meta = |ns: &str, name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(ns.into()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    let port = pod_port(permit.service, provider);
    let pods = service_pods(provider);

    let secret = Secret {
        metadata: meta(&claim_ns, claim.secret_name()),
        type_: Some(format!(
            "{SECRET_TYPE_PREFIX}{}",
            permit.service.spec.binding_type
        )),
        data: Some(
            binding_data(permit.service, token)
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    let provider_policy = NetworkPolicy {
        metadata: meta(&endpoint.namespace, policy_name(claim)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(namespace_named(&claim_ns)),
                    ..Default::default()
                }]),
                ports: Some(vec![port.clone()]),
            }]),
            ..Default::default()
        }),
    };
    let egress_policy =
        (permit.tenant.spec.network.egress == Egress::Restricted).then(|| NetworkPolicy {
            metadata: meta(&claim_ns, policy_name(claim)),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(namespace_named(&endpoint.namespace)),
                        pod_selector: Some(pods),
                        ..Default::default()
                    }]),
                    ports: Some(vec![port]),
                }]),
                ..Default::default()
            }),
        });
    ClaimResources {
        secret,
        provider_policy,
        egress_policy,
    }
}

#[cfg(test)]
mod tests;
