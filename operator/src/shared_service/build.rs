//! A SharedService's desired consumers Secrets (one per tenant) and status, computed without
//! touching the API server.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use crate::api::conditions::{claim as claim_cond, find, reason, shared_service as cond};
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE, SHARED_SERVICE, TENANT};
use crate::api::{Credentials, SharedService, SharedServiceClaim, SharedServiceStatus};
use crate::conditions::{Cond, stamp};

/// Whether a claim counts as bound: it has a binding, is not being deleted, and Bound is
/// True — or False only because a step of the operator failed (failing to reconcile a claim
/// is no decision to revoke it: the access it had stays until the operator decides).
pub fn is_bound(claim: &SharedServiceClaim) -> bool {
    let bound = |c: &[Condition]| {
        find(c, claim_cond::BOUND).is_some_and(|b| {
            b.status == "True" || crate::Error::REASONS.contains(&b.reason.as_str())
        })
    };
    claim.metadata.deletion_timestamp.is_none()
        && claim
            .status
            .as_ref()
            .is_some_and(|s| s.binding.is_some() && bound(&s.conditions))
}

/// The tokens to publish: by tenant, then by consumer key (`<namespace>.<claim>`).
pub type Tokens = BTreeMap<String, BTreeMap<String, String>>;

/// Labels of a tenant's consumers Secret: managed, the SharedService, the tenant. A provider
/// reads all its consumers by `citycloud.io/shared-service=<service>`.
pub fn consumers_labels(service: &SharedService, tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.into(), MANAGED_BY_VALUE.into()),
        (SHARED_SERVICE.into(), service.name_any()),
        (TENANT.into(), tenant.into()),
    ])
}

