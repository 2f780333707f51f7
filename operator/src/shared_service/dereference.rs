//! Reads what a SharedService's reconcile works from: the provider's Service, the claims
//! bound to it and (PerClaim) their tokens, each read by name from the claim's binding Secret.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::build::{self, Failure, Tokens};
use crate::api::{Credentials, SharedService, SharedServiceClaim};
use crate::claim::build::{claim_id, consumer_key};
use crate::claim::dereference::tenant_of;
use crate::context::Context;
use crate::{Result, StepExt};

/// What a SharedService's reconcile works from.
pub struct Found {
    /// The Service its endpoint names, if it exists.
    pub provider: Option<Service>,
    /// The claims bound to it.
    pub bound: Vec<SharedServiceClaim>,
    /// The tokens of the bound claims, by tenant (PerClaim credentials only).
    pub tokens: Tokens,
    /// Binding Secrets that could not be read: failures of their tenant only.
    pub failures: Vec<Failure>,
}

pub async fn dereference(ctx: &Context, service: &SharedService) -> Result<Found> {
    let name = service.name_any();
    let endpoint = &service.spec.endpoint;
    let provider = Api::<Service>::namespaced(ctx.client.clone(), &endpoint.namespace)
        .get_opt(&endpoint.service)
        .await
        .at(
            "reading",
            format!("Service {}/{}", endpoint.namespace, endpoint.service),
        )?;
    let bound: Vec<SharedServiceClaim> = Api::<SharedServiceClaim>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .at("reading", "the SharedServiceClaims")?
        .items
        .into_iter()
        .filter(|c| c.service_name() == name && build::is_bound(c))
        .collect();
    let (tokens, failures) = if service.spec.credentials == Credentials::PerClaim {
        tokens(ctx, &bound).await?
    } else {
        (Tokens::new(), Vec::new())
    };
    Ok(Found {
        provider,
        bound,
        tokens,
        failures,
    })
}

/// The tokens of the bound claims, by tenant (the claim namespace's `citycloud.io/tenant`,
/// which only the operator may set), each read by name from the claim's binding Secret (in
/// its own namespace: never a list of Secrets) and published only if its digest is the one
/// the claim's status recorded when the operator issued it. A tenant with bound claims has an
/// entry even when none of its tokens is valid yet. A binding Secret that cannot be read is a
/// failure of its tenant only.
async fn tokens(ctx: &Context, bound: &[SharedServiceClaim]) -> Result<(Tokens, Vec<Failure>)> {
    let mut tenants: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut tokens = Tokens::new();
    let mut failures = Vec::new();
    for claim in bound {
        let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
        if !tenants.contains_key(&ns) {
            let namespace = Api::<Namespace>::all(ctx.client.clone())
                .get_opt(&ns)
                .await
                .at("reading", format!("Namespace {ns}"))?;
            let tenant = namespace.as_ref().and_then(tenant_of).map(str::to_string);
            tenants.insert(ns.clone(), tenant);
        }
        // A namespace of no tenant (any more): its claims are being revoked.
        let Some(Some(tenant)) = tenants.get(&ns) else {
            continue;
        };
        let entries = tokens.entry(tenant.clone()).or_default();
        let status = claim.status.as_ref();
        let Some(binding) = status.and_then(|s| s.binding.as_ref()) else {
            continue;
        };
        let secret = match Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&binding.name)
            .await
        {
            Ok(secret) => secret,
            Err(e) => {
                failures.push(Failure {
                    tenant: Some(tenant.clone()),
                    error: format!("reading the binding Secret {ns}/{}: {e}", binding.name),
                });
                continue;
            }
        };
        let recorded = status.and_then(|s| s.token_digest.as_deref());
        if let Some(token) =
            crate::claim::token::kept(secret.as_ref(), &claim_id(&ns, &name), recorded)
        {
            entries.insert(consumer_key(&ns, &name), token);
        }
    }
    Ok((tokens, failures))
}
