//! A tenant's status from what reconciling found: conditions a person can act on, its
//! namespaces, and quota use summed over them.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::dereference::ParentProblem;
use super::validate::{Conflict, Excess};
use crate::api::conditions::{reason, tenant as cond};
use crate::api::{ResourceUsage, Tenant};
use crate::conditions::Cond;
use crate::quantity::{Milli, is_bytes};

pub struct Findings<'a> {
    pub conflicts: &'a [Conflict],
    /// Environments over the profile's `maxEnvironments`.
    pub excess: Option<&'a Excess>,
    pub missing_profiles: &'a [String],
    pub parent_problem: Option<&'a ParentProblem>,
    pub namespaces: &'a [String],
    /// New namespaces whose users get access once their quota is enforced.
    pub awaiting_quota: &'a [String],
    /// Budgeted resources the tenant uses all of, with a message each.
    pub exhausted: Vec<String>,
    /// Budgeted resources the children hold more of than this tenant's budget, a message each.
    pub overcommitted: &'a [String],
    /// NodePlacementReady, for a tenant with a nodePlacement (see `placement::check`).
    pub placement: Option<&'a Cond>,
}

/// The budgeted resources whose tenant-wide use has reached the budget.
pub fn exhausted(
    usage: &BTreeMap<String, ResourceUsage>,
    budget: &BTreeMap<String, Quantity>,
) -> Vec<String> {
    budget
        .keys()
        .filter_map(|r| {
            let u = usage.get(r)?;
            let (used, hard) = (Milli::of(&u.used).ok()?, Milli::of(&u.hard).ok()?);
            (used >= hard).then(|| {
                if used > hard {
                    format!("{r}: {} used of a {} budget; running workloads are kept, new use is refused until usage falls below the budget", u.used.0, u.hard.0)
                } else {
                    format!("{r}: all {} of the tenant budget is in use; new use is refused until some is freed or quotaOverrides.tenant raises it", u.hard.0)
                }
            })
        })
        .collect()
}

pub fn conditions(tenant: &Tenant, f: &Findings) -> Vec<Cond> {
    let namespaces = if f.conflicts.is_empty() {
        Cond::ok(
            cond::NAMESPACES_READY,
            reason::PROVISIONED,
            format!("{} namespace(s) provisioned", f.namespaces.len()),
        )
    } else {
        let msg = f
            .conflicts
            .iter()
            .map(Conflict::message)
            .collect::<Vec<_>>()
            .join("; ");
        Cond::fail(cond::NAMESPACES_READY, reason::NAMESPACE_CONFLICT, msg)
    };
    let namespaces = match f.excess {
        Some(excess) if namespaces.ok => Cond::fail(
            cond::NAMESPACES_READY,
            reason::TOO_MANY_ENVIRONMENTS,
            excess.message(),
        ),
        _ => namespaces,
    };
    let rbac = if f.awaiting_quota.is_empty() {
        Cond::ok(
            cond::RBAC_READY,
            reason::BOUND,
            format!(
                "owners have admin, members edit, viewers view in {} namespace(s)",
                f.namespaces.len()
            ),
        )
    } else {
        Cond::fail(
            cond::RBAC_READY,
            reason::AWAITING_QUOTA,
            format!(
                "access to {} is granted once kube-controller-manager enforces its ResourceQuota (the API server limits nothing in a namespace before that); usually within seconds",
                f.awaiting_quota.join(", ")
            ),
        )
    };
    let quota = if !f.missing_profiles.is_empty() {
        Cond::fail(
            cond::QUOTA_READY,
            reason::QUOTA_PROFILE_NOT_FOUND,
            format!(
                "QuotaProfile {} does not exist: create it or point spec.quotaProfile (or the environment's quotaProfile) at an existing one; until then no pods can be created in the affected namespaces",
                f.missing_profiles.join(", ")
            ),
        )
    } else if !f.overcommitted.is_empty() {
        Cond::fail(
            cond::QUOTA_READY,
            reason::BUDGET_OVERCOMMITTED,
            f.overcommitted.join("; "),
        )
    } else if !f.exhausted.is_empty() {
        Cond::fail(
            cond::QUOTA_READY,
            reason::BUDGET_EXHAUSTED,
            f.exhausted.join("; "),
        )
    } else if tenant.is_suspended() {
        Cond::ok(
            cond::QUOTA_READY,
            reason::SUSPENDED,
            "the tenant is suspended: quota allows no pods (pods: 0); nothing was deleted",
        )
    } else {
        Cond::ok(
            cond::QUOTA_READY,
            reason::APPLIED,
            "ResourceQuota and LimitRange follow the quota profile",
        )
    };
    let network = Cond::ok(
        cond::NETWORK_READY,
        reason::APPLIED,
        format!(
            "ingress {:?}, egress {:?}",
            tenant.spec.network.ingress, tenant.spec.network.egress
        ),
    );
    // Dedicated nodes the cluster does not enforce are not ready; not knowing yet is not news.
    let placement = f
        .placement
        .filter(|c| c.reason == reason::NODE_PLACEMENT_NOT_ENFORCED);
    let parts: Vec<&Cond> = [&namespaces, &rbac, &quota, &network]
        .into_iter()
        .chain(placement)
        .collect();
    // A tenant using all its budget is working as intended: not a reason to be un-Ready.
    let ready = if let Some(failed) = parts
        .iter()
        .find(|c| !c.ok && c.reason != reason::BUDGET_EXHAUSTED)
    {
        Cond::fail(cond::READY, &failed.reason, failed.message.clone())
    } else if let Some(problem) = f.parent_problem {
        match problem {
            ParentProblem::NotFound(p) => Cond::fail(
                cond::READY,
                reason::PARENT_NOT_FOUND,
                format!(
                    "spec.parent names Tenant {p}, which does not exist: create it or fix spec.parent"
                ),
            ),
            ParentProblem::Cycle(chain) => Cond::fail(
                cond::READY,
                reason::PARENT_CYCLE,
                format!(
                    "spec.parent makes a cycle ({}): a tenant cannot be its own ancestor",
                    chain.join(" → ")
                ),
            ),
        }
    } else if tenant.is_suspended() {
        Cond::fail(
            cond::READY,
            reason::SUSPENDED,
            "the tenant is suspended: no new workloads; shared-service bindings revoked",
        )
    } else {
        Cond::ok(
            cond::READY,
            reason::PROVISIONED,
            format!("{} namespace(s) ready", f.namespaces.len()),
        )
    };
    let mut all = vec![ready, namespaces, rbac, quota, network];
    all.extend(f.placement.cloned());
    all
}

