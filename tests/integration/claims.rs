//! Shared services, as the platform team publishes them and agencies claim them, self-service.
use std::collections::{BTreeMap, BTreeSet};

use citycloud::api::{SharedService, SharedServiceClaim, Tenant};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use testbed::builders::{Profile, TenantBuilder};
use testbed::env::PrivateControlPlane;
use testbed::fixtures::{CONVERGE, apply, apply_in, code};
use testbed::{TestEnv, eventually};

/// One test's world: a quota profile, a provider namespace with its Service, a SharedService.
pub(crate) struct World {
    pub(crate) profile: String,
    pub(crate) provider_ns: String,
    pub(crate) service: String,
}

pub(crate) async fn world(env: &TestEnv, extra_spec: &str) -> World {
    let w = World {
        profile: env.name("p"),
        provider_ns: env.name("platform"),
        service: env.name("lgsp"),
    };
    env.apply_profile(
        Profile::new(&w.profile)
            .description("claims")
            .namespace(json!({"pods": "10"})),
    )
    .await;
    apply::<Namespace>(
        &env.admin,
        &format!(
            "{{apiVersion: v1, kind: Namespace, metadata: {{name: {}}}}}",
            w.provider_ns
        ),
    )
    .await
    .unwrap();
    env.provider_namespace(&w.provider_ns).await;
    apply_in::<Service>(
        &env.admin,
        &w.provider_ns,
        "{apiVersion: v1, kind: Service, metadata: {name: gateway}, \
         spec: {selector: {app: lgsp-gateway}, ports: [{name: https, port: 443, targetPort: 8443}]}}",
    )
    .await
    .unwrap();
    shared_service(env, &w, &w.service, extra_spec).await;
    w
}

pub(crate) async fn shared_service(env: &TestEnv, w: &World, name: &str, extra_spec: &str) {
    apply::<SharedService>(
        &env.admin,
        &format!(
            r#"
apiVersion: citycloud.io/v1alpha1
kind: SharedService
metadata: {{name: {name}}}
spec:
  displayName: "Nền tảng tích hợp, chia sẻ dữ liệu (LGSP)"
  category: Integration
  endpoint: {{namespace: {ns}, service: gateway, port: 443}}
  bindingType: lgsp
  bindingData: {{gateway-version: "2"}}
{extra_spec}
"#,
            ns = w.provider_ns
        ),
    )
    .await
    .unwrap();
}

/// A tenant of the claims world: `Sở <name>`, owned by the group `owners`, on the world's
/// profile (`env.tenant_ready(&tenant(..))` applies it and waits until it is Ready).
pub(crate) fn tenant(w: &World, name: &str, owners: &str) -> TenantBuilder {
    TenantBuilder::new(name, &w.profile).owners(owners)
}

pub(crate) fn claim_yaml(name: &str, service: &str, secret: Option<&str>) -> String {
    let secret = secret
        .map(|s| format!(", secretName: {s}"))
        .unwrap_or_default();
    format!(
        "{{apiVersion: citycloud.io/v1alpha1, kind: SharedServiceClaim, metadata: {{name: {name}}}, \
         spec: {{service: {service}{secret}}}}}"
    )
}

/// Creates a claim as the agency `user`: owners and members may (the chart aggregates
/// SharedServiceClaim into the `admin` and `edit` ClusterRoles). The aggregation is done by
/// kube-controller-manager, so a 403 right after the control plane started is retried.
/// Creates the claim as `user` once RBAC lets them; the claim as the API server stored it.
pub(crate) async fn claim_as(user: &kube::Client, ns: &str, yaml: &str) -> SharedServiceClaim {
    eventually(
        &format!("a claim created in {ns} by its owner"),
        CONVERGE,
        || async {
            match apply_in::<SharedServiceClaim>(user, ns, yaml).await {
                Ok(claim) => Some(claim),
                Err(e) if code(&e) == Some(403) => None,
                Err(e) => panic!("creating the claim: {e}"),
            }
        },
    )
    .await
}

