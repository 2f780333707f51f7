//! QuotaProfile: a standard size for tenants. Change a profile, and every tenant using it
//! follows.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::validation::quantity_map;

/// The number of environments a profile allows when it does not say.
pub const DEFAULT_MAX_ENVIRONMENTS: i32 = 5;

/// The number of SharedServiceClaims a tenant may have when its profile does not say.
pub const DEFAULT_MAX_CLAIMS: i32 = 100;

/// The most claims a profile may allow a tenant: with at most this many, a tenant's
/// provider-side consumers Secret stays far below the 1 MiB an object may have.
pub const MAX_CLAIMS_LIMIT: i32 = 1000;

/// The quota resource counting a namespace's SharedServiceClaims (the API server's object
/// count quota, which works for custom resources).
pub const CLAIMS_QUOTA: &str = "count/sharedserviceclaims.citycloud.io";

/// A standard size: the quota of each namespace, the budget of a whole tenant, the container
/// limits, and how many environments a tenant may have.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "citycloud.io",
    version = "v1alpha1",
    kind = "QuotaProfile",
    doc = "A standard size for tenants: the ResourceQuota of each namespace, the budget of all a tenant's namespaces together, the LimitRange for containers, and how many environments a tenant may have.",
    status = "QuotaProfileStatus",
    shortname = "qp",
    category = "citycloud",
    derive = "PartialEq",
    printcolumn(
        name = "Description",
        type_ = "string",
        json_path = ".spec.description"
    ),
    printcolumn(
        name = "Max Envs",
        type_ = "integer",
        priority = 1,
        json_path = ".spec.maxEnvironments"
    ),
    printcolumn(
        name = "Max Claims",
        type_ = "integer",
        priority = 1,
        json_path = ".spec.maxClaims"
    ),
    printcolumn(name = "Tenants", type_ = "integer", json_path = ".status.tenants"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
// clippy reads the repeated `type_ = ...` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[serde(rename_all = "camelCase")]
pub struct QuotaProfileSpec {
    /// What the profile is for, as people read it (e.g. "Medium agency").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// The ResourceQuota hard of each of a tenant's namespaces, by resource name
    /// (requests.cpu, requests.memory, limits.cpu, pods, requests.storage, ...).
    #[serde(default)]
    #[schemars(schema_with = "quantity_map")]
    pub namespace: BTreeMap<String, Quantity>,

    /// The budget of all a tenant's namespaces together, by resource name. The operator keeps
    /// the sum of what they use within it.
    #[serde(default)]
    #[schemars(schema_with = "quantity_map")]
    pub tenant: BTreeMap<String, Quantity>,

    /// The LimitRange for containers in each namespace; none when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ContainerLimits>,

    /// The most environments a tenant using this profile may have; at least 1, default 5.
    #[serde(default = "default_max_environments")]
    #[schemars(range(min = 1))]
    pub max_environments: i32,

    /// The most SharedServiceClaims a tenant using this profile may have, over all its
    /// namespaces; 0 to 1000, default 100. Enforced by the API server's quota: it is the
    /// tenant budget of count/sharedserviceclaims.citycloud.io (unless `tenant` sets that
    /// itself) and each namespace's cap.
    #[serde(default = "default_max_claims")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_claims: i32,
}

fn default_max_environments() -> i32 {
    DEFAULT_MAX_ENVIRONMENTS
}

fn default_max_claims() -> i32 {
    DEFAULT_MAX_CLAIMS
}

/// Container limits, by resource name (cpu, memory, ephemeral-storage): a LimitRange item of
/// type Container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerLimits {
    /// The requests of a container that sets none.
    #[serde(default)]
    #[schemars(schema_with = "quantity_map")]
    pub default_request: BTreeMap<String, Quantity>,

    /// The limits of a container that sets none.
    #[serde(default)]
    #[schemars(schema_with = "quantity_map")]
    pub default: BTreeMap<String, Quantity>,

    /// The most a container may ask for.
    #[serde(default)]
    #[schemars(schema_with = "quantity_map")]
    pub max: BTreeMap<String, Quantity>,

    /// The least a container may ask for.
    #[serde(default)]
    #[schemars(schema_with = "quantity_map")]
    pub min: BTreeMap<String, Quantity>,
}

impl ContainerLimits {
    /// Whether the limits set nothing at all (and need no LimitRange).
    pub fn is_empty(&self) -> bool {
        self.default_request.is_empty()
            && self.default.is_empty()
            && self.max.is_empty()
            && self.min.is_empty()
    }
}

/// What the operator observed of a QuotaProfile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaProfileStatus {
    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The number of Tenants using this profile, for the tenant or for one environment.
    #[serde(default)]
    pub tenants: i32,

    /// Conditions of the profile.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl QuotaProfile {
    /// The ResourceQuota hard of each namespace, with a tenant's approved `overrides` merged
    /// over the profile's. Claims are capped at `maxClaims` unless either sets their count.
    pub fn namespace_hard(
        &self,
        overrides: Option<&super::QuotaOverrides>,
    ) -> BTreeMap<String, Quantity> {
        merged(
            self.claims(),
            &self.spec.namespace,
            overrides.map(|o| &o.namespace),
        )
    }

    /// The budget of a whole tenant, with its approved `overrides` merged over the profile's.
    /// It always bounds claims: `maxClaims`, unless either sets their count itself. Split over
    /// the namespaces like any budget, so the API server never admits more claims in total.
    pub fn tenant_budget(
        &self,
        overrides: Option<&super::QuotaOverrides>,
    ) -> BTreeMap<String, Quantity> {
        merged(
            self.claims(),
            &self.spec.tenant,
            overrides.map(|o| &o.tenant),
        )
    }

    /// `maxClaims` as a quota entry.
    fn claims(&self) -> (String, Quantity) {
        let max = self.spec.max_claims.clamp(0, MAX_CLAIMS_LIMIT);
        (CLAIMS_QUOTA.to_owned(), Quantity(max.to_string()))
    }
}

