//! Which claims are bound and which refused, and what a refusal says.
use k8s_openapi::api::core::v1::{Namespace, Secret};

use super::*;
use crate::claim::fixtures::{claim, found, parse};

fn refusal(f: &Found) -> Refusal {
    decide(&claim(), f).expect_err("refused")
}

#[test]
fn a_department_claiming_sso_from_prod_is_permitted() {
    let f = found();
    let permit = decide(&claim(), &f).expect("permitted");
    assert_eq!(permit.tenant.name_any(), "sotttt");
    assert_eq!(permit.service.name_any(), "sso");
    assert_eq!(permit.environment, "prod");
}

#[test]
fn a_namespace_of_no_tenant_or_an_orphaned_one_claims_nothing() {
    let mut f = found();
    f.namespace = Some(parse::<Namespace>(
        "{apiVersion: v1, kind: Namespace, metadata: {name: sotttt-prod}}",
    ));
    let r = refusal(&f);
    assert_eq!(r.reason(), "NotATenantNamespace");
    assert!(
        r.message().contains("belongs to no tenant"),
        "{}",
        r.message()
    );

    f.namespace = Some(parse::<Namespace>(
        "{apiVersion: v1, kind: Namespace, metadata: {name: sotttt-prod, labels: {citycloud.io/tenant: sotttt, citycloud.io/orphaned: 'true'}}}",
    ));
    let r = refusal(&f);
    assert_eq!(r.reason(), "NotATenantNamespace");
    assert!(r.message().contains("orphaned"), "{}", r.message());
}

#[test]
fn a_missing_or_deleted_tenant_is_tenant_not_found() {
    let mut f = found();
    f.tenant = None;
    assert_eq!(refusal(&f).reason(), "TenantNotFound");
    let mut f = found();
    if let Some(t) = f.tenant.as_mut() {
        t.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    }
    assert!(refusal(&f).message().contains("being deleted"));
}

#[test]
fn a_suspended_tenant_is_refused_even_when_otherwise_permitted() {
    let mut f = found();
    if let Some(t) = f.tenant.as_mut() {
        t.spec.suspended = true;
    }
    let r = refusal(&f);
    assert_eq!(r.reason(), "TenantSuspended");
    assert!(r.message().contains("sotttt is suspended"));
}

#[test]
fn a_missing_service_is_service_not_found() {
    let mut f = found();
    f.service = None;
    let r = refusal(&f);
    assert_eq!(r.reason(), "ServiceNotFound");
    assert!(r.message().contains("SharedService sso does not exist"));
}

#[test]
fn a_tenant_outside_the_selector_is_not_permitted_and_told_which_selector() {
    let mut f = found();
    if let Some(t) = f.tenant.as_mut() {
        t.metadata.labels = Some([("city.io/level".into(), "ward".into())].into());
    }
    let r = refusal(&f);
    assert_eq!(r.reason(), "NotPermitted");
    assert!(
        r.message().contains("city.io/level=department"),
        "{}",
        r.message()
    );
}

#[test]
fn a_malformed_selector_admits_nobody() {
    let mut f = found();
    if let Some(s) = f.service.as_mut() {
        s.spec.access.tenant_selector =
            parse("{matchExpressions: [{key: a, operator: Near, values: [b]}]}");
    }
    let r = refusal(&f);
    assert_eq!(r.reason(), "NotPermitted");
    assert!(r.message().contains("malformed"));
}

#[test]
fn an_environment_not_listed_is_refused() {
    let mut f = found();
    f.namespace = Some(parse::<Namespace>(
        "{apiVersion: v1, kind: Namespace, metadata: {name: sotttt-staging, labels: {citycloud.io/tenant: sotttt, citycloud.io/environment: staging}}}",
    ));
    let r = refusal(&f);
    assert_eq!(r.reason(), "EnvironmentNotPermitted");
    assert!(
        r.message().contains("prod only, not from staging"),
        "{}",
        r.message()
    );
}

#[test]
fn without_the_provider_namespace_nothing_can_be_reached() {
    let mut f = found();
    f.provider_namespace = false;
    f.provider = None;
    assert_eq!(refusal(&f).reason(), "EndpointNotReady");
    // Only the Service missing: bound anyway (the policy admits every pod).
    let mut f = found();
    f.provider = None;
    assert!(decide(&claim(), &f).is_ok());
}

#[test]
fn binding_data_keys_a_secret_cannot_hold_are_reported() {
    let mut f = found();
    if let Some(s) = f.service.as_mut() {
        s.spec.binding_data.insert("client id".into(), "x".into());
    }
    let r = refusal(&f);
    assert_eq!(r.reason(), "InvalidBindingData");
    assert!(r.message().contains("client id"));
}

#[test]
fn a_secret_the_claim_did_not_make_is_never_taken_over() {
    let mut f = found();
    f.secret = Some(parse::<Secret>(
        "{apiVersion: v1, kind: Secret, metadata: {name: sso-binding, namespace: sotttt-prod}}",
    ));
    let r = refusal(&f);
    assert_eq!(r.reason(), "SecretConflict");
    assert!(r.message().contains("sso-binding"));
    // Another claim's binding Secret is not this one's either.
    f.secret = Some(parse::<Secret>(
        "{apiVersion: v1, kind: Secret, metadata: {name: sso-binding, namespace: sotttt-prod, labels: {app.kubernetes.io/managed-by: citycloud-operator, citycloud.io/claim: sotttt-prod.other}}}",
    ));
    assert_eq!(refusal(&f).reason(), "SecretConflict");
    // Its own is fine.
    f.secret = Some(parse::<Secret>(
        "{apiVersion: v1, kind: Secret, metadata: {name: sso-binding, namespace: sotttt-prod, labels: {app.kubernetes.io/managed-by: citycloud-operator, citycloud.io/claim: sotttt-prod.sso}}}",
    ));
    assert!(decide(&claim(), &f).is_ok());
}

#[test]
fn a_namespace_being_deleted_gets_nothing_more() {
    let mut f = found();
    if let Some(n) = f.namespace.as_mut() {
        n.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    }
    assert_eq!(refusal(&f).reason(), "NamespaceTerminating");
}
