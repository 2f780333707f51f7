//! The desired objects of a bound claim, from small YAML fixtures.
use super::*;
use crate::claim::fixtures::{claim, found, parse};
use crate::claim::validate::decide;
use crate::digest::sha256_hex;

fn text(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect()
}

#[test]
fn the_binding_secret_follows_the_service_binding_layout() {
    let f = found();
    let permit = decide(&claim(), &f).expect("permitted");
    let out = build(&claim(), &permit, f.provider.as_ref(), Some("t0k3n"));
    let s = &out.secret;
    assert_eq!(s.metadata.name.as_deref(), Some("sso-binding"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("sotttt-prod"));
    assert_eq!(s.type_.as_deref(), Some("servicebinding.io/oidc"));
    let data = text(s);
    assert_eq!(data["type"], "oidc");
    assert_eq!(data["provider"], "sso");
    assert_eq!(data["host"], "keycloak.platform-sso.svc");
    assert_eq!(data["port"], "8443");
    assert_eq!(data["uri"], "https://keycloak.platform-sso.svc:8443");
    assert_eq!(
        data["issuer"],
        "https://sso.haiphong.gov.vn/realms/haiphong"
    );
    assert_eq!(data["token"], "t0k3n");
    assert_eq!(data.len(), 7);
    let labels = s.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "citycloud-operator");
    assert_eq!(labels["citycloud.io/tenant"], "sotttt");
    assert_eq!(labels["citycloud.io/claim"], "sotttt-prod.sso");
}

#[test]
fn without_per_claim_credentials_there_is_no_token_and_binding_data_cannot_override() {
    let mut f = found();
    if let Some(s) = f.service.as_mut() {
        // The CRD forbids it; the build does not rely on that.
        s.spec
            .binding_data
            .insert("host".into(), "evil.example".into());
    }
    let permit = decide(&claim(), &f).expect("permitted");
    let data = text(&build(&claim(), &permit, None, None).secret);
    assert!(!data.contains_key("token"));
    assert_eq!(data["host"], "keycloak.platform-sso.svc");
}

#[test]
fn the_provider_policy_admits_the_claims_namespace_to_the_services_pods_on_its_target_port() {
    let f = found();
    let permit = decide(&claim(), &f).expect("permitted");
    let out = build(&claim(), &permit, f.provider.as_ref(), None);
    let p = &out.provider_policy;
    assert_eq!(p.metadata.namespace.as_deref(), Some("platform-sso"));
    assert_eq!(
        p.metadata.name.as_deref(),
        Some("citycloud-claim-sotttt-prod.sso")
    );
    let spec = p.spec.clone().expect("spec");
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    assert_eq!(
        spec.pod_selector.and_then(|s| s.match_labels),
        Some(BTreeMap::from([("app".into(), "keycloak".into())]))
    );
    let rule = &spec.ingress.expect("ingress")[0];
    let from = &rule.from.clone().expect("from")[0];
    assert_eq!(
        from.namespace_selector.clone().and_then(|s| s.match_labels),
        Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".into(),
            "sotttt-prod".into()
        )]))
    );
    let port = &rule.ports.clone().expect("ports")[0];
    assert_eq!(port.port, Some(IntOrString::String("https".into())));
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
}

#[test]
fn without_the_service_the_policy_admits_every_pod_on_the_endpoint_port() {
    let f = found();
    let permit = decide(&claim(), &f).expect("permitted");
    let spec = build(&claim(), &permit, None, None)
        .provider_policy
        .spec
        .expect("spec");
    assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
    let port = &spec.ingress.expect("ingress")[0]
        .ports
        .clone()
        .expect("ports")[0];
    assert_eq!(port.port, Some(IntOrString::Int(8443)));
}

#[test]
fn a_restricted_tenant_gets_an_egress_policy_to_the_service() {
    let f = found();
    let permit = decide(&claim(), &f).expect("permitted");
    let out = build(&claim(), &permit, f.provider.as_ref(), None);
    let e = out.egress_policy.clone().expect("egress: Restricted");
    assert_eq!(e.metadata.namespace.as_deref(), Some("sotttt-prod"));
    let spec = e.spec.expect("spec");
    assert_eq!(spec.policy_types, Some(vec!["Egress".to_string()]));
    let rule = &spec.egress.expect("egress")[0];
    let to = &rule.to.clone().expect("to")[0];
    assert_eq!(
        to.namespace_selector.clone().and_then(|s| s.match_labels),
        Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".into(),
            "platform-sso".into()
        )]))
    );
    assert_eq!(out.policies().count(), 2);

    let mut open = found();
    if let Some(t) = open.tenant.as_mut() {
        t.spec.network.egress = Egress::Open;
    }
    let permit = decide(&claim(), &open).expect("permitted");
    assert!(build(&claim(), &permit, None, None).egress_policy.is_none());
}

#[test]
fn claim_ids_fit_a_label_value_and_stay_distinct() {
    assert_eq!(claim_id("sotttt-prod", "sso"), "sotttt-prod.sso");
    let long = "x".repeat(200);
    let a = claim_id("sotttt-prod", &long);
    let b = claim_id("sotttt-prod", &format!("{long}y"));
    assert!(a.len() <= 63 && b.len() <= 63, "{a}");
    assert_ne!(a, b);
    assert!(a.starts_with("sotttt-prod.xxx"));
    assert!(a.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()));
    assert_eq!(a, claim_id("sotttt-prod", &long), "stable");
    assert_eq!(consumer_key("sotttt-prod", &long).len(), 12 + 200);
    let c: SharedServiceClaim = parse(&format!(
        "{{apiVersion: citycloud.io/v1alpha1, kind: SharedServiceClaim, metadata: {{name: {long}, namespace: a-prod}}, spec: {{service: sso}}}}"
    ));
    assert!(policy_name(&c).len() <= 253);
}

#[test]
fn long_claim_names_sharing_a_prefix_get_different_ids_with_128_bits_of_sha256() {
    // Two tenants' namespaces of 63 characters that share their first 40: everything a
    // shortened id keeps of the name itself is the same, only the hash tells them apart.
    let stem = "a".repeat(40);
    let (ns1, ns2) = (
        format!("{stem}{}", "b".repeat(23)),
        format!("{stem}{}", "c".repeat(23)),
    );
    let (one, two) = (claim_id(&ns1, "lgsp"), claim_id(&ns2, "lgsp"));
    assert_ne!(one, two);
    assert_eq!(one[..30], two[..30], "the same prefix");
    for id in [&one, &two] {
        assert!(id.len() <= 63, "{id}");
        let hash = id.rsplit('-').next().unwrap_or_default();
        assert_eq!(hash.len(), 32, "128 bits in hex: {id}");
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }
    // Stable across releases: objects are found again by it after an upgrade.
    assert_eq!(
        claim_id(&"x".repeat(63), "lgsp"),
        format!("{}-38cfd52cc96f9a00a56b09367a2ec09a", "x".repeat(30))
    );
    assert_eq!(
        claim_id("sotttt-prod", &"x".repeat(200)),
        "sotttt-prod.xxxxxxxxxxxxxxxxxx-17a77038666ea0f1925ea327fbe01f6d"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // The id before SHA-256 is still known, to find what was labelled with it.
    assert_eq!(legacy_claim_id("a-prod", "sso"), None);
    let legacy = legacy_claim_id(&ns1, "lgsp").unwrap_or_default();
    assert_ne!(legacy, one);
    assert_eq!(legacy.len(), 63);
}
