//! The toleration whitelist as PodTolerationRestriction reads it, and how a dry-run's answer
//! becomes a verdict.
use super::*;

fn toleration(v: serde_json::Value) -> Toleration {
    serde_json::from_value(v).expect("toleration")
}

fn police() -> NodePlacement {
    serde_json::from_value(json!({
        "nodeSelector": {"citycloud.io/pool": "police"},
        "tolerations": [{"key": "citycloud.io/pool", "operator": "Equal", "value": "police", "effect": "NoSchedule"}]
    }))
    .expect("placement")
}

/// What every pod carries after DefaultTolerationSeconds and PodTolerationRestriction.
fn everyday() -> Vec<Toleration> {
    vec![
        toleration(
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        ),
        toleration(
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        ),
        toleration(
            json!({"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        ),
    ]
}

#[test]
fn a_tenant_without_dedicated_nodes_tolerates_no_pool_taint_but_keeps_what_every_pod_carries() {
    let w = whitelist(None);
    assert!(!w.is_empty(), "an empty whitelist would allow everything");
    for t in everyday() {
        assert!(admits(&w, &t), "{t:?}");
    }
    for pool in [
        json!({"key": "citycloud.io/pool", "operator": "Equal", "value": "police", "effect": "NoSchedule"}),
        json!({"key": "citycloud.io/pool", "value": "police", "effect": "NoSchedule"}),
        json!({"key": "citycloud.io/pool", "operator": "Exists"}),
        json!({"operator": "Exists"}),
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"}),
    ] {
        assert!(!admits(&w, &toleration(pool.clone())), "{pool}");
    }
}

#[test]
fn a_tenant_with_dedicated_nodes_tolerates_its_own_pool_only() {
    let w = whitelist(Some(&police()));
    for own in [
        json!({"key": "citycloud.io/pool", "operator": "Equal", "value": "police", "effect": "NoSchedule"}),
        // No operator means Equal: admitted as well.
        json!({"key": "citycloud.io/pool", "value": "police", "effect": "NoSchedule"}),
    ] {
        assert!(admits(&w, &toleration(own.clone())), "{own}");
    }
    for other in [
        json!({"key": "citycloud.io/pool", "operator": "Equal", "value": "fire", "effect": "NoSchedule"}),
        json!({"key": "citycloud.io/pool", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "citycloud.io/pool", "operator": "Equal", "value": "police", "effect": "NoExecute"}),
        json!({"key": "citycloud.io/pool", "operator": "Equal", "value": "police"}),
    ] {
        assert!(!admits(&w, &toleration(other.clone())), "{other}");
    }
    for t in everyday() {
        assert!(admits(&w, &t), "{t:?}");
    }
}

#[test]
fn a_whitelist_entry_with_toleration_seconds_caps_them() {
    let w = [toleration(
        json!({"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}),
    )];
    let with = |s: Option<i64>| {
        toleration(
            json!({"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": s}),
        )
    };
    assert!(admits(&w, &with(Some(30))));
    assert!(!admits(&w, &with(Some(90))));
    assert!(!admits(&w, &with(None)), "forever is more than 60 s");
    assert!(admits(&[], &with(None)), "an empty whitelist allows all");
}

fn namespace(annotations: &[(&str, String)]) -> Namespace {
    Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some("police-prod".into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn the_probes_break_the_whitelist_and_the_namespace_selector() {
    let ns = namespace(&[
        (
            TOLERATIONS_WHITELIST_ANNOTATION,
            whitelist_annotation(Some(&police())),
        ),
        (NODE_SELECTOR_ANNOTATION, "citycloud.io/pool=police".into()),
    ]);
    let probes = probes(&ns);
    let plugins: Vec<&str> = probes.iter().map(|p| p.0).collect();
    assert_eq!(plugins, ["PodTolerationRestriction", "PodNodeSelector"]);
    let spec = |i: usize| probes[i].1.spec.clone().expect("spec");
    let tolerations = spec(0).tolerations.expect("tolerations");
    assert!(!admits(&whitelist(Some(&police())), &tolerations[0]));
    assert_eq!(
        spec(1).node_selector.expect("selector")["citycloud.io/pool"],
        PROBE_VALUE
    );
    assert_eq!(
        spec(0).security_context.and_then(|s| s.run_as_non_root),
        Some(true),
        "Pod Security restricted must not refuse it first"
    );
}

#[test]
fn no_probe_can_tell_under_a_whitelist_tolerating_everything() {
    let all: NodePlacement =
        serde_json::from_value(json!({"tolerations": [{"operator": "Exists"}]})).expect("p");
    let ns = namespace(&[(
        TOLERATIONS_WHITELIST_ANNOTATION,
        whitelist_annotation(Some(&all)),
    )]);
    assert!(probes(&ns).is_empty());
}

fn refused(code: u16, message: &str) -> Result<Pod, kube::Error> {
    Err(kube::Error::Api(
        kube::core::Status::failure(message, "Forbidden")
            .with_code(code)
            .boxed(),
    ))
}

#[test]
fn a_dry_run_refused_by_the_plugin_means_enforced_and_admitted_means_not() {
    let plugin = "pods \"x\" is forbidden: pod tolerations (possibly merged with namespace default tolerations) conflict with its namespace whitelist";
    assert_eq!(
        classify(refused(403, plugin), TOLERATION_REFUSAL),
        Probe::Refused
    );
    let selector = "pods \"x\" is forbidden: pod node label selector conflicts with its namespace node label selector";
    assert_eq!(
        classify(refused(403, selector), SELECTOR_REFUSAL),
        Probe::Refused
    );
    assert_eq!(
        classify(Ok(Pod::default()), TOLERATION_REFUSAL),
        Probe::Admitted
    );
    // Checks that run after the plugins would have refused: the plugins let it through.
    for later in [
        "pods \"x\" is forbidden: exceeded quota: citycloud-quota, requested: pods=1, used: pods=0, limited: pods=0",
        "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot != true",
        "pods \"x\" is forbidden: maximum cpu usage per Container is 1, but limit is 2",
    ] {
        assert_eq!(
            classify(refused(403, later), TOLERATION_REFUSAL),
            Probe::Admitted,
            "{later}"
        );
    }
    assert_eq!(
        classify(refused(422, "invalid"), TOLERATION_REFUSAL),
        Probe::Admitted
    );
    // Refused before the plugins ran: no verdict.
    let early = "pods \"x\" is forbidden: error looking up service account police-prod/default: serviceaccount \"default\" not found";
    assert!(matches!(
        classify(refused(403, early), TOLERATION_REFUSAL),
        Probe::Unknown(_)
    ));
    let rbac = "pods is forbidden: User \"op\" cannot create resource \"pods\" in API group \"\"";
    assert!(matches!(
        classify(refused(403, rbac), TOLERATION_REFUSAL),
        Probe::Unknown(_)
    ));
}

#[test]
fn not_enforced_names_the_missing_plugins_and_what_they_let_through() {
    let c = condition(
        "police-prod",
        &Verdict::NotEnforced(vec!["PodTolerationRestriction", "PodNodeSelector"]),
    );
    assert!(!c.ok);
    assert_eq!(c.reason, "NodePlacementNotEnforced");
    assert!(
        c.message
            .contains("PodTolerationRestriction, PodNodeSelector"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("--enable-admission-plugins"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("any tenant's pods may tolerate"),
        "{}",
        c.message
    );
    assert!(condition("police-prod", &Verdict::Enforced).ok);
}

#[test]
fn a_verdict_stands_until_the_annotations_change() {
    let v = Verdicts::default();
    v.record("ns", "a".into(), Verdict::Enforced);
    assert_eq!(v.fresh("ns", "a"), Some(Verdict::Enforced));
    assert_eq!(v.fresh("ns", "b"), None, "new annotations: check again");
    assert_eq!(v.fresh("other", "a"), None);
}
