//! The desired objects of a Tenant, from small YAML fixtures.
use super::*;

fn tenant(yaml: &str) -> Tenant {
    let mut t: Tenant = serde_yaml_ng::from_str(yaml).expect("fixture");
    t.metadata.uid = Some("uid-1".into());
    t
}

fn profile(yaml: &str) -> QuotaProfile {
    serde_yaml_ng::from_str(yaml).expect("fixture")
}

const SOTTTT: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: Tenant
metadata: {name: sotttt}
spec:
  displayName: "Sở Thông tin và Truyền thông"
  owners: [{kind: Group, name: sotttt-admins}]
  viewers: [{kind: User, name: thanh-tra}]
  environments: [{name: prod}, {name: staging, quotaProfile: small}]
  quotaProfile: medium
  quotaOverrides: {namespace: {requests.cpu: "6"}}
  network: {egress: Restricted}
"#;

const MEDIUM: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: QuotaProfile
metadata: {name: medium}
spec:
  namespace: {requests.cpu: "4", pods: "50"}
  limits: {default: {cpu: 500m}, defaultRequest: {cpu: 100m}}
"#;

const SMALL: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: QuotaProfile
metadata: {name: small}
spec:
  namespace: {requests.cpu: "1", pods: "10"}
"#;

fn inputs(profiles: &[&str]) -> Inputs {
    Inputs {
        profiles: profiles
            .iter()
            .map(|y| profile(y))
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
            .collect(),
        ancestor_owners: vec![],
        allocations: BTreeMap::new(),
        operator: None,
    }
}

fn hard(r: &NamespaceResources) -> BTreeMap<String, String> {
    r.quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

#[test]
fn one_namespace_per_environment_labelled_for_its_tenant_and_pod_security() {
    let out = build(&tenant(SOTTTT), &inputs(&[MEDIUM, SMALL]));
    let names: Vec<_> = out
        .namespaces
        .iter()
        .map(|n| n.namespace.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["sotttt-prod", "sotttt-staging"]);
    let labels = out.namespaces[1]
        .namespace
        .metadata
        .labels
        .clone()
        .unwrap_or_default();
    assert_eq!(labels[TENANT], "sotttt");
    assert_eq!(labels[ENVIRONMENT], "staging");
    assert_eq!(labels[MANAGED_BY], "citycloud-operator");
    assert_eq!(labels[POD_SECURITY_ENFORCE], "restricted");
    let annotations = out.namespaces[0]
        .namespace
        .metadata
        .annotations
        .clone()
        .unwrap_or_default();
    assert_eq!(
        annotations[crate::api::annotations::DISPLAY_NAME],
        "Sở Thông tin và Truyền thông"
    );
}

#[test]
fn quota_comes_from_the_environment_profile_with_overrides_merged() {
    let out = build(&tenant(SOTTTT), &inputs(&[MEDIUM, SMALL]));
    assert_eq!(
        hard(&out.namespaces[0]),
        BTreeMap::from([
            // maxClaims: every namespace's cap (the tenant budget splits it).
            (
                "count/sharedserviceclaims.citycloud.io".into(),
                "100".into()
            ),
            ("pods".into(), "50".into()),
            ("requests.cpu".into(), "6".into())
        ])
    );
    assert_eq!(
        hard(&out.namespaces[1]),
        BTreeMap::from([
            (
                "count/sharedserviceclaims.citycloud.io".into(),
                "100".into()
            ),
            ("pods".into(), "10".into()),
            ("requests.cpu".into(), "6".into())
        ])
    );
    assert!(
        out.namespaces[0].limit_range.is_some(),
        "medium has container limits"
    );
    assert!(out.namespaces[1].limit_range.is_none(), "small has none");
}

#[test]
fn a_missing_profile_or_suspension_allows_no_pods() {
    let out = build(&tenant(SOTTTT), &inputs(&[SMALL]));
    assert_eq!(
        hard(&out.namespaces[0]),
        BTreeMap::from([("pods".into(), "0".into())])
    );
    let mut suspended = tenant(SOTTTT);
    suspended.spec.suspended = true;
    let out = build(&suspended, &inputs(&[MEDIUM, SMALL]));
    assert!(out.namespaces.iter().all(|n| hard(n)["pods"] == "0"));
    assert_eq!(
        hard(&out.namespaces[0])["requests.cpu"],
        "6",
        "other limits stay"
    );
}

#[test]
fn owners_members_viewers_get_admin_edit_view() {
    let out = build(&tenant(SOTTTT), &inputs(&[MEDIUM, SMALL]));
    let rbs: Vec<_> = out.namespaces[0]
        .role_bindings
        .iter()
        .map(|rb| {
            (
                rb.metadata.name.clone().unwrap_or_default(),
                rb.role_ref.name.clone(),
            )
        })
        .collect();
    assert_eq!(
        rbs,
        [
            ("citycloud-owners".to_string(), "admin".to_string()),
            ("citycloud-viewers".into(), "view".into())
        ],
        "no members binding when there are no members"
    );
    let subjects = out.namespaces[0].role_bindings[0]
        .subjects
        .clone()
        .unwrap_or_default();
    assert_eq!(subjects[0].kind, "Group");
    assert_eq!(subjects[0].name, "sotttt-admins");
}

#[test]
fn strict_ingress_and_restricted_egress_make_two_policies() {
    let out = build(&tenant(SOTTTT), &inputs(&[MEDIUM, SMALL]));
    let names: Vec<_> = out.namespaces[0]
        .network_policies
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, [INGRESS_POLICY, EGRESS_POLICY]);
    let mut open = tenant(SOTTTT);
    open.spec.network.ingress = Ingress::Open;
    open.spec.network.egress = Egress::Open;
    assert!(
        build(&open, &inputs(&[MEDIUM])).namespaces[0]
            .network_policies
            .is_empty()
    );
}