/// The provider-side Secrets `<service>-consumers-<tenant>`: one per tenant with bound
/// PerClaim claims, holding each claim's token under `<claim-namespace>.<claim-name>`, owned
/// by the SharedService so that deleting the service deletes them. None with credentials
/// None.
///
/// Size: a tenant has at most `maxClaims` ≤ 1000 claims; a key has at most 63 + 1 + 63
/// characters and a token 43, so the data is at most 1000 × 170 bytes (≈ 170 KB; ≈ 190 KB
/// base64-encoded in JSON) and the managed fields another ≈ 135 KB: far below the 1 MiB
/// limit. And a tenant whose budget an override raised only risks its own Secret.
pub fn consumers(service: &SharedService, tokens: &Tokens) -> Vec<Secret> {
    if service.spec.credentials != Credentials::PerClaim {
        return Vec::new();
    }
    let owner = service.controller_owner_ref(&()).map(|mut o| {
        // Blocking the owner's deletion would need the sharedservices/finalizers permission.
        o.block_owner_deletion = None;
        o
    });
    tokens
        .iter()
        .map(|(tenant, entries)| Secret {
            metadata: ObjectMeta {
                name: Some(service.consumers_secret_name(tenant)),
                namespace: Some(service.spec.endpoint.namespace.clone()),
                labels: Some(consumers_labels(service, tenant)),
                owner_references: owner.clone().map(|o| vec![o]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        })
        .collect()
}

/// Selects the service's consumers Secrets of every tenant but `keep`: those to delete. It
/// also matches the single `<service>-consumers` of older releases (no tenant label).
pub fn stale_consumers(service: &SharedService, keep: &BTreeSet<String>) -> String {
    let base = format!(
        "{MANAGED_BY}={MANAGED_BY_VALUE},{SHARED_SERVICE}={}",
        service.name_any()
    );
    if keep.is_empty() {
        return base;
    }
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    format!("{base},{TENANT} notin ({})", keep.join(","))
}

/// Why a tenant's consumers Secret could not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The tenant, or None for the removal of stale Secrets.
    pub tenant: Option<String>,
    pub error: String,
}

/// Tenants named in a condition message, at most; the rest are counted.
const NAMED_FAILURES: usize = 5;
/// Characters of an error kept in a condition message.
const ERROR_CHARS: usize = 200;

/// ConsumersPublished: True when every consumers Secret was written (or none is needed),
/// False naming the tenants whose Secret was not, and why.
pub fn published_condition(service: &SharedService, secrets: usize, failures: &[Failure]) -> Cond {
    if failures.is_empty() {
        let message = if service.spec.credentials == Credentials::PerClaim {
            format!(
                "{secrets} consumers Secret(s) {}-consumers-<tenant> in namespace {} hold the tokens of the bound claims",
                service.name_any(),
                service.spec.endpoint.namespace
            )
        } else {
            "credentials None: no tokens to publish".to_string()
        };
        return Cond::ok(cond::CONSUMERS_PUBLISHED, reason::PUBLISHED, message);
    }
    let named: Vec<String> = failures
        .iter()
        .take(NAMED_FAILURES)
        .map(|f| {
            let error: String = f.error.chars().take(ERROR_CHARS).collect();
            match &f.tenant {
                Some(t) => format!("tenant {t}: {error}"),
                None => format!("removing stale consumers Secrets: {error}"),
            }
        })
        .collect();
    let more = failures.len().saturating_sub(NAMED_FAILURES);
    let more = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    Cond::fail(
        cond::CONSUMERS_PUBLISHED,
        reason::PUBLISH_FAILED,
        format!(
            "could not write the consumers Secrets of namespace {} ({}{more}): there the service does not yet see new tokens, nor that revoked ones are revoked; every other tenant's Secret is up to date",
            service.spec.endpoint.namespace,
            named.join("; ")
        ),
    )
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
    published: Cond,
    now: &Time,
) -> SharedServiceStatus {
    let previous = service.status.clone().unwrap_or_default();
    let generation = service.metadata.generation;
    SharedServiceStatus {
        observed_generation: generation,
        conditions: stamp(
            &previous.conditions,
            &[endpoint_condition(service, provider), published],
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

    fn tokens(tenants: &[(&str, &[(&str, &str)])]) -> Tokens {
        tenants
            .iter()
            .map(|(tenant, pairs)| {
                let entries = pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (tenant.to_string(), entries)
            })
            .collect()
    }

    #[test]
    fn each_tenant_gets_its_own_consumers_secret_belonging_to_the_service() {
        let service: SharedService = parse(LGSP);
        let secrets = consumers(
            &service,
            &tokens(&[
                ("a", &[("a-prod.lgsp", "t1"), ("a-dev.x", "t2")]),
                ("b", &[("b-prod.lgsp", "t3")]),
            ]),
        );
        assert_eq!(secrets.len(), 2);
        let s = &secrets[0];
        assert_eq!(s.metadata.name.as_deref(), Some("lgsp-consumers-a"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("platform-lgsp"));
        let data = s.data.clone().unwrap_or_default();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["a-dev.x", "a-prod.lgsp"]);
        assert_eq!(data["a-prod.lgsp"].0, b"t1");
        let owner = &s.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(owner.kind, "SharedService");
        assert_eq!(owner.uid, "uid-lgsp");
        assert_eq!(owner.block_owner_deletion, None);
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["citycloud.io/shared-service"], "lgsp");
        assert_eq!(labels["citycloud.io/tenant"], "a");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "citycloud-operator");
        assert_eq!(
            secrets[1].metadata.name.as_deref(),
            Some("lgsp-consumers-b")
        );
        let data = secrets[1].data.clone().unwrap_or_default();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["b-prod.lgsp"]);
    }

    #[test]
    fn a_tenant_with_bound_claims_but_no_valid_token_keeps_an_empty_secret() {
        let service: SharedService = parse(LGSP);
        let secrets = consumers(&service, &tokens(&[("a", &[])]));
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].data, Some(BTreeMap::new()));
    }

    #[test]
    fn no_bound_claim_or_no_credentials_means_no_consumers_secret() {
        let mut service: SharedService = parse(LGSP);
        assert!(consumers(&service, &Tokens::new()).is_empty());
        service.spec.credentials = Credentials::None;
        assert!(consumers(&service, &tokens(&[("a", &[("a-prod.lgsp", "t1")])])).is_empty());
    }

    #[test]
    fn a_full_tenant_secret_stays_far_below_the_object_size_limit() {
        // The worst a tenant can reach: 1000 claims (maxClaims' limit), every key of 127
        // characters (63-character namespace and claim names), 43-character tokens.
        let service: SharedService = parse(LGSP);
        let entries: BTreeMap<String, String> = (0..crate::api::quota_profile::MAX_CLAIMS_LIMIT)
            .map(|i| (format!("{}.{:0>63}", "n".repeat(63), i), "t".repeat(43)))
            .collect();
        let all = Tokens::from([("a".repeat(61), entries)]);
        let secret = &consumers(&service, &all)[0];
        let json = serde_json::to_vec(secret).expect("serializes");
        // The managed fields of a server-side apply add about `"f:<key>":{},` per entry.
        let managed: usize = secret.data.iter().flatten().map(|(k, _)| k.len() + 8).sum();
        assert!(
            json.len() + managed < 512 * 1024,
            "{} bytes",
            json.len() + managed
        );
    }

    #[test]
    fn stale_consumers_are_the_services_secrets_of_other_tenants() {
        let service: SharedService = parse(LGSP);
        let keep = BTreeSet::from(["a".to_string(), "b".to_string()]);
        assert_eq!(
            stale_consumers(&service, &keep),
            "app.kubernetes.io/managed-by=citycloud-operator,citycloud.io/shared-service=lgsp,citycloud.io/tenant notin (a,b)"
        );
        assert_eq!(
            stale_consumers(&service, &BTreeSet::new()),
            "app.kubernetes.io/managed-by=citycloud-operator,citycloud.io/shared-service=lgsp"
        );
    }

    #[test]
    fn consumers_published_names_the_tenants_that_failed() {
        let service: SharedService = parse(LGSP);
        let ok = published_condition(&service, 2, &[]);
        assert!(ok.ok);
        assert!(
            ok.message.contains("2 consumers Secret(s)"),
            "{}",
            ok.message
        );
        let failures: Vec<Failure> = (0..7)
            .map(|i| Failure {
                tenant: Some(format!("t{i}")),
                error: "x".repeat(500),
            })
            .collect();
        let failed = published_condition(&service, 2, &failures);
        assert!(!failed.ok);
        assert_eq!(failed.reason, "PublishFailed");
        assert!(
            failed.message.contains("tenant t0: xxx"),
            "{}",
            failed.message
        );
        assert!(failed.message.contains("and 2 more"), "{}", failed.message);
        assert!(failed.message.len() < 2000, "bounded");
    }

    #[test]
    fn endpoint_ready_follows_the_service_and_claims_are_counted() {
        let service: SharedService = parse(LGSP);
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let published = || published_condition(&service, 0, &[]);
        let missing = status(&service, None, 0, published(), &now);
        assert_eq!(missing.conditions[0].status, "False");
        assert_eq!(missing.conditions[0].reason, "ServiceMissing");
        assert!(missing.conditions[0].message.contains("lgsp-gateway"));
        let gateway: Service = parse(
            "{apiVersion: v1, kind: Service, metadata: {name: lgsp-gateway, namespace: platform-lgsp}}",
        );
        let ready = status(&service, Some(&gateway), 3, published(), &now);
        assert_eq!(ready.conditions[0].status, "True");
        assert_eq!(ready.conditions[1].type_, "ConsumersPublished");
        assert_eq!(ready.claims, 3);
    }

    #[test]
    fn only_bound_claims_that_are_not_being_deleted_count_a_failed_step_revokes_nothing() {
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
        // A failed step is no revocation: the token stays published.
        let failing = "{binding: {name: c}, conditions: [{type: Bound, status: 'False', reason: ApplyFailed, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}]}";
        assert!(is_bound(&claim(failing)));
        let mut deleting = claim(bound);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!is_bound(&deleting));
    }
}
