//! Everything a Tenant becomes, computed without touching the API server: one
//! [`NamespaceResources`] per environment plus the cluster-wide read access to the Tenant.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::api::annotations;
use crate::api::labels::{
    EGRESS, ENVIRONMENT, INGRESS, MANAGED_BY, MANAGED_BY_VALUE, ORPHANED, PLATFORM_INGRESS,
    POD_SECURITY_AUDIT, POD_SECURITY_ENFORCE, POD_SECURITY_WARN, TENANT, TENANT_UID,
};
use crate::api::{Egress, Environment, Ingress, QuotaProfile, Subject, Tenant};
use crate::context::OperatorIdentity;

pub const OWNERS_BINDING: &str = "citycloud-owners";
pub const MEMBERS_BINDING: &str = "citycloud-members";
pub const VIEWERS_BINDING: &str = "citycloud-viewers";
pub const PARENT_VIEWERS_BINDING: &str = "citycloud-parent-viewers";
pub const OPERATOR_BINDING: &str = "citycloud-operator";
pub const QUOTA: &str = "citycloud-quota";
pub const LIMITS: &str = "citycloud-limits";
pub const INGRESS_POLICY: &str = "citycloud-ingress";
pub const EGRESS_POLICY: &str = "citycloud-egress";
/// Annotations the PodNodeSelector / PodTolerationRestriction admission plugins read.
pub const NODE_SELECTOR_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/node-selector";
pub const TOLERATIONS_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/defaultTolerations";
/// The only tolerations a pod in the namespace may carry (see `placement::whitelist`).
pub const TOLERATIONS_WHITELIST_ANNOTATION: &str =
    "scheduler.alpha.kubernetes.io/tolerationsWhitelist";

/// What the tenant's spec points to, read from the API server by `dereference`.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Every QuotaProfile the tenant's environments use that exists, by name.
    pub profiles: BTreeMap<String, QuotaProfile>,
    /// Owners of the tenant's ancestors (parent, its parent, ...): they get read access.
    pub ancestor_owners: Vec<Subject>,
    /// The tenant budget's split: the budgeted resources' hard of each namespace, by name.
    pub allocations: BTreeMap<String, BTreeMap<String, Quantity>>,
    /// The operator's own ServiceAccount, bound to its secrets role in each namespace.
    pub operator: Option<OperatorIdentity>,
}

/// The desired objects of one environment's namespace.
#[derive(Clone, Debug)]
pub struct NamespaceResources {
    pub environment: String,
    pub namespace: Namespace,
    pub role_bindings: Vec<RoleBinding>,
    pub quota: ResourceQuota,
    pub limit_range: Option<LimitRange>,
    pub network_policies: Vec<NetworkPolicy>,
}

/// Everything a Tenant becomes.
#[derive(Clone, Debug)]
pub struct TenantResources {
    pub namespaces: Vec<NamespaceResources>,
    pub reader_role: ClusterRole,
    pub reader_binding: ClusterRoleBinding,
    /// `approve` on this Tenant, for its owners: they decide their children's TenantRequests.
    pub approver_role: ClusterRole,
    pub approver_binding: ClusterRoleBinding,
}

/// The quota profile an environment uses, and whether it exists.
pub fn profile_for<'a>(
    tenant: &'a Tenant,
    env: &'a Environment,
    inputs: &'a Inputs,
) -> (&'a str, Option<&'a QuotaProfile>) {
    let name = tenant.quota_profile_for(env);
    (name, inputs.profiles.get(name))
}

pub fn build(tenant: &Tenant, inputs: &Inputs) -> TenantResources {
    let name = tenant.meta().name.clone().unwrap_or_default();
    TenantResources {
        namespaces: tenant
            .environments()
            .iter()
            .map(|env| namespace_resources(tenant, &name, env, inputs))
            .collect(),
        reader_role: reader_role(tenant, &name),
        reader_binding: reader_binding(tenant, &name),
        approver_role: approver_role(tenant, &name),
        approver_binding: approver_binding(tenant, &name),
    }
}

/// Each environment namespace's ResourceQuota `hard` before the budget split: the profile's
/// per-namespace caps (what [`build`] gives a namespace with no allocation).
pub fn caps(tenant: &Tenant, inputs: &Inputs) -> BTreeMap<String, BTreeMap<String, Quantity>> {
    let name = tenant.meta().name.clone().unwrap_or_default();
    tenant
        .environments()
        .iter()
        .map(|env| {
            let ns = tenant.namespace_for(&env.name);
            let profile = profile_for(tenant, env, inputs).1;
            let hard = quota(tenant, &name, &ns, profile, None)
                .spec
                .and_then(|s| s.hard)
                .unwrap_or_default();
            (ns, hard)
        })
        .collect()
}

