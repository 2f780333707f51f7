//! Tenant: an agency of the city, and the isolated namespaces it gets, one per environment.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema, ResourceExt};
use serde::{Deserialize, Serialize};

use super::subject::Subject;
use super::validation::{dns_label, dns_subdomain, not_blank, quantity_map, unique_names};

/// The environment a Tenant gets when its spec names none.
pub const DEFAULT_ENVIRONMENT: &str = "prod";

/// The QuotaProfile a Tenant uses when its spec names none.
pub const DEFAULT_QUOTA_PROFILE: &str = "default";

/// The longest name of a Kubernetes namespace.
pub const MAX_NAMESPACE_NAME: usize = 63;

/// The longest name of a Tenant: its namespaces are `<tenant>-<environment>`, and an
/// environment name has at least one character.
pub const MAX_TENANT_NAME: usize = MAX_NAMESPACE_NAME - 2;

/// The most environments a Tenant may have.
pub const MAX_ENVIRONMENTS: usize = 20;

/// The most subjects each of owners, members and viewers may list.
pub const MAX_SUBJECTS: usize = 100;

/// What an agency asks for: who it is, who may do what in its namespaces, which
/// environments it runs, and how large and how open they are.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "citycloud.io",
    version = "v1alpha1",
    kind = "Tenant",
    doc = "An agency of the city (a department, a district or ward People's Committee, a public-service unit) and the isolated namespaces it gets: one per environment, named <tenant>-<environment>, with its RBAC, quota, limits and network policies.",
    status = "TenantStatus",
    shortname = "tnt",
    category = "citycloud",
    derive = "PartialEq",
    printcolumn(name = "Display Name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Profile", type_ = "string", json_path = ".spec.quotaProfile"),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".status.namespaces"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Agency Code", type_ = "string", priority = 1, json_path = ".spec.agencyCode"),
    printcolumn(name = "Parent", type_ = "string", priority = 1, json_path = ".spec.parent"),
    printcolumn(name = "Suspended", type_ = "boolean", priority = 1, json_path = ".spec.suspended"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!self.metadata.name.contains('.')").message(Message::Message(
        "metadata.name of a Tenant must be a DNS label (lowercase letters, digits and '-', no '.'): it prefixes the names of the tenant's namespaces".into()
    )),
    validation = Rule::new("size(self.metadata.name) <= 61").message(Message::Message(
        "metadata.name of a Tenant must be at most 61 characters: namespaces are named <tenant>-<environment>, at most 63 characters".into()
    )),
    validation = Rule::new(
        "!has(self.spec.environments) || self.spec.environments.all(e, size(self.metadata.name) + 1 + size(e.name) <= 63)"
    )
    .field_path(".spec.environments")
    .message(Message::Message(
        "every namespace name <tenant>-<environment> must fit in 63 characters: shorten the environment names or metadata.name".into()
    )),
    validation = Rule::new("!has(self.spec.parent) || self.spec.parent != self.metadata.name")
        .field_path(".spec.parent")
        .message(Message::Message("spec.parent must name another Tenant, not this one".into()))
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The agency's full name, as people read it (UTF-8, e.g. Vietnamese); 1 to 256 characters.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = not_blank("spec.displayName"))]
    pub display_name: String,

    /// The agency's official code (e.g. "000.00.31.H26"); unique among tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = not_blank("spec.agencyCode"))]
    pub agency_code: Option<String>,

    /// The name of the Tenant this one belongs to (e.g. a department under its People's
    /// Committee); the hierarchy may not have cycles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 61))]
    #[x_kube(validation = dns_label("spec.parent"))]
    pub parent: Option<String>,

    /// Who administers the tenant's namespaces (ClusterRole admin); at least one.
    #[schemars(length(max = 100))]
    #[x_kube(
        validation = Rule::new("size(self) >= 1")
            .message(Message::Message("spec.owners must name at least one owner: every Tenant needs someone who administers it".into()))
            .reason(Reason::FieldValueRequired)
    )]
    pub owners: Vec<Subject>,

    /// Who may edit workloads in the tenant's namespaces (ClusterRole edit).
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub members: Vec<Subject>,

    /// Who may read the tenant's namespaces (ClusterRole view).
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub viewers: Vec<Subject>,

    /// The tenant's environments; each gets the namespace `<tenant>-<name>`. Defaults to one
    /// environment, prod. Removing an environment never deletes its namespace unless
    /// deletionPolicy is Delete.
    #[serde(default = "default_environments")]
    #[schemars(length(max = 20))]
    #[x_kube(
        validation = unique_names("spec.environments"),
        validation = Rule::new("size(self) >= 1")
            .message(Message::Message("spec.environments must list at least one environment; leave the field out to get the default, prod".into()))
            .reason(Reason::FieldValueRequired)
    )]
    pub environments: Vec<Environment>,

    /// The QuotaProfile sizing every environment that does not name its own.
    #[serde(default = "default_quota_profile")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain("spec.quotaProfile"))]
    pub quota_profile: String,

    /// Approved exceptions to the profile, merged over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_overrides: Option<QuotaOverrides>,

    /// How open the tenant's namespaces are to traffic.
    #[serde(default)]
    pub network: Network,

    /// The Pod Security Standard enforced, audited and warned about in the tenant's
    /// namespaces: restricted (default), baseline or privileged.
    #[serde(default)]
    pub pod_security: PodSecurity,

    /// Where the tenant's pods may run: the node labels they must match and the taints they
    /// tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_placement: Option<NodePlacement>,

    /// What happens to the namespaces when the Tenant, or one of its environments, goes:
    /// Retain (default) keeps them, labelled citycloud.io/orphaned=true; Delete deletes them
    /// with everything in them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// True stops new workloads (quota pods: 0) and revokes shared-service bindings,
    /// without deleting anything.
    #[serde(default)]
    pub suspended: bool,
}