/// Waits until the claim's Bound condition has `status` and `reason`, for its generation.
pub(crate) async fn wait_bound(
    env: &TestEnv,
    ns: &str,
    name: &str,
    status: &str,
    reason: &str,
) -> SharedServiceClaim {
    let api = Api::<SharedServiceClaim>::namespaced(env.admin.clone(), ns);
    eventually(
        &format!("claim {ns}/{name} Bound={status} {reason}"),
        CONVERGE,
        || async {
            let c = api.get(name).await.ok()?;
            let st = c.status.as_ref()?;
            (st.observed_generation == c.metadata.generation).then_some(())?;
            let b = st.conditions.iter().find(|c| c.type_ == "Bound")?;
            (b.status == status && b.reason == reason).then_some(())?;
            Some(c)
        },
    )
    .await
}

pub(crate) fn text(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect()
}

/// Reads from the API server, retrying a dropped connection (a kept-alive connection the
/// server closed is no test failure; an API error is).
pub(crate) async fn read<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e @ kube::Error::Api(_)) => panic!("reading {what}: {e}"),
            Err(e) if attempt >= 5 => panic!("reading {what}: {e}"),
            Err(_) => attempt += 1,
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub(crate) async fn secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, String>> {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    read(&format!("Secret {ns}/{name}"), || api.get_opt(name))
        .await
        .map(|s| text(&s))
}

/// The provider's consumers Secrets `<service>-consumers-<tenant>`, read as the provider
/// does (by label) and merged: one entry per claim (empty when there is none).
pub(crate) async fn consumers(env: &TestEnv, w: &World, service: &str) -> BTreeMap<String, String> {
    consumer_secrets(env, w, service)
        .await
        .into_values()
        .flatten()
        .collect()
}

/// The provider's consumers Secrets of `service`, by name.
pub(crate) async fn consumer_secrets(
    env: &TestEnv,
    w: &World,
    service: &str,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let api = Api::<Secret>::namespaced(env.admin.clone(), &w.provider_ns);
    let params = ListParams::default().labels(&format!("citycloud.io/shared-service={service}"));
    read("consumers Secrets", || api.list(&params))
        .await
        .items
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), text(s)))
        .collect()
}

/// The NetworkPolicies made for a claim, anywhere, as "namespace/name".
pub(crate) async fn policies(env: &TestEnv, ns: &str, name: &str) -> BTreeSet<String> {
    let api = Api::<NetworkPolicy>::all(env.admin.clone());
    let params = ListParams::default().labels(&format!("citycloud.io/claim={ns}.{name}"));
    read("NetworkPolicies", || api.list(&params))
        .await
        .items
        .into_iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default()
            )
        })
        .collect()
}

/// Waits until nothing is left of the claim `ns/name` on either side: no binding Secret
/// `secret_name`, no consumers entry, no NetworkPolicy.
pub(crate) async fn wait_revoked(
    env: &TestEnv,
    w: &World,
    service: &str,
    ns: &str,
    name: &str,
    secret_name: &str,
) {
    eventually(
        &format!("everything of claim {ns}/{name} removed"),
        CONVERGE,
        || async {
            secret(&env.admin, ns, secret_name)
                .await
                .is_none()
                .then_some(())?;
            (!consumers(env, w, service)
                .await
                .contains_key(&format!("{ns}.{name}")))
            .then_some(())?;
            policies(env, ns, name).await.is_empty().then_some(())
        },
    )
    .await;
}

/// Waits until the claim is bound with a token that the consumers Secret also holds; returns it.
pub(crate) async fn wait_token(
    env: &TestEnv,
    w: &World,
    service: &str,
    ns: &str,
    name: &str,
    secret_name: &str,
) -> String {
    wait_bound(env, ns, name, "True", "Bound").await;
    eventually(
        &format!("the token of {ns}/{name} on both sides"),
        CONVERGE,
        || async {
            let token = secret(&env.admin, ns, secret_name)
                .await?
                .get("token")?
                .clone();
            (consumers(env, w, service)
                .await
                .get(&format!("{ns}.{name}"))
                == Some(&token))
            .then_some(token)
        },
    )
    .await
}

