//! Network isolation against a hostile tenant: an owner (`admin` in her namespaces) cannot
//! write a NetworkPolicy that undoes her Tenant's `egress: Restricted` or `ingress: Strict`,
//! and a provider namespace admits no tenant but through bound claims, from the moment its
//! SharedService exists.
use std::collections::BTreeMap;

use citycloud::api::{SharedService, SharedServiceClaim};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use serde_json::{Value, json};
use testbed::builders::{Profile, TenantBuilder};
use testbed::fixtures::{CONVERGE, apply, apply_in, code};
use testbed::{TestEnv, eventually};

const ISOLATION: &str = "citycloud-provider-isolation";

async fn profile(env: &TestEnv) -> String {
    env.apply_profile(
        Profile::new(&env.name("p"))
            .description("network")
            .namespace(json!({"pods": "10"})),
    )
    .await
}

/// A ready tenant owned by the group `owners`, with the given `network`.
async fn tenant(env: &TestEnv, name: &str, profile: &str, owners: &str, network: Value) {
    env.tenant_ready(
        &TenantBuilder::new(name, profile)
            .owners(owners)
            .set("network", network),
    )
    .await;
}

fn policy(name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("policy")
}

/// Creates the policy as `user`. A 403 from RBAC (the owners' RoleBinding not yet seen by the
/// authorizer) is retried; an admission refusal is returned.
async fn create(
    user: &kube::Client,
    ns: &str,
    name: &str,
    spec: Value,
) -> Result<NetworkPolicy, kube::Error> {
    let api = Api::<NetworkPolicy>::namespaced(user.clone(), ns);
    let p = policy(name, spec);
    eventually(
        &format!("NetworkPolicy {ns}/{name} accepted or refused by admission"),
        CONVERGE,
        || async {
            match api.create(&PostParams::default(), &p).await {
                Err(e) if code(&e) == Some(403) && e.to_string().contains("cannot create") => None,
                other => Some(other),
            }
        },
    )
    .await
}

async fn accepted(user: &kube::Client, ns: &str, name: &str, spec: Value) {
    if let Err(e) = create(user, ns, name, spec).await {
        panic!("NetworkPolicy {ns}/{name} should be accepted: {e}");
    }
}

/// Asserts the request was refused by admission, with a message holding every `words`.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str, words: &[&str]) {
    let err = match result {
        Ok(v) => panic!("{what} was accepted: {v:?}"),
        Err(e) => e,
    };
    assert_eq!(code(&err), Some(403), "{what}: {err}");
    let msg = err.to_string();
    for w in words {
        assert!(
            msg.contains(w),
            "{what}: the message should say {w:?}: {msg}"
        );
    }
}

