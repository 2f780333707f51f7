//! The TenantRequest controller: a pending request is denied when it can never be granted
//! (budget, someone else's Tenant) or approved by a TenantRequestPolicy; an approved one
//! reserves its budget on the parent (optimistic lock), waits for the parent's quotas to make
//! room, then creates or changes the Tenant, and reports Provisioned when it is Ready.
//! Decisions themselves are people's (admission policies in the API server check who).
pub mod plan;
pub mod policy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::api::annotations::BUDGET_RESERVATIONS;
use crate::api::conditions::reason::{self, BUDGET_EXCEEDED};
use crate::api::conditions::tenant_request::{APPROVED, DENIED, PROVISIONED};
use crate::api::labels::CLAIM as CLAIM_LABEL;
use crate::api::labels::TENANT;
use crate::api::tenant_request::TOP_LEVEL_APPROVAL;
use crate::api::{QuotaProfile, Tenant, TenantRequest, TenantRequestStatus};
use crate::conditions::{Cond, stamp};
use crate::context::Context;
use crate::keyed::Keyed;
use crate::quota::carve::{self as budget, Budget};
use crate::tenant::build::QUOTA;
use crate::{Error, Result, StepExt, reconciler};
use plan::Decision;

const CONTROLLER: &str = "tenantrequest";
/// A pending request is looked at again now and then: its parent's budget moves.
const PENDING_RECHECK: Duration = Duration::from_secs(60);

/// The keys a request is found under from a Tenant's event: the tenant it asks for, and the
/// parent whose budget it reserves.
fn tenants_of(r: &TenantRequest) -> Vec<String> {
    let mut keys: Vec<String> = std::iter::once(r.spec.tenant.clone())
        .chain(r.status.as_ref().and_then(|s| s.parent.clone()))
        .collect();
    keys.dedup();
    keys
}

