//! Measurement 1: N tenants × K environments created at once, until every Tenant is Ready for
//! its current generation.
use std::time::{Duration, Instant};

use anyhow::Context;
use citycloud::api::{QuotaProfile, Tenant};
use futures::{StreamExt, TryStreamExt};
use kube::api::Api;

use super::cli::Args;
use super::machine::{CpuSample, ProcessCpu};
use super::objects::{self, Names};
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
    /// CPU of the control plane's components and of the bench (the user creating Tenants and
    /// watching them) meanwhile; `None` on an attached cluster.
    pub processes: Option<ProcessCpu>,
    /// What the API server answered meanwhile (the bench's own creates and watch included).
    pub api: ApiCounts,
    /// Seconds since the start, namespaces of Ready tenants, the operator's RSS (MiB).
    pub series: Vec<(f64, usize, f64)>,
    /// Per tenant, seconds from its create's answer until the watch showed it Ready: the
    /// median, 90th percentile and the longest. A median near the total means the tenants
    /// queued (throughput); a short one, that each tenant's own chain is quick.
    pub latency: Option<[f64; 3]>,
    /// Where each tenant's time went, with the API server's audit log (see [`super::timeline`]).
    pub timeline: Option<Result<super::timeline::Timeline, String>>,
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
    let specs: Vec<(String, serde_json::Value)> = (args.first()..args.tenants())
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
    // Readiness followed by a watch, not by listing every Tenant 4 times a second: at a few
    // thousand tenants the lists alone would load the API server the operator shares.
    let watched = ReadyWatch::start(admin, names).await?;
    let before = watched.ready(names, args.first()).await;
    let api_before = ApiCounts::read(admin).await;
    // An operator that ran before (the second round's verified the tenants already there):
    // only what it does from here counts.
    let (reconciles_before, cpu_before) = (
        operator.tenant_reconciles().await.unwrap_or_default(),
        operator.usage().map(|u| u.cpu_secs).unwrap_or_default(),
    );
    let cpu = CpuSample::now();
    let processes = ProcessCpu::now();
    let start = Instant::now();
    eprintln!(
        "[{:6.1}s] provisioning: creating {} tenants ({} in flight)",
        0.0,
        specs.len(),
        args.create_concurrency
    );
    let mut series = vec![(
        0.0,
        0,
        operator.usage().map(|u| u.rss_mib).unwrap_or_default(),
    )];
    let created: Vec<(String, Instant)> =
        futures::stream::iter(specs.iter().map(|(name, spec)| {
            let api = &api;
            async move {
                objects::apply_tenant(api, name, spec).await?;
                Ok::<_, anyhow::Error>((name.clone(), Instant::now()))
            }
        }))
        .buffer_unordered(args.create_concurrency as usize)
        .try_collect()
        .await?;
    let create_secs = secs(start);
    eprintln!("[{create_secs:6.1}s] provisioning: all tenants created");

    let total = specs.len();
    let mut last_progress = Instant::now();
    loop {
        let ready = watched
            .ready(names, args.tenants())
            .await
            .saturating_sub(before);
        let rss = operator.usage().map(|u| u.rss_mib).unwrap_or_default();
        series.push((secs(start), ready * envs.len(), rss));
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
                "[{:6.1}s] provisioning: {ready}/{total} tenants Ready, {reconciles} reconciles, {rss:.0} MiB",
                secs(start)
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let latency = watched.latency(&created).await;
    // The clock stops when the watch saw the last tenant Ready, as the direct side's stops at
    // its last answer or enforced quota: not at the poll that noticed (up to `POLL` later).
    let ready_secs = watched.last_ready(&created).await.map_or_else(
        || secs(start),
        |at| at.saturating_duration_since(start).as_secs_f64(),
    );
    watched.stop();
    if let Some(last) = series.last_mut() {
        last.0 = last.0.min(ready_secs);
    }
    let machine_busy = cpu.busy_since();
    let processes = processes.and_then(|p| Some(ProcessCpu::now()?.since(&p)));
    let mut usage = operator.usage()?;
    usage.cpu_secs -= cpu_before;
    let metrics = operator.metrics().await?;
    let api_counts = ApiCounts::read(admin).await.since(&api_before);
    eprintln!("[{ready_secs:6.1}s] provisioning: all {total} tenants Ready");
    Ok(Provisioned {
        tenants: total,
        namespaces: total * envs.len(),
        objects: expected_objects,
        create_secs,
        ready_secs,
        reconciles: metrics
            .tenant_reconciles()
            .saturating_sub(reconciles_before),
        reconcile_errors: metrics.tenant_reconcile_errors(),
        writes: metrics.tenant_writes(),
        usage,
        machine_busy,
        processes,
        api: api_counts,
        series,
        latency,
        timeline: None,
    })
}

