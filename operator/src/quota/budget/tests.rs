use super::*;

fn m(v: &str) -> Milli {
    Milli::parse(v).expect("quantity")
}

fn share(ns: &str, used: &str, spec: Option<&str>, status: Option<&str>, demand: bool) -> Share {
    Share {
        namespace: ns.into(),
        cap: None,
        used: m(used),
        spec_hard: spec.map(m),
        status_hard: status.map(m),
        demand: if demand { 2 } else { 0 },
        held: false,
    }
}

fn sum(v: &[Milli]) -> i128 {
    v.iter().map(|x| x.0).sum()
}

#[test]
fn a_new_tenant_splits_its_budget_evenly() {
    let shares = [
        share("a", "0", None, None, false),
        share("b", "0", None, None, false),
    ];
    assert_eq!(next_hard(m("1"), 1, &shares), [m("500m"), m("500m")]);
}

#[test]
fn demand_gets_the_headroom_but_only_after_the_other_gives_it_back() {
    // a is full and its controller is failing to create pods; b is idle.
    let shares = [
        share("a", "500m", Some("500m"), Some("500m"), true),
        share("b", "0", Some("500m"), Some("500m"), false),
    ];
    assert_eq!(targets(m("1"), 1, &shares), [m("1"), m("0")]);
    // b is lowered at once, a may not grow while b's old hard is still enforced.
    assert_eq!(next_hard(m("1"), 1, &shares), [m("500m"), m("0")]);
    // Once kube-controller-manager has synced b's status.hard, a gets everything.
    let synced = [
        share("a", "500m", Some("500m"), Some("500m"), true),
        share("b", "0", Some("0"), Some("0"), false),
    ];
    assert_eq!(next_hard(m("1"), 1, &synced), [m("1"), m("0")]);
}

#[test]
fn the_hards_never_sum_over_the_budget_whatever_the_state() {
    // Exhaustive over small states: used, spec and status hards in tenths of a CPU.
    let tenths = |n: i128| Milli(n * 100);
    for ua in 0..=4 {
        for ub in 0..=4 {
            for sa in 0..=6 {
                for sb in 0..=6 {
                    for (da, db, ha, hb) in
                        [(false, false), (true, false), (false, true), (true, true)]
                            .into_iter()
                            .flat_map(|(da, db)| {
                                [(false, false), (true, false), (false, true)]
                                    .map(|(ha, hb)| (da, db, ha, hb))
                            })
                    {
                        let a = Share {
                            namespace: "a".into(),
                            cap: None,
                            used: tenths(ua),
                            spec_hard: Some(tenths(sa)),
                            status_hard: Some(tenths(sa)),
                            demand: da as u8 * 2,
                            held: ha,
                        };
                        let b = Share {
                            namespace: "b".into(),
                            cap: None,
                            used: tenths(ub),
                            spec_hard: Some(tenths(sb)),
                            status_hard: Some(tenths(sb)),
                            demand: db as u8,
                            held: hb,
                        };
                        let budget = tenths(8);
                        let before = ua.max(sa) + ub.max(sb);
                        let next = next_hard(budget, 1, &[a.clone(), b.clone()]);
                        // What each namespace can admit from now on: its new hard, or its old
                        // status.hard until that is synced, never less than it uses.
                        let bound = [
                            a.used.max(next[0]).max(a.status_hard.unwrap_or_default()),
                            b.used.max(next[1]).max(b.status_hard.unwrap_or_default()),
                        ];
                        let after = sum(&bound);
                        assert!(
                            after <= budget.0.max(before * 100),
                            "{ua} {ub} {sa} {sb} {da} {db}: {next:?}"
                        );
                        if before * 100 <= budget.0 {
                            assert!(after <= budget.0, "{ua} {ub} {sa} {sb}: {next:?}");
                        }
                        // A held namespace's hard is never written differently.
                        for (held, share, n) in [(ha, &a, next[0]), (hb, &b, next[1])] {
                            if held {
                                assert_eq!(Some(n), share.spec_hard, "{ua} {ub} {sa} {sb} held");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_budget_lowered_below_use_freezes_every_namespace_at_its_use() {
    let shares = [
        share("a", "3", Some("4"), Some("4"), false),
        share("b", "2", Some("4"), Some("4"), false),
    ];
    assert_eq!(
        next_hard(m("4"), 1, &shares),
        [m("3"), m("2")],
        "no new use, nothing evicted"
    );
}

#[test]
fn count_resources_split_in_whole_units_and_caps_spill_to_others() {
    let shares = [
        share("a", "0", None, None, false),
        share("b", "0", None, None, false),
        share("c", "0", None, None, false),
    ];
    assert_eq!(next_hard(m("4"), 1000, &shares), [m("2"), m("1"), m("1")]);
    let mut capped = shares.clone();
    capped[0].cap = Some(m("0"));
    assert_eq!(next_hard(m("4"), 1000, &capped), [m("0"), m("2"), m("2")]);
}

#[test]
fn a_refused_controller_outranks_a_namespace_that_merely_filled_up() {
    // a just shrank from the whole budget and is still marked full; b's ReplicaSet was refused.
    let mut a = share("a", "800m", Some("1"), Some("1"), false);
    a.demand = 1;
    let b = share("b", "0", Some("0"), Some("0"), true);
    assert_eq!(
        targets(m("1"), 1, &[a, b]),
        [m("800m"), m("200m")],
        "all the freed budget to the waiting namespace"
    );
}

#[test]
fn a_namespace_whose_usage_just_rose_keeps_its_hard_and_the_move_waits() {
    // b filled up and its pods are still pouring in; a is idle and could give b everything.
    let mut b = share("b", "500m", Some("500m"), Some("500m"), true);
    b.held = true;
    let a = share("a", "0", Some("500m"), Some("500m"), false);
    let next = next_hard(m("1"), 1, &[a.clone(), b.clone()]);
    assert_eq!(
        next,
        [m("0"), m("500m")],
        "a gives back, b is not raised yet"
    );
    assert_ne!(
        next,
        targets(m("1"), 1, &[a.clone(), b.clone()]),
        "still settling"
    );
    // a held instead: it is not lowered, so b cannot be raised.
    let (mut a, mut b) = (a, b);
    (a.held, b.held) = (true, false);
    assert_eq!(next_hard(m("1"), 1, &[a, b]), [m("500m"), m("500m")]);
}