#[tokio::test]
async fn an_owner_claims_a_service_and_reads_its_binding_while_others_cannot() {
    let env = TestEnv::with_operator().await;
    let w = world(&env, "").await;
    let (a, b) = (env.name("so-a"), env.name("so-b"));
    let (a_admins, b_admins) = (env.name("a-admins"), env.name("b-admins"));
    env.tenant_ready(&tenant(&w, &a, &a_admins).set("network", json!({"egress": "Restricted"})))
        .await;
    env.tenant_ready(&tenant(&w, &b, &b_admins)).await;
    let owner_a = env.user(&env.name("an"), &[&a_admins]).await;
    let owner_b = env.user(&env.name("binh"), &[&b_admins]).await;
    let ns = format!("{a}-prod");

    let created = claim_as(
        &owner_a,
        &ns,
        &claim_yaml("lgsp", &w.service, Some("lgsp-binding")),
    )
    .await;
    // The API server stores it with the operator's cleanup finalizer (the chart's policy):
    // its deletion waits for the revocation, even before the operator has seen it.
    assert_eq!(created.finalizers(), [citycloud::api::finalizers::CLAIM]);
    let bound = wait_bound(&env, &ns, "lgsp", "True", "Bound").await;
    assert_eq!(
        bound
            .status
            .and_then(|s| s.binding)
            .map(|b| b.name)
            .as_deref(),
        Some("lgsp-binding"),
        "status.binding names the Secret (the Provisioned Service duck type)"
    );

    // The token on both sides (the provider's consumers Secret holds it too).
    let token_there = wait_token(&env, &w, &w.service, &ns, "lgsp", "lgsp-binding").await;

    // The owner reads the binding, in the Service Binding layout.
    let live = Api::<Secret>::namespaced(owner_a.clone(), &ns)
        .get("lgsp-binding")
        .await
        .expect("the owner reads the binding Secret");
    assert_eq!(live.type_.as_deref(), Some("servicebinding.io/lgsp"));
    let data = text(&live);
    let host = format!("gateway.{}.svc", w.provider_ns);
    assert_eq!(data["type"], "lgsp");
    assert_eq!(data["provider"], w.service);
    assert_eq!(data["host"], host);
    assert_eq!(data["port"], "443");
    assert_eq!(data["uri"], format!("https://{host}:443"));
    assert_eq!(data["gateway-version"], "2");
    let token = data["token"].clone();
    assert_eq!(token.len(), 43, "32 random bytes, URL-safe base64");

    // The provider side: the token among the consumers, the namespace admitted on the pods' port.
    assert_eq!(token_there, token);
    let provider_policy = Api::<NetworkPolicy>::namespaced(env.admin.clone(), &w.provider_ns)
        .get(&format!("citycloud-claim-{ns}.lgsp"))
        .await
        .expect("the provider-side policy");
    let spec = provider_policy.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()["app"],
        "lgsp-gateway"
    );
    let rule = &spec.ingress.unwrap()[0];
    assert_eq!(
        rule.from.clone().unwrap()[0]
            .namespace_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap()["kubernetes.io/metadata.name"],
        ns
    );
    assert_eq!(
        rule.ports.clone().unwrap()[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8443)),
        "the Service's targetPort: what a NetworkPolicy sees"
    );
    // egress: Restricted, so the tenant's side lets its pods out to the service.
    Api::<NetworkPolicy>::namespaced(env.admin.clone(), &ns)
        .get(&format!("citycloud-claim-{ns}.lgsp"))
        .await
        .expect("the egress policy in the claim's namespace");

    // The catalogue entry counts it.
    eventually("SharedService status", CONVERGE, || async {
        let s = Api::<SharedService>::all(env.admin.clone())
            .get(&w.service)
            .await
            .ok()?;
        let st = s.status?;
        let ready = st.conditions.iter().find(|c| c.type_ == "EndpointReady")?;
        (ready.status == "True" && st.claims == 1).then_some(())
    })
    .await;

    // Another agency can neither claim in this namespace, nor read this binding or the
    // provider's consumers.
    let err = apply_in::<SharedServiceClaim>(&owner_b, &ns, &claim_yaml("mine", &w.service, None))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");
    let err = Api::<Secret>::namespaced(owner_b.clone(), &ns)
        .get("lgsp-binding")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");
    assert_eq!(
        consumer_secrets(&env, &w, &w.service)
            .await
            .keys()
            .collect::<Vec<_>>(),
        [&format!("{}-consumers-{a}", w.service)],
        "one consumers Secret per tenant"
    );
    let err = Api::<Secret>::namespaced(owner_b.clone(), &w.provider_ns)
        .get(&format!("{}-consumers-{a}", w.service))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");
    // Nor does the claiming agency read the consumers (its own tokens are in its binding).
    let err = Api::<Secret>::namespaced(owner_a.clone(), &w.provider_ns)
        .get(&format!("{}-consumers-{a}", w.service))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");

    // The token is in no event and no status.
    let events = Api::<Event>::namespaced(env.admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Bound")),
        "the claim has a Bound event"
    );
    let everything = serde_json::to_string(&events.items).unwrap()
        + &serde_json::to_string(
            &Api::<SharedServiceClaim>::namespaced(env.admin.clone(), &ns)
                .get("lgsp")
                .await
                .unwrap(),
        )
        .unwrap();
    assert!(
        !everything.contains(&token),
        "a token leaked into an event or the status"
    );
}