#[tokio::test]
async fn an_owner_cannot_write_a_network_policy_that_opens_her_restricted_tenant() {
    let env = TestEnv::with_operator().await;
    let p = profile(&env).await;
    let (a, b, open) = (env.name("net-a"), env.name("net-b"), env.name("net-open"));
    let (a_admins, b_admins, open_admins) = (
        env.name("net-a-admins"),
        env.name("net-b-admins"),
        env.name("net-open-admins"),
    );
    tenant(
        &env,
        &a,
        &p,
        &a_admins,
        json!({"ingress": "Strict", "egress": "Restricted"}),
    )
    .await;
    tenant(&env, &b, &p, &b_admins, json!({})).await;
    tenant(
        &env,
        &open,
        &p,
        &open_admins,
        json!({"ingress": "Open", "egress": "Open"}),
    )
    .await;
    let alice = env
        .user(&env.name("alice"), &[&a_admins, &open_admins])
        .await;
    let ns = format!("{a}-prod");

    // What stays within the tenant is hers to write.
    accepted(
        &alice,
        &ns,
        "from-web",
        json!({"podSelector": {"matchLabels": {"app": "api"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    )
    .await;
    accepted(
        &alice,
        &ns,
        "from-my-tenant",
        json!({"podSelector": {},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"citycloud.io/tenant": a}}}]}]}),
    )
    .await;

    // Egress: refused whether policyTypes says Egress or is left for the server to default.
    let allow_all_egress = json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]});
    assert_refused(
        create(&alice, &ns, "allow-all-egress", allow_all_egress).await,
        "an allow-all egress policy",
        &["egress Restricted", "SharedServiceClaim", "platform team"],
    );
    assert_refused(
        create(
            &alice,
            &ns,
            "egress-defaulted",
            json!({"podSelector": {}, "egress": [{}]}),
        )
        .await,
        "egress rules without policyTypes",
        &["egress Restricted"],
    );
    // An UPDATE adding egress to an accepted policy, with or without touching policyTypes.
    let nps = Api::<NetworkPolicy>::namespaced(alice.clone(), &ns);
    let add_egress = |types: Value| {
        Patch::Merge(
            json!({"spec": {"policyTypes": types, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}),
        )
    };
    assert_refused(
        nps.patch(
            "from-web",
            &PatchParams::default(),
            &add_egress(json!(["Ingress", "Egress"])),
        )
        .await,
        "an update adding egress",
        &["egress Restricted"],
    );
    assert_refused(
        nps.patch(
            "from-web",
            &PatchParams::default(),
            &add_egress(Value::Null),
        )
        .await,
        "an update adding egress rules, policyTypes left to defaulting",
        &["egress Restricted"],
    );
    assert_refused(
        nps.patch(
            "from-web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"egress": [{}]}})),
        )
        .await,
        "an update adding egress rules under policyTypes [Ingress]",
        &["egress Restricted"],
    );

    // Ingress beyond the tenant: every source, all namespaces, another tenant, an address block.
    let ingress = |from: Value| json!({"podSelector": {}, "ingress": [from]});
    assert_refused(
        create(&alice, &ns, "from-anywhere", ingress(json!({}))).await,
        "an ingress rule without from",
        &["ingress Strict", "without `from`"],
    );
    assert_refused(
        create(
            &alice,
            &ns,
            "from-all-namespaces",
            ingress(json!({"from": [{"namespaceSelector": {}}]})),
        )
        .await,
        "ingress from all namespaces",
        &["ingress Strict", "namespaceSelector", "SharedServiceClaim"],
    );
    assert_refused(
        create(
            &alice,
            &ns,
            "from-tenant-b",
            ingress(json!({"from": [{"namespaceSelector": {"matchLabels": {"citycloud.io/tenant": b}}}]})),
        )
        .await,
        "ingress from another tenant's namespaces",
        &["ingress Strict", "namespaceSelector"],
    );
    assert_refused(
        create(
            &alice,
            &ns,
            "from-not-my-tenant",
            ingress(json!({"from": [{"namespaceSelector": {"matchExpressions": [
                {"key": "citycloud.io/tenant", "operator": "NotIn", "values": [a]}]}}]})),
        )
        .await,
        "ingress from every namespace but her tenant's",
        &["ingress Strict", "namespaceSelector"],
    );
    assert_refused(
        create(
            &alice,
            &ns,
            "from-the-internet",
            ingress(json!({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})),
        )
        .await,
        "ingress from an ipBlock",
        &["ingress Strict", "ipBlock"],
    );
    assert_refused(
        nps.patch(
            "from-my-tenant",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingress": [{"from": [{"namespaceSelector": {}}]}]}})),
        )
        .await,
        "an update widening ingress to all namespaces",
        &["ingress Strict"],
    );

    // In her Open/Open tenant, the same policies are hers to write.
    let open_ns = format!("{open}-prod");
    accepted(
        &alice,
        &open_ns,
        "allow-all-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
    )
    .await;
    accepted(
        &alice,
        &open_ns,
        "from-all-namespaces",
        ingress(json!({"from": [{"namespaceSelector": {}}]})),
    )
    .await;
}

