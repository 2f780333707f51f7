//! A step the operator cannot take is visible where users look — the object's status and
//! `kubectl describe` (a Warning Event) — naming the step and the object, and the operator
//! recovers by itself once the cause is gone.
//!
//! The failure is injected as it happens in clusters: the operator's RBAC loses a kind (here,
//! writing NetworkPolicies). That must not touch the operator every other test shares, so
//! these tests run on a control plane of their own, with the chart's ServiceAccount, RBAC and
//! admission policies, and one operator.
use citycloud::api::SharedService;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, PostParams};
use testbed::builders::TenantBuilder;
use testbed::env::PrivateControlPlane;
use testbed::eventually;
use testbed::fixtures::{CONVERGE, apply, condition, wait_condition, wait_ready};
use testbed::operator::RELEASE;

use crate::claims::{World, claim_as, claim_yaml, shared_service, wait_bound, world};

/// The verbs the operator's ClusterRole grants on NetworkPolicies (the chart's rule), set to
/// `verbs`; returns the verbs it had.
async fn networkpolicy_verbs(admin: &kube::Client, verbs: &[String]) -> Vec<String> {
    let api = Api::<ClusterRole>::all(admin.clone());
    let mut role = api.get(RELEASE).await.expect("the operator's ClusterRole");
    let rule = role
        .rules
        .iter_mut()
        .flatten()
        .find(|r| r.resources.as_deref() == Some(&["networkpolicies".to_string()][..]))
        .expect("the chart's NetworkPolicy rule");
    let before = std::mem::replace(&mut rule.verbs, verbs.to_vec());
    role.metadata.managed_fields = None;
    api.replace(RELEASE, &PostParams::default(), &role)
        .await
        .expect("changing the operator's ClusterRole");
    before
}

/// Waits until the API server's authorizer sees the change: the operator's own token is
/// refused (or not) a NetworkPolicy in `ns` (a dry run: nothing is created).
async fn wait_networkpolicy_writes(operator: &kube::Client, ns: &str, allowed: bool) {
    let api = Api::<NetworkPolicy>::namespaced(operator.clone(), ns);
    let probe: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "rbac-probe"},
        "spec": {"podSelector": {}},
    }))
    .expect("a NetworkPolicy");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(
        &format!("the operator's NetworkPolicy writes allowed={allowed}"),
        CONVERGE,
        || async {
            let refused = match api.create(&dry_run, &probe).await {
                Err(kube::Error::Api(s)) => s.message.contains("cannot create resource"),
                _ => false,
            };
            (refused != allowed).then_some(())
        },
    )
    .await;
}

/// Whether `message` carries the API server's RBAC refusal of a NetworkPolicy write.
fn refused(message: &str) -> bool {
    message.contains("is forbidden") && message.contains("resource \"networkpolicies\"")
}

/// The Warning Events about `name` (in `namespace`, or any) with `reason`: their notes.
async fn warnings(
    admin: &kube::Client,
    namespace: Option<&str>,
    name: &str,
    reason: &str,
) -> Vec<String> {
    let api = match namespace {
        Some(ns) => Api::<Event>::namespaced(admin.clone(), ns),
        None => Api::<Event>::all(admin.clone()),
    };
    let list = api.list(&ListParams::default()).await.expect("events");
    list.items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test]