#[tokio::test]
async fn claims_that_are_not_permitted_say_why_and_get_nothing() {
    let env = TestEnv::with_operator().await;
    let level = env.name("department");
    let w = world(
        &env,
        &format!(
            "  access: {{tenantSelector: {{matchLabels: {{city.io/level: {level}}}}}, environments: [prod]}}"
        ),
    )
    .await;
    let (dept, ward) = (env.name("dept"), env.name("ward"));
    env.tenant_ready(
        &tenant(&w, &dept, "dept-admins")
            .label("city.io/level", &level)
            .environments(&["prod", "staging"]),
    )
    .await;
    env.tenant_ready(&tenant(&w, &ward, "ward-admins").label("city.io/level", "ward"))
        .await;

    // A ward is not among the tenants the service admits.
    let ward_ns = format!("{ward}-prod");
    apply_in::<SharedServiceClaim>(&env.admin, &ward_ns, &claim_yaml("x", &w.service, None))
        .await
        .unwrap();
    let refused = wait_bound(&env, &ward_ns, "x", "False", "NotPermitted").await;
    let message = refused.status.clone().unwrap().conditions[0]
        .message
        .clone();
    assert!(
        message.contains(&format!("city.io/level={level}")),
        "{message}"
    );
    assert!(refused.status.unwrap().binding.is_none());

    // The department, but from staging: production only.
    let staging = format!("{dept}-staging");
    apply_in::<SharedServiceClaim>(&env.admin, &staging, &claim_yaml("x", &w.service, None))
        .await
        .unwrap();
    wait_bound(&env, &staging, "x", "False", "EnvironmentNotPermitted").await;

    // A namespace of no tenant.
    let loose = env.name("loose");
    apply::<Namespace>(
        &env.admin,
        &format!("{{apiVersion: v1, kind: Namespace, metadata: {{name: {loose}}}}}"),
    )
    .await
    .unwrap();
    apply_in::<SharedServiceClaim>(&env.admin, &loose, &claim_yaml("x", &w.service, None))
        .await
        .unwrap();
    wait_bound(&env, &loose, "x", "False", "NotATenantNamespace").await;

    for ns in [&ward_ns, &staging, &loose] {
        assert_eq!(secret(&env.admin, ns, "x").await, None, "no Secret in {ns}");
        assert!(
            policies(&env, ns, "x").await.is_empty(),
            "no policy for {ns}"
        );
    }
    assert!(consumers(&env, &w, &w.service).await.is_empty());

    // A service that does not exist yet: refused, then bound as soon as it is published.
    let prod = format!("{dept}-prod");
    let later = env.name("sso");
    apply_in::<SharedServiceClaim>(&env.admin, &prod, &claim_yaml("sso", &later, None))
        .await
        .unwrap();
    wait_bound(&env, &prod, "sso", "False", "ServiceNotFound").await;
    assert_eq!(secret(&env.admin, &prod, "sso").await, None);
    shared_service(&env, &w, &later, "").await;
    wait_token(&env, &w, &later, &prod, "sso", "sso").await;
    let _ = Api::<SharedService>::all(env.admin.clone())
        .delete(&later, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn deleting_the_claim_or_the_service_revokes_everything_on_both_sides() {
    let env = TestEnv::with_operator().await;
    let w = world(&env, "").await;
    let t = env.name("rv");
    env.tenant_ready(&tenant(&w, &t, "rv-admins").set("network", json!({"egress": "Restricted"})))
        .await;
    let ns = format!("{t}-prod");
    let claims = Api::<SharedServiceClaim>::namespaced(env.admin.clone(), &ns);

    // Deleting the claim.
    apply_in::<SharedServiceClaim>(&env.admin, &ns, &claim_yaml("one", &w.service, None))
        .await
        .unwrap();
    wait_token(&env, &w, &w.service, &ns, "one", "one").await;
    assert_eq!(policies(&env, &ns, "one").await.len(), 2, "both sides");
    claims
        .delete("one", &DeleteParams::default())
        .await
        .unwrap();
    wait_revoked(&env, &w, &w.service, &ns, "one", "one").await;
    eventually("the claim gone (finalizer done)", CONVERGE, || async {
        claims.get_opt("one").await.ok()?.is_none().then_some(())
    })
    .await;

    // Deleting the SharedService.
    apply_in::<SharedServiceClaim>(&env.admin, &ns, &claim_yaml("two", &w.service, None))
        .await
        .unwrap();
    wait_token(&env, &w, &w.service, &ns, "two", "two").await;
    Api::<SharedService>::all(env.admin.clone())
        .delete(&w.service, &DeleteParams::default())
        .await
        .unwrap();
    let revoked = wait_bound(&env, &ns, "two", "False", "ServiceNotFound").await;
    assert!(revoked.status.unwrap().binding.is_none());
    wait_revoked(&env, &w, &w.service, &ns, "two", "two").await;
    eventually(
        "the consumers Secrets deleted with their service",
        CONVERGE,
        || async {
            consumer_secrets(&env, &w, &w.service)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn suspending_the_tenant_or_leaving_the_selector_revokes_everything_on_both_sides() {
    let env = TestEnv::with_operator().await;
    let level = env.name("member");
    let w = world(
        &env,
        &format!("  access: {{tenantSelector: {{matchLabels: {{city.io/level: {level}}}}}}}"),
    )
    .await;
    let t = env.name("sp");
    env.tenant_ready(
        &tenant(&w, &t, "sp-admins")
            .label("city.io/level", &level)
            .set("network", json!({"egress": "Restricted"})),
    )
    .await;
    let ns = format!("{t}-prod");
    apply_in::<SharedServiceClaim>(&env.admin, &ns, &claim_yaml("c", &w.service, None))
        .await
        .unwrap();
    let first = wait_token(&env, &w, &w.service, &ns, "c", "c").await;

    let tenants = Api::<Tenant>::all(env.admin.clone());
    let pp = PatchParams::default();
    tenants
        .patch(&t, &pp, &Patch::Merge(json!({"spec": {"suspended": true}})))
        .await
        .unwrap();
    wait_bound(&env, &ns, "c", "False", "TenantSuspended").await;
    wait_revoked(&env, &w, &w.service, &ns, "c", "c").await;
    let events = Api::<Event>::namespaced(env.admin.clone(), &ns);
    eventually("a Revoked event on the claim", CONVERGE, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Revoked")
                    && e.involved_object.name.as_deref() == Some("c")
            })
            .then_some(())
    })
    .await;

    tenants
        .patch(
            &t,
            &pp,
            &Patch::Merge(json!({"spec": {"suspended": false}})),
        )
        .await
        .unwrap();
    let second = wait_token(&env, &w, &w.service, &ns, "c", "c").await;
    assert_ne!(first, second, "a new binding gets a new token");

    tenants
        .patch(
            &t,
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"city.io/level": "ward"}}})),
        )
        .await
        .unwrap();
    wait_bound(&env, &ns, "c", "False", "NotPermitted").await;
    wait_revoked(&env, &w, &w.service, &ns, "c", "c").await;
}

