//! Budgets carved from a parent Tenant for its children. Pure functions, no API server.
//!
//! The parent keeps, in its annotation `citycloud.io/budget-reservations`, the tenant budget
//! reserved for each child created from a request. Its own namespaces get what its budget
//! leaves after those ([`carve`], used by the Tenant controller), so
//! `parent's own namespaces + Σ children's budgets <= parent's budget`. A child's reservation
//! is written first (with the parent's resourceVersion as precondition: two approvals cannot
//! both take the same budget), the parent's quotas then shrink, and only once they are
//! enforced ([`parent_enforced`]) is the child created: at no instant can the two together
//! admit more than the parent's budget.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use crate::api::Tenant;
use crate::api::labels::BUDGET_RESERVATIONS;
use crate::quantity::{Milli, is_bytes};

/// A budget: resource name → quantity.
pub type Budget = BTreeMap<String, Quantity>;

/// The children's reserved budgets, by child Tenant name.
pub type Reservations = BTreeMap<String, Budget>;

/// Why a child does not fit: the first resource short, what was asked and what is left.
#[derive(Clone, Debug, PartialEq)]
pub struct Shortfall {
    pub resource: String,
    pub asked: Option<Quantity>,
    pub left: Quantity,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.asked {
            Some(asked) => write!(
                f,
                "{}: asks for {} but {} of the parent's budget is left",
                self.resource, asked.0, self.left.0
            ),
            None => write!(
                f,
                "{}: the requested profile sets no tenant budget for it, but the parent's is bounded ({} left): choose a profile with one",
                self.resource, self.left.0
            ),
        }
    }
}

/// The part of a tenant budget carved from the parent: compute and storage, not the count of
/// SharedServiceClaims (`maxClaims`), which is a per-tenant cap on objects, not a share of the
/// parent's capacity.
pub fn carvable(mut budget: Budget) -> Budget {
    budget.remove(crate::api::quota_profile::CLAIMS_QUOTA);
    budget
}

