//! The provider namespace's isolation. From the moment a SharedService exists, its endpoint
//! namespace carries the NetworkPolicy [`POLICY_NAME`]: every pod there accepts traffic from
//! namespaces of no tenant (the platform's own, monitoring, ingress controllers, the provider
//! itself) and from no tenant namespace; a tenant namespace gets in only through the policy
//! the claim controller adds for each of its bound claims (`citycloud-claim-*`). Without it,
//! a namespace nobody has claimed yet would have no policy at all, and be open to every
//! tenant.
//!
//! Several SharedServices may share a namespace: the one policy lists each of them as an owner
//! (not as its controller), so the garbage collector deletes it with the last of them, and
//! removes the reference of each one deleted before.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::{Resource, ResourceExt};
use tracing::warn;

use crate::api::SharedService;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE, TENANT};
use crate::context::Context;
use crate::{Result, StepExt};

/// The name of the isolation policy in a provider namespace.
pub const POLICY_NAME: &str = "citycloud-provider-isolation";
/// How soon to look again at a SharedService whose endpoint namespace does not exist yet, so
/// that the namespace is isolated shortly after it is created (no namespace watch).
const NAMESPACE_MISSING_RETRY: Duration = Duration::from_secs(5);

/// The isolation policy of the provider namespace `namespace`, owned by every SharedService
/// of `services` whose endpoint is there and that is not being deleted; `None` when there is
/// none. Owners are sorted by name, so that every SharedService of the namespace computes the
/// same policy (one of them applying cannot undo another).
pub fn build(namespace: &str, services: &[SharedService]) -> Option<NetworkPolicy> {
    let mut owners: Vec<_> = services
        .iter()
        .filter(|s| {
            s.spec.endpoint.namespace == namespace && s.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|s| s.owner_ref(&()))
        .collect();
    if owners.is_empty() {
        return None;
    }
    owners.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.uid.cmp(&b.uid)));
    let not_a_tenant = LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: TENANT.into(),
            operator: "DoesNotExist".into(),
            values: None,
        }]),
    };
    Some(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(POLICY_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.into(),
                MANAGED_BY_VALUE.into(),
            )])),
            owner_references: Some(owners),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(not_a_tenant),
                    ..Default::default()
                }]),
                ports: None,
            }]),
            egress: None,
        }),
    })
}

/// What became of the isolation of a SharedService's endpoint namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// The policy is in place.
    Isolated,
    /// The namespace does not exist (yet): nothing to isolate.
    NamespaceMissing,
    /// The namespace belongs to a tenant: its Tenant's own network settings govern it, and
    /// the policy would widen them (a Strict namespace would admit every namespace of no
    /// tenant) or override them (an Open one would shut out the tenant's other namespaces).
    TenantNamespace,
    /// A NetworkPolicy of that name exists and is not the operator's: left alone.
    NotOurs,
}

impl Isolation {
    /// When to reconcile the SharedService again: soon while its namespace is missing, else
    /// at the usual `resync`.
    pub fn requeue_after(self, resync: Duration) -> Duration {
        match self {
            Isolation::NamespaceMissing => NAMESPACE_MISSING_RETRY.min(resync),
            _ => resync,
        }
    }
}

/// Puts the isolation policy of `service`'s endpoint namespace in place (or leaves it as it
/// is), and takes `service` off the policies of namespaces it no longer points to (deleting
/// those no SharedService points to any more).
pub async fn sync(ctx: &Context, service: &SharedService) -> Result<Isolation> {
    let services = Api::<SharedService>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .at("reading", "the SharedServices")?
        .items;
    let live: BTreeMap<String, NetworkPolicy> = Api::<NetworkPolicy>::all(ctx.client.clone())
        .list(&ListParams::default().fields(&format!("metadata.name={POLICY_NAME}")))
        .await
        .at("reading", format!("the NetworkPolicies {POLICY_NAME}"))?
        .items
        .into_iter()
        .map(|p| (p.namespace().unwrap_or_default(), p))
        .collect();
    let here = service.spec.endpoint.namespace.clone();
    let uid = service.uid().unwrap_or_default();
    // Namespaces it pointed to before a change of spec.endpoint.namespace.
    let before: BTreeSet<&String> = live
        .iter()
        .filter(|(ns, p)| {
            **ns != here && is_ours(p) && p.owner_references().iter().any(|o| o.uid == uid)
        })
        .map(|(ns, _)| ns)
        .collect();
    for ns in before {
        sync_namespace(ctx, ns, &services, live.get(ns)).await?;
    }
    sync_namespace(ctx, &here, &services, live.get(&here)).await
}