/// Per Tenant of the run, when the watch first showed it Ready (None: not yet).
type Readiness =
    std::sync::Arc<tokio::sync::Mutex<std::collections::HashMap<String, Option<Instant>>>>;

/// The readiness of the run's Tenants, as a watch shows it.
struct ReadyWatch {
    ready: Readiness,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyWatch {
    /// Starts the watch and waits for its first list.
    async fn start(admin: &kube::Client, names: &Names) -> anyhow::Result<ReadyWatch> {
        let ready: Readiness = Default::default();
        let api = Api::<Tenant>::all(admin.clone());
        let config = kube::runtime::watcher::Config::default().labels(&names.selector());
        let map = ready.clone();
        let (listed_tx, listed) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut listed_tx = Some(listed_tx);
            use kube::runtime::watcher::Event;
            let mut events = std::pin::pin!(kube::runtime::watcher(api, config));
            while let Some(event) = events.next().await {
                let mut m = map.lock().await;
                match event {
                    Ok(Event::Apply(t) | Event::InitApply(t)) => {
                        let at = m
                            .entry(t.metadata.name.clone().unwrap_or_default())
                            .or_default();
                        if !is_ready(&t) {
                            *at = None;
                        } else if at.is_none() {
                            *at = Some(Instant::now());
                        }
                    }
                    Ok(Event::Delete(t)) => {
                        m.remove(t.metadata.name.as_deref().unwrap_or_default());
                    }
                    Ok(Event::InitDone) => {
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Init) => {}
                    Err(e) => {
                        drop(m);
                        eprintln!("watching tenants: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), listed)
            .await
            .context("listing the Tenants timed out")?
            .context("the Tenant watch ended")?;
        Ok(ReadyWatch { ready, task })
    }

    /// Ready operator tenants among the first `n`.
    async fn ready(&self, names: &Names, n: usize) -> usize {
        let m = self.ready.lock().await;
        (0..n)
            .filter(|i| m.get(&names.tenant(*i)).is_some_and(Option::is_some))
            .count()
    }

    /// Median, 90th percentile and longest of the seconds from each create's answer until
    /// its tenant was seen Ready.
    async fn latency(&self, created: &[(String, Instant)]) -> Option<[f64; 3]> {
        let m = self.ready.lock().await;
        super::median_p90_max(
            created
                .iter()
                .filter_map(|(name, at)| {
                    let ready = (*m.get(name)?)?;
                    Some(ready.saturating_duration_since(*at).as_secs_f64())
                })
                .collect(),
        )
    }

    /// When the last of `created` was seen Ready (None: one is not).
    async fn last_ready(&self, created: &[(String, Instant)]) -> Option<Instant> {
        last_ready(&*self.ready.lock().await, created)
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// When the last of `created` was seen Ready, given when each was (None: one is not, or the
/// watch never saw it).
fn last_ready(
    seen: &std::collections::HashMap<String, Option<Instant>>,
    created: &[(String, Instant)],
) -> Option<Instant> {
    created
        .iter()
        .map(|(name, _)| seen.get(name).copied().flatten())
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_stops_when_the_last_tenant_was_seen_ready_not_before() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let created: Vec<(String, Instant)> = ["a", "b", "c"]
            .iter()
            .map(|n| (n.to_string(), t0))
            .collect();
        let mut seen: std::collections::HashMap<String, Option<Instant>> = [
            ("a", at(300)),
            ("b", at(900)),
            ("c", at(500)),
            ("other", at(5000)),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        assert_eq!(last_ready(&seen, &created), at(900));
        // One not Ready (again), or never seen: no end yet.
        seen.insert("c".into(), None);
        assert_eq!(last_ready(&seen, &created), None);
        seen.remove("c");
        assert_eq!(last_ready(&seen, &created), None);
    }
}
