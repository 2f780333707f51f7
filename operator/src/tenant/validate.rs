//! Which of a tenant's namespaces may be provisioned: a namespace that exists and belongs to
//! another tenant, or to nobody, is never taken over.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;

use kube::ResourceExt;

use crate::api::Tenant;
use crate::api::annotations::ADOPT_RETAINED;
use crate::api::labels::{ORPHANED, TENANT, TENANT_UID};

/// What validation found: the namespaces refused, and those not created.
pub struct Validated {
    pub conflicts: Vec<Conflict>,
    pub excess: Option<Excess>,
    /// Namespaces not provisioned: conflicted, or beyond the profile's `maxEnvironments`.
    pub skipped: Vec<String>,
}

/// Which of the tenant's namespaces may be provisioned, given the live ones `found`.
pub fn validate(tenant: &Tenant, found: &super::dereference::Dereferenced) -> Validated {
    let conflicts = conflicts(tenant, &tenant.namespaces(), &found.named);
    let excess = excess_environments(tenant, &found.inputs, &found.named, &conflicts);
    let skipped = conflicts
        .iter()
        .map(|c| c.namespace.clone())
        .chain(excess.iter().flat_map(|e| e.skipped.clone()))
        .collect();
    Validated {
        conflicts,
        excess,
        skipped,
    }
}

/// Why a namespace is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub namespace: String,
    pub owner: Option<String>,
    /// Retained from an earlier Tenant of this name: adopted only on purpose.
    pub retained: bool,
}

impl Conflict {
    pub fn message(&self) -> String {
        match &self.owner {
            Some(_) if self.retained => format!(
                "namespace {} was retained (deletionPolicy: Retain) from an earlier Tenant of this name, with its data: it is adopted only on purpose; annotate this Tenant {ADOPT_RETAINED}=true to adopt it for this Tenant's owners, or rename this environment",
                self.namespace
            ),
            Some(other) => format!(
                "namespace {} already belongs to tenant {other}: rename this environment or the tenant",
                self.namespace
            ),
            None => format!(
                "namespace {} already exists and belongs to no tenant: CityCloud will not take it over; rename this environment, or ask a cluster admin to label it citycloud.io/tenant=<this tenant> to hand it over",
                self.namespace
            ),
        }
    }
}

/// The namespaces of `wanted` that exist and are not `tenant`'s: another tenant's, nobody's,
/// or retained from an earlier Tenant of the same name (a different uid) unless the Tenant
/// asks to adopt them.
pub fn conflicts(
    tenant: &Tenant,
    wanted: &[String],
    live: &BTreeMap<String, Namespace>,
) -> Vec<Conflict> {
    let name = tenant.name_any();
    let adopts = tenant
        .annotations()
        .get(ADOPT_RETAINED)
        .is_some_and(|v| v == "true");
    wanted
        .iter()
        .filter_map(|ns| {
            let live = live.get(ns)?;
            let owner = live.labels().get(TENANT).cloned();
            if owner.as_deref() != Some(name.as_str()) {
                return Some(Conflict {
                    namespace: ns.clone(),
                    owner,
                    retained: false,
                });
            }
            let retained = live.labels().get(ORPHANED).is_some_and(|v| v == "true");
            let same_tenant = live.annotations().get(TENANT_UID) == tenant.metadata.uid.as_ref();
            (retained && !same_tenant && !adopts).then(|| Conflict {
                namespace: ns.clone(),
                owner,
                retained: true,
            })
        })
        .collect()
}

/// Environments beyond the QuotaProfile's `maxEnvironments`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excess {
    pub max: i32,
    pub listed: usize,
    pub profile: String,
    /// The namespaces not created: the newest in spec order. Ones that exist are never dropped
    /// for this (their data stays reachable); the tenant just gets no new one.
    pub skipped: Vec<String>,
}

