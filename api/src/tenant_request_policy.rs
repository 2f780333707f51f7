//! TenantRequestPolicy: automatic approval rules platform engineers keep in Git. A pending
//! TenantRequest under a parent a policy selects is approved by the operator (reason
//! ApprovedByPolicy, decidedBy `TenantRequestPolicy/<name>`) when one of its rules allows it;
//! otherwise it waits for a person. The budget is checked first: a request that does not fit
//! is denied whatever the policy says.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Which requests are approved without a person, under which parents.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "citycloud.io",
    version = "v1alpha1",
    kind = "TenantRequestPolicy",
    doc = "Automatic approval of TenantRequests under the parent Tenants it selects: new children on listed profiles up to a number, one profile up when the tenant uses most of its budget, and lowering.",
    shortname = "trp",
    category = "citycloud",
    derive = "PartialEq",
    printcolumn(
        name = "Max Children",
        type_ = "integer",
        json_path = ".spec.newChildren.maxChildren"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TenantRequestPolicySpec {
    /// The parent Tenants (by their labels) whose requests this policy decides; empty selects
    /// every parent. Top-level requests are never approved by a policy.
    #[serde(default)]
    pub parent_selector: LabelSelector,

    /// New sub-tenants: approved on the listed profiles while the parent has fewer children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_children: Option<NewChildren>,

    /// The profiles from smallest to largest, for moving an existing child up or down.
    #[serde(default)]
    #[schemars(length(max = 20), inner(length(min = 1, max = 253)))]
    pub ladder: Vec<String>,

    /// A change to the next profile up the ladder is approved when the child's use of some
    /// budgeted resource is at least this percentage of its budget (0 disables).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub raise_above_percent: u8,

    /// A change to a lower profile of the ladder is always approved.
    #[serde(default)]
    pub lowering: bool,
}

/// The rule for new children.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewChildren {
    /// The profiles a new child may have (its tenant profile and every environment's).
    #[schemars(length(min = 1, max = 20), inner(length(min = 1, max = 253)))]
    pub profiles: Vec<String>,
    /// The most children the parent may have (counting every Tenant naming it as parent).
    #[schemars(range(min = 0, max = 1000))]
    pub max_children: u32,
}

impl TenantRequestPolicy {
    /// Whether the policy decides requests under a parent with these labels.
    pub fn selects(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        Selector::try_from(self.spec.parent_selector.clone()).is_ok_and(|s| s.matches(labels))
    }
}
