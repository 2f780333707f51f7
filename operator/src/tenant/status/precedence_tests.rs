//! `conditions`: which finding a Tenant's `Ready` reports when several hold at once. A person
//! reading `kubectl describe tenant` sees one reason on Ready: the first failing part in the
//! order namespaces → RBAC → quota → network → node placement, then a parent problem, then
//! suspension; a used-up budget alone never makes a tenant un-Ready.
use super::*;

fn tenant(suspended: bool) -> Tenant {
    let mut t: Tenant = serde_yaml_ng::from_str(&format!(
        r#"
apiVersion: citycloud.io/v1alpha1
kind: Tenant
metadata: {{name: so-y-te}}
spec:
  displayName: Sở Y tế
  owners: [{{kind: Group, name: so-y-te-admins}}]
  suspended: {suspended}
"#
    ))
    .expect("fixture");
    t.metadata.uid = Some("uid-1".into());
    t
}

/// Findings with nothing wrong: two namespaces, all in place.
fn fine<'a>(namespaces: &'a [String]) -> Findings<'a> {
    Findings {
        conflicts: &[],
        excess: None,
        missing_profiles: &[],
        parent_problem: None,
        namespaces,
        awaiting_quota: &[],
        exhausted: Vec::new(),
        overcommitted: &[],
        placement: None,
    }
}

fn two() -> Vec<String> {
    vec!["so-y-te-prod".into(), "so-y-te-dev".into()]
}

fn conflict() -> Vec<Conflict> {
    vec![Conflict {
        namespace: "so-y-te-dev".into(),
        owner: Some("so-tai-chinh".into()),
        retained: false,
    }]
}

fn excess() -> Excess {
    Excess {
        max: 1,
        listed: 2,
        profile: "small".into(),
        skipped: vec!["so-y-te-dev".into()],
    }
}

fn get<'a>(conds: &'a [Cond], type_: &str) -> &'a Cond {
    conds
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no condition {type_} in {conds:?}"))
}

fn ready(conds: &[Cond]) -> (bool, &str) {
    let r = get(conds, cond::READY);
    (r.ok, r.reason.as_str())
}

#[test]
fn all_in_place_is_ready_and_the_conditions_come_in_a_fixed_order() {
    let ns = two();
    let conds = conditions(&tenant(false), &fine(&ns));
    assert_eq!(ready(&conds), (true, "Provisioned"));
    assert_eq!(get(&conds, cond::READY).message, "2 namespace(s) ready");
    let types: Vec<&str> = conds.iter().map(|c| c.type_).collect();
    assert_eq!(
        types,
        [
            cond::READY,
            cond::NAMESPACES_READY,
            cond::RBAC_READY,
            cond::QUOTA_READY,
            cond::NETWORK_READY
        ],
        "NodePlacementReady only for a tenant with a nodePlacement"
    );
}

#[test]
fn ready_repeats_the_first_failing_part_in_order_namespaces_rbac_quota() {
    let ns = two();
    let conflicts = conflict();
    let awaiting = vec!["so-y-te-prod".to_string()];
    let missing = vec!["large".to_string()];
    let all_three = Findings {
        conflicts: &conflicts,
        awaiting_quota: &awaiting,
        missing_profiles: &missing,
        ..fine(&ns)
    };
    let conds = conditions(&tenant(false), &all_three);
    assert_eq!(ready(&conds), (false, reason::NAMESPACE_CONFLICT));
    assert_eq!(
        get(&conds, cond::READY).message,
        get(&conds, cond::NAMESPACES_READY).message,
        "Ready says what the failing part says"
    );
    // Each part still reports its own finding.
    assert_eq!(get(&conds, cond::RBAC_READY).reason, "AwaitingQuota");
    assert_eq!(
        get(&conds, cond::QUOTA_READY).reason,
        "QuotaProfileNotFound"
    );

    let rbac_and_quota = Findings {
        awaiting_quota: &awaiting,
        missing_profiles: &missing,
        ..fine(&ns)
    };
    let conds = conditions(&tenant(false), &rbac_and_quota);
    assert_eq!(ready(&conds), (false, "AwaitingQuota"));

    let quota_only = Findings {
        missing_profiles: &missing,
        ..fine(&ns)
    };
    let conds = conditions(&tenant(false), &quota_only);
    assert_eq!(ready(&conds), (false, "QuotaProfileNotFound"));
    assert!(
        get(&conds, cond::READY)
            .message
            .contains("QuotaProfile large does not exist")
    );
}

#[test]
fn a_conflict_is_reported_before_too_many_environments() {
    let ns = two();
    let conflicts = conflict();
    let excess = excess();
    let both = Findings {
        conflicts: &conflicts,
        excess: Some(&excess),
        ..fine(&ns)
    };
    let conds = conditions(&tenant(false), &both);
    assert_eq!(
        get(&conds, cond::NAMESPACES_READY).reason,
        reason::NAMESPACE_CONFLICT
    );
    assert_eq!(ready(&conds), (false, reason::NAMESPACE_CONFLICT));

    let excess_only = Findings {
        excess: Some(&excess),
        ..fine(&ns)
    };
    let conds = conditions(&tenant(false), &excess_only);
    assert_eq!(ready(&conds), (false, reason::TOO_MANY_ENVIRONMENTS));
    assert!(get(&conds, cond::READY).message.contains("maxEnvironments"));
}

