//! TenantRequest: an agency asks for a new Tenant (a sub-tenant under its own, or a new
//! top-level agency) or for a change to one of its children, and someone holding `approve` on
//! the parent decides. Modelled on the CertificateSigningRequest: the spec is immutable, the
//! API server records who asked, and Approved / Denied are exclusive and final (admission
//! policies in the chart, templates/admission-policies-requests.yaml).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::subject::Subject;
use super::tenant::{
    DEFAULT_ENVIRONMENT, DEFAULT_QUOTA_PROFILE, DeletionPolicy, Environment, Network, PodSecurity,
    QuotaOverrides, TenantSpec,
};
use super::validation::{dns_label, dns_subdomain, not_blank, unique_names};

/// The resourceName of `tenants` on which the verb `approve` decides top-level requests (those
/// in the chart's requests namespace). It has dots: no Tenant can be named so.
pub const TOP_LEVEL_APPROVAL: &str = "top-level.citycloud.io";

/// What an agency asks for: the Tenant to create or change, its spec, and why.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "citycloud.io",
    version = "v1alpha1",
    kind = "TenantRequest",
    namespaced,
    doc = "A request for a new Tenant, or for a change to an existing child Tenant, decided by someone holding the verb approve on the parent Tenant (the tenant of the request's namespace; for requests in the requests namespace, the name the chart documents). The spec is immutable; the API server records who asked.",
    status = "TenantRequestStatus",
    shortname = "treq",
    category = "citycloud",
    derive = "PartialEq",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenant"),
    printcolumn(name = "Requester", type_ = "string", json_path = ".spec.requestedBy.username"),
    printcolumn(name = "Parent", type_ = "string", json_path = ".status.parent"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Decided By", type_ = "string", priority = 1, json_path = ".status.decidedBy"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.status==\"True\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec == oldSelf.spec").message(Message::Message(
        "the spec of a TenantRequest is immutable: create a new request instead".into()
    ))
)]
#[serde(rename_all = "camelCase")]
pub struct TenantRequestSpec {
    /// The Tenant to create, or to change if it exists (it must then be a child of the
    /// request's parent).
    #[schemars(length(min = 1, max = 61))]
    #[x_kube(validation = dns_label("spec.tenant"))]
    pub tenant: String,

    /// The Tenant spec asked for. The parent comes from the request's namespace, never from
    /// here; Pod Security privileged, a nodePlacement, deletionPolicy Delete and suspension
    /// are for the platform team to set on the Tenant itself, so a request cannot ask for them.
    pub template: TenantTemplate,

    /// Why the agency needs it, in Vietnamese or English, for the approver.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub justification: String,

    /// Who asked: recorded by the API server at creation (a MutatingAdmissionPolicy), never
    /// trusted from the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<RequestedBy>,
}

/// The fields of a Tenant's spec an agency may ask for (the Tenant's own types).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantTemplate {
    /// The agency's full name, as people read it; 1 to 256 characters.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = not_blank("spec.template.displayName"))]
    pub display_name: String,

    /// The agency's official code; unique among tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub agency_code: Option<String>,

    /// Who will administer the tenant's namespaces; at least one.
    #[schemars(length(min = 1, max = 100))]
    pub owners: Vec<Subject>,

    /// Who will edit workloads there.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub members: Vec<Subject>,

    /// Who will read there.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub viewers: Vec<Subject>,

    /// The environments; defaults to one, prod.
    #[serde(default = "default_environments")]
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(validation = unique_names("spec.template.environments"))]
    pub environments: Vec<Environment>,

    /// The QuotaProfile asked for.
    #[serde(default = "default_quota_profile")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain("spec.template.quotaProfile"))]
    pub quota_profile: String,

    /// Exceptions to the profile asked for (a larger budget, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_overrides: Option<QuotaOverrides>,

    /// How open the namespaces are to traffic.
    #[serde(default)]
    pub network: Network,

    /// restricted (default) or baseline; privileged is for the platform team alone.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self != 'privileged'").message(Message::Message(
        "spec.template.podSecurity privileged cannot be requested: ask the platform team".into()
    )))]
    pub pod_security: PodSecurity,
}