async fn an_operator_without_rbac_for_a_kind_says_so_on_the_tenant_and_the_claim_and_recovers() {
    let (pcp, env) = PrivateControlPlane::for_operators("failures").await;
    let operator_client = env.operator_client().await;
    let _operator = pcp.operator();
    let w = world(&env, "").await;
    let t = env.name("norbac");
    let prod = TenantBuilder::new(&t, &w.profile);
    env.tenant_ready(&prod).await;

    // The operator loses the right to write NetworkPolicies.
    let read_only = ["get", "list", "watch"].map(String::from);
    let granted = networkpolicy_verbs(&pcp.admin, &read_only).await;
    wait_networkpolicy_writes(&operator_client, &format!("{t}-prod"), false).await;

    // A new environment needs its ingress NetworkPolicy: Ready=False, naming step and object.
    let both = prod.clone().environments(&["prod", "dev"]);
    both.apply(&pcp.admin).await.expect("the tenant changed");
    let failed = wait_condition(&pcp.admin, &t, "Ready", "False", Some("ApplyFailed")).await;
    let ready = condition(&failed, "Ready");
    let object = format!("NetworkPolicy {t}-dev/citycloud-ingress");
    assert!(
        ready.message.starts_with(&format!("applying {object}: ")) && refused(&ready.message),
        "names the step, the object and the API server's refusal: {}",
        ready.message
    );
    // What `kubectl describe tenant` shows.
    let notes = eventually(
        "a Warning event ApplyFailed on the tenant",
        CONVERGE,
        || async {
            let notes = warnings(&pcp.admin, None, &t, "ApplyFailed").await;
            (!notes.is_empty()).then_some(notes)
        },
    )
    .await;
    assert!(notes.iter().any(|n| n.contains(&object)), "{notes:?}");

    // A claim needs NetworkPolicies on both sides: Bound=False, naming step and object.
    let ns = format!("{t}-prod");
    // (Retried while kube-controller-manager recounts the quota the new environment changed.)
    claim_as(&pcp.admin, &ns, &claim_yaml("api", &w.service, None)).await;
    let claim = wait_bound(&env, &ns, "api", "False", "ApplyFailed").await;
    let status = claim.status.expect("status");
    let bound = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Bound")
        .expect("Bound");
    assert!(
        bound.message.starts_with("applying NetworkPolicy ") && refused(&bound.message),
        "names the step, the object and the refusal: {}",
        bound.message
    );
    assert_eq!(status.binding, None, "never bound: no binding to show");
    // What `kubectl describe sharedserviceclaim` shows.
    let notes = eventually(
        "a Warning event ApplyFailed on the claim",
        CONVERGE,
        || async {
            let notes = warnings(&pcp.admin, Some(&ns), "api", "ApplyFailed").await;
            (!notes.is_empty()).then_some(notes)
        },
    )
    .await;
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("applying NetworkPolicy ")),
        "{notes:?}"
    );

    // A SharedService in a new provider namespace needs its isolation NetworkPolicy:
    // ConsumersPublished=False, naming step and object.
    let other = World {
        profile: w.profile.clone(),
        provider_ns: env.name("platform2"),
        service: env.name("registry"),
    };
    apply::<Namespace>(
        &pcp.admin,
        &format!(
            "{{apiVersion: v1, kind: Namespace, metadata: {{name: {}}}}}",
            other.provider_ns
        ),
    )
    .await
    .expect("a provider namespace");
    env.provider_namespace(&other.provider_ns).await;
    shared_service(&env, &other, &other.service, "").await;
    let isolation = format!(
        "NetworkPolicy {}/citycloud-provider-isolation",
        other.provider_ns
    );
    let published = wait_published(&pcp.admin, &other.service, "False", "ApplyFailed").await;
    assert!(
        published
            .message
            .starts_with(&format!("applying {isolation}: "))
            && refused(&published.message),
        "names the step, the object and the refusal: {}",
        published.message
    );
    let notes = eventually(
        "a Warning event ApplyFailed on the service",
        CONVERGE,
        || async {
            let notes = warnings(&pcp.admin, None, &other.service, "ApplyFailed").await;
            (!notes.is_empty()).then_some(notes)
        },
    )
    .await;
    assert!(notes.iter().any(|n| n.contains(&isolation)), "{notes:?}");

    // The right comes back: all converge by themselves (retried with backoff).
    networkpolicy_verbs(&pcp.admin, &granted).await;
    wait_networkpolicy_writes(&operator_client, &ns, true).await;
    wait_ready(&pcp.admin, &t).await;
    Api::<NetworkPolicy>::namespaced(pcp.admin.clone(), &format!("{t}-dev"))
        .get("citycloud-ingress")
        .await
        .expect("the dev namespace's ingress policy, applied once allowed");
    wait_bound(&env, &ns, "api", "True", "Bound").await;
    wait_published(&pcp.admin, &other.service, "True", "Published").await;
    Api::<NetworkPolicy>::namespaced(pcp.admin.clone(), &other.provider_ns)
        .get("citycloud-provider-isolation")
        .await
        .expect("the provider namespace isolated, once allowed");
}

/// Waits until the SharedService's ConsumersPublished condition has `status` and `reason`,
/// for its generation.
async fn wait_published(admin: &kube::Client, name: &str, status: &str, reason: &str) -> Condition {
    let api = Api::<SharedService>::all(admin.clone());
    eventually(
        &format!("SharedService {name} ConsumersPublished={status} {reason}"),
        CONVERGE,
        || async {
            let s = api.get(name).await.ok()?;
            let st = s.status?;
            (st.observed_generation == s.metadata.generation).then_some(())?;
            let c = st
                .conditions
                .into_iter()
                .find(|c| c.type_ == "ConsumersPublished")?;
            (c.status == status && c.reason == reason).then_some(c)
        },
    )
    .await
}
