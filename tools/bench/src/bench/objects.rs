//! What the bench creates: its QuotaProfiles and Tenants (as a platform engineer writes them),
//! and what the operator makes of a Tenant, computed with the operator's own `build`.
use std::collections::BTreeMap;

use citycloud::api::{QuotaProfile, Tenant};
use citycloud::tenant::build::{Inputs, TenantResources, build};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};

/// On every Tenant and QuotaProfile the bench makes: the run it belongs to.
pub const RUN_LABEL: &str = "bench.citycloud.io/run";
/// The field manager of the bench's own writes.
pub const MANAGER: &str = "citycloud-bench";
/// The label the operator puts on everything it manages.
pub const MANAGED: &str = "app.kubernetes.io/managed-by=citycloud-operator";

/// The names of a run's objects: `<run>-t0001` through the operator, `<run>-d0001` applied
/// directly, `<run>-flow` for the budget flow.
#[derive(Clone, Debug)]
pub struct Names {
    pub run: String,
}

impl Names {
    pub fn profile(&self) -> String {
        format!("{}-profile", self.run)
    }
    pub fn flow_profile(&self) -> String {
        format!("{}-flow-profile", self.run)
    }
    pub fn tenant(&self, i: usize) -> String {
        format!("{}-t{i:04}", self.run)
    }
    pub fn direct_tenant(&self, i: usize) -> String {
        format!("{}-d{i:04}", self.run)
    }
    /// The tenants of the request-cost measurement, never provisioned (see `costs`).
    pub fn cost_tenant(&self, i: usize) -> String {
        format!("{}-c{i:04}", self.run)
    }
    /// The budget-flow tenant of attempt `i` (a fresh one after a stuck run).
    pub fn flow_tenant(&self, i: usize) -> String {
        match i {
            0 => format!("{}-flow", self.run),
            i => format!("{}-flow{}", self.run, i + 1),
        }
    }
    /// Whether `tenant` is one of this run's operator-provisioned tenants.
    pub fn is_operator_tenant(&self, tenant: &str) -> bool {
        tenant
            .strip_prefix(&self.run)
            .and_then(|rest| rest.strip_prefix("-t"))
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
    }
    pub fn selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.run)
    }
}

/// Environment names: the usual ones first, then `env<i>`.
pub fn environments(k: usize) -> Vec<String> {
    const USUAL: [&str; 5] = ["prod", "staging", "dev", "test", "uat"];
    (0..k)
        .map(|i| {
            USUAL
                .get(i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("env{i}"))
        })
        .collect()
}

/// A medium agency's size, with a tenant-wide budget so the budget split runs too.
pub fn profile(names: &Names) -> Value {
    json!({
        "apiVersion": "citycloud.io/v1alpha1",
        "kind": "QuotaProfile",
        "metadata": {"name": names.profile(), "labels": {RUN_LABEL: names.run}},
        "spec": {
            "description": "Bench: medium agency",
            "namespace": {"requests.cpu": "4", "requests.memory": "8Gi", "limits.cpu": "8",
                          "limits.memory": "16Gi", "pods": "50", "persistentvolumeclaims": "10",
                          "services.loadbalancers": "0"},
            "tenant": {"requests.cpu": "8", "requests.memory": "16Gi"},
            "limits": {
                "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                "default": {"cpu": "500m", "memory": "512Mi"},
                "max": {"cpu": "4", "memory": "8Gi"}
            },
            "maxEnvironments": 20
        }
    })
}

/// Tenant `i`: 1 to 3 RoleBindings (members on even, viewers on every third) and 1 or 2
/// NetworkPolicies (egress restricted on every fourth) per namespace.
pub fn tenant(names: &Names, name: &str, i: usize, envs: &[String]) -> Value {
    let mut spec = json!({
        "displayName": format!("Đơn vị thử tải số {i} — Sở Thông tin và Truyền thông"),
        "owners": [{"kind": "Group", "name": format!("{name}-admins")}],
        "environments": envs.iter().map(|e| json!({"name": e})).collect::<Vec<_>>(),
        "quotaProfile": names.profile(),
        "network": {"ingress": "Strict",
                    "egress": if i.is_multiple_of(4) { "Restricted" } else { "Open" }},
    });
    if i.is_multiple_of(2) {
        spec["members"] = json!([{"kind": "Group", "name": format!("{name}-developers")}]);
    }
    if i.is_multiple_of(3) {
        spec["viewers"] = json!([{"kind": "User", "name": format!("auditor@{name}.gov.vn")}]);
    }
    json!({
        "apiVersion": "citycloud.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name, "labels": {RUN_LABEL: names.run}},
        "spec": spec,
    })
}

/// Creates (or updates) Tenant `name` from `spec` as a platform engineer would: server-side
/// apply under the bench's field manager.
pub async fn apply_tenant(
    api: &kube::Api<Tenant>,
    name: &str,
    spec: &Value,
) -> anyhow::Result<Tenant> {
    use anyhow::Context;
    use kube::api::{Patch, PatchParams};
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(spec),
    )
    .await
    .with_context(|| format!("creating Tenant {name}"))
}

