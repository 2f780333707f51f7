//! The budget split of a Tenant, pure: the profile's caps of the namespaces provisioned, the
//! tenant budget less what kept namespaces use and what the children hold, shared out over
//! the namespaces by demand. What comes out is each namespace's ResourceQuota `hard`, which
//! [`super::build::build`] then writes into the desired objects.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::build::{self, Inputs};
use crate::api::Tenant;
use crate::quota::carve;
use crate::quota::{self, Allocation};

/// Each namespace's quota `hard`, by namespace.
pub type Caps = BTreeMap<String, BTreeMap<String, Quantity>>;

/// What the budget split decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// The tenant's whole budget (its profile's, with `quotaOverrides.tenant`).
    pub budget: carve::Budget,
    /// What each provisioned namespace gets; whether a raise waits for another namespace to
    /// give back first; the namespaces whose use reached their hard.
    pub allocation: Allocation,
    /// The resources the children together hold more of than the budget, as messages.
    pub overcommitted: Vec<String>,
}

/// The profile's caps of the namespaces to provision (not the `skipped` ones).
pub fn caps(tenant: &Tenant, inputs: &Inputs, skipped: &[String]) -> Caps {
    build::caps(tenant, inputs)
        .into_iter()
        .filter(|(ns, _)| !skipped.contains(ns))
        .collect()
}

/// What the children hold of `tenant`'s budget: reservations made for requests, or the own
/// budget of children created directly, whichever is larger.
pub fn committed(tenant: &Tenant, children: &carve::Children) -> carve::Reservations {
    carve::committed(&carve::reservations(tenant), children)
}

/// The split of the tenant budget over `caps`' namespaces. `quotas` are the live quotas of
/// all the tenant's namespaces (those of dropped environments, kept, use budget first);
/// `demand` the level of each namespace's recent want of more (see [`quota::demand`]);
/// `held` the namespaces whose usage is still rising (their hard stays as it is).
pub fn plan(
    tenant: &Tenant,
    inputs: &Inputs,
    quotas: &BTreeMap<String, ResourceQuota>,
    caps: &Caps,
    committed: &carve::Reservations,
    demand: &HashMap<String, u8>,
    held: &BTreeSet<String>,
) -> Plan {
    let budget = inputs
        .profiles
        .get(&tenant.spec.quota_profile)
        .map(|p| p.tenant_budget(tenant.spec.quota_overrides.as_ref()))
        .unwrap_or_default();
    // Namespaces kept from dropped environments still use what they use: that comes first.
    let kept = quotas
        .iter()
        .filter(|(ns, _)| !caps.contains_key(*ns))
        .map(|(_, q)| q);
    let left = quota::remaining(&budget, kept);
    // What the children hold is not the parent's to use.
    let left = carve::carve(&left, committed);
    let allocation = quota::allocate(
        &left,
        caps,
        quotas,
        |ns| demand.get(ns).copied().unwrap_or(0),
        |ns| held.contains(ns),
    );
    let overcommitted = carve::overcommitted(&budget, committed)
        .iter()
        .map(ToString::to_string)
        .collect();
    Plan {
        budget,
        allocation,
        overcommitted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::QuotaProfile;

    fn tenant(yaml: &str) -> Tenant {
        serde_yaml_ng::from_str(yaml).expect("a tenant")
    }

    fn profile(cpu_per_namespace: &str, cpu_per_tenant: &str) -> QuotaProfile {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "namespace": {"requests.cpu": cpu_per_namespace, "pods": "20"},
                "tenant": {"requests.cpu": cpu_per_tenant},
            },
        }))
        .expect("a profile")
    }

    fn inputs(p: QuotaProfile) -> Inputs {
        Inputs {
            profiles: [("p".to_string(), p)].into(),
            ..Default::default()
        }
    }

    fn cpu(caps: &Caps, ns: &str) -> String {
        caps[ns]["requests.cpu"].0.clone()
    }

    const TWO_ENVS: &str = "
metadata: {name: a}
spec:
  displayName: A
  owners: [{kind: Group, name: g}]
  quotaProfile: p
  environments: [{name: prod}, {name: dev}]
";

    #[test]
    fn caps_are_the_profiles_per_namespace_quota_without_the_skipped_namespaces() {
        let t = tenant(TWO_ENVS);
        let caps = caps(&t, &inputs(profile("4", "6")), &["a-dev".to_string()]);
        assert_eq!(caps.keys().collect::<Vec<_>>(), ["a-prod"]);
        assert_eq!(cpu(&caps, "a-prod"), "4");
        assert_eq!(caps["a-prod"]["pods"].0, "20");
    }

    #[test]
    fn the_tenant_budget_is_split_over_its_namespaces_within_their_caps() {
        let t = tenant(TWO_ENVS);
        let inputs = inputs(profile("4", "6"));
        let caps = caps(&t, &inputs, &[]);
        let plan = plan(
            &t,
            &inputs,
            &BTreeMap::new(),
            &caps,
            &Default::default(),
            &HashMap::new(),
            &BTreeSet::new(),
        );
        assert_eq!(plan.budget["requests.cpu"].0, "6");
        let hard = &plan.allocation.hard;
        assert_eq!(hard["a-prod"]["requests.cpu"].0, "3", "{hard:?}");
        assert_eq!(hard["a-dev"]["requests.cpu"].0, "3", "{hard:?}");
        assert!(plan.overcommitted.is_empty());
    }

    #[test]
    fn what_the_children_hold_is_carved_out_and_too_much_is_reported() {
        let t = tenant(TWO_ENVS);
        let inputs = inputs(profile("4", "6"));
        let caps = caps(&t, &inputs, &[]);
        let child = |cpu: &str| {
            Some(
                [("requests.cpu".to_string(), Quantity(cpu.into()))]
                    .into_iter()
                    .collect(),
            )
        };
        let held = committed(&t, &[("kid".to_string(), child("2"))].into());
        let split = plan(
            &t,
            &inputs,
            &BTreeMap::new(),
            &caps,
            &held,
            &HashMap::new(),
            &BTreeSet::new(),
        );
        let hard = &split.allocation.hard;
        assert_eq!(hard["a-prod"]["requests.cpu"].0, "2", "{hard:?}");
        assert_eq!(hard["a-dev"]["requests.cpu"].0, "2", "{hard:?}");

        let greedy = committed(&t, &[("kid".to_string(), child("8"))].into());
        let over = plan(
            &t,
            &inputs,
            &BTreeMap::new(),
            &caps,
            &greedy,
            &HashMap::new(),
            &BTreeSet::new(),
        );
        assert_eq!(over.overcommitted.len(), 1, "{:?}", over.overcommitted);
        assert!(
            over.overcommitted[0].contains("requests.cpu"),
            "{:?}",
            over.overcommitted
        );
    }

    #[test]
    fn a_namespace_in_demand_gets_more_of_the_budget() {
        let t = tenant(TWO_ENVS);
        let inputs = inputs(profile("4", "6"));
        let caps = caps(&t, &inputs, &[]);
        let demand: HashMap<String, u8> = [("a-dev".to_string(), 2)].into();
        let split = plan(
            &t,
            &inputs,
            &BTreeMap::new(),
            &caps,
            &Default::default(),
            &demand,
            &BTreeSet::new(),
        );
        let hard = &split.allocation.hard;
        let milli = |ns: &str| crate::quantity::Milli::of(&hard[ns]["requests.cpu"]).expect("cpu");
        assert!(milli("a-dev") > milli("a-prod"), "{hard:?}");
    }
}