/// Whether `ns`'s labels pass any `from` peer of the policy's ingress rules (namespace
/// selectors only: the isolation policy has no other kind).
fn admits(policy: &NetworkPolicy, labels: &BTreeMap<String, String>) -> bool {
    let spec = policy.spec.clone().unwrap_or_default();
    spec.ingress.unwrap_or_default().iter().any(|rule| {
        rule.from.clone().unwrap_or_default().iter().any(|peer| {
            let selector = peer
                .namespace_selector
                .clone()
                .expect("a namespaceSelector");
            Selector::try_from(selector)
                .expect("a valid selector")
                .matches(labels)
        })
    })
}

async fn namespace_labels(env: &TestEnv, ns: &str) -> BTreeMap<String, String> {
    Api::<Namespace>::all(env.admin.clone())
        .get(ns)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
}

async fn shared_service(env: &TestEnv, name: &str, ns: &str) {
    apply::<SharedService>(
        &env.admin,
        &format!(
            "{{apiVersion: citycloud.io/v1alpha1, kind: SharedService, metadata: {{name: {name}}}, \
             spec: {{displayName: {name}, category: Integration, bindingType: {name}, \
             endpoint: {{namespace: {ns}, service: gateway, port: 443}}}}}}"
        ),
    )
    .await
    .unwrap();
}

