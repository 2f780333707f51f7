//! The QuotaProfile controller: `status.tenants` counts the tenants using each profile.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{QuotaProfile, QuotaProfileStatus, Tenant, conditions};
use crate::conditions::{Cond, stamp};
use crate::context::Context;
use crate::keyed::Keyed;
use crate::{Result, reconciler};

const CONTROLLER: &str = "quotaprofile";

/// What the profile controller's reconciles share: which tenants use each profile, kept from
/// the Tenant watch (a count is one lookup, not a scan of every tenant, and no Tenant is kept).
struct ProfileContext {
    base: Arc<Context>,
    users: Keyed<Tenant>,
}

fn profiles_of(t: &Tenant) -> Vec<String> {
    t.quota_profiles().into_iter().map(String::from).collect()
}

/// Runs the QuotaProfile controller until `shutdown` resolves, on the shared QuotaProfile feed
/// (its store and events) and the Tenant feed's events (see [`crate::feed`]).
pub async fn run(
    ctx: Arc<Context>,
    profiles: Store<QuotaProfile>,
    profile_events: futures::channel::mpsc::Receiver<crate::feed::Event<QuotaProfile>>,
    tenant_events: futures::channel::mpsc::Receiver<crate::feed::Event<Tenant>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let users = Keyed::new(profiles_of);
    let follower = users.clone();
    // A tenant created, deleted or moved to other profiles recounts the profiles it left and
    // those it uses now; nothing else of a Tenant matters here.
    let recounts = tenant_events.flat_map(move |event| {
        let profiles = follower.follow(&event);
        futures::stream::iter(profiles.into_iter().map(|p| ObjectRef::new(&p)))
    });
    let context = Arc::new(ProfileContext { base: ctx, users });
    Controller::for_stream(crate::feed::applied(profile_events), profiles)
        // Tenants come in bursts: one count per profile per second is plenty.
        .with_config(Config::default().debounce(Duration::from_secs(1)))
        .reconcile_on(recounts)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, reconciler::error_policy, context)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(profile: Arc<QuotaProfile>, context: Arc<ProfileContext>) -> Result<Action> {
    let ctx = &context.base;
    if !context.users.listed() {
        // Just started: count once the Tenants have been listed.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let users = &context.users;
    reconciler::reconcile(ctx, profile, |p| async move { count(&p, ctx, users).await }).await
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

async fn count(profile: &QuotaProfile, ctx: &Context, users: &Keyed<Tenant>) -> Result<Action> {
    let name = profile.name_any();
    let users = i32::try_from(users.count(&name)).unwrap_or(i32::MAX);
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