fn default_environments() -> Vec<Environment> {
    vec![Environment::new(DEFAULT_ENVIRONMENT)]
}

fn default_quota_profile() -> String {
    DEFAULT_QUOTA_PROFILE.to_owned()
}

impl TenantTemplate {
    /// The Tenant spec this template asks for, under `parent`.
    pub fn to_spec(&self, parent: Option<&str>) -> TenantSpec {
        TenantSpec {
            display_name: self.display_name.clone(),
            agency_code: self.agency_code.clone(),
            parent: parent.map(str::to_owned),
            owners: self.owners.clone(),
            members: self.members.clone(),
            viewers: self.viewers.clone(),
            environments: self.environments.clone(),
            quota_profile: self.quota_profile.clone(),
            quota_overrides: self.quota_overrides.clone(),
            network: self.network.clone(),
            pod_security: self.pod_security,
            node_placement: None,
            deletion_policy: DeletionPolicy::Retain,
            suspended: false,
        }
    }
}

/// The user who created a request, as the API server authenticated them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestedBy {
    /// The username, as in the API server's audit log.
    #[schemars(length(max = 256))]
    pub username: String,
    /// The user's groups at the time of the request.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(max = 256)))]
    pub groups: Vec<String>,
}

/// Where a request stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantRequestStatus {
    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The parent Tenant: the tenant of the request's namespace (set by the operator, never
    /// from the spec); empty for a top-level request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 61))]
    pub parent: Option<String>,

    /// Approved or Denied (exclusive and final, written by an approver on the status
    /// subresource, or by the operator: a policy's approval, a denial for budget) and
    /// Provisioned (the Tenant exists as asked and is Ready).
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Who approved or denied: a username, or `TenantRequestPolicy/<name>`, or the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 320))]
    pub decided_by: Option<String>,

    /// Pending, Approved, Denied or Provisioned, for `kubectl get treq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub state: Option<String>,

    /// The Tenant created or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 61))]
    pub tenant: Option<String>,
}

/// The values of `status.state`.
pub mod state {
    /// Neither approved nor denied yet.
    pub const PENDING: &str = "Pending";
    /// Approved; the Tenant is not Provisioned yet.
    pub const APPROVED: &str = "Approved";
    /// Denied: final.
    pub const DENIED: &str = "Denied";
    /// The Tenant exists as asked and is Ready.
    pub const PROVISIONED: &str = "Provisioned";
}

impl TenantRequest {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
    }

    /// Whether the condition `type_` is True.
    pub fn is(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: TenantRequest
metadata: {name: phuong-moi, namespace: ubnd-le-chan-prod}
spec:
  tenant: phuong-moi
  template:
    displayName: "Ủy ban nhân dân phường Mới"
    owners: [{kind: Group, name: phuong-moi-admins}]
    quotaProfile: small
  justification: "Phường mới thành lập"
"#;

    #[test]
    fn a_request_reads_as_the_design_writes_it_with_the_tenant_defaults() {
        let r: TenantRequest = serde_yaml_ng::from_str(SAMPLE).expect("parses");
        assert_eq!(r.spec.tenant, "phuong-moi");
        assert_eq!(r.spec.template.quota_profile, "small");
        assert_eq!(r.spec.template.environments.len(), 1, "prod by default");
        assert_eq!(r.spec.requested_by, None);
        assert!(!r.is("Approved"));
    }

    #[test]
    fn the_schema_forbids_what_only_the_platform_team_may_set() {
        let r: TenantRequest = serde_yaml_ng::from_str(SAMPLE).expect("parses");
        let spec = r.spec.template.to_spec(Some("ubnd-le-chan"));
        assert_eq!(spec.parent.as_deref(), Some("ubnd-le-chan"));
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(spec.node_placement, None);
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&TenantRequest::crd()).expect("CRD serializes");
        for rule in ["self != 'privileged'", "self.spec == oldSelf.spec"] {
            assert!(crd.contains(rule), "{rule}");
        }
    }
}
