//! Applies a bound claim's objects and removes whatever else was made for it; a refused or
//! deleted claim keeps nothing.
//!
//! What was made for a claim is found by its label: NetworkPolicies by a cluster-wide list
//! (so a policy left in a provider namespace the service no longer uses is found too), and
//! Secrets only in the claim's own namespace (no Secrets access cluster-wide).
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Resource, ResourceExt};

use super::build::{ClaimResources, claim_id, legacy_claim_id};
use crate::api::SharedServiceClaim;
use crate::api::labels::CLAIM as CLAIM_LABEL;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE};
use crate::apply::{Outcome, apply, get_and_apply};
use crate::context::Context;
use crate::reconciler::object_name;
use crate::{Result, StepExt};

/// What binding did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bound {
    /// Objects created, changed or deleted.
    pub writes: usize,
    /// Whether the binding Secret was created (first binding, or after it was deleted).
    pub secret_created: bool,
}

/// What was made for the claim: labelled with its id, or with the id an older release gave it
/// (so an upgrade leaves nothing behind).
fn selector(claim: &SharedServiceClaim) -> String {
    let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
    let id = claim_id(&ns, &name);
    match legacy_claim_id(&ns, &name) {
        Some(legacy) => format!("{MANAGED_BY}={MANAGED_BY_VALUE},{CLAIM_LABEL} in ({id},{legacy})"),
        None => format!("{MANAGED_BY}={MANAGED_BY_VALUE},{CLAIM_LABEL}={id}"),
    }
}

fn count(ctx: &Context, outcome: Outcome) -> usize {
    if outcome == Outcome::Unchanged {
        return 0;
    }
    ctx.shared
        .metrics
        .writes
        .get_or_create(&crate::metrics::ControllerLabel {
            controller: super::CONTROLLER,
        })
        .inc();
    1
}

/// Network access first, then the Secret: a claim whose Secret exists can reach the service.
pub async fn bind(
    ctx: &Context,
    claim: &SharedServiceClaim,
    desired: &ClaimResources,
    live_secret: Option<&Secret>,
) -> Result<Bound> {
    let mut bound = Bound::default();
    for policy in desired.policies() {
        let api = Api::<NetworkPolicy>::namespaced(
            ctx.client.clone(),
            policy.meta().namespace.as_deref().unwrap_or_default(),
        );
        let applied = get_and_apply(&api, policy).await;
        bound.writes += count(ctx, applied.at("applying", object_name(policy))?);
    }
    let secrets = Api::<Secret>::namespaced(
        ctx.client.clone(),
        desired
            .secret
            .meta()
            .namespace
            .as_deref()
            .unwrap_or_default(),
    );
    // A Secret's type cannot change: one of another bindingType is replaced.
    let live = match live_secret {
        Some(l) if l.type_ != desired.secret.type_ => {
            secrets
                .delete(&l.name_any(), &DeleteParams::default())
                .await
                .at("deleting", object_name(l))?;
            bound.writes += 1;
            None
        }
        other => other,
    };
    let outcome = apply(&secrets, &desired.secret, live)
        .await
        .at("applying", object_name(&desired.secret))?;
    bound.secret_created = outcome == Outcome::Created;
    bound.writes += count(ctx, outcome);
    bound.writes += prune(ctx, claim, Some(desired)).await?;
    Ok(bound)
}

/// Deletes every object made for the claim that `keep` does not hold (all of them when
/// `keep` is `None`). Returns how many were deleted.
pub async fn prune(
    ctx: &Context,
    claim: &SharedServiceClaim,
    keep: Option<&ClaimResources>,
) -> Result<usize> {
    let params = ListParams::default().labels(&selector(claim));
    let keep_policies: Vec<(String, String)> = keep
        .into_iter()
        .flat_map(ClaimResources::policies)
        .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    let mut deleted = 0;
    let policies = Api::<NetworkPolicy>::all(ctx.client.clone())
        .list_metadata(&params)
        .await
        .at(
            "reading",
            format!("the NetworkPolicies of {}", object_name(claim)),
        )?;
    for p in policies {
        let at = (p.namespace().unwrap_or_default(), p.name_any());
        if !keep_policies.contains(&at) {
            delete(
                &Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &at.0),
                &at.1,
            )
            .await
            .at("deleting", format!("NetworkPolicy {}/{}", at.0, at.1))?;
            deleted += 1;
        }
    }
    let ns = claim.namespace().unwrap_or_default();
    let secrets_api = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    let secrets = match secrets_api.list_metadata(&params).await {
        Ok(list) => list.items,
        // Outside tenant namespaces the operator has no Secrets access, and so made none.
        Err(kube::Error::Api(e)) if e.code == 403 => Vec::new(),
        Err(e) => return Err(e).at("reading", format!("the Secrets of {}", object_name(claim))),
    };
    for s in secrets {
        let wanted = keep.is_some_and(|k| k.secret.meta().name.as_deref() == Some(&s.name_any()));
        if !wanted {
            delete(&secrets_api, &s.name_any())
                .await
                .at("deleting", format!("Secret {ns}/{}", s.name_any()))?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes, treating "already gone" as done.
async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