/// The budget-flow profile: one CPU of requests for the whole tenant.
pub fn flow_profile(names: &Names) -> Value {
    json!({
        "apiVersion": "citycloud.io/v1alpha1",
        "kind": "QuotaProfile",
        "metadata": {"name": names.flow_profile(), "labels": {RUN_LABEL: names.run}},
        "spec": {
            "description": "Bench: budget flow",
            "namespace": {"requests.cpu": "1", "pods": "20"},
            "tenant": {"requests.cpu": "1"}
        }
    })
}

pub fn flow_tenant(names: &Names, name: &str) -> Value {
    json!({
        "apiVersion": "citycloud.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name, "labels": {RUN_LABEL: names.run}},
        "spec": {
            "displayName": "Ủy ban nhân dân quận Lê Chân (bench)",
            "owners": [{"kind": "Group", "name": format!("{name}-admins")}],
            "environments": [{"name": "a"}, {"name": "b"}],
            "quotaProfile": names.flow_profile(),
        },
    })
}

/// Everything the operator makes of `tenant` on its first reconcile, when none of it exists
/// yet: the profile's caps with the tenant budget split evenly (`quota::allocate` with no
/// live quotas and no demand), exactly as `tenant::provision` computes it.
pub fn desired(tenant: &Tenant, profile: &QuotaProfile) -> TenantResources {
    let mut inputs = Inputs {
        profiles: BTreeMap::from([(tenant.spec.quota_profile.clone(), profile.clone())]),
        ..Default::default()
    };
    let caps: BTreeMap<String, BTreeMap<String, Quantity>> = build(tenant, &inputs)
        .namespaces
        .into_iter()
        .filter_map(|n| Some((n.namespace.metadata.name?, n.quota.spec?.hard?)))
        .collect();
    let budget = profile.tenant_budget(tenant.spec.quota_overrides.as_ref());
    inputs.allocations =
        citycloud::quota::allocate(&budget, &caps, &BTreeMap::new(), |_| 0, |_| false).hard;
    build(tenant, &inputs)
}

/// Every object in `res`, named as the operator's Events name them (`Kind ns/name`), in the
/// order it writes them: per namespace the Namespace, ResourceQuota, LimitRange,
/// NetworkPolicies and RoleBindings; then the reader and approver ClusterRoles and
/// ClusterRoleBindings.
pub fn described(res: &TenantResources) -> Vec<String> {
    use citycloud::events::describe;
    let mut out = Vec::new();
    for n in &res.namespaces {
        out.push(describe(&n.namespace));
        out.push(describe(&n.quota));
        out.extend(n.limit_range.iter().map(describe));
        out.extend(n.network_policies.iter().map(describe));
        out.extend(n.role_bindings.iter().map(describe));
    }
    out.extend([
        describe(&res.reader_role),
        describe(&res.reader_binding),
        describe(&res.approver_role),
        describe(&res.approver_binding),
    ]);
    out
}

/// How many objects `res` holds (see [`described`]).
pub fn count(res: &TenantResources) -> usize {
    described(res).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names { run: "b1a2".into() }
    }

    #[test]
    fn tenants_vary_between_one_and_three_bindings_and_one_and_two_policies() {
        let names = names();
        let profile: QuotaProfile = serde_json::from_value(profile(&names)).expect("profile");
        let envs = environments(3);
        let mut bindings = std::collections::BTreeSet::new();
        let mut policies = std::collections::BTreeSet::new();
        for i in 0..12 {
            let t: Tenant =
                serde_json::from_value(tenant(&names, &names.tenant(i), i, &envs)).expect("tenant");
            let res = desired(&t, &profile);
            assert_eq!(res.namespaces.len(), 3);
            for ns in &res.namespaces {
                bindings.insert(ns.role_bindings.len());
                policies.insert(ns.network_policies.len());
                assert!(ns.limit_range.is_some());
                let hard = ns
                    .quota
                    .spec
                    .as_ref()
                    .and_then(|s| s.hard.as_ref())
                    .expect("hard");
                // 8 CPUs of budget over 3 namespaces capped at 4 each.
                assert!(hard["requests.cpu"].0.ends_with('m') || hard["requests.cpu"].0 == "4");
            }
            assert!(count(&res) >= 4 + 3 * 5);
        }
        assert_eq!(bindings.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(policies.into_iter().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn names_tell_operator_and_direct_tenants_apart() {
        let n = names();
        assert!(n.is_operator_tenant(&n.tenant(7)));
        assert!(!n.is_operator_tenant(&n.direct_tenant(7)));
        assert!(!n.is_operator_tenant(&n.flow_tenant(0)));
        assert!(!n.is_operator_tenant(&n.flow_tenant(1)));
        assert!(!n.is_operator_tenant("other-t0001"));
    }
}