#[test]
fn a_used_up_budget_shows_on_quota_but_leaves_the_tenant_ready() {
    let ns = two();
    let exhausted = Findings {
        exhausted: vec!["requests.cpu: all 4 of the tenant budget is in use".into()],
        ..fine(&ns)
    };
    let conds = conditions(&tenant(false), &exhausted);
    let quota = get(&conds, cond::QUOTA_READY);
    assert_eq!(
        (quota.ok, quota.reason.as_str()),
        (false, "BudgetExhausted")
    );
    assert_eq!(ready(&conds), (true, "Provisioned"));

    // A missing profile is the quota finding to report, not the budget.
    let missing = vec!["large".to_string()];
    let both = Findings {
        missing_profiles: &missing,
        ..exhausted
    };
    let conds = conditions(&tenant(false), &both);
    assert_eq!(
        get(&conds, cond::QUOTA_READY).reason,
        "QuotaProfileNotFound"
    );
    assert_eq!(ready(&conds), (false, "QuotaProfileNotFound"));
}

#[test]
fn a_failing_part_comes_before_a_parent_problem_which_comes_before_suspension() {
    let ns = two();
    let missing_parent = ParentProblem::NotFound("so-khong-co".into());
    let cycle = ParentProblem::Cycle(vec!["so-y-te".into(), "so-a".into(), "so-y-te".into()]);
    let awaiting = vec!["so-y-te-prod".to_string()];

    let parent_and_part = Findings {
        parent_problem: Some(&missing_parent),
        awaiting_quota: &awaiting,
        ..fine(&ns)
    };
    assert_eq!(
        ready(&conditions(&tenant(true), &parent_and_part)),
        (false, "AwaitingQuota")
    );

    let parent = Findings {
        parent_problem: Some(&missing_parent),
        ..fine(&ns)
    };
    let conds = conditions(&tenant(true), &parent);
    assert_eq!(ready(&conds), (false, "ParentNotFound"), "before Suspended");
    assert!(get(&conds, cond::READY).message.contains("so-khong-co"));

    let cyclic = Findings {
        parent_problem: Some(&cycle),
        ..fine(&ns)
    };
    let conds = conditions(&tenant(false), &cyclic);
    assert_eq!(ready(&conds), (false, "ParentCycle"));
    assert!(
        get(&conds, cond::READY)
            .message
            .contains("so-y-te → so-a → so-y-te")
    );
}

#[test]
fn a_suspended_tenant_is_not_ready_while_its_quota_is_as_intended() {
    let ns = two();
    let conds = conditions(&tenant(true), &fine(&ns));
    assert_eq!(ready(&conds), (false, "Suspended"));
    let quota = get(&conds, cond::QUOTA_READY);
    assert_eq!((quota.ok, quota.reason.as_str()), (true, "Suspended"));
    // Suspension is the quota finding only when nothing is wrong with the quota itself.
    let missing = vec!["large".to_string()];
    let conds = conditions(
        &tenant(true),
        &Findings {
            missing_profiles: &missing,
            ..fine(&ns)
        },
    );
    assert_eq!(
        get(&conds, cond::QUOTA_READY).reason,
        "QuotaProfileNotFound"
    );
    assert_eq!(ready(&conds), (false, "QuotaProfileNotFound"));
}

#[test]
fn only_unenforced_node_placement_makes_the_tenant_unready() {
    let ns = two();
    let not_enforced = Cond::fail(
        cond::NODE_PLACEMENT_READY,
        reason::NODE_PLACEMENT_NOT_ENFORCED,
        "the API server does not run PodNodeSelector",
    );
    let conds = conditions(
        &tenant(false),
        &Findings {
            placement: Some(&not_enforced),
            ..fine(&ns)
        },
    );
    assert_eq!(ready(&conds), (false, reason::NODE_PLACEMENT_NOT_ENFORCED));
    assert_eq!(get(&conds, cond::NODE_PLACEMENT_READY), &not_enforced);

    // Not knowing yet is not news: Ready stays, the condition is still shown.
    let unverified = Cond::fail(
        cond::NODE_PLACEMENT_READY,
        reason::NODE_PLACEMENT_UNVERIFIED,
        "checking",
    );
    let conds = conditions(
        &tenant(false),
        &Findings {
            placement: Some(&unverified),
            ..fine(&ns)
        },
    );
    assert_eq!(ready(&conds), (true, "Provisioned"));
    assert_eq!(conds.last(), Some(&unverified));

    // An earlier part still comes first.
    let conflicts = conflict();
    let conds = conditions(
        &tenant(false),
        &Findings {
            conflicts: &conflicts,
            placement: Some(&not_enforced),
            ..fine(&ns)
        },
    );
    assert_eq!(ready(&conds), (false, reason::NAMESPACE_CONFLICT));
}

#[test]
fn children_over_the_budget_fail_quota_and_ready_before_a_used_up_budget() {
    let ns = two();
    let over = vec![
        "requests.cpu: the children's budgets add up to 5, over this tenant's budget of 4".into(),
    ];
    let overcommitted = Findings {
        overcommitted: &over,
        exhausted: vec!["requests.cpu: all 0 of the tenant budget is in use".into()],
        ..fine(&ns)
    };
    let conds = conditions(&tenant(false), &overcommitted);
    let quota = get(&conds, cond::QUOTA_READY);
    assert_eq!(
        (quota.ok, quota.reason.as_str()),
        (false, reason::BUDGET_OVERCOMMITTED)
    );
    assert!(quota.message.contains("add up to 5"), "{}", quota.message);
    // A platform engineer's mistake to fix, unlike a used-up budget: the tenant is not Ready.
    assert_eq!(ready(&conds), (false, reason::BUDGET_OVERCOMMITTED));
}