/// `default`, replaced by what `base` says, then by what `over` says.
fn merged(
    default: (String, Quantity),
    base: &BTreeMap<String, Quantity>,
    over: Option<&BTreeMap<String, Quantity>>,
) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::from([default]);
    out.extend(base.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(over) = over {
        out.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QuotaOverrides;

    const MEDIUM: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: QuotaProfile
metadata:
  name: medium
spec:
  description: "Medium agency"
  namespace: {requests.cpu: "4", requests.memory: 8Gi, limits.cpu: "8", limits.memory: 16Gi,
              pods: "50", persistentvolumeclaims: "10", requests.storage: 200Gi,
              services.loadbalancers: "0"}
  tenant: {requests.cpu: "16", requests.memory: 32Gi}
  limits:
    defaultRequest: {cpu: 100m, memory: 128Mi}
    default: {cpu: 500m, memory: 512Mi}
    max: {cpu: "4", memory: 8Gi}
  maxEnvironments: 5
"#;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn the_design_profile_reads_as_written() {
        let profile: QuotaProfile = serde_yaml_ng::from_str(MEDIUM).expect("profile parses");
        assert_eq!(profile.spec.description.as_deref(), Some("Medium agency"));
        assert_eq!(profile.spec.namespace.len(), 8);
        assert_eq!(profile.spec.tenant["requests.memory"], q("32Gi"));
        let limits = profile.spec.limits.as_ref().expect("limits");
        assert_eq!(limits.default_request["cpu"], q("100m"));
        assert_eq!(limits.max["memory"], q("8Gi"));
        assert!(limits.min.is_empty());
        assert_eq!(profile.spec.max_environments, 5);
        assert_eq!(profile.spec.max_claims, DEFAULT_MAX_CLAIMS);
    }

    #[test]
    fn an_empty_profile_allows_five_environments_and_sets_no_limits() {
        let profile: QuotaProfile =
            serde_yaml_ng::from_str("{apiVersion: citycloud.io/v1alpha1, kind: QuotaProfile, metadata: {name: tiny}, spec: {}}")
                .expect("profile parses");
        assert_eq!(profile.spec.max_environments, DEFAULT_MAX_ENVIRONMENTS);
        assert!(profile.spec.namespace.is_empty() && profile.spec.tenant.is_empty());
        assert_eq!(profile.spec.limits, None);
    }

    #[test]
    fn overrides_replace_or_add_to_the_profile() {
        let profile: QuotaProfile = serde_yaml_ng::from_str(MEDIUM).expect("profile parses");
        let overrides = QuotaOverrides {
            namespace: [("requests.cpu".to_owned(), q("6"))].into(),
            tenant: [("pods".to_owned(), q("200"))].into(),
        };
        let hard = profile.namespace_hard(Some(&overrides));
        assert_eq!(hard["requests.cpu"], q("6"));
        assert_eq!(hard["requests.memory"], q("8Gi"));
        let budget = profile.tenant_budget(Some(&overrides));
        assert_eq!(budget["requests.cpu"], q("16"));
        assert_eq!(budget["pods"], q("200"));
        let mut with_claims = profile.spec.tenant.clone();
        with_claims.insert(CLAIMS_QUOTA.into(), q("100"));
        assert_eq!(profile.tenant_budget(None), with_claims);
    }

    #[test]
    fn claims_are_bounded_per_tenant_and_per_namespace_by_max_claims() {
        let mut profile: QuotaProfile = serde_yaml_ng::from_str(MEDIUM).expect("profile parses");
        profile.spec.max_claims = 7;
        assert_eq!(profile.tenant_budget(None)[CLAIMS_QUOTA], q("7"));
        assert_eq!(profile.namespace_hard(None)[CLAIMS_QUOTA], q("7"));
        // A profile, or an approved override, that sets the count itself wins.
        profile.spec.tenant.insert(CLAIMS_QUOTA.into(), q("20"));
        assert_eq!(profile.tenant_budget(None)[CLAIMS_QUOTA], q("20"));
        let overrides = QuotaOverrides {
            namespace: [(CLAIMS_QUOTA.to_owned(), q("3"))].into(),
            tenant: [(CLAIMS_QUOTA.to_owned(), q("30"))].into(),
        };
        assert_eq!(
            profile.tenant_budget(Some(&overrides))[CLAIMS_QUOTA],
            q("30")
        );
        assert_eq!(
            profile.namespace_hard(Some(&overrides))[CLAIMS_QUOTA],
            q("3")
        );
        // Out of range (the CRD refuses it; a stale object is clamped).
        profile.spec.max_claims = 5000;
        assert_eq!(profile.namespace_hard(None)[CLAIMS_QUOTA], q("1000"));
    }
}
