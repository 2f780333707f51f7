//! The QuotaProfile controller: `status.tenants` counts the tenants using each profile.
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::{QuotaProfile, QuotaProfileStatus, Tenant, conditions};
use crate::conditions::{Cond, stamp};
use crate::context::Context;
use crate::{Result, reconciler};

const CONTROLLER: &str = "quotaprofile";

/// What the profile controller's reconciles share: the tenants, as watched (counting them
/// from a cache instead of listing every Tenant per reconcile).
struct ProfileContext {
    base: Arc<Context>,
    tenants: Store<Tenant>,
}

pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let (tenants, writer) = reflector::store();
    let tenant_changes = reflector(
        writer,
        watcher(
            Api::<Tenant>::all(client.clone()),
            watcher::Config::default(),
        )
        // Counting needs the spec's profile names only (memory at thousands of tenants).
        .modify(|t| {
            t.managed_fields_mut().clear();
            t.status = None;
        }),
    )
    .default_backoff()
    .touched_objects();
    let context = Arc::new(ProfileContext { base: ctx, tenants });
    Controller::new(
        Api::<QuotaProfile>::all(client.clone()),
        watcher::Config::default(),
    )
    // Tenants come in bursts: one count per profile per second is plenty.
    .with_config(Config::default().debounce(Duration::from_secs(1)))
    .watches_stream(tenant_changes, |t| {
        t.quota_profiles()
            .into_iter()
            .map(ObjectRef::new)
            .collect::<Vec<_>>()
    })
    .graceful_shutdown_on(shutdown)
    .run(reconcile, reconciler::error_policy, context)
    .for_each(|_| async {})
    .await;
}

async fn reconcile(profile: Arc<QuotaProfile>, context: Arc<ProfileContext>) -> Result<Action> {
    let ctx = &context.base;
    if context
        .tenants
        .wait_until_ready()
        .now_or_never()
        .is_none_or(|r| r.is_err())
    {
        // Just started: count once the Tenants have been listed.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let tenants = &context.tenants;
    reconciler::reconcile(
        ctx,
        profile,
        |p| async move { count(&p, ctx, tenants).await },
    )
    .await
}

impl reconciler::Controls for ProfileContext {
    fn base(&self) -> &Context {
        &self.base
    }
}

impl reconciler::Reconciled for QuotaProfile {
    type Status = QuotaProfileStatus;
    const CONTROLLER: &'static str = CONTROLLER;
    const TOP_CONDITION: &'static str = conditions::quota_profile::READY;
    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
    fn status(&self) -> Option<&QuotaProfileStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &mut QuotaProfileStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn observed_generation(status: &mut QuotaProfileStatus) -> &mut Option<i64> {
        &mut status.observed_generation
    }
}

async fn count(profile: &QuotaProfile, ctx: &Context, tenants: &Store<Tenant>) -> Result<Action> {
    let name = profile.name_any();
    let users = tenants
        .state()
        .iter()
        .filter(|t| t.quota_profiles().contains(&name.as_str()))
        .count() as i32;
    let previous = profile.status.clone().unwrap_or_default();
    let conds = [Cond::ok(
        conditions::quota_profile::READY,
        conditions::reason::ACCEPTED,
        format!("used by {users} tenant(s)"),
    )];
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new = QuotaProfileStatus {
        observed_generation: profile.metadata.generation,
        tenants: users,
        conditions: stamp(
            &previous.conditions,
            &conds,
            profile.metadata.generation,
            &now,
        ),
    };
    if new != previous {
        reconciler::write_status(ctx, profile, &new).await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}