#[tokio::test]
async fn deleting_the_binding_secret_rotates_the_token() {
    let env = TestEnv::with_operator().await;
    let w = world(&env, "").await;
    let (t, admins) = (env.name("rot"), env.name("rot-admins"));
    env.tenant_ready(&tenant(&w, &t, &admins)).await;
    let owner = env.user(&env.name("cuong"), &[&admins]).await;
    let ns = format!("{t}-prod");
    claim_as(&owner, &ns, &claim_yaml("c", &w.service, None)).await;
    let old = wait_token(&env, &w, &w.service, &ns, "c", "c").await;

    // Drift: the provider-side policy deleted (by a platform admin) comes back.
    let provider_policies = Api::<NetworkPolicy>::namespaced(env.admin.clone(), &w.provider_ns);
    let policy = format!("citycloud-claim-{ns}.c");
    provider_policies
        .delete(&policy, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the provider policy restored", CONVERGE, || async {
        provider_policies.get_opt(&policy).await.ok()?.map(|_| ())
    })
    .await;

    Api::<Secret>::namespaced(owner.clone(), &ns)
        .delete("c", &DeleteParams::default())
        .await
        .expect("the owner deletes the binding Secret to rotate");
    let new = eventually("a new token on both sides", CONVERGE, || async {
        let token = secret(&env.admin, &ns, "c").await?.get("token")?.clone();
        (token != old
            && consumers(&env, &w, &w.service)
                .await
                .get(&format!("{ns}.c"))
                == Some(&token))
        .then_some(token)
    })
    .await;
    assert_ne!(new, old);
    assert!(
        !consumers(&env, &w, &w.service)
            .await
            .values()
            .any(|v| *v == old),
        "the old token is no longer accepted"
    );
}

