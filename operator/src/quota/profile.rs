//! The QuotaProfile controller: `status.tenants` counts the tenants using each profile.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use crate::api::{QuotaProfile, QuotaProfileStatus, Tenant};
use crate::conditions::{Cond, stamp};
use crate::context::Context;
use crate::{Error, FIELD_MANAGER, Result};

const CONTROLLER: &str = "quotaprofile";

pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<QuotaProfile>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Tenant>::all(client),
        watcher::Config::default(),
        |t| {
            t.quota_profiles()
                .into_iter()
                .map(ObjectRef::new)
                .collect::<Vec<_>>()
        },
    )
    .graceful_shutdown_on(shutdown)
    .run(
        reconcile,
        |_, _: &Error, _| Action::requeue(Duration::from_secs(5)),
        ctx,
    )
    .for_each(|_| async {})
    .await;
}

async fn reconcile(profile: Arc<QuotaProfile>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.shared.metrics.time(CONTROLLER);
    let result = count(&profile, &ctx).await;
    ctx.shared.metrics.reconciled(CONTROLLER, &result);
    result
}

async fn count(profile: &QuotaProfile, ctx: &Context) -> Result<Action> {
    let name = profile.name_any();
    let tenants = Api::<Tenant>::all(ctx.client.clone())
        .list(&Default::default())
        .await?;
    let users = tenants
        .items
        .iter()
        .filter(|t| t.quota_profiles().contains(&name.as_str()))
        .count() as i32;
    let previous = profile.status.clone().unwrap_or_default();
    let conds = [Cond::ok(
        "Ready",
        "Accepted",
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
        let patch =
            json!({"apiVersion": "citycloud.io/v1alpha1", "kind": "QuotaProfile", "status": new});
        Api::<QuotaProfile>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}