fn namespace_resources(
    tenant: &Tenant,
    name: &str,
    env: &Environment,
    inputs: &Inputs,
) -> NamespaceResources {
    let ns = tenant.namespace_for(&env.name);
    let spec = &tenant.spec;
    let mut role_bindings = vec![role_binding(
        name,
        &ns,
        OWNERS_BINDING,
        "admin",
        &spec.owners,
    )];
    for (binding, role, subjects) in [
        (MEMBERS_BINDING, "edit", &spec.members),
        (VIEWERS_BINDING, "view", &spec.viewers),
        (PARENT_VIEWERS_BINDING, "view", &inputs.ancestor_owners),
    ] {
        if !subjects.is_empty() {
            role_bindings.push(role_binding(name, &ns, binding, role, subjects));
        }
    }
    if let Some(op) = &inputs.operator {
        let sa = Subject::service_account(&op.namespace, &op.service_account);
        role_bindings.push(role_binding(
            name,
            &ns,
            OPERATOR_BINDING,
            &op.secrets_cluster_role,
            &[sa],
        ));
    }
    let profile = profile_for(tenant, env, inputs).1;
    NamespaceResources {
        environment: env.name.clone(),
        namespace: namespace(tenant, env),
        role_bindings,
        quota: quota(tenant, name, &ns, profile, inputs.allocations.get(&ns)),
        limit_range: profile.and_then(|p| limit_range(name, &ns, p)),
        network_policies: network_policies(tenant, name, &ns),
    }
}

/// Labels every object made for `tenant` carries; watches map objects back to it through them.
pub fn tenant_labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TENANT.into(), tenant.into()),
        (MANAGED_BY.into(), MANAGED_BY_VALUE.into()),
    ])
}

fn meta(tenant: &str, ns: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        labels: Some(tenant_labels(tenant)),
        ..Default::default()
    }
}

/// The namespace of one environment.
pub fn namespace(tenant: &Tenant, env: &Environment) -> Namespace {
    let name = tenant.meta().name.as_deref().unwrap_or_default();
    let ns = tenant.namespace_for(&env.name);
    let pss = tenant.spec.pod_security.as_str();
    let mut labels = tenant_labels(name);
    labels.insert(ENVIRONMENT.into(), env.name.clone());
    labels.insert(INGRESS.into(), tenant.spec.network.ingress.as_str().into());
    labels.insert(EGRESS.into(), tenant.spec.network.egress.as_str().into());
    for key in [POD_SECURITY_ENFORCE, POD_SECURITY_AUDIT, POD_SECURITY_WARN] {
        labels.insert(key.into(), pss.into());
    }
    let mut annotations = BTreeMap::from([
        (
            annotations::DISPLAY_NAME.to_string(),
            tenant.spec.display_name.clone(),
        ),
        // On every namespace, not only those with dedicated nodes: it is what keeps the
        // others off them (an absent or empty whitelist allows any toleration).
        (
            TOLERATIONS_WHITELIST_ANNOTATION.to_string(),
            super::placement::whitelist_annotation(tenant.spec.node_placement.as_ref()),
        ),
    ]);
    if let Some(uid) = &tenant.meta().uid {
        annotations.insert(TENANT_UID.into(), uid.clone());
    }
    if let Some(placement) = &tenant.spec.node_placement {
        if !placement.node_selector.is_empty() {
            let selector = placement
                .node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            annotations.insert(NODE_SELECTOR_ANNOTATION.into(), selector);
        }
        if !placement.tolerations.is_empty() {
            annotations.insert(
                TOLERATIONS_ANNOTATION.into(),
                serde_json::to_string(&placement.tolerations).unwrap_or_else(|_| "[]".into()),
            );
        }
    }
    Namespace {
        metadata: ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..meta(name, None, &ns)
        },
        ..Default::default()
    }
}

/// The same namespace, marked as kept after its tenant or environment went away.
pub fn orphaned(mut ns: Namespace) -> Namespace {
    ns.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(ORPHANED.into(), "true".into());
    ns
}

fn role_binding(
    tenant: &str,
    ns: &str,
    name: &str,
    role: &str,
    subjects: &[Subject],
) -> RoleBinding {
    RoleBinding {
        metadata: meta(tenant, Some(ns), name),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(subjects.iter().map(Subject::to_rbac_subject).collect()),
    }
}