#[tokio::test]
async fn an_operator_restarted_mid_way_leaves_no_half_bound_claim_and_no_orphaned_token() {
    // Its own control plane: the operators below run without leader election and reconcile
    // every claim they see; on the shared one they would re-issue other tests' tokens.
    let (pcp, env) = PrivateControlPlane::for_operators("restart").await;
    let first = pcp.operator();
    let w = world(&env, "").await;
    let (t, u) = (env.name("rs-a"), env.name("rs-b"));
    env.tenant_ready(&tenant(&w, &t, "rs-admins")).await;
    env.tenant_ready(&tenant(&w, &u, "rs-admins")).await;
    let (ns_t, ns_u) = (format!("{t}-prod"), format!("{u}-prod"));

    // A second operator works alongside the first, and is stopped while claims come and go.
    let second = pcp.operator();
    for (ns, name) in [(&ns_t, "a"), (&ns_t, "b"), (&ns_u, "a"), (&ns_u, "b")] {
        apply_in::<SharedServiceClaim>(&env.admin, ns, &claim_yaml(name, &w.service, None))
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    Api::<SharedServiceClaim>::namespaced(env.admin.clone(), &ns_t)
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    Api::<Tenant>::all(env.admin.clone())
        .patch(
            &u,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspended": true}})),
        )
        .await
        .unwrap();
    drop(second);
    // Both stop, then a fresh operator starts, as after a restart or a change of leader: it
    // holds no record of what was applied, so it applies each consumers Secret once more, over
    // whatever the stopped ones wrote last (the operator cannot read those Secrets to compare).
    // The first must not keep running beside it: with leader election one operator writes at
    // a time, and two at once (the test bed has none) each publish the consumers from their own
    // record of what they wrote, which neither can check against the other's writes; the test
    // then failed now and then, waiting for consumers one of them had overwritten.
    drop(first);
    let third = pcp.operator();

    // What is left converges: exactly the bound claims have a Secret and a consumers entry.
    wait_bound(&env, &ns_t, "a", "True", "Bound").await;
    wait_bound(&env, &ns_u, "a", "False", "TenantSuspended").await;
    wait_bound(&env, &ns_u, "b", "False", "TenantSuspended").await;
    let token = wait_token(&env, &w, &w.service, &ns_t, "a", "a").await;
    wait_revoked(&env, &w, &w.service, &ns_t, "b", "b").await;
    for name in ["a", "b"] {
        wait_revoked(&env, &w, &w.service, &ns_u, name, name).await;
    }
    // Two operators ran at once before (the test bed has no leader election), and the fresh one
    // may still act on a view a moment old at first. What counts is where it settles.
    let wanted = BTreeMap::from([(format!("{ns_t}.a"), token)]);
    eventually(
        "the consumers are exactly the bound claims",
        std::time::Duration::from_secs(150),
        || async { (consumers(&env, &w, &w.service).await == wanted).then_some(()) },
    )
    .await;
    assert_eq!(
        policies(&env, &ns_t, "a").await.len(),
        1,
        "provider side only (egress Open)"
    );

    // The fresh operator counts the claims by state.
    let bound = format!(
        "citycloud_claims{{service=\"{}\",state=\"bound\"}} 1",
        w.service
    );
    let refused = format!(
        "citycloud_claims{{service=\"{}\",state=\"refused\"}} 2",
        w.service
    );
    eventually("the claims gauge", CONVERGE, || async {
        let text = third.shared.metrics.encode();
        (text.contains(&bound) && text.contains(&refused)).then_some(())
    })
    .await;
    // The consumers may have been published by the operators that ran before; the fresh one
    // gets to the service too (in its first pass over everything there is).
    eventually(
        "the fresh operator reconciled a SharedService",
        CONVERGE,
        || async { (third.reconciles("sharedservice") > 0).then_some(()) },
    )
    .await;
}
