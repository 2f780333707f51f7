//! How a tenant's budget for one resource is split over its namespaces' ResourceQuotas.
//!
//! Two rules make the split safe at every instant:
//! 1. What a namespace may still admit is bounded by the *largest* of its usage, the hard the
//!    API server enforces now (`status.hard`) and the hard we asked for (`spec.hard`, enforced
//!    once kube-controller-manager copies it). Raises are granted only from the budget left
//!    after counting each namespace at that bound.
//! 2. Lowering is always safe and happens at once; a raise that needs budget a namespace is
//!    still giving back waits for the next reconcile (the quota watch triggers it when
//!    `status.hard` catches up, within about a second).
//! 3. A namespace whose usage just rose keeps its hard as it is (see [`Share::held`]).
//!
//! Policy: every namespace keeps what it uses; the budget left is split evenly, or among the
//! namespaces that showed demand (a controller failing to create pods over quota, or usage
//! at its hard) when some did. Splits are in whole units except CPU (millicores).
use crate::quantity::Milli;

/// One namespace's ResourceQuota for one budgeted resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub namespace: String,
    /// The profile's per-namespace cap, if it sets one for this resource.
    pub cap: Option<Milli>,
    pub used: Milli,
    /// `spec.hard` now (what we asked for), if the quota exists.
    pub spec_hard: Option<Milli>,
    /// `status.hard` now (what admission enforces), if synced.
    pub status_hard: Option<Milli>,
    /// How strongly it wants more: 0 none, 1 its usage reached its hard, 2 a controller was
    /// refused over quota there. Only the strongest demanders share the headroom.
    pub demand: u8,
    /// Its usage rose moments ago: its hard is not changed, neither way. Every change of
    /// `spec.hard` makes kube-controller-manager recount `status.used` from its informers,
    /// and pods quota admission has just counted may not be in them yet: the recount would
    /// forget them and admission would then let as many in again, beyond the budget.
    pub held: bool,
}

impl Share {
    /// The most this namespace could ever admit without a further write of ours.
    fn bound(&self, spec_hard: Option<Milli>) -> Milli {
        self.used
            .max(self.status_hard.unwrap_or_default())
            .max(spec_hard.unwrap_or_default())
    }
}

/// The unit budget is split in: millicores for CPU, whole units for everything else
/// (pods, services, bytes, GPUs).
pub fn unit_of(resource: &str) -> i128 {
    if resource.contains("cpu") { 1 } else { 1000 }
}

/// Where the policy wants each namespace's hard to end up.
pub fn targets(budget: Milli, unit: i128, shares: &[Share]) -> Vec<Milli> {
    let used: i128 = shares.iter().map(|s| s.used.0).sum();
    let left_units = (budget.0 - used).max(0) / unit;
    let strongest = shares.iter().map(|s| s.demand).max().unwrap_or(0);
    let takers: Vec<usize> = if strongest > 0 {
        (0..shares.len())
            .filter(|&i| shares[i].demand == strongest)
            .collect()
    } else {
        (0..shares.len()).collect()
    };
    let mut slack = vec![0i128; shares.len()];
    if !takers.is_empty() {
        let each = left_units / takers.len() as i128;
        let mut extra = left_units % takers.len() as i128;
        for &i in &takers {
            slack[i] = each + if extra > 0 { 1 } else { 0 };
            extra -= 1;
        }
    }
    // What a namespace cannot take under its cap goes to the others, in order.
    let mut target: Vec<i128> = shares
        .iter()
        .zip(&slack)
        .map(|(s, k)| s.used.0 + k * unit)
        .collect();
    let mut spill = 0i128;
    for (i, s) in shares.iter().enumerate() {
        if let Some(cap) = s.cap {
            let capped = target[i].min(cap.0.max(s.used.0));
            spill += (target[i] - capped) / unit;
            target[i] = capped;
        }
    }
    // Water-filling: spread the spill evenly over the namespaces with room left.
    while spill > 0 {
        let room = |i: usize, t: &[i128]| {
            shares[i]
                .cap
                .map_or(i128::MAX, |c| (c.0 - t[i]).max(0) / unit)
        };
        let open: Vec<usize> = (0..shares.len())
            .filter(|&i| room(i, &target) > 0)
            .collect();
        if open.is_empty() {
            break;
        }
        let each = (spill / open.len() as i128).max(1);
        for i in open {
            let give = room(i, &target).min(each).min(spill);
            target[i] += give * unit;
            spill -= give;
        }
    }
    target.into_iter().map(Milli).collect()
}

/// The hard to write now for each namespace: lowerings in full, raises only as far as the
/// budget allows with every namespace counted at its bound.
pub fn next_hard(budget: Milli, unit: i128, shares: &[Share]) -> Vec<Milli> {
    let targets = targets(budget, unit, shares);
    let mut next: Vec<Option<Milli>> = shares
        .iter()
        .zip(&targets)
        .map(|(s, t)| if s.held { s.spec_hard } else { None }.or_else(|| lowered(s, *t)))
        .collect();
    let bounds: Vec<Milli> = shares
        .iter()
        .zip(&next)
        .map(|(s, n)| s.bound(n.or(s.spec_hard)))
        .collect();
    let mut free = budget.0 - bounds.iter().map(|b| b.0).sum::<i128>();
    // Namespaces with demand are served first.
    let mut order: Vec<usize> = (0..shares.len()).filter(|&i| next[i].is_none()).collect();
    order.sort_by_key(|&i| {
        (
            std::cmp::Reverse(shares[i].demand),
            shares[i].namespace.clone(),
        )
    });
    for i in order {
        let want = targets[i].0;
        let have = bounds[i].0;
        let extra = (want - have).max(0).min(free.max(0) / unit * unit);
        free -= extra;
        next[i] = Some(Milli(
            (have + extra)
                .min(want)
                .max(shares[i].spec_hard.unwrap_or_default().0),
        ));
    }
    next.into_iter().map(|n| n.unwrap_or_default()).collect()
}

/// `Some(target)` when the target does not raise the namespace (safe to write at once).
fn lowered(s: &Share, target: Milli) -> Option<Milli> {
    match s.spec_hard {
        Some(h) if target <= h => Some(target),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
