//! Which of a tenant's namespaces may be provisioned: a namespace that exists and belongs to
//! another tenant, or to nobody, is never taken over.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;

use crate::api::labels::TENANT;

/// Why a namespace is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub namespace: String,
    pub owner: Option<String>,
}

impl Conflict {
    pub fn message(&self) -> String {
        match &self.owner {
            Some(other) => format!(
                "namespace {} already belongs to tenant {other}: rename this environment or the tenant",
                self.namespace
            ),
            None => format!(
                "namespace {} already exists and belongs to no tenant: CityCloud will not take it over; rename this environment, or label it citycloud.io/tenant=<this tenant> to hand it over",
                self.namespace
            ),
        }
    }
}

/// The namespaces of `wanted` that exist and are not `tenant`'s.
pub fn conflicts(
    tenant: &str,
    wanted: &[String],
    live: &BTreeMap<String, Namespace>,
) -> Vec<Conflict> {
    wanted
        .iter()
        .filter_map(|ns| {
            let owner = live
                .get(ns)?
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(TENANT))
                .cloned();
            (owner.as_deref() != Some(tenant)).then(|| Conflict {
                namespace: ns.clone(),
                owner,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, tenant: Option<&str>) -> (String, Namespace) {
        let mut n = Namespace::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = tenant.map(|t| BTreeMap::from([(TENANT.to_string(), t.to_string())]));
        (name.to_string(), n)
    }

    #[test]
    fn only_foreign_or_unowned_namespaces_conflict() {
        let live = BTreeMap::from([
            ns("a-prod", Some("a")),
            ns("a-dev", Some("b")),
            ns("a-test", None),
        ]);
        let wanted = ["a-prod", "a-dev", "a-test", "a-new"].map(String::from);
        let found = conflicts("a", &wanted, &live);
        assert_eq!(
            found,
            [
                Conflict {
                    namespace: "a-dev".into(),
                    owner: Some("b".into())
                },
                Conflict {
                    namespace: "a-test".into(),
                    owner: None
                }
            ]
        );
        assert!(found[0].message().contains("belongs to tenant b"));
    }
}