#[test]
fn the_tenant_can_read_only_itself() {
    let out = build(&tenant(SOTTTT), &inputs(&[MEDIUM, SMALL]));
    let rule = &out.reader_role.rules.clone().unwrap_or_default()[0];
    assert_eq!(rule.resource_names, Some(vec!["sotttt".to_string()]));
    assert!(
        !rule.verbs.contains(&"list".to_string()),
        "list cannot be limited to one name"
    );
    assert_eq!(
        out.reader_binding
            .subjects
            .clone()
            .unwrap_or_default()
            .len(),
        2
    );
    assert_eq!(
        out.reader_role
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()[0]
            .name,
        "sotttt"
    );
}

#[test]
fn node_placement_becomes_namespace_scheduling_annotations() {
    let mut t = tenant(SOTTTT);
    t.spec.node_placement = serde_json::from_value(serde_json::json!({
        "nodeSelector": {"citycloud.io/pool": "police"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "police", "effect": "NoSchedule"}]
    }))
    .expect("placement");
    let ns = &build(&t, &inputs(&[MEDIUM])).namespaces[0].namespace;
    let annotations = ns.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations[NODE_SELECTOR_ANNOTATION],
        "citycloud.io/pool=police"
    );
    assert!(annotations[TOLERATIONS_ANNOTATION].contains("\"dedicated\""));
    // Its pods may tolerate its own pool's taint, and nobody else's.
    let whitelist: Vec<k8s_openapi::api::core::v1::Toleration> =
        serde_json::from_str(&annotations[TOLERATIONS_WHITELIST_ANNOTATION]).expect("JSON");
    let taint = |value: &str| {
        serde_json::from_value(serde_json::json!(
            {"key": "dedicated", "operator": "Equal", "value": value, "effect": "NoSchedule"}
        ))
        .expect("toleration")
    };
    assert!(super::super::placement::admits(
        &whitelist,
        &taint("police")
    ));
    assert!(!super::super::placement::admits(&whitelist, &taint("fire")));
}

