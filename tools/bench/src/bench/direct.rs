//! Measurement 2: the API server's own limit on this machine. The operator's objects for N
//! more tenants (computed with its `build`, under the `<run>-d` prefix) applied by a tight
//! client: server-side apply, no reads, many requests in flight, no operator running.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use citycloud::api::{QuotaProfile, Tenant};
use citycloud::apply::{APPLIED_HASH, hash_of};
use citycloud::tenant::build::NamespaceResources;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::cli::Args;
use super::machine::{CpuSample, ProcessCpu};
use super::objects::{self, MANAGER, Names};
use super::secs;
use super::throttling::ApiCounts;

const TIMEOUT: Duration = Duration::from_secs(1200);

#[derive(Clone, Debug, Default)]
pub struct Direct {
    pub tenants: usize,
    pub namespaces: usize,
    pub objects: usize,
    pub concurrency: usize,
    pub secs: f64,
    pub machine_busy: f64,
    /// CPU of the control plane's components and of the bench (the direct client) until every
    /// quota was enforced, the operator's end point; `None` on an attached cluster.
    pub processes: Option<ProcessCpu>,
    pub api: ApiCounts,
    /// Seconds since the start, namespaces with all their objects applied.
    pub series: Vec<(f64, usize)>,
    /// Seconds until every one of its ResourceQuotas was enforced (kube-controller-manager
    /// had set its status for every resource it limits: `citycloud::quota::enforced`, the
    /// test the operator's Ready waits for). The raw `secs` stops at the last write's answer,
    /// an earlier end point than the operator's Ready; this is the same end point.
    pub enforced_secs: Option<f64>,
    /// Seconds since the start, namespaces whose quota was seen enforced (those enforced
    /// before the last write answered are counted at that moment: the watch starts then, so
    /// that it cannot slow the raw measurement).
    pub enforced_series: Vec<(f64, usize)>,
}

impl Direct {
    pub fn namespaces_per_sec(&self) -> f64 {
        self.namespaces as f64 / self.secs
    }
    pub fn objects_per_sec(&self) -> f64 {
        self.objects as f64 / self.secs
    }
    /// Namespaces/s to the operator's end point (every quota enforced).
    pub fn enforced_namespaces_per_sec(&self) -> Option<f64> {
        self.enforced_secs.map(|s| self.namespaces as f64 / s)
    }
}

/// A sequence of applies that must go in order: a namespace before what lives in it.
enum Unit {
    Namespace(Box<NamespaceResources>),
    Cluster(Box<(ClusterRole, ClusterRoleBinding)>),
}

pub async fn run(
    admin: &kube::Client,
    names: &Names,
    args: &Args,
    profile: &QuotaProfile,
) -> anyhow::Result<Direct> {
    let envs = objects::environments(args.environments());
    let mut units = Vec::new();
    let mut quotas = BTreeMap::new();
    let mut total_objects = 0;
    for i in args.first()..args.tenants() {
        let name = names.direct_tenant(i);
        let tenant: Tenant = serde_json::from_value(objects::tenant(names, &name, i, &envs))?;
        let desired = objects::desired(&tenant, profile);
        total_objects += objects::count(&desired);
        for n in &desired.namespaces {
            quotas.insert(n.namespace.name_any(), n.quota.clone());
        }
        units.extend(
            desired
                .namespaces
                .into_iter()
                .map(|n| Unit::Namespace(Box::new(n))),
        );
        // Per tenant, as the operator writes them: read access for its people, approve for its
        // owners.
        units.push(Unit::Cluster(Box::new((
            desired.reader_role,
            desired.reader_binding,
        ))));
        units.push(Unit::Cluster(Box::new((
            desired.approver_role,
            desired.approver_binding,
        ))));
    }
    let concurrency = args.direct_concurrency as usize;
    eprintln!(
        "[{:6.1}s] direct: applying {total_objects} objects in {} namespaces ({concurrency} in flight, no operator)",
        0.0,
        args.measured() * envs.len()
    );
    let api_before = ApiCounts::read(admin).await;
    let cpu = CpuSample::now();
    let processes = ProcessCpu::now();
    let start = Instant::now();
    let mut series = vec![(0.0, 0)];
    let mut done = 0;
    let applied: Vec<usize> = tokio::time::timeout(
        TIMEOUT,
        futures::stream::iter(units.into_iter().map(|u| apply_unit(admin.clone(), u)))
            .buffer_unordered(concurrency)
            .inspect_ok(|(_, namespace)| {
                if *namespace {
                    done += 1;
                    series.push((secs(start), done));
                }
            })
            .map_ok(|(n, _)| n)
            .try_collect(),
    )
    .await
    .context("direct apply timed out")??;
    let elapsed = secs(start);
    let machine_busy = cpu.busy_since();
    let objects: usize = applied.iter().sum();
    let api = ApiCounts::read(admin).await.since(&api_before);
    eprintln!("[{elapsed:6.1}s] direct: {objects} objects applied");
    let enforced = until_enforced(admin, &quotas, start, elapsed).await;
    let processes = processes.and_then(|p| Some(ProcessCpu::now()?.since(&p)));
    let (enforced_secs, enforced_series) = match enforced {
        Ok((secs, series)) => {
            eprintln!("[{secs:6.1}s] direct: every ResourceQuota enforced");
            (Some(secs), series)
        }
        Err(e) => {
            eprintln!("direct: waiting for the quotas to be enforced: {e:#}");
            (None, Vec::new())
        }
    };
    Ok(Direct {
        series,
        tenants: args.measured(),
        namespaces: args.measured() * envs.len(),
        objects,
        concurrency,
        secs: elapsed,
        machine_busy,
        processes,
        api,
        enforced_secs,
        enforced_series,
    })
}

