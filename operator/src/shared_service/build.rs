//! A SharedService's desired consumers Secret and status, computed without touching the API
//! server.
use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use crate::api::conditions::{claim as claim_cond, is_true, reason, shared_service as cond};
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE, SHARED_SERVICE};
use crate::api::{Credentials, SharedService, SharedServiceClaim, SharedServiceStatus};
use crate::conditions::{Cond, stamp};

/// Whether a claim counts as bound: Bound=True with a binding, and not being deleted.
pub fn is_bound(claim: &SharedServiceClaim) -> bool {
    claim.metadata.deletion_timestamp.is_none()
        && claim
            .status
            .as_ref()
            .is_some_and(|s| s.binding.is_some() && is_true(&s.conditions, claim_cond::BOUND))
}

/// Labels of a consumers Secret: managed, and the SharedService it belongs to.
pub fn consumers_labels(service: &SharedService) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.into(), MANAGED_BY_VALUE.into()),
        (SHARED_SERVICE.into(), service.name_any()),
    ])
}

/// The provider-side `<service>-consumers` Secret: one entry per bound PerClaim claim
/// (`<claim-namespace>.<claim-name>` → its token), owned by the SharedService so that
/// deleting the service deletes it. `None` when there is nothing to hold: credentials None,
/// or no bound claim.
pub fn consumers(service: &SharedService, tokens: &BTreeMap<String, String>) -> Option<Secret> {
    if service.spec.credentials != Credentials::PerClaim || tokens.is_empty() {
        return None;
    }
    let owner = service.controller_owner_ref(&()).map(|mut o| {
        // Blocking the owner's deletion would need the sharedservices/finalizers permission.
        o.block_owner_deletion = None;
        o
    });
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(service.consumers_secret_name()),
            namespace: Some(service.spec.endpoint.namespace.clone()),
            labels: Some(consumers_labels(service)),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            tokens
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    })
}

/// EndpointReady: whether the Service of `spec.endpoint` exists.
pub fn endpoint_condition(service: &SharedService, provider: Option<&Service>) -> Cond {
    let e = &service.spec.endpoint;
    match provider {
        Some(_) => Cond::ok(
            cond::ENDPOINT_READY,
            reason::SERVICE_FOUND,
            format!(
                "Service {}/{} exists; claims reach it at {}",
                e.namespace,
                e.service,
                e.uri()
            ),
        ),
        None => Cond::fail(
            cond::ENDPOINT_READY,
            reason::SERVICE_MISSING,
            format!(
                "Service {} does not exist in namespace {}: claims are bound, but reach nothing until it is deployed",
                e.service, e.namespace
            ),
        ),
    }
}

pub fn status(
    service: &SharedService,
    provider: Option<&Service>,
    bound: usize,
    now: &Time,
) -> SharedServiceStatus {
    let previous = service.status.clone().unwrap_or_default();
    let generation = service.metadata.generation;
    SharedServiceStatus {
        observed_generation: generation,
        conditions: stamp(
            &previous.conditions,
            &[endpoint_condition(service, provider)],
            generation,
            now,
        ),
        claims: i32::try_from(bound).unwrap_or(i32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml_ng::from_str(yaml).expect("fixture")
    }

    const LGSP: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: SharedService
metadata: {name: lgsp, uid: uid-lgsp}
spec:
  displayName: "LGSP"
  category: Integration
  endpoint: {namespace: platform-lgsp, service: lgsp-gateway, port: 443}
  bindingType: lgsp
"#;

    fn tokens(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_consumers_secret_holds_one_token_per_bound_claim_and_belongs_to_the_service() {
        let service: SharedService = parse(LGSP);
        let s = consumers(
            &service,
            &tokens(&[("a-prod.lgsp", "t1"), ("b-dev.x", "t2")]),
        )
        .expect("a Secret");
        assert_eq!(s.metadata.name.as_deref(), Some("lgsp-consumers"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("platform-lgsp"));
        let data = s.data.clone().unwrap_or_default();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["a-prod.lgsp", "b-dev.x"]);
        assert_eq!(data["a-prod.lgsp"].0, b"t1");
        let owner = &s.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(owner.kind, "SharedService");
        assert_eq!(owner.uid, "uid-lgsp");
        assert_eq!(owner.block_owner_deletion, None);
        assert_eq!(
            s.metadata.labels.unwrap_or_default()["citycloud.io/shared-service"],
            "lgsp"
        );
    }

    #[test]
    fn no_bound_claim_or_no_credentials_means_no_consumers_secret() {
        let mut service: SharedService = parse(LGSP);
        assert!(consumers(&service, &BTreeMap::new()).is_none());
        service.spec.credentials = Credentials::None;
        assert!(consumers(&service, &tokens(&[("a-prod.lgsp", "t1")])).is_none());
    }

    #[test]
    fn endpoint_ready_follows_the_service_and_claims_are_counted() {
        let service: SharedService = parse(LGSP);
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let missing = status(&service, None, 0, &now);
        assert_eq!(missing.conditions[0].status, "False");
        assert_eq!(missing.conditions[0].reason, "ServiceMissing");
        assert!(missing.conditions[0].message.contains("lgsp-gateway"));
        let gateway: Service = parse(
            "{apiVersion: v1, kind: Service, metadata: {name: lgsp-gateway, namespace: platform-lgsp}}",
        );
        let ready = status(&service, Some(&gateway), 3, &now);
        assert_eq!(ready.conditions[0].status, "True");
        assert_eq!(ready.claims, 3);
    }

    #[test]
    fn only_bound_claims_that_are_not_being_deleted_count() {
        let claim = |status: &str| -> SharedServiceClaim {
            parse(&format!(
                "{{apiVersion: citycloud.io/v1alpha1, kind: SharedServiceClaim, metadata: {{name: c, namespace: a-prod}}, spec: {{service: lgsp}}, status: {status}}}"
            ))
        };
        let bound = "{binding: {name: c}, conditions: [{type: Bound, status: 'True', reason: Bound, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}]}";
        assert!(is_bound(&claim(bound)));
        assert!(!is_bound(&claim(
            "{conditions: [{type: Bound, status: 'False', reason: NotPermitted, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}]}"
        )));
        let mut deleting = claim(bound);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!is_bound(&deleting));
    }
}