#[test]
fn every_namespace_gets_a_toleration_whitelist_even_without_dedicated_nodes() {
    let t = tenant(SOTTTT);
    assert!(t.spec.node_placement.is_none());
    for ns in build(&t, &inputs(&[MEDIUM, SMALL])).namespaces {
        let annotations = ns.namespace.metadata.annotations.unwrap_or_default();
        let whitelist: Vec<k8s_openapi::api::core::v1::Toleration> =
            serde_json::from_str(&annotations[TOLERATIONS_WHITELIST_ANNOTATION]).expect("JSON");
        // Empty would mean "any toleration": the whitelist must list something.
        assert!(!whitelist.is_empty());
        assert!(
            whitelist.iter().all(|w| w
                .key
                .as_deref()
                .is_some_and(|k| k.starts_with("node.kubernetes.io/"))),
            "only the taints Kubernetes makes every pod tolerate: {whitelist:?}"
        );
        assert!(!annotations.contains_key(NODE_SELECTOR_ANNOTATION));
        assert!(!annotations.contains_key(TOLERATIONS_ANNOTATION));
    }
}

#[test]
fn the_operator_binds_its_secrets_role_in_each_namespace_when_it_runs_in_cluster() {
    let mut i = inputs(&[MEDIUM, SMALL]);
    i.operator = Some(OperatorIdentity {
        namespace: "citycloud-system".into(),
        service_account: "citycloud-operator".into(),
        secrets_cluster_role: "citycloud-operator-secrets".into(),
    });
    let out = build(&tenant(SOTTTT), &i);
    let rb = out.namespaces[1]
        .role_bindings
        .iter()
        .find(|rb| rb.metadata.name.as_deref() == Some(OPERATOR_BINDING))
        .expect("binding");
    assert_eq!(rb.role_ref.name, "citycloud-operator-secrets");
    let subject = &rb.subjects.clone().unwrap_or_default()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.namespace.as_deref()),
        ("ServiceAccount", Some("citycloud-system"))
    );
}

#[test]
fn namespaces_carry_their_tenants_uid_and_network_mode_for_the_guard_rails() {
    let t = tenant(SOTTTT);
    let r = build(&t, &inputs(&[MEDIUM, SMALL]));
    let ns = &r.namespaces[0].namespace;
    let annotations = ns.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations["citycloud.io/tenant-uid"], "uid-1");
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["citycloud.io/ingress"], "Strict");
    assert_eq!(labels["citycloud.io/egress"], "Restricted");
}

#[test]
fn a_retained_namespace_quota_admits_nothing_new_for_every_resource_it_limited() {
    let q = frozen_quota(
        "a",
        "a-dev",
        &["requests.cpu".into(), "limits.memory".into()],
    );
    let hard = q.spec.and_then(|s| s.hard).unwrap_or_default();
    for r in [
        "requests.cpu",
        "limits.memory",
        "pods",
        "persistentvolumeclaims",
        "count/sharedserviceclaims.citycloud.io",
    ] {
        assert_eq!(hard.get(r).map(|q| q.0.as_str()), Some("0"), "{r}");
    }
    assert_eq!(q.metadata.name.as_deref(), Some(QUOTA));
}

#[test]
fn only_the_owners_may_approve_requests_under_the_tenant_and_only_under_it() {
    let t = tenant(SOTTTT);
    let out = build(&t, &inputs(&[MEDIUM, SMALL]));
    let rule = &out.approver_role.rules.clone().unwrap_or_default()[0];
    assert_eq!(rule.verbs, ["approve"]);
    assert_eq!(rule.resource_names, Some(vec!["sotttt".to_string()]));
    assert_eq!(
        out.approver_role.metadata.name.as_deref(),
        Some("citycloud:tenant:sotttt:approvers")
    );
    let subjects: Vec<String> = out
        .approver_binding
        .subjects
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let owners: Vec<String> = t.spec.owners.iter().map(|o| o.name.clone()).collect();
    assert_eq!(subjects, owners);
}