fn default_environments() -> Vec<Environment> {
    DEFAULT_ENVIRONMENTS.clone()
}

fn default_quota_profile() -> String {
    DEFAULT_QUOTA_PROFILE.to_owned()
}

static DEFAULT_ENVIRONMENTS: LazyLock<Vec<Environment>> = LazyLock::new(|| {
    vec![Environment {
        name: DEFAULT_ENVIRONMENT.to_owned(),
        quota_profile: None,
    }]
});

/// One environment of a tenant (prod, staging, dev, ...), and so one namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// The environment's name, a DNS label; the namespace is `<tenant>-<name>`.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = dns_label("environment name"))]
    pub name: String,

    /// A QuotaProfile for this environment alone, instead of the tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain("quotaProfile"))]
    pub quota_profile: Option<String>,
}

impl Environment {
    /// An environment using the tenant's QuotaProfile.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            quota_profile: None,
        }
    }
}

/// Approved exceptions to a tenant's QuotaProfile. Each entry replaces the profile's entry of
/// the same resource, or adds one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaOverrides {
    /// Over the profile's namespace: the ResourceQuota hard of each namespace
    /// (e.g. requests.cpu: "6").
    #[serde(default)]
    #[schemars(schema_with = "quantity_map")]
    pub namespace: BTreeMap<String, Quantity>,

    /// Over the profile's tenant: the budget of all the tenant's namespaces together.
    #[serde(default)]
    #[schemars(schema_with = "quantity_map")]
    pub tenant: BTreeMap<String, Quantity>,
}

/// How open a tenant's namespaces are to traffic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Strict (default): pods accept traffic only from the tenant's own namespaces and from
    /// namespaces labelled citycloud.io/platform-ingress=true. Open: from anywhere.
    #[serde(default)]
    pub ingress: Ingress,

    /// Open (default): pods reach anything. Restricted: only DNS, the tenant's own
    /// namespaces and the shared services it is bound to.
    #[serde(default)]
    pub egress: Egress,
}

/// Which traffic reaches a tenant's pods.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[allow(
    missing_docs,
    reason = "schemars would turn documented variants into a oneOf in the CRD; the fields of this type say what each value means"
)]
pub enum Ingress {
    #[default]
    Strict,
    Open,
}

/// Where a tenant's pods may connect to.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[allow(
    missing_docs,
    reason = "schemars would turn documented variants into a oneOf in the CRD; the fields of this type say what each value means"
)]
pub enum Egress {
    #[default]
    Open,
    Restricted,
}

impl Ingress {
    /// The value as written in the spec (and in the namespace label `citycloud.io/ingress`).
    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::Strict => "Strict",
            Ingress::Open => "Open",
        }
    }
}

impl Egress {
    /// The value as written in the spec (and in the namespace label `citycloud.io/egress`).
    pub fn as_str(self) -> &'static str {
        match self {
            Egress::Open => "Open",
            Egress::Restricted => "Restricted",
        }
    }
}

/// A Pod Security Standard level.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[allow(
    missing_docs,
    reason = "schemars would turn documented variants into a oneOf in the CRD; the fields of this type say what each value means"
)]
pub enum PodSecurity {
    #[default]
    Restricted,
    Baseline,
    Privileged,
}

impl PodSecurity {
    /// The level as the pod-security.kubernetes.io labels spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurity::Restricted => "restricted",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Privileged => "privileged",
        }
    }
}

/// Where a tenant's pods may be scheduled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePlacement {
    /// Node labels the tenant's pods must run on.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the tenant's pods tolerate.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
}