/// The reservations a parent Tenant carries (an unreadable annotation counts as none written
/// by us: the operator is its only writer, and the admission policy keeps it so).
pub fn reservations(parent: &Tenant) -> Reservations {
    parent
        .annotations()
        .get(BUDGET_RESERVATIONS)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// The annotation's text for `reservations`.
pub fn to_annotation(reservations: &Reservations) -> String {
    serde_json::to_string(reservations).unwrap_or_else(|_| "{}".into())
}

fn milli(q: &Quantity) -> i128 {
    Milli::of(q).map(|m| m.0).unwrap_or(0)
}

fn quantity(resource: &str, m: i128) -> Quantity {
    Milli(m.max(0)).to_quantity(is_bytes(resource))
}

/// Σ over `reservations` (except `skip`) of `resource`.
fn reserved(reservations: &Reservations, resource: &str, skip: Option<&str>) -> i128 {
    reservations
        .iter()
        .filter(|(child, _)| Some(child.as_str()) != skip)
        .filter_map(|(_, b)| b.get(resource))
        .map(milli)
        .sum()
}

/// What the parent's own namespaces may share: `left` (its budget after what its retained
/// namespaces use) minus every child's reservation. Never below zero.
pub fn carve(left: &Budget, parent: &Tenant) -> Budget {
    let reservations = reservations(parent);
    if reservations.is_empty() {
        return left.clone();
    }
    left.iter()
        .map(|(r, q)| {
            let rest = milli(q) - reserved(&reservations, r, None);
            (r.clone(), quantity(r, rest))
        })
        .collect()
}

/// Σ `status.used` of `resource` over the parent's namespaces' quotas.
fn used(quotas: &[ResourceQuota], resource: &str) -> i128 {
    quotas
        .iter()
        .filter_map(|q| q.status.as_ref()?.used.as_ref()?.get(resource))
        .map(milli)
        .sum()
}

/// Whether `child` (a budget) fits in `parent_budget` beside the other children's reservations
/// and what the parent's namespaces use now. A resource the parent budgets must be budgeted
/// by the child too (else the child would be unbounded inside a bounded parent).
pub fn fits(
    parent_budget: &Budget,
    reservations: &Reservations,
    quotas: &[ResourceQuota],
    child_name: &str,
    child: &Budget,
) -> Result<(), Shortfall> {
    for (resource, total) in parent_budget {
        let left = milli(total)
            - reserved(reservations, resource, Some(child_name))
            - used(quotas, resource);
        let left_q = quantity(resource, left);
        match child.get(resource) {
            None => {
                return Err(Shortfall {
                    resource: resource.clone(),
                    asked: None,
                    left: left_q,
                });
            }
            Some(asked) if milli(asked) > left => {
                return Err(Shortfall {
                    resource: resource.clone(),
                    asked: Some(asked.clone()),
                    left: left_q,
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The reservations with `child` holding at least `budget` (per resource the larger of what
/// it held and what it asks: lowering a reservation before the child's quotas have shrunk
/// could overshoot, so it is never lowered here). `None` when nothing changes.
pub fn reserve(reservations: &Reservations, child: &str, budget: &Budget) -> Option<Reservations> {
    let mut out = reservations.clone();
    let held = out.entry(child.to_owned()).or_default();
    let mut changed = false;
    for (r, q) in budget {
        let bigger = match held.get(r) {
            Some(h) => milli(q) > milli(h),
            None => true,
        };
        if bigger {
            held.insert(r.clone(), q.clone());
            changed = true;
        }
    }
    changed.then_some(out)
}

/// Whether the parent's quotas are held to its budget minus every reservation: for each
/// budgeted resource, Σ over its namespaces of the most each may admit (usage, the hard
/// enforced, the hard asked for) is within it. Until then a new child could overshoot.
pub fn parent_enforced(
    parent_budget: &Budget,
    reservations: &Reservations,
    quotas: &[ResourceQuota],
) -> bool {
    parent_budget.iter().all(|(resource, total)| {
        let bound: i128 = quotas
            .iter()
            .map(|q| {
                let get = |m: Option<&BTreeMap<String, Quantity>>| {
                    m.and_then(|m| m.get(resource)).map(milli).unwrap_or(0)
                };
                let status = q.status.as_ref();
                get(status.and_then(|s| s.used.as_ref()))
                    .max(get(status.and_then(|s| s.hard.as_ref())))
                    .max(get(q.spec.as_ref().and_then(|s| s.hard.as_ref())))
            })
            .sum();
        bound <= milli(total) - reserved(reservations, resource, None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ResourceQuotaSpec, ResourceQuotaStatus};

    fn b(pairs: &[(&str, &str)]) -> Budget {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    fn quota(hard: &str, status_hard: &str, used: &str) -> ResourceQuota {
        ResourceQuota {
            spec: Some(ResourceQuotaSpec {
                hard: Some(b(&[("requests.cpu", hard)])),
                ..Default::default()
            }),
            status: Some(ResourceQuotaStatus {
                hard: Some(b(&[("requests.cpu", status_hard)])),
                used: Some(b(&[("requests.cpu", used)])),
            }),
            ..Default::default()
        }
    }

    fn parent_with(reservations: &Reservations) -> Tenant {
        let mut t: Tenant = serde_yaml_ng::from_str(
            "metadata: {name: quan}\nspec: {displayName: Q, owners: [{kind: Group, name: q}]}",
        )
        .expect("tenant");
        t.annotations_mut()
            .insert(BUDGET_RESERVATIONS.into(), to_annotation(reservations));
        t
    }

    #[test]
    fn a_child_fits_in_what_the_others_and_the_parents_use_leave() {
        let parent = b(&[("requests.cpu", "10")]);
        let others = Reservations::from([("phuong-a".into(), b(&[("requests.cpu", "4")]))]);
        let quotas = [quota("6", "6", "2")];
        assert_eq!(
            fits(
                &parent,
                &others,
                &quotas,
                "phuong-b",
                &b(&[("requests.cpu", "4")])
            ),
            Ok(())
        );
        let short = fits(
            &parent,
            &others,
            &quotas,
            "phuong-b",
            &b(&[("requests.cpu", "5")]),
        )
        .expect_err("10 - 4 reserved - 2 used = 4 left");
        assert_eq!(short.left.0, "4");
        assert_eq!(
            short.to_string(),
            "requests.cpu: asks for 5 but 4 of the parent's budget is left"
        );
    }

    #[test]
    fn a_child_changing_is_counted_once_and_an_unbounded_child_never_fits() {
        let parent = b(&[("requests.cpu", "10")]);
        let held = Reservations::from([("phuong-b".into(), b(&[("requests.cpu", "4")]))]);
        // Its own old reservation is not counted against its new size.
        assert_eq!(
            fits(
                &parent,
                &held,
                &[],
                "phuong-b",
                &b(&[("requests.cpu", "10")])
            ),
            Ok(())
        );
        let unbounded = fits(&parent, &held, &[], "phuong-c", &b(&[]));
        assert_eq!(unbounded.expect_err("unbounded").asked, None);
    }

    #[test]
    fn the_parents_own_namespaces_get_its_budget_minus_every_reservation() {
        let reservations = Reservations::from([
            (
                "a".into(),
                b(&[("requests.cpu", "3"), ("requests.memory", "1Gi")]),
            ),
            ("b".into(), b(&[("requests.cpu", "500m")])),
        ]);
        let left = carve(
            &b(&[
                ("requests.cpu", "4"),
                ("requests.memory", "2Gi"),
                ("pods", "10"),
            ]),
            &parent_with(&reservations),
        );
        assert_eq!(
            left,
            b(&[
                ("requests.cpu", "500m"),
                ("requests.memory", "1Gi"),
                ("pods", "10")
            ])
        );
        let over = carve(&b(&[("requests.cpu", "1")]), &parent_with(&reservations));
        assert_eq!(over["requests.cpu"].0, "0", "never below zero");
    }

    #[test]
    fn a_reservation_only_grows_and_a_repeat_changes_nothing() {
        let none = Reservations::new();
        let once = reserve(&none, "a", &b(&[("requests.cpu", "2")])).expect("new");
        assert_eq!(reserve(&once, "a", &b(&[("requests.cpu", "2")])), None);
        assert_eq!(
            reserve(&once, "a", &b(&[("requests.cpu", "1")])),
            None,
            "never lowered"
        );
        let up = reserve(&once, "a", &b(&[("requests.cpu", "3")])).expect("raised");
        assert_eq!(up["a"]["requests.cpu"].0, "3");
    }

    #[test]
    fn a_child_waits_until_the_parents_quotas_have_shrunk() {
        let parent = b(&[("requests.cpu", "10")]);
        let reservations = Reservations::from([("a".into(), b(&[("requests.cpu", "4")]))]);
        // Asked for 6 but the API server still enforces 8: not yet.
        assert!(!parent_enforced(
            &parent,
            &reservations,
            &[quota("6", "8", "1")]
        ));
        assert!(parent_enforced(
            &parent,
            &reservations,
            &[quota("6", "6", "1")]
        ));
        assert!(
            !parent_enforced(&parent, &reservations, &[quota("3", "3", "7")]),
            "usage counts"
        );
    }
}