/// The namespace's ResourceQuota: the profile's caps, with the tenant budget's share for
/// budgeted resources (see `quota::budget`). A missing profile fails closed (`pods: 0`) rather than
/// leaving the namespace unbounded; so does suspension.
fn quota(
    tenant: &Tenant,
    name: &str,
    ns: &str,
    profile: Option<&QuotaProfile>,
    allocation: Option<&BTreeMap<String, Quantity>>,
) -> ResourceQuota {
    let mut hard = match profile {
        Some(p) => p.namespace_hard(tenant.spec.quota_overrides.as_ref()),
        None => BTreeMap::new(),
    };
    if profile.is_some() {
        hard.extend(
            allocation
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    if profile.is_none() || tenant.is_suspended() {
        hard.insert("pods".into(), Quantity("0".into()));
    }
    ResourceQuota {
        metadata: meta(name, Some(ns), QUOTA),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Bindings revoked when a namespace is retained: write access goes, read access stays.
pub const REVOKED_ON_RETAIN: [&str; 2] = [OWNERS_BINDING, MEMBERS_BINDING];

/// Counted objects a retained namespace may hold no more of (besides every resource its quota
/// already limited): it keeps what it has and grows no further.
const FROZEN_COUNTS: [&str; 5] = [
    "pods",
    "persistentvolumeclaims",
    "services",
    "count/sharedserviceclaims.citycloud.io",
    "count/deployments.apps",
];

/// The ResourceQuota of a retained namespace: every resource its quota limited, and the counted
/// objects above, at 0. Quota never removes what exists, so workloads and volumes stay; nothing
/// new is admitted (no pod, no restart into a new pod, no claim, no volume, no resize upwards).
/// A Tenant adopting the namespace back applies its own quota over this one.
pub fn frozen_quota(tenant: &str, ns: &str, limited: &[String]) -> ResourceQuota {
    let hard = limited
        .iter()
        .map(String::as_str)
        .chain(FROZEN_COUNTS)
        .map(|r| (r.to_string(), Quantity("0".into())))
        .collect();
    ResourceQuota {
        metadata: meta(tenant, Some(ns), QUOTA),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn limit_range(name: &str, ns: &str, profile: &QuotaProfile) -> Option<LimitRange> {
    let limits = profile.spec.limits.as_ref().filter(|l| !l.is_empty())?;
    let opt = |m: &BTreeMap<String, Quantity>| (!m.is_empty()).then(|| m.clone());
    Some(LimitRange {
        metadata: meta(name, Some(ns), LIMITS),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: opt(&limits.default),
                default_request: opt(&limits.default_request),
                max: opt(&limits.max),
                min: opt(&limits.min),
                ..Default::default()
            }],
        }),
    })
}

fn select_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn namespaces_of(pairs: &[(&str, &str)]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(select_labels(pairs)),
        ..Default::default()
    }
}

fn network_policies(tenant: &Tenant, name: &str, ns: &str) -> Vec<NetworkPolicy> {
    let mut out = Vec::new();
    if tenant.spec.network.ingress == Ingress::Strict {
        out.push(NetworkPolicy {
            metadata: meta(name, Some(ns), INGRESS_POLICY),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![
                        namespaces_of(&[(TENANT, name)]),
                        namespaces_of(&[(PLATFORM_INGRESS, "true")]),
                    ]),
                    ports: None,
                }]),
                ..Default::default()
            }),
        });
    }
    if tenant.spec.network.egress == Egress::Restricted {
        let dns_port = |protocol: &str| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(protocol.into()),
            ..Default::default()
        };
        out.push(NetworkPolicy {
            metadata: meta(name, Some(ns), EGRESS_POLICY),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![
                    NetworkPolicyEgressRule {
                        to: Some(vec![namespaces_of(&[(
                            "kubernetes.io/metadata.name",
                            "kube-system",
                        )])]),
                        ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
                    },
                    NetworkPolicyEgressRule {
                        to: Some(vec![namespaces_of(&[(TENANT, name)])]),
                        ports: None,
                    },
                ]),
                ..Default::default()
            }),
        });
    }
    out
}

/// Name of the ClusterRole (and its binding) that lets a tenant's people read their Tenant.
pub fn reader_name(tenant: &str) -> String {
    format!("citycloud:tenant:{tenant}")
}

fn owner_reference(
    tenant: &Tenant,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    tenant.controller_owner_ref(&()).into_iter().collect()
}

fn reader_role(tenant: &Tenant, name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            owner_references: Some(owner_reference(tenant)),
            ..meta(name, None, &reader_name(name))
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["citycloud.io".into()]),
            resources: Some(vec!["tenants".into()]),
            resource_names: Some(vec![name.into()]),
            verbs: vec!["get".into(), "watch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn reader_binding(tenant: &Tenant, name: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            owner_references: Some(owner_reference(tenant)),
            ..meta(name, None, &reader_name(name))
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: reader_name(name),
        },
        subjects: Some(tenant.subjects().map(Subject::to_rbac_subject).collect()),
    }
}

/// Name of the ClusterRole (and its binding) that lets a tenant's owners approve TenantRequests
/// under it: `kubectl auth can-i approve tenants/<tenant>`.
pub fn approver_name(tenant: &str) -> String {
    format!("citycloud:tenant:{tenant}:approvers")
}

fn approver_role(tenant: &Tenant, name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            owner_references: Some(owner_reference(tenant)),
            ..meta(name, None, &approver_name(name))
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["citycloud.io".into()]),
            resources: Some(vec!["tenants".into()]),
            resource_names: Some(vec![name.into()]),
            verbs: vec!["approve".into()],
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn approver_binding(tenant: &Tenant, name: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            owner_references: Some(owner_reference(tenant)),
            ..meta(name, None, &approver_name(name))
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: approver_name(name),
        },
        subjects: Some(
            tenant
                .spec
                .owners
                .iter()
                .map(Subject::to_rbac_subject)
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests;