/// What happens to a tenant's namespaces when they are no longer wanted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Keep the namespace and everything in it, labelled citycloud.io/orphaned=true.
    #[default]
    Retain,
    /// Delete the namespace and everything in it.
    Delete,
}

/// What the operator observed of a Tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, NamespacesReady, RBACReady, QuotaReady and NetworkReady.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The names of the tenant's namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,

    /// Tenant-wide use of each budgeted resource, summed over its namespaces.
    #[serde(default)]
    pub usage: BTreeMap<String, ResourceUsage>,

    /// The SharedServices the tenant's claims are bound to.
    #[serde(default)]
    pub bound_services: Vec<String>,
}

/// How much of one resource a tenant uses, against its budget.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceUsage {
    /// What the tenant's namespaces use together.
    pub used: Quantity,
    /// The tenant's budget.
    pub hard: Quantity,
}

/// The name of a tenant's namespace for one environment: `<tenant>-<environment>`.
pub fn namespace_name(tenant: &str, environment: &str) -> String {
    format!("{tenant}-{environment}")
}

impl Tenant {
    /// The name of this tenant's namespace for `environment`: `<tenant>-<environment>`.
    pub fn namespace_for(&self, environment: &str) -> String {
        namespace_name(&self.name_any(), environment)
    }

    /// The tenant's environments. Deserializing fills in the default (one environment, prod)
    /// when the spec has none; this also returns it for an empty list, which the CRD rejects
    /// but a spec built in code may hold.
    pub fn environments(&self) -> &[Environment] {
        if self.spec.environments.is_empty() {
            &DEFAULT_ENVIRONMENTS
        } else {
            &self.spec.environments
        }
    }

