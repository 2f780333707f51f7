//! What the API server spends on each request the operator's phase has and the direct client's
//! has not: the user's Tenant create, the operator's status write and its Event. Measured
//! alone, with no operator running, as the API server's CPU over a burst of each divided by
//! the burst's size. They explain the gap between the two sides' API server CPU per tenant
//! (see [`super::machine::ProcessCpu`]): the rest of a tenant's requests are the same objects.
use std::time::{Duration, Instant};

use anyhow::Context;
use citycloud::api::{QuotaProfile, Tenant};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::{Api, Patch};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;

use citycloud::tenant::build::TenantResources;

use super::machine::ProcessCpu;
use super::objects::{self, Names};

/// Requests in flight, as the bench creates Tenants.
const IN_FLIGHT: usize = 16;
/// How long the API server's idle CPU is measured before each burst.
const IDLE: Duration = Duration::from_millis(500);
/// How long after a burst its last events take to reach the watch cache.
const SETTLE: Duration = Duration::from_millis(300);

/// API server CPU per request, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Costs {
    pub requests: usize,
    pub tenant_create_ms: f64,
    pub tenant_status_ms: f64,
    pub event_ms: f64,
}

impl Costs {
    /// What the three together cost the API server per tenant.
    pub fn per_tenant_ms(&self) -> f64 {
        self.tenant_create_ms + self.tenant_status_ms + self.event_ms
    }
}

/// `n` new Tenants of the run (`<run>-c0000`…, never provisioned: no operator runs now; the
/// run's cleanup removes them), then the status of a provisioned one (`model`) applied to each
/// under the operator's field manager, then on each the Event the operator publishes on a new
/// tenant (its objects built with `profile`, as the operator builds them).
pub async fn run(
    admin: &kube::Client,
    names: &Names,
    model: &str,
    profile: &QuotaProfile,
    environments: usize,
    n: usize,
) -> anyhow::Result<Costs> {
    // What the last phase left to kube-controller-manager would be counted otherwise.
    super::resync::kcm_settled(admin).await?;
    let api = Api::<Tenant>::all(admin.clone());
    let status = api
        .get_status(model)
        .await
        .with_context(|| format!("reading the status of Tenant {model}"))?
        .status
        .context("the model Tenant has no status")?;
    let envs = objects::environments(environments);
    let tenants: Vec<(String, serde_json::Value)> = (0..n)
        .map(|i| {
            let name = names.cost_tenant(i);
            let spec = objects::tenant(names, &name, i, &envs);
            (name, spec)
        })
        .collect();

    let tenant_create_ms = measured(n, || {
        burst(tenants.iter().map(|(name, spec)| {
            let api = &api;
            async move { objects::apply_tenant(api, name, spec).await }
        }))
    })
    .await?;

    let tenant_status_ms = measured(n, || {
        burst(tenants.iter().map(|(name, _)| {
            let (api, mut status) = (api.clone(), status.clone());
            status.namespaces = envs.iter().map(|e| format!("{name}-{e}")).collect();
            async move {
                let patch = json!({
                    "apiVersion": Tenant::api_version(&()),
                    "kind": Tenant::kind(&()),
                    "status": status,
                });
                api.patch_status(name, &citycloud::apply::params(), &Patch::Apply(&patch))
                    .await
                    .with_context(|| format!("writing the status of Tenant {name}"))
            }
        }))
    })
    .await?;

    let recorder = Recorder::new(
        admin.clone(),
        Reporter {
            controller: "citycloud-bench".into(),
            instance: None,
        },
    );
    let events = tenants
        .iter()
        .map(|(name, spec)| {
            let tenant: Tenant = serde_json::from_value(spec.clone())?;
            let reference = ObjectReference {
                api_version: Some(Tenant::api_version(&()).into()),
                kind: Some(Tenant::kind(&()).into()),
                name: Some(name.clone()),
                ..ObjectReference::default()
            };
            Ok((
                reference,
                created_event(&objects::desired(&tenant, profile)),
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let event_ms = measured(n, || {
        burst(events.iter().map(|(reference, event)| {
            let recorder = recorder.clone();
            async move {
                recorder.publish(event, reference).await.with_context(|| {
                    format!(
                        "publishing an Event on Tenant {}",
                        reference.name.as_deref().unwrap_or_default()
                    )
                })
            }
        }))
    })
    .await?;

    Ok(Costs {
        requests: n,
        tenant_create_ms,
        tenant_status_ms,
        event_ms,
    })
}

/// The operator's Event on a new tenant: every object it created, listed as the operator
/// lists them.
fn created_event(res: &TenantResources) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "Created".into(),
        note: Some(citycloud::events::note("Created", &objects::described(res))),
        action: "Reconcile".into(),
        secondary: None,
    }
}

/// The requests `burst` makes, `IN_FLIGHT` at a time, and the API server's CPU for them (ms
/// per request): what it used from the burst's start until its watch cache took in the last
/// write, less what it uses idle (measured just before, over [`IDLE`]).
async fn measured<F, Fut>(n: usize, burst: F) -> anyhow::Result<f64>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let apiserver = || {
        ProcessCpu::now()
            .map(|p| (p.apiserver, Instant::now()))
            .context("the control plane's processes are unknown")
    };
    let (idle_from, idle_start) = apiserver()?;
    tokio::time::sleep(IDLE).await;
    let (before, start) = apiserver()?;
    let idle_rate = (before - idle_from) / idle_start.elapsed().as_secs_f64();
    burst().await?;
    // The watch cache decodes each write's event after the answer: let it catch up.
    tokio::time::sleep(SETTLE).await;
    let (after, _) = apiserver()?;
    let used = after - before - idle_rate * start.elapsed().as_secs_f64();
    Ok(1000.0 * used.max(0.0) / n.max(1) as f64)
}

async fn burst<T>(
    requests: impl Iterator<Item = impl std::future::Future<Output = anyhow::Result<T>>>,
) -> anyhow::Result<()> {
    futures::stream::iter(requests)
        .buffer_unordered(IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_note_fits_what_the_api_server_accepts() {
        // The API server refuses a note over 1 kB: the measurement would fail, not measure.
        let names = Names {
            run: "b1234".into(),
        };
        let profile: QuotaProfile =
            serde_json::from_value(objects::profile(&names)).expect("profile");
        let name = names.cost_tenant(198);
        let tenant: Tenant = serde_json::from_value(objects::tenant(
            &names,
            &name,
            198,
            &objects::environments(5),
        ))
        .expect("tenant");
        let res = objects::desired(&tenant, &profile);
        let note = created_event(&res).note.unwrap_or_default();
        assert!(note.len() <= 1024, "{} bytes", note.len());
        assert!(
            note.starts_with(&format!(
                "Created {}: Namespace {name}-prod, ResourceQuota {name}-prod/",
                objects::count(&res)
            )),
            "{note}"
        );
        assert!(note.ends_with(" more"), "{note}");
    }

    #[test]
    fn a_tenants_extra_cost_is_the_sum_of_its_three_requests() {
        let c = Costs {
            requests: 200,
            tenant_create_ms: 4.0,
            tenant_status_ms: 6.5,
            event_ms: 1.5,
        };
        assert_eq!(c.per_tenant_ms(), 12.0);
    }
}