fn is_ours(policy: &NetworkPolicy) -> bool {
    policy.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

async fn sync_namespace(
    ctx: &Context,
    ns: &str,
    services: &[SharedService],
    live: Option<&NetworkPolicy>,
) -> Result<Isolation> {
    if live.is_some_and(|l| !is_ours(l)) {
        warn!(namespace = %ns, policy = POLICY_NAME, "a NetworkPolicy of this name exists and is not the operator's: provider namespace not isolated");
        return Ok(Isolation::NotOurs);
    }
    let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), ns);
    let Some(desired) = build(ns, services) else {
        if let Some(live) = live.filter(|l| l.metadata.deletion_timestamp.is_none()) {
            // Only the version read: a SharedService that came meanwhile made it its own.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: live.resource_version(),
                    uid: live.uid(),
                }),
                ..Default::default()
            };
            match api.delete(POLICY_NAME, &params).await {
                Ok(_) => count_write(ctx),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    return Err(e).at("deleting", format!("NetworkPolicy {ns}/{POLICY_NAME}"));
                }
            }
        }
        return Ok(Isolation::Isolated);
    };
    let namespace = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(ns)
        .await
        .at("reading", format!("Namespace {ns}"))?;
    let Some(namespace) = namespace else {
        return Ok(Isolation::NamespaceMissing);
    };
    if let Some(tenant) = namespace.labels().get(TENANT) {
        warn!(namespace = %ns, %tenant, "the endpoint namespace belongs to a tenant: not isolated by the operator (its Tenant's network settings apply; claims still add their own policies)");
        return Ok(Isolation::TenantNamespace);
    }
    let outcome = crate::apply::apply(&api, &desired, live)
        .await
        .at("applying", format!("NetworkPolicy {ns}/{POLICY_NAME}"))?;
    if outcome != crate::apply::Outcome::Unchanged {
        count_write(ctx);
    }
    Ok(Isolation::Isolated)
}

fn count_write(ctx: &Context) {
    ctx.shared
        .metrics
        .writes
        .get_or_create(&crate::metrics::ControllerLabel {
            controller: super::CONTROLLER,
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, namespace: &str) -> SharedService {
        serde_yaml_ng::from_str(&format!(
            r#"
apiVersion: citycloud.io/v1alpha1
kind: SharedService
metadata: {{name: {name}, uid: uid-{name}}}
spec:
  displayName: "{name}"
  category: Integration
  endpoint: {{namespace: {namespace}, service: gateway, port: 443}}
  bindingType: {name}
"#
        ))
        .expect("fixture")
    }

    #[test]
    fn the_whole_provider_namespace_admits_only_namespaces_of_no_tenant() {
        let p = build("platform-lgsp", &[service("lgsp", "platform-lgsp")]).expect("a policy");
        assert_eq!(
            p.metadata.name.as_deref(),
            Some("citycloud-provider-isolation")
        );
        assert_eq!(p.metadata.namespace.as_deref(), Some("platform-lgsp"));
        assert_eq!(
            p.metadata.labels.clone().unwrap_or_default()["app.kubernetes.io/managed-by"],
            "citycloud-operator"
        );
        let spec = p.spec.expect("spec");
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].ports, None, "every port");
        let from = rules[0].from.clone().expect("from");
        assert_eq!(from.len(), 1);
        assert_eq!(from[0].pod_selector, None);
        assert_eq!(from[0].ip_block, None);
        let selector = from[0].namespace_selector.clone().expect("namespaces");
        assert_eq!(selector.match_labels, None);
        let exprs = selector.match_expressions.expect("expressions");
        assert_eq!(exprs.len(), 1);
        assert_eq!(exprs[0].key, "citycloud.io/tenant");
        assert_eq!(exprs[0].operator, "DoesNotExist");
    }

    #[test]
    fn every_service_of_the_namespace_owns_it_none_controls_it() {
        let services = [
            service("sso", "platform"),
            service("other", "elsewhere"),
            service("lgsp", "platform"),
        ];
        let p = build("platform", &services).expect("a policy");
        let owners = p.metadata.owner_references.expect("owners");
        let names: Vec<_> = owners.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["lgsp", "sso"], "sorted, only this namespace's");
        for o in &owners {
            assert_eq!(o.kind, "SharedService");
            assert_eq!(o.api_version, "citycloud.io/v1alpha1");
            assert_eq!(o.uid, format!("uid-{}", o.name));
            assert_eq!(o.controller, None);
            assert_eq!(
                o.block_owner_deletion, None,
                "blocking would need sharedservices/finalizers"
            );
        }
        // Any of them computes the same policy, whatever order the list came in.
        let mut reversed = services.clone();
        reversed.reverse();
        assert_eq!(build("platform", &reversed), build("platform", &services));
    }

    #[test]
    fn no_service_there_or_only_one_being_deleted_means_no_policy() {
        assert!(build("platform", &[service("lgsp", "elsewhere")]).is_none());
        let mut deleting = service("lgsp", "platform");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(build("platform", &[deleting]).is_none());
    }

    #[test]
    fn a_missing_namespace_is_looked_at_again_soon() {
        let resync = Duration::from_secs(60);
        assert_eq!(
            Isolation::NamespaceMissing.requeue_after(resync),
            NAMESPACE_MISSING_RETRY
        );
        assert_eq!(Isolation::Isolated.requeue_after(resync), resync);
        assert_eq!(Isolation::TenantNamespace.requeue_after(resync), resync);
    }
}
