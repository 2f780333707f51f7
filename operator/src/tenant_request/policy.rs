//! Automatic approval by TenantRequestPolicies: which policy approves a pending request, and
//! why. [`evaluate`] is pure; [`approving`] reads the policies and the parent's children.
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::api::{Tenant, TenantRequest, TenantRequestPolicy};
use crate::quota::carve::Budget;
use crate::{Result, StepExt};

/// What a policy decision depends on besides the request.
pub struct Facts<'a> {
    pub parent: &'a Tenant,
    /// The Tenant the request would change, if it exists.
    pub existing: Option<&'a Tenant>,
    /// How many Tenants name the parent as theirs.
    pub children: usize,
}

/// Why `policy` approves `request`, or None.
pub fn evaluate(
    policy: &TenantRequestPolicy,
    request: &TenantRequest,
    facts: &Facts,
) -> Option<String> {
    if !policy.selects(facts.parent.labels()) {
        return None;
    }
    let spec = &policy.spec;
    let template = &request.spec.template;
    let parent = facts.parent.name_any();
    match facts.existing {
        None => {
            let rule = spec.new_children.as_ref()?;
            let profiles_ok = std::iter::once(&template.quota_profile)
                .chain(
                    template
                        .environments
                        .iter()
                        .filter_map(|e| e.quota_profile.as_ref()),
                )
                .all(|p| rule.profiles.contains(p));
            let plain = template.quota_overrides.is_none();
            (profiles_ok && plain && facts.children < rule.max_children as usize).then(|| {
                format!(
                    "a new child of {parent} on profile {} ({} of at most {} children)",
                    template.quota_profile,
                    facts.children + 1,
                    rule.max_children
                )
            })
        }
        Some(current) => {
            // Only the profile may move; anything else is for a person to look at.
            let mut asked = template.to_spec(current.spec.parent.as_deref());
            asked.quota_profile = current.spec.quota_profile.clone();
            if asked != current.spec {
                return None;
            }
            let rank = |p: &str| spec.ladder.iter().position(|l| l == p);
            let (from, to) = (
                rank(&current.spec.quota_profile)?,
                rank(&template.quota_profile)?,
            );
            if to < from && spec.lowering {
                return Some(format!(
                    "lowering {} from {} to {} is always approved",
                    current.name_any(),
                    current.spec.quota_profile,
                    template.quota_profile
                ));
            }
            let busiest = busiest(current)?;
            (to == from + 1
                && spec.raise_above_percent > 0
                && busiest.1 >= u32::from(spec.raise_above_percent))
            .then(|| {
                format!(
                    "one profile up ({} to {}): {} uses {}% of its budget of {}",
                    current.spec.quota_profile,
                    template.quota_profile,
                    current.name_any(),
                    busiest.1,
                    busiest.0
                )
            })
        }
    }
}

/// The budgeted resource the tenant uses most of, and the percentage.
fn busiest(tenant: &Tenant) -> Option<(String, u32)> {
    use crate::quantity::Milli;
    tenant
        .status
        .as_ref()?
        .usage
        .iter()
        .filter_map(|(r, u)| {
            let (used, hard) = (Milli::of(&u.used).ok()?.0, Milli::of(&u.hard).ok()?.0);
            (hard > 0).then(|| (r.clone(), (used * 100 / hard) as u32))
        })
        .max_by_key(|(_, pct)| *pct)
}