    /// The environment named `name`, if the tenant has it.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments().iter().find(|e| e.name == name)
    }

    /// The names of the tenant's namespaces, one per environment, in spec order.
    pub fn namespaces(&self) -> Vec<String> {
        self.environments()
            .iter()
            .map(|e| self.namespace_for(&e.name))
            .collect()
    }

    /// The QuotaProfile that sizes `environment`: its own, or else the tenant's.
    pub fn quota_profile_for<'a>(&'a self, environment: &'a Environment) -> &'a str {
        environment
            .quota_profile
            .as_deref()
            .unwrap_or(&self.spec.quota_profile)
    }

    /// Every QuotaProfile the tenant uses, each once, sorted.
    pub fn quota_profiles(&self) -> Vec<&str> {
        let mut profiles: Vec<&str> = self
            .environments()
            .iter()
            .map(|e| self.quota_profile_for(e))
            .collect();
        profiles.sort_unstable();
        profiles.dedup();
        profiles
    }

    /// Whether the tenant is suspended: no new workloads, no shared-service bindings.
    pub fn is_suspended(&self) -> bool {
        self.spec.suspended
    }

    /// Everyone with rights over the tenant (owners, members and viewers), e.g. to grant
    /// them read access to this Tenant object.
    pub fn subjects(&self) -> impl Iterator<Item = &Subject> {
        self.spec
            .owners
            .iter()
            .chain(&self.spec.members)
            .chain(&self.spec.viewers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SubjectKind;

    const MINIMAL: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: Tenant
metadata:
  name: sotttt
spec:
  displayName: "Sở Thông tin và Truyền thông"
  owners: [{kind: Group, name: sotttt-admins}]
"#;

    const FULL: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: Tenant
metadata:
  name: sotttt
spec:
  displayName: "Sở Thông tin và Truyền thông"
  agencyCode: "000.00.31.H26"
  parent: ubnd-hai-phong
  owners:   [{kind: Group, name: "sotttt-admins"}]
  members:  [{kind: User, name: "an.nguyen"}]
  viewers:  [{kind: ServiceAccount, name: auditor, namespace: audit}]
  environments:
    - name: prod
    - name: staging
      quotaProfile: small
  quotaProfile: medium
  quotaOverrides:
    namespace: {requests.cpu: "6", pods: 80}
    tenant:    {requests.cpu: "20"}
  network:
    ingress: Open
    egress: Restricted
  podSecurity: baseline
  nodePlacement:
    nodeSelector: {city.io/zone: a}
    tolerations: [{key: dedicated, operator: Equal, value: sotttt, effect: NoSchedule}]
  deletionPolicy: Delete
  suspended: true
status:
  observedGeneration: 3
  conditions:
    - {type: Ready, status: "True", reason: Reconciled, message: "", lastTransitionTime: "2025-01-01T00:00:00Z"}
  namespaces: [sotttt-prod, sotttt-staging]
  usage: {requests.cpu: {used: "3", hard: "16"}}
  boundServices: [lgsp, sso]
"#;

    #[test]
    fn a_minimal_tenant_gets_the_documented_defaults() {
        let tenant: Tenant = serde_yaml_ng::from_str(MINIMAL).expect("minimal tenant parses");
        let spec = &tenant.spec;
        assert_eq!(spec.environments, vec![Environment::new("prod")]);
        assert_eq!(spec.quota_profile, "default");
        assert_eq!(spec.network.ingress, Ingress::Strict);
        assert_eq!(spec.network.egress, Egress::Open);
        assert_eq!(spec.pod_security, PodSecurity::Restricted);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
        assert!(!spec.suspended);
        assert!(spec.members.is_empty() && spec.viewers.is_empty());
        assert_eq!(spec.agency_code, None);
        assert_eq!(spec.parent, None);
        assert_eq!(spec.quota_overrides, None);
        assert_eq!(spec.node_placement, None);
        assert_eq!(tenant.status, None);
    }

    #[test]
    fn a_full_tenant_reads_as_the_design_writes_it() {
        let tenant: Tenant = serde_yaml_ng::from_str(FULL).expect("full tenant parses");
        let spec = &tenant.spec;
        assert_eq!(spec.agency_code.as_deref(), Some("000.00.31.H26"));
        assert_eq!(spec.parent.as_deref(), Some("ubnd-hai-phong"));
        assert_eq!(spec.viewers[0].kind, SubjectKind::ServiceAccount);
        assert_eq!(spec.network.ingress, Ingress::Open);
        assert_eq!(spec.network.egress, Egress::Restricted);
        assert_eq!(spec.pod_security.as_str(), "baseline");
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
        assert!(tenant.is_suspended());
        let overrides = spec.quota_overrides.as_ref().expect("overrides");
        // An unquoted integer is a quantity too.
        assert_eq!(overrides.namespace["pods"], Quantity("80".into()));
        assert_eq!(overrides.tenant["requests.cpu"], Quantity("20".into()));
        let placement = spec.node_placement.as_ref().expect("placement");
        assert_eq!(placement.tolerations.len(), 1);
        let status = tenant.status.as_ref().expect("status");
        assert_eq!(status.usage["requests.cpu"].hard, Quantity("16".into()));
        assert_eq!(status.bound_services, ["lgsp", "sso"]);
    }

    #[test]
    fn namespaces_are_named_tenant_dash_environment() {
        let tenant: Tenant = serde_yaml_ng::from_str(FULL).expect("full tenant parses");
        assert_eq!(tenant.namespace_for("prod"), "sotttt-prod");
        assert_eq!(tenant.namespaces(), ["sotttt-prod", "sotttt-staging"]);
        let minimal: Tenant = serde_yaml_ng::from_str(MINIMAL).expect("minimal tenant parses");
        assert_eq!(minimal.namespaces(), ["sotttt-prod"]);
    }

    #[test]
    fn an_environment_uses_its_own_profile_or_the_tenants() {
        let tenant: Tenant = serde_yaml_ng::from_str(FULL).expect("full tenant parses");
        let prod = tenant.environment("prod").expect("prod");
        let staging = tenant.environment("staging").expect("staging");
        assert_eq!(tenant.quota_profile_for(prod), "medium");
        assert_eq!(tenant.quota_profile_for(staging), "small");
        assert_eq!(tenant.quota_profiles(), ["medium", "small"]);
    }

    #[test]
    fn an_empty_environment_list_in_code_still_means_prod() {
        let mut tenant: Tenant = serde_yaml_ng::from_str(MINIMAL).expect("minimal tenant parses");
        tenant.spec.environments.clear();
        assert_eq!(tenant.environments(), [Environment::new("prod")]);
    }

    #[test]
    fn subjects_are_owners_members_and_viewers() {
        let tenant: Tenant = serde_yaml_ng::from_str(FULL).expect("full tenant parses");
        let names: Vec<&str> = tenant.subjects().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["sotttt-admins", "an.nguyen", "auditor"]);
    }

    #[test]
    fn the_limits_in_code_are_those_of_the_schema() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(Tenant::crd()).expect("CRD serializes");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["environments"]["maxItems"], MAX_ENVIRONMENTS);
        for list in ["owners", "members", "viewers"] {
            assert_eq!(spec[list]["maxItems"], MAX_SUBJECTS, "{list}");
        }
        assert_eq!(spec["parent"]["maxLength"], MAX_TENANT_NAME);
    }

    #[test]
    fn a_tenant_round_trips_through_json() {
        let tenant: Tenant = serde_yaml_ng::from_str(FULL).expect("full tenant parses");
        let json = serde_json::to_value(&tenant).expect("serializes");
        let back: Tenant = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, tenant);
    }
}
