//! Measurement 1: N tenants × K environments created at once, until every Tenant is Ready for
//! its current generation.
use std::time::{Duration, Instant};

use anyhow::Context;
use citycloud::api::{QuotaProfile, Tenant};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::cli::Args;
use super::machine::CpuSample;
use super::objects::{self, MANAGER, Names};
use super::process::{OperatorProcess, Usage};
use super::secs;
use super::throttling::ApiCounts;

/// How often the bench lists the Tenants while waiting.
const POLL: Duration = Duration::from_millis(250);
/// How often it says how far it got.
const PROGRESS: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default)]
pub struct Provisioned {
    pub tenants: usize,
    pub namespaces: usize,
    /// Objects the operator had to create (namespaced and per-tenant cluster objects).
    pub objects: usize,
    pub create_secs: f64,
    pub ready_secs: f64,
    pub reconciles: u64,
    pub reconcile_errors: u64,
    pub writes: u64,
    pub usage: Usage,
    pub machine_busy: f64,
    /// What the API server answered meanwhile (the bench's own creates and polls included).
    pub api: ApiCounts,
}

impl Provisioned {
    pub fn tenants_per_sec(&self) -> f64 {
        self.tenants as f64 / self.ready_secs
    }
    pub fn namespaces_per_sec(&self) -> f64 {
        self.namespaces as f64 / self.ready_secs
    }
    pub fn objects_per_sec(&self) -> f64 {
        self.objects as f64 / self.ready_secs
    }
}

/// Whether the Tenant is Ready=True for the generation it has now.
pub fn is_ready(t: &Tenant) -> bool {
    let generation = t.metadata.generation;
    let Some(status) = &t.status else {
        return false;
    };
    generation.is_some()
        && status.observed_generation == generation
        && status.conditions.iter().any(|c| {
            c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation
        })
}

pub async fn run(
    admin: &kube::Client,
    names: &Names,
    args: &Args,
    operator: &OperatorProcess,
    profile: &QuotaProfile,
) -> anyhow::Result<Provisioned> {
    let envs = objects::environments(args.environments());
    let specs: Vec<(String, serde_json::Value)> = (0..args.tenants())
        .map(|i| {
            let name = names.tenant(i);
            let spec = objects::tenant(names, &name, i, &envs);
            (name, spec)
        })
        .collect();
    let mut expected_objects = 0;
    for (_, spec) in &specs {
        let tenant: Tenant = serde_json::from_value(spec.clone())?;
        expected_objects += objects::count(&objects::desired(&tenant, profile));
    }

    let api = Api::<Tenant>::all(admin.clone());
    let api_before = ApiCounts::read(admin).await;
    let cpu = CpuSample::now();
    let start = Instant::now();
    eprintln!(
        "[{:6.1}s] provisioning: creating {} tenants ({} in flight)",
        0.0,
        specs.len(),
        args.create_concurrency
    );
    futures::stream::iter(specs.iter().map(|(name, spec)| {
        let api = api.clone();
        async move {
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(spec),
            )
            .await
            .with_context(|| format!("creating Tenant {name}"))
        }
    }))
    .buffer_unordered(args.create_concurrency as usize)
    .try_collect::<Vec<_>>()
    .await?;
    let create_secs = secs(start);
    eprintln!("[{create_secs:6.1}s] provisioning: all tenants created");

    let total = specs.len();
    let mut last_progress = Instant::now();
    let selector = ListParams::default().labels(&names.selector());
    loop {
        let ready = match api.list(&selector).await {
            Ok(list) => list
                .items
                .iter()
                .filter(|t| names.is_operator_tenant(t.metadata.name.as_deref().unwrap_or("")))
                .filter(|t| is_ready(t))
                .count(),
            Err(e) => {
                eprintln!("[{:6.1}s] listing tenants failed: {e}", secs(start));
                0
            }
        };
        if ready >= total {
            break;
        }
        if start.elapsed() > args.ready_timeout() {
            anyhow::bail!(
                "only {ready} of {total} tenants Ready after {:.0}s (--ready-timeout); see {}",
                secs(start),
                operator.log.display()
            );
        }
        if last_progress.elapsed() >= PROGRESS {
            last_progress = Instant::now();
            let reconciles = operator.tenant_reconciles().await.unwrap_or_default();
            eprintln!(
                "[{:6.1}s] provisioning: {ready}/{total} tenants Ready, {reconciles} reconciles",
                secs(start)
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let ready_secs = secs(start);
    let machine_busy = cpu.busy_since();
    let usage = operator.usage()?;
    let metrics = operator.metrics().await?;
    let api_counts = ApiCounts::read(admin).await.since(&api_before);
    eprintln!("[{ready_secs:6.1}s] provisioning: all {total} tenants Ready");
    Ok(Provisioned {
        tenants: total,
        namespaces: total * envs.len(),
        objects: expected_objects,
        create_secs,
        ready_secs,
        reconciles: metrics.tenant_reconciles(),
        reconcile_errors: metrics.tenant_reconcile_errors(),
        writes: metrics.tenant_writes(),
        usage,
        machine_busy,
        api: api_counts,
    })
}