/// The policy approving `request`, and why, if any does (top-level requests: never).
pub async fn approving(
    client: &Client,
    request: &TenantRequest,
    parent: Option<&str>,
    existing: Option<&Tenant>,
    _child: &Budget,
) -> Result<Option<(String, String)>> {
    let Some(parent) = parent else {
        return Ok(None);
    };
    let policies = Api::<TenantRequestPolicy>::all(client.clone())
        .list(&Default::default())
        .await
        .at("reading", "the TenantRequestPolicies")?
        .items;
    if policies.is_empty() {
        return Ok(None);
    }
    let tenants = Api::<Tenant>::all(client.clone());
    let Some(parent_tenant) = tenants
        .get_opt(parent)
        .await
        .at("reading", format!("Tenant {parent}"))?
    else {
        return Ok(None);
    };
    let children = tenants
        .list(&Default::default())
        .await
        .at("reading", "the Tenants")?
        .items
        .iter()
        .filter(|t| t.spec.parent.as_deref() == Some(parent))
        .count();
    let facts = Facts {
        parent: &parent_tenant,
        existing,
        children,
    };
    Ok(policies
        .iter()
        .find_map(|p| evaluate(p, request, &facts).map(|why| (p.name_any(), why))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
metadata: {name: phuong-cua-quan}
spec:
  parentSelector: {matchLabels: {citycloud.io/level: district}}
  newChildren: {profiles: [small], maxChildren: 2}
  ladder: [small, medium, large]
  raiseAbovePercent: 85
  lowering: true
"#;

    fn policy() -> TenantRequestPolicy {
        serde_yaml_ng::from_str(POLICY).expect("policy")
    }

    fn request(profile: &str) -> TenantRequest {
        serde_yaml_ng::from_str(&format!(
            "metadata: {{name: r, namespace: quan-prod}}\nspec: {{tenant: phuong, template: {{displayName: P, owners: [{{kind: Group, name: p}}], quotaProfile: {profile}}}}}"
        ))
        .expect("request")
    }

    fn tenant(name: &str, labels: &str, profile: &str, used: &str) -> Tenant {
        serde_yaml_ng::from_str(&format!(
            r#"
metadata: {{name: {name}, labels: {{{labels}}}}}
spec: {{displayName: P, owners: [{{kind: Group, name: p}}], quotaProfile: {profile}, parent: quan}}
status: {{usage: {{requests.cpu: {{used: "{used}", hard: "10"}}}}}}
"#
        ))
        .expect("tenant")
    }

    #[test]
    fn a_new_small_ward_is_approved_until_the_district_has_its_maximum() {
        let district = tenant("quan", "citycloud.io/level: district", "large", "0");
        let facts = |children| Facts {
            parent: &district,
            existing: None,
            children,
        };
        assert!(evaluate(&policy(), &request("small"), &facts(1)).is_some());
        assert_eq!(
            evaluate(&policy(), &request("small"), &facts(2)),
            None,
            "at the maximum"
        );
        assert_eq!(
            evaluate(&policy(), &request("medium"), &facts(0)),
            None,
            "not a listed profile"
        );
        let other = tenant("so", "citycloud.io/level: department", "large", "0");
        let facts = Facts {
            parent: &other,
            existing: None,
            children: 0,
        };
        assert_eq!(
            evaluate(&policy(), &request("small"), &facts),
            None,
            "not selected"
        );
    }

    #[test]
    fn one_profile_up_only_above_the_threshold_and_lowering_always() {
        let district = tenant("quan", "citycloud.io/level: district", "large", "0");
        let busy = tenant("phuong", "", "small", "9");
        let idle = tenant("phuong", "", "small", "5");
        let facts = |t| Facts {
            parent: &district,
            existing: Some(t),
            children: 1,
        };
        let why = evaluate(&policy(), &request("medium"), &facts(&busy)).expect("approved");
        assert!(why.contains("90%"), "{why}");
        assert_eq!(evaluate(&policy(), &request("medium"), &facts(&idle)), None);
        assert_eq!(
            evaluate(&policy(), &request("large"), &facts(&busy)),
            None,
            "two up"
        );
        let medium = tenant("phuong", "", "medium", "0");
        assert!(evaluate(&policy(), &request("small"), &facts(&medium)).is_some());
        // Anything besides the profile changing is for a person.
        let mut other_owner = request("medium");
        other_owner.spec.template.owners[0].name = "someone-else".into();
        assert_eq!(evaluate(&policy(), &other_owner, &facts(&busy)), None);
    }
}