/// Runs the TenantRequest controller until `shutdown` resolves.
/// `tenant_events` is the shared Tenant feed (see [`crate::feed`]).
pub async fn run(
    ctx: Arc<Context>,
    tenant_events: futures::channel::mpsc::Receiver<crate::feed::Event<Tenant>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // The requests naming each tenant, kept from the requests' own watch: a Tenant's event
    // finds its requests by one lookup, not a scan of every request.
    let naming = Keyed::new(tenants_of);
    let follower = naming.clone();
    let (store, writer) = reflector::store();
    let requests = reflector(
        writer,
        watcher(
            Api::<TenantRequest>::all(client.clone()),
            crate::watching::config(),
        )
        .modify(|r| r.managed_fields_mut().clear())
        .inspect(move |event| {
            if let Ok(event) = event {
                follower.follow(event);
            }
        }),
    )
    .default_backoff()
    .applied_objects();
    Controller::for_stream(requests, store)
        // A Tenant becoming Ready (Provisioned), or a parent's reservations changing.
        .reconcile_on(crate::feed::triggers(tenant_events, move |t: &Tenant| {
            naming.under(&t.name_any())
        }))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, reconciler::error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(request: Arc<TenantRequest>, ctx: Arc<Context>) -> Result<Action> {
    let ctx = &*ctx;
    reconciler::reconcile(ctx, request, |r| async move { decide(&r, ctx).await }).await
}

/// A failed step makes Provisioned False; the decisions (Approved, Denied) stay as they are.
impl reconciler::Reconciled for TenantRequest {
    type Status = TenantRequestStatus;
    const CONTROLLER: &'static str = CONTROLLER;
    const TOP_CONDITION: &'static str = PROVISIONED;
    fn api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
    fn status(&self) -> Option<&TenantRequestStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &mut TenantRequestStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn observed_generation(status: &mut TenantRequestStatus) -> &mut Option<i64> {
        &mut status.observed_generation
    }
}

/// What a reconcile found out, for the status.
struct Outcome {
    parent: Option<String>,
    /// A decision the operator takes (Denied, or Approved by a policy), with who took it.
    decision: Option<(Cond, String)>,
    provisioned: Cond,
    tenant: Option<String>,
    then: Action,
}

async fn decide(request: &TenantRequest, ctx: &Context) -> Result<Action> {
    let client = &ctx.client;
    let ns = request.namespace().unwrap_or_default();
    let parent = parent_of(client, &ns).await?;
    let existing = Api::<Tenant>::all(client.clone())
        .get_opt(&request.spec.tenant)
        .await
        .at("reading", format!("Tenant {}", request.spec.tenant))?;
    let outcome = match plan::decision(request) {
        Decision::Denied => Outcome {
            parent: parent.clone(),
            decision: None,
            provisioned: Cond::fail(PROVISIONED, reason::DENIED, "the request was denied"),
            tenant: None,
            then: Action::await_change(),
        },
        Decision::Pending => pending(request, ctx, parent.as_deref(), existing.as_ref()).await?,
        Decision::Approved { by } => {
            provision(request, ctx, parent.as_deref(), existing.as_ref(), &by).await?
        }
    };
    write_status(request, ctx, &outcome).await?;
    // A decision of the operator's is taken once (final): told as an Event too, for
    // `kubectl describe treq` and for auditors watching events.
    if let Some((cond, by)) = &outcome.decision {
        let kind = if cond.type_ == DENIED {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(
            request,
            kind,
            &cond.reason,
            format!("{} by {by}: {}", cond.type_, cond.message),
        )
        .await;
    }
    Ok(outcome.then)
}

/// The parent: the tenant of the request's namespace; none in the requests namespace.
async fn parent_of(client: &Client, ns: &str) -> Result<Option<String>> {
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .at("reading", format!("Namespace {ns}"))?;
    Ok(namespace.labels().get(TENANT).cloned())
}

/// The tenant budget a spec asks for (profile merged with quotaOverrides.tenant), or None
/// when the profile does not exist.
async fn budget_of(
    client: &Client,
    profile: &str,
    overrides: Option<&crate::api::QuotaOverrides>,
) -> Result<Option<Budget>> {
    let found = Api::<QuotaProfile>::all(client.clone())
        .get_opt(profile)
        .await
        .at("reading", format!("QuotaProfile {profile}"))?;
    Ok(found.map(|p| budget::carvable(p.tenant_budget(overrides))))
}

/// A parent's budget, its reservations and its namespaces' quotas, read fresh (never from a
/// cache: the decision must see every approval and admission so far).
struct ParentBudget {
    tenant: Tenant,
    budget: Budget,
    quotas: Vec<ResourceQuota>,
    /// What every child holds: reservations, and the budgets of the children that exist,
    /// created from requests or directly by platform engineers.
    committed: budget::Reservations,
}

async fn parent_budget(client: &Client, parent: &str) -> Result<Option<ParentBudget>> {
    let Some(tenant) = Api::<Tenant>::all(client.clone())
        .get_opt(parent)
        .await
        .at("reading", format!("Tenant {parent}"))?
    else {
        return Ok(None);
    };
    let Some(budget) = budget_of(
        client,
        &tenant.spec.quota_profile,
        tenant.spec.quota_overrides.as_ref(),
    )
    .await?
    else {
        return Ok(None);
    };
    let quotas = Api::<ResourceQuota>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{TENANT}={parent},!{CLAIM_LABEL}")))
        .await
        .at("reading", format!("the quotas of Tenant {parent}"))?
        .items
        .into_iter()
        .filter(|q| q.name_any() == QUOTA)
        .collect();
    // Children created directly carry no reservation: their own budgets count. One list of
    // the Tenants per decision (requests are rare; read fresh like the rest).
    let mut profiles: BTreeMap<String, Option<QuotaProfile>> = BTreeMap::new();
    let mut children = budget::Children::new();
    for child in Api::<Tenant>::all(client.clone())
        .list(&ListParams::default())
        .await
        .at("reading", format!("the children of Tenant {parent}"))?
        .items
        .into_iter()
        .filter(|t| t.spec.parent.as_deref() == Some(parent))
    {
        let profile = &child.spec.quota_profile;
        if !profiles.contains_key(profile) {
            let found = Api::<QuotaProfile>::all(client.clone())
                .get_opt(profile)
                .await
                .at("reading", format!("QuotaProfile {profile}"))?;
            profiles.insert(profile.clone(), found);
        }
        let actual = profiles
            .get(profile)
            .and_then(Option::as_ref)
            .map(|p| budget::carvable(p.tenant_budget(child.spec.quota_overrides.as_ref())));
        children.insert(child.name_any(), actual);
    }
    let committed = budget::committed(&budget::reservations(&tenant), &children);
    Ok(Some(ParentBudget {
        tenant,
        budget,
        quotas,
        committed,
    }))
}

fn waiting(parent: Option<&str>, provisioned: Cond, then: Duration) -> Outcome {
    Outcome {
        parent: parent.map(str::to_owned),
        decision: None,
        provisioned,
        tenant: None,
        then: Action::requeue(then),
    }
}

async fn pending(
    request: &TenantRequest,
    ctx: &Context,
    parent: Option<&str>,
    existing: Option<&Tenant>,
) -> Result<Outcome> {
    let client = &ctx.client;
    let template = &request.spec.template;
    let child = budget_of(
        client,
        &template.quota_profile,
        template.quota_overrides.as_ref(),
    )
    .await?;
    let fit = match (parent, &child) {
        (Some(p), Some(child)) => match parent_budget(client, p).await? {
            Some(pb) => budget::fits(
                &pb.budget,
                &pb.committed,
                &pb.quotas,
                &request.spec.tenant,
                child,
            ),
            None => Ok(()),
        },
        _ => Ok(()),
    };
    if let Some(denied) = plan::refusal(parent, existing, &fit) {
        info!(reason = %denied.reason, "denied: {}", denied.message);
        return Ok(Outcome {
            parent: parent.map(str::to_owned),
            decision: Some((denied, operator_name(ctx))),
            provisioned: Cond::fail(PROVISIONED, reason::DENIED, "the request was denied"),
            tenant: None,
            then: Action::await_change(),
        });
    }
    if let (Some(child), true) = (&child, fit.is_ok())
        && let Some((policy, why)) =
            policy::approving(client, request, parent, existing, child).await?
    {
        info!(%policy, "approved by policy");
        return Ok(Outcome {
            parent: parent.map(str::to_owned),
            decision: Some((
                plan::approved_by_policy(&policy, &why),
                format!("TenantRequestPolicy/{policy}"),
            )),
            provisioned: Cond::fail(PROVISIONED, reason::PROVISIONING, "approved; provisioning"),
            tenant: None,
            then: Action::requeue(Duration::from_millis(100)),
        });
    }
    let waiting_for = match child {
        Some(_) => plan::awaiting_approval(parent, TOP_LEVEL_APPROVAL),
        None => Cond::fail(
            PROVISIONED,
            reason::PROFILE_NOT_FOUND,
            format!(
                "QuotaProfile {} does not exist: ask for an existing profile (kubectl get quotaprofiles)",
                template.quota_profile
            ),
        ),
    };
    Ok(waiting(parent, waiting_for, PENDING_RECHECK))
}

async fn provision(
    request: &TenantRequest,
    ctx: &Context,
    parent: Option<&str>,
    existing: Option<&Tenant>,
    approved_by: &str,
) -> Result<Outcome> {
    let client = &ctx.client;
    let name = &request.spec.tenant;
    let done = Outcome {
        parent: parent.map(str::to_owned),
        decision: None,
        provisioned: plan::provisioned(request, existing),
        tenant: Some(name.clone()),
        then: Action::requeue(Duration::from_secs(30)),
    };
    // Applied once: re-applying the request, or a resync, changes nothing; a later request
    // changing the same Tenant is never undone by this one.
    let applied = request.status.as_ref().and_then(|s| s.tenant.as_ref()) == Some(name);
    if applied || plan::applied(request, existing) {
        return Ok(Outcome {
            then: if done.provisioned.ok {
                Action::await_change()
            } else {
                done.then
            },
            ..done
        });
    }
    if let Some(refused) = plan::refusal(parent, existing, &Ok(())) {
        let cond = Cond::fail(PROVISIONED, &refused.reason, refused.message);
        return Ok(waiting(parent, cond, PENDING_RECHECK));
    }
    let template = &request.spec.template;
    let Some(child) = budget_of(
        client,
        &template.quota_profile,
        template.quota_overrides.as_ref(),
    )
    .await?
    else {
        let cond = Cond::fail(
            PROVISIONED,
            reason::PROFILE_NOT_FOUND,
            format!("QuotaProfile {} does not exist", template.quota_profile),
        );
        return Ok(waiting(parent, cond, Duration::from_secs(10)));
    };
    if let Some(p) = parent {
        let Some(pb) = parent_budget(client, p).await? else {
            let cond = Cond::fail(
                PROVISIONED,
                reason::PARENT_NOT_FOUND,
                format!("the parent Tenant {p} or its QuotaProfile does not exist"),
            );
            return Ok(waiting(parent, cond, Duration::from_secs(10)));
        };
        let reservations = budget::reservations(&pb.tenant);
        if let Some(wanted) = budget::reserve(&reservations, name, &child) {
            if let Err(short) = budget::fits(&pb.budget, &pb.committed, &pb.quotas, name, &child) {
                let cond = Cond::fail(
                    PROVISIONED,
                    BUDGET_EXCEEDED,
                    format!("does not fit the budget of {p} any more: {short}"),
                );
                return Ok(waiting(parent, cond, PENDING_RECHECK));
            }
            return match reserve(client, &pb.tenant, &wanted).await? {
                // Reserved: the parent's quotas shrink now (the Tenant controller); come back.
                true => Ok(waiting(
                    parent,
                    Cond::fail(
                        PROVISIONED,
                        reason::RESERVING,
                        format!("budget reserved on {p}"),
                    ),
                    Duration::from_millis(500),
                )),
                // Another approval changed the parent first: decide again on what it left.
                false => Ok(waiting(
                    parent,
                    Cond::fail(
                        PROVISIONED,
                        reason::RESERVING,
                        format!("reserving budget on {p}"),
                    ),
                    Duration::from_millis(50),
                )),
            };
        }
        if !budget::parent_enforced(&pb.budget, &pb.committed, &pb.quotas) {
            let cond = Cond::fail(
                PROVISIONED,
                reason::WAITING_FOR_PARENT_QUOTA,
                format!(
                    "waiting for the namespaces of {p} to give back the budget reserved for {name}"
                ),
            );
            return Ok(waiting(parent, cond, Duration::from_secs(1)));
        }
    }
    let body = plan::desired_tenant(request, parent, approved_by);
    let live = Api::<Tenant>::all(client.clone())
        .patch(name, &crate::apply::params(), &Patch::Apply(&body))
        .await
        .at("applying", format!("Tenant {name}"))?;
    info!(tenant = %name, "Tenant applied from the request");
    ctx.publish(
        request,
        EventType::Normal,
        "TenantApplied",
        format!("Tenant {name} created or changed as approved by {approved_by}"),
    )
    .await;
    Ok(Outcome {
        provisioned: plan::provisioned(request, Some(&live)),
        then: Action::requeue(Duration::from_secs(5)),
        ..done
    })
}

/// Replaces the parent's reservations, only if nobody changed the parent since it was read
/// (its resourceVersion as precondition). False when someone did.
pub async fn reserve(
    client: &Client,
    parent: &Tenant,
    reservations: &budget::Reservations,
) -> Result<bool> {
    let name = parent.name_any();
    let patch = json!({"metadata": {
        "resourceVersion": parent.resource_version(),
        "annotations": {BUDGET_RESERVATIONS: budget::to_annotation(reservations)},
    }});
    match Api::<Tenant>::all(client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::from(e).at("reserving budget on", format!("Tenant {name}"))),
    }
}

/// The username the operator's decisions are recorded under.
fn operator_name(ctx: &Context) -> String {
    ctx.identity
        .as_ref()
        .map(|i| {
            format!(
                "system:serviceaccount:{}:{}",
                i.namespace, i.service_account
            )
        })
        .unwrap_or_else(|| crate::FIELD_MANAGER.to_owned())
}

async fn write_status(request: &TenantRequest, ctx: &Context, outcome: &Outcome) -> Result<()> {
    let previous = request.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = request.metadata.generation;
    // Decisions already taken are kept as they are (final); the operator's own new one added.
    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ == APPROVED || c.type_ == DENIED)
        .cloned()
        .collect();
    let mut decided_by = previous.decided_by.clone();
    if let Some((cond, by)) = &outcome.decision {
        conditions.extend(stamp(&[], std::slice::from_ref(cond), generation, &now));
        decided_by = Some(by.clone());
    }
    conditions.extend(stamp(
        &previous.conditions,
        std::slice::from_ref(&outcome.provisioned),
        generation,
        &now,
    ));
    let decision = match outcome.decision.as_ref().map(|(c, _)| c.type_) {
        Some(t) if t == DENIED => Decision::Denied,
        Some(_) => Decision::Approved {
            by: decided_by.clone().unwrap_or_default(),
        },
        None => plan::decision(request),
    };
    let new = TenantRequestStatus {
        observed_generation: generation,
        parent: outcome.parent.clone(),
        conditions,
        decided_by,
        state: Some(plan::state_of(&decision, outcome.provisioned.ok).to_owned()),
        tenant: outcome.tenant.clone().or(previous.tenant.clone()),
    };
    if same(&new, &previous) {
        return Ok(());
    }
    reconciler::write_status(ctx, request, &new).await
}

/// Equal but for the order of conditions.
fn same(a: &TenantRequestStatus, b: &TenantRequestStatus) -> bool {
    let by_type = |s: &TenantRequestStatus| -> BTreeMap<String, Condition> {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.clone()))
            .collect()
    };
    a.observed_generation == b.observed_generation
        && a.parent == b.parent
        && a.decided_by == b.decided_by
        && a.state == b.state
        && a.tenant == b.tenant
        && by_type(a) == by_type(b)
}