/// Waits until kube-controller-manager enforces every quota in `desired` (by namespace), as
/// [`citycloud::quota::enforced`] tells (the operator's own test before granting access):
/// seconds since `start` when the last one was, and the namespaces enforced over time. Called
/// once the last write answered (`applied_secs`), so its watch cannot slow the writes.
async fn until_enforced(
    admin: &kube::Client,
    desired: &BTreeMap<String, ResourceQuota>,
    start: Instant,
    applied_secs: f64,
) -> anyhow::Result<(f64, Vec<(f64, usize)>)> {
    use kube::runtime::watcher::{self, Event};
    let api = Api::<ResourceQuota>::all(admin.clone());
    let config = watcher::Config::default().labels(objects::MANAGED);
    let mut enforced = BTreeSet::new();
    let mut series = vec![(applied_secs, 0)];
    let mut last = applied_secs;
    let mut events = std::pin::pin!(watcher::watcher(api, config));
    let wait = async {
        while let Some(event) = events.next().await {
            let quota = match event? {
                Event::Apply(q) | Event::InitApply(q) => q,
                _ => continue,
            };
            let Some(ns) = quota.namespace() else {
                continue;
            };
            let Some(wanted) = desired.get(&ns) else {
                continue;
            };
            if quota.name_any() == wanted.name_any()
                && citycloud::quota::enforced(wanted, Some(&quota))
                && enforced.insert(ns)
            {
                last = secs(start).max(applied_secs);
                series.push((last, enforced.len()));
                if enforced.len() == desired.len() {
                    return Ok::<_, anyhow::Error>(());
                }
            }
        }
        anyhow::bail!("the ResourceQuota watch ended")
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .context("timed out")??;
    Ok((last, series))
}

/// Objects applied, and whether the unit was a namespace (with everything in it).
async fn apply_unit(client: kube::Client, unit: Unit) -> anyhow::Result<(usize, bool)> {
    match unit {
        Unit::Namespace(res) => {
            let ns = res.namespace.name_any();
            apply(&Api::all(client.clone()), &res.namespace).await?;
            let mut n = 1;
            for rb in &res.role_bindings {
                apply(&Api::namespaced(client.clone(), &ns), rb).await?;
                n += 1;
            }
            apply(&Api::namespaced(client.clone(), &ns), &res.quota).await?;
            n += 1;
            if let Some(lr) = &res.limit_range {
                apply(&Api::namespaced(client.clone(), &ns), lr).await?;
                n += 1;
            }
            for np in &res.network_policies {
                apply(&Api::namespaced(client.clone(), &ns), np).await?;
                n += 1;
            }
            Ok((n, true))
        }
        Unit::Cluster(pair) => {
            let (role, binding) = *pair;
            apply(&Api::all(client.clone()), &role).await?;
            apply(&Api::all(client), &binding).await?;
            Ok((2, false))
        }
    }
}

/// One server-side apply of `obj` with the operator's hash annotation, as the operator sends
/// it (the operator reads first and skips unchanged objects; there is nothing to skip here),
/// without field validation as the operator does (`citycloud::apply::params`), so that the
/// direct client pays no more per write than the operator.
async fn apply<K>(api: &Api<K>, obj: &K) -> anyhow::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(obj)?;
    let hash = hash_of(&body);
    body["metadata"]["annotations"][APPLIED_HASH] = Value::String(hash);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force().validation_ignore(),
        &Patch::Apply(&body),
    )
    .await
    .with_context(|| format!("applying {name}"))?;
    Ok(())
}
