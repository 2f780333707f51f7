//! Budgets carved from a parent Tenant for its children. Pure functions, no API server.
//!
//! The parent keeps, in its annotation `citycloud.io/budget-reservations`, the tenant budget
//! reserved for each child created from a request. Every child, requested or created directly
//! by a platform engineer (`spec.parent`), holds the larger of its reservation and its own
//! tenant budget ([`committed`]); the parent's own namespaces get what its budget leaves after
//! those ([`carve`], used by the Tenant controller), so
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
use crate::api::annotations::BUDGET_RESERVATIONS;
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

/// The actual (carvable) tenant budget of each child Tenant, by name; `None` for a child
/// whose QuotaProfile does not exist (it counts its reservation only).
pub type Children = BTreeMap<String, Option<Budget>>;

/// What each child holds of the parent's budget: per resource the larger of its reservation
/// and its actual budget. Children from requests not created yet hold their reservation;
/// children created directly (no reservation) their budget. A reservation above the actual
/// budget is kept: the child's quotas may not have shrunk to its new budget yet.
pub fn committed(reservations: &Reservations, children: &Children) -> Reservations {
    let mut out = reservations.clone();
    for (child, actual) in children {
        let Some(actual) = actual else { continue };
        if actual.is_empty() {
            continue;
        }
        let held = out.entry(child.clone()).or_default();
        for (r, q) in actual {
            if held.get(r).is_none_or(|h| milli(q) > milli(h)) {
                held.insert(r.clone(), q.clone());
            }
        }
    }
    out
}

/// What the parent's own namespaces may share: `left` (its budget after what its retained
/// namespaces use) minus what every child holds (see [`committed`]). Never below zero.
pub fn carve(left: &Budget, committed: &Reservations) -> Budget {
    left.iter()
        .map(|(r, q)| {
            let rest = milli(q) - reserved(committed, r, None);
            (r.clone(), quantity(r, rest))
        })
        .collect()
}

/// A resource whose children hold more than the parent's whole budget (children created
/// directly can do that: nothing stops a platform engineer's apply).
#[derive(Clone, Debug, PartialEq)]
pub struct Overcommit {
    pub resource: String,
    pub budget: Quantity,
    pub children: Quantity,
}

impl std::fmt::Display for Overcommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the children's budgets add up to {}, over this tenant's budget of {}; its own namespaces get none of it: lower a child's budget or raise this tenant's",
            self.resource, self.children.0, self.budget.0
        )
    }
}

/// The resources of `budget` that the children (see [`committed`]) over-commit.
pub fn overcommitted(budget: &Budget, committed: &Reservations) -> Vec<Overcommit> {
    budget
        .iter()
        .filter_map(|(r, q)| {
            let children = reserved(committed, r, None);
            (children > milli(q)).then(|| Overcommit {
                resource: r.clone(),
                budget: q.clone(),
                children: quantity(r, children),
            })
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

/// Whether `child` (a budget) fits in `parent_budget` beside what the other children hold
/// ([`committed`]: their reservations and actual budgets) and what the parent's namespaces use now. A resource the parent budgets must be budgeted
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

/// Whether the parent's quotas are held to its budget minus what every child holds
/// ([`committed`]): for each
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
    fn the_annotation_reads_back_and_garbage_counts_as_none() {
        let held = Reservations::from([("a".into(), b(&[("requests.cpu", "3")]))]);
        assert_eq!(reservations(&parent_with(&held)), held);
        let mut t = parent_with(&held);
        t.annotations_mut()
            .insert(BUDGET_RESERVATIONS.into(), "not json".into());
        assert_eq!(reservations(&t), Reservations::new());
    }

    #[test]
    fn each_child_holds_the_larger_of_its_reservation_and_its_budget() {
        let reservations = Reservations::from([
            // Requested, not created yet: its reservation.
            ("requested".into(), b(&[("requests.cpu", "2")])),
            // Created from a request, then its budget raised directly: the larger wins.
            (
                "raised".into(),
                b(&[("requests.cpu", "2"), ("requests.memory", "4Gi")]),
            ),
            // A profile that vanished: its reservation still counts.
            ("lost".into(), b(&[("requests.cpu", "1")])),
        ]);
        let children = Children::from([
            (
                "raised".into(),
                Some(b(&[("requests.cpu", "5"), ("requests.memory", "2Gi")])),
            ),
            ("lost".into(), None),
            // Created directly by a platform engineer: its budget.
            ("direct".into(), Some(b(&[("requests.cpu", "3")]))),
            // Directly created, profile missing: nothing to count.
            ("unknown".into(), None),
        ]);
        let held = committed(&reservations, &children);
        assert_eq!(held["requested"], b(&[("requests.cpu", "2")]));
        assert_eq!(
            held["raised"],
            b(&[("requests.cpu", "5"), ("requests.memory", "4Gi")])
        );
        assert_eq!(held["lost"], b(&[("requests.cpu", "1")]));
        assert_eq!(held["direct"], b(&[("requests.cpu", "3")]));
        assert!(!held.contains_key("unknown"));
        // The parent's own namespaces: 16 - (2 + 5 + 1 + 3) CPUs, 8Gi - 4Gi.
        let own = carve(
            &b(&[("requests.cpu", "16"), ("requests.memory", "8Gi")]),
            &held,
        );
        assert_eq!(own, b(&[("requests.cpu", "5"), ("requests.memory", "4Gi")]));
        assert!(overcommitted(&b(&[("requests.cpu", "11")]), &held).is_empty());
    }

    #[test]
    fn children_over_the_budget_leave_the_parent_none_and_are_named() {
        let children = Children::from([
            ("a".into(), Some(b(&[("requests.cpu", "3")]))),
            (
                "b".into(),
                Some(b(&[("requests.cpu", "2"), ("requests.memory", "1Gi")])),
            ),
        ]);
        let held = committed(&Reservations::new(), &children);
        let budget = b(&[("requests.cpu", "4"), ("requests.memory", "2Gi")]);
        assert_eq!(
            carve(&budget, &held),
            b(&[("requests.cpu", "0"), ("requests.memory", "1Gi")])
        );
        let over = overcommitted(&budget, &held);
        assert_eq!(
            over,
            vec![Overcommit {
                resource: "requests.cpu".into(),
                budget: Quantity("4".into()),
                children: Quantity("5".into()),
            }]
        );
        assert!(over[0].to_string().starts_with(
            "requests.cpu: the children's budgets add up to 5, over this tenant's budget of 4"
        ));
        // A request that fits the budget alone does not fit beside a direct child.
        let short = fits(
            &budget,
            &held,
            &[],
            "c",
            &b(&[("requests.cpu", "1"), ("requests.memory", "1Gi")]),
        )
        .expect_err("5 of 4 CPUs are held already");
        assert_eq!(
            (short.resource.as_str(), short.left.0.as_str()),
            ("requests.cpu", "0")
        );
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
            &reservations,
        );
        assert_eq!(
            left,
            b(&[
                ("requests.cpu", "500m"),
                ("requests.memory", "1Gi"),
                ("pods", "10")
            ])
        );
        let over = carve(&b(&[("requests.cpu", "1")]), &reservations);
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