/// How long a brand-new tenant's first status may wait for its quotas to be enforced.
pub const FIRST_STATUS_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the status write can wait, and for how long at most: a tenant that has no status
/// yet and is only waiting for kube-controller-manager to enforce its new quotas (usually well
/// under a second) gets its first status once they are, in one write instead of one per
/// enforced quota. Never past [`FIRST_STATUS_GRACE`] after the oldest of the quotas waited for
/// was created (`awaiting_since`; none yet: created by this reconcile), so a stalled
/// kube-controller-manager is shown; never for a failure of any other kind (shown at once),
/// and never for a tenant that has a status already (no stale Ready may linger).
pub fn first_status_can_wait(
    tenant: &Tenant,
    conds: &[Cond],
    awaiting_since: Option<k8s_openapi::jiff::Timestamp>,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<std::time::Duration> {
    if tenant.status.is_some() {
        return None;
    }
    let only_awaiting_quota = conds.iter().all(|c| {
        c.ok || ((c.type_ == cond::READY || c.type_ == cond::RBAC_READY)
            && c.reason == reason::AWAITING_QUOTA)
    });
    let awaiting = conds.iter().any(|c| c.type_ == cond::RBAC_READY && !c.ok);
    if !(awaiting && only_awaiting_quota) {
        return None;
    }
    let age = awaiting_since
        .map(|t| now.duration_since(t).unsigned_abs())
        .unwrap_or_default();
    FIRST_STATUS_GRACE
        .checked_sub(age)
        .filter(|left| !left.is_zero())
}

/// Tenant-wide use per resource: `used` summed over the namespaces' quotas; `hard` is the
/// tenant budget where one is set, else the sum of the namespaces' caps.
pub fn usage(
    quotas: &[ResourceQuota],
    budget: &BTreeMap<String, Quantity>,
) -> BTreeMap<String, ResourceUsage> {
    let mut used: BTreeMap<String, Milli> = BTreeMap::new();
    let mut hard: BTreeMap<String, Milli> = BTreeMap::new();
    for q in quotas {
        let Some(status) = &q.status else { continue };
        for (k, v) in status.used.iter().flatten() {
            used.entry(k.clone()).or_default().0 += Milli::of(v).unwrap_or_default().0;
        }
        for (k, v) in status.hard.iter().flatten() {
            hard.entry(k.clone()).or_default().0 += Milli::of(v).unwrap_or_default().0;
        }
    }
    for (k, v) in budget {
        if let Ok(m) = Milli::of(v) {
            hard.insert(k.clone(), m);
        }
    }
    hard.iter()
        .map(|(k, h)| {
            let u = used.get(k).copied().unwrap_or_default();
            (
                k.clone(),
                ResourceUsage {
                    used: u.to_quantity(is_bytes(k)),
                    hard: h.to_quantity(is_bytes(k)),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceQuotaStatus;

    fn rq(used: &[(&str, &str)], hard: &[(&str, &str)]) -> ResourceQuota {
        let m = |p: &[(&str, &str)]| {
            Some(
                p.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        ResourceQuota {
            status: Some(ResourceQuotaStatus {
                used: m(used),
                hard: m(hard),
            }),
            ..Default::default()
        }
    }

    fn fresh(status: bool) -> Tenant {
        let mut t: Tenant = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"displayName": "A", "owners": [{"kind": "Group", "name": "g"}],
                     "quotaProfile": "small"},
        }))
        .expect("a tenant");
        if status {
            t.status = Some(Default::default());
        }
        t
    }

    fn at(secs: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(
            "2026-01-01T00:00:00Z"
                .parse::<k8s_openapi::jiff::Timestamp>()
                .expect("a time")
                .as_second()
                + secs,
        )
        .expect("a time")
    }

    #[test]
    fn only_a_new_tenants_wait_for_quota_enforcement_delays_its_first_status_and_not_for_long() {
        let awaiting = vec![
            Cond::fail(cond::READY, "AwaitingQuota", "x"),
            Cond::fail(cond::RBAC_READY, "AwaitingQuota", "x"),
            Cond::ok(cond::QUOTA_READY, "Applied", "x"),
        ];
        assert_eq!(
            first_status_can_wait(&fresh(false), &awaiting, Some(at(0)), at(3)),
            Some(std::time::Duration::from_secs(7))
        );
        assert_eq!(
            first_status_can_wait(&fresh(false), &awaiting, None, at(30)),
            Some(FIRST_STATUS_GRACE),
            "quotas created by this very reconcile"
        );
        assert_eq!(
            first_status_can_wait(&fresh(false), &awaiting, Some(at(0)), at(10)),
            None,
            "kube-controller-manager is late: shown"
        );
        assert_eq!(
            first_status_can_wait(&fresh(true), &awaiting, Some(at(0)), at(1)),
            None,
            "a tenant with a status sees every change"
        );
        let ready = vec![
            Cond::ok(cond::READY, "Provisioned", "x"),
            Cond::ok(cond::RBAC_READY, "Bound", "x"),
        ];
        assert_eq!(
            first_status_can_wait(&fresh(false), &ready, None, at(1)),
            None,
            "Ready is written at once"
        );
        let failing = vec![
            Cond::fail(cond::READY, "AwaitingQuota", "x"),
            Cond::fail(cond::RBAC_READY, "AwaitingQuota", "x"),
            Cond::fail(cond::QUOTA_READY, "QuotaProfileNotFound", "x"),
        ];
        assert_eq!(
            first_status_can_wait(&fresh(false), &failing, Some(at(0)), at(1)),
            None,
            "another failure is shown at once"
        );
    }

    #[test]
    fn usage_sums_namespaces_and_reports_the_tenant_budget() {
        let quotas = [
            rq(
                &[("requests.cpu", "1500m"), ("requests.memory", "512Mi")],
                &[("requests.cpu", "4"), ("requests.memory", "8Gi")],
            ),
            rq(
                &[("requests.cpu", "500m"), ("requests.memory", "512Mi")],
                &[("requests.cpu", "4"), ("requests.memory", "8Gi")],
            ),
        ];
        let budget = BTreeMap::from([("requests.cpu".to_string(), Quantity("6".into()))]);
        let u = usage(&quotas, &budget);
        assert_eq!(u["requests.cpu"].used.0, "2");
        assert_eq!(u["requests.cpu"].hard.0, "6", "the budget, not 4+4");
        assert_eq!(u["requests.memory"].used.0, "1Gi");
        assert_eq!(u["requests.memory"].hard.0, "16Gi");
    }
}

// Which failure a tenant's Ready condition reports when several hold at once.
#[cfg(test)]
mod precedence_tests;