impl Excess {
    pub fn message(&self) -> String {
        format!(
            "spec.environments lists {} environments and QuotaProfile {} allows {} (maxEnvironments): {} not created; remove environments, or move the tenant to a profile allowing more",
            self.listed,
            self.profile,
            self.max,
            self.skipped.join(", ")
        )
    }
}

/// The environments the tenant may not have, if it lists more than its profile allows.
pub fn excess_environments(
    tenant: &Tenant,
    inputs: &super::build::Inputs,
    live: &BTreeMap<String, Namespace>,
    conflicts: &[Conflict],
) -> Option<Excess> {
    let profile = &tenant.spec.quota_profile;
    let max = inputs.profiles.get(profile)?.spec.max_environments;
    let wanted = tenant.namespaces();
    if wanted.len() <= usize::try_from(max).unwrap_or(0) {
        return None;
    }
    let exists =
        |ns: &String| live.contains_key(ns) && !conflicts.iter().any(|c| &c.namespace == ns);
    let mut room = usize::try_from(max)
        .unwrap_or(0)
        .saturating_sub(wanted.iter().filter(|n| exists(n)).count());
    let skipped: Vec<String> = wanted
        .iter()
        .filter(|ns| !live.contains_key(*ns))
        .filter(|_| {
            if room > 0 {
                room -= 1;
                false
            } else {
                true
            }
        })
        .cloned()
        .collect();
    Some(Excess {
        max,
        listed: wanted.len(),
        profile: profile.clone(),
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, labels: &[(&str, &str)], uid: Option<&str>) -> (String, Namespace) {
        let mut n = Namespace::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n.metadata.annotations =
            uid.map(|u| BTreeMap::from([(TENANT_UID.to_string(), u.to_string())]));
        (name.to_string(), n)
    }

    fn tenant(name: &str, uid: &str, adopt: bool) -> Tenant {
        let mut t = Tenant::new(
            name,
            serde_json::from_value(
                serde_json::json!({"displayName": "A", "owners": [{"kind": "Group", "name": "g"}]}),
            )
            .expect("spec"),
        );
        t.metadata.uid = Some(uid.into());
        if adopt {
            t.metadata.annotations = Some(BTreeMap::from([(ADOPT_RETAINED.into(), "true".into())]));
        }
        t
    }

    #[test]
    fn only_foreign_or_unowned_namespaces_conflict() {
        let live = BTreeMap::from([
            ns("a-prod", &[(TENANT, "a")], Some("u1")),
            ns("a-dev", &[(TENANT, "b")], None),
            ns("a-test", &[], None),
        ]);
        let wanted = ["a-prod", "a-dev", "a-test", "a-new"].map(String::from);
        let found = conflicts(&tenant("a", "u1", false), &wanted, &live);
        assert_eq!(
            found,
            [
                Conflict {
                    namespace: "a-dev".into(),
                    owner: Some("b".into()),
                    retained: false
                },
                Conflict {
                    namespace: "a-test".into(),
                    owner: None,
                    retained: false
                }
            ]
        );
        assert!(found[0].message().contains("belongs to tenant b"));
    }

    #[test]
    fn a_namespace_retained_from_an_earlier_tenant_is_adopted_only_on_purpose() {
        let live = BTreeMap::from([
            ns("a-prod", &[(TENANT, "a"), (ORPHANED, "true")], Some("old")),
            ns("a-dev", &[(TENANT, "a"), (ORPHANED, "true")], Some("u1")),
        ]);
        let wanted = ["a-prod", "a-dev"].map(String::from);
        // A new Tenant "a" (uid u1): its own dropped environment comes back, the earlier
        // Tenant's namespace does not.
        let found = conflicts(&tenant("a", "u1", false), &wanted, &live);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].namespace, "a-prod");
        assert!(found[0].retained);
        assert!(
            found[0].message().contains(ADOPT_RETAINED),
            "{}",
            found[0].message()
        );
        // Annotated: adopted.
        assert!(conflicts(&tenant("a", "u1", true), &wanted, &live).is_empty());
    }
}