/// Waits until `ns` has no isolation policy (`what` names the wait in a timeout).
async fn wait_no_isolation(env: &TestEnv, ns: &str, what: &str) {
    eventually(what, CONVERGE, || async {
        Api::<NetworkPolicy>::namespaced(env.admin.clone(), ns)
            .get_opt(ISOLATION)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

/// The names of the SharedServices owning the isolation policy of `ns`, once it exists.
async fn isolation_owners(env: &TestEnv, ns: &str) -> Option<(NetworkPolicy, Vec<String>)> {
    let p = Api::<NetworkPolicy>::namespaced(env.admin.clone(), ns)
        .get_opt(ISOLATION)
        .await
        .ok()??;
    let owners = p
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.name)
        .collect();
    Some((p, owners))
}

#[tokio::test]
async fn a_provider_namespace_admits_no_tenant_but_through_bound_claims() {
    let env = TestEnv::with_operator().await;
    let p = profile(&env).await;
    let provider = env.name("net-provider");
    // The second sorts before the first: the policy lists owners in one order, whoever adds them.
    let (svc, other) = (env.name("net-lgsp"), env.name("net-idp"));
    apply::<Namespace>(
        &env.admin,
        &format!("{{apiVersion: v1, kind: Namespace, metadata: {{name: {provider}}}}}"),
    )
    .await
    .unwrap();
    env.provider_namespace(&provider).await;
    apply_in::<Service>(
        &env.admin,
        &provider,
        "{apiVersion: v1, kind: Service, metadata: {name: gateway}, \
         spec: {selector: {app: gateway}, ports: [{port: 443}]}}",
    )
    .await
    .unwrap();
    let (t, admins) = (env.name("net-t"), env.name("net-t-admins"));
    tenant(&env, &t, &p, &admins, json!({})).await;
    let tenant_ns = format!("{t}-prod");

    // No claim at all: the namespace is isolated as soon as the SharedService exists.
    shared_service(&env, &svc, &provider).await;
    let (isolation, owners) = eventually("the provider namespace isolated", CONVERGE, || {
        isolation_owners(&env, &provider)
    })
    .await;
    assert_eq!(owners, vec![svc.clone()]);
    let spec = isolation.spec.clone().unwrap();
    assert_eq!(spec.pod_selector.unwrap_or_default(), Default::default());
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    assert!(
        !admits(&isolation, &namespace_labels(&env, &tenant_ns).await),
        "a tenant namespace is not admitted"
    );
    for ns in [provider.as_str(), "kube-system", "default"] {
        assert!(
            admits(&isolation, &namespace_labels(&env, ns).await),
            "{ns}, of no tenant, keeps access"
        );
    }

    // A bound claim adds its own policy, next to the isolation.
    let owner = env.user(&env.name("net-owner"), &[&admins]).await;
    let claim = format!(
        "{{apiVersion: citycloud.io/v1alpha1, kind: SharedServiceClaim, metadata: {{name: lgsp}}, \
         spec: {{service: {svc}}}}}"
    );
    eventually("the owner's claim created", CONVERGE, || async {
        match apply_in::<SharedServiceClaim>(&owner, &tenant_ns, &claim).await {
            Ok(_) => Some(()),
            Err(e) if code(&e) == Some(403) => None,
            Err(e) => panic!("creating the claim: {e}"),
        }
    })
    .await;
    let per_claim = format!("citycloud-claim-{tenant_ns}.lgsp");
    let claim_policy = eventually(
        "the claim's policy in the provider namespace",
        CONVERGE,
        || async {
            Api::<NetworkPolicy>::namespaced(env.admin.clone(), &provider)
                .get_opt(&per_claim)
                .await
                .ok()?
        },
    )
    .await;
    let rule = &claim_policy.spec.unwrap().ingress.unwrap()[0];
    assert_eq!(
        rule.from.clone().unwrap()[0]
            .namespace_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap()["kubernetes.io/metadata.name"],
        tenant_ns
    );
    assert!(
        isolation_owners(&env, &provider).await.is_some(),
        "the isolation stays"
    );

    // A second service in the same namespace shares the policy; the garbage collector removes
    // each service's reference as it goes, and the policy with the last one.
    shared_service(&env, &other, &provider).await;
    let mut both = vec![svc.clone(), other.clone()];
    both.sort();
    eventually("both services own the isolation", CONVERGE, || async {
        let (_, owners) = isolation_owners(&env, &provider).await?;
        (owners == both).then_some(())
    })
    .await;
    let services = Api::<SharedService>::all(env.admin.clone());
    services
        .delete(&svc, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "only the remaining service owns the isolation",
        CONVERGE,
        || async {
            let (_, owners) = isolation_owners(&env, &provider).await?;
            (owners == [other.clone()]).then_some(())
        },
    )
    .await;
    services
        .delete(&other, &DeleteParams::default())
        .await
        .unwrap();
    wait_no_isolation(&env, &provider, "the isolation gone with the last service").await;
}

/// Waits until the SharedService's status reflects its current generation: its reconcile,
/// which isolates its namespace first, has run.
async fn wait_reconciled(env: &TestEnv, name: &str) {
    let api = Api::<SharedService>::all(env.admin.clone());
    eventually(
        &format!("SharedService {name} reconciled"),
        CONVERGE,
        || async {
            let s = api.get(name).await.ok()?;
            (s.status?.observed_generation == s.metadata.generation).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_isolation_follows_the_endpoint_and_never_lands_in_a_tenant_namespace() {
    let env = TestEnv::with_operator().await;
    let p = profile(&env).await;
    let (first, second) = (env.name("net-first"), env.name("net-second"));
    for ns in [&first, &second] {
        apply::<Namespace>(
            &env.admin,
            &format!("{{apiVersion: v1, kind: Namespace, metadata: {{name: {ns}}}}}"),
        )
        .await
        .unwrap();
        env.provider_namespace(ns).await;
    }
    let svc = env.name("net-moving");
    shared_service(&env, &svc, &first).await;
    eventually("the first namespace isolated", CONVERGE, || {
        isolation_owners(&env, &first)
    })
    .await;

    // The platform team moves the service: the isolation moves with it.
    shared_service(&env, &svc, &second).await;
    eventually("the second namespace isolated", CONVERGE, || {
        isolation_owners(&env, &second)
    })
    .await;
    wait_no_isolation(&env, &first, "the first namespace's isolation removed").await;

    // A service published from a tenant's own namespace: that Tenant's network settings
    // govern it; the operator writes no isolation there.
    let (t, admins) = (env.name("net-host"), env.name("net-host-admins"));
    tenant(&env, &t, &p, &admins, json!({})).await;
    let tenant_ns = format!("{t}-prod");
    shared_service(&env, &svc, &tenant_ns).await;
    wait_reconciled(&env, &svc).await;
    assert!(
        isolation_owners(&env, &tenant_ns).await.is_none(),
        "no isolation policy in a tenant namespace"
    );
    wait_no_isolation(&env, &second, "the second namespace's isolation removed").await;
}
