//! Measurement 3: a fresh operator resyncing tenants that are already as they should be must
//! write nothing: no managed object's resourceVersion moves, its writes counter stays 0.
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::time::{Duration, Instant};

use citycloud::api::labels::TENANT;
use citycloud::api::{QuotaProfile, Tenant};
use citycloud::quantity::Milli;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::cli::Args;
use super::objects::{MANAGED, Names};
use super::process::{OperatorProcess, Stopped, Usage};
use super::throttling::ApiCounts;
use super::{secs, wait_for};

#[derive(Clone, Debug, Default)]
pub struct Resync {
    /// Managed objects, Tenants and the QuotaProfile compared.
    pub objects_checked: usize,
    /// Those whose resourceVersion moved (or that appeared or went).
    pub moved: Vec<String>,
    pub tenant_writes: u64,
    pub all_writes: u64,
    pub reconciles: u64,
    pub reconcile_errors: u64,
    /// From the fresh operator's start until its reconcile counter reached N.
    pub to_all_reconciled_secs: f64,
    pub usage: Usage,
    /// The first operator's stop: how long the graceful shutdown took.
    pub shutdown_secs: f64,
    pub shutdown_clean: bool,
    /// What the API server answered from the fresh operator's start to the comparison.
    pub api: ApiCounts,
    pub notes: Vec<String>,
}

impl Resync {
    pub fn passed(&self) -> bool {
        self.moved.is_empty() && self.all_writes == 0
    }
}

/// Waits until the cluster is idle for the provisioning operator, stops it, records every
/// resourceVersion, runs a fresh operator until it has reconciled every tenant, and compares.
pub async fn run(
    admin: &kube::Client,
    names: &Names,
    args: &Args,
    first: OperatorProcess,
    kubeconfig: &Path,
    logs: &Path,
) -> anyhow::Result<Resync> {
    let mut out = Resync::default();
    let start = Instant::now();
    eprintln!(
        "[{:6.1}s] resync: waiting for quota status and a quiet operator",
        0.0
    );
    quotas_synced(admin, names).await?;
    // An idle restart is measured on an idle cluster: kube-controller-manager may still be
    // creating the namespaces' default ServiceAccounts and root CA ConfigMaps (at 1,000 × 3,
    // ~2,000 requests behind the operator), which would load the machine the restart runs on.
    if let Err(e) = kcm_settled(admin).await {
        out.notes.push(format!(
            "kube-controller-manager had not settled the namespaces; restarted anyway: {e:#}"
        ));
    }
    if !quiet(&first, Duration::from_secs(3), Duration::from_secs(120)).await {
        out.notes.push(
            "the provisioning operator was still reconciling after 120 s; stopped it anyway".into(),
        );
    }
    let stopped: Stopped = first.stop().await?;
    out.shutdown_secs = stopped.took.as_secs_f64();
    out.shutdown_clean = !stopped.killed && stopped.status.is_some_and(|s| s.success());
    if !out.shutdown_clean {
        out.notes.push(format!(
            "the provisioning operator did not exit cleanly on SIGTERM ({:?}, killed: {})",
            stopped.status, stopped.killed
        ));
    }

    let before = snapshot(admin, names).await?;
    eprintln!(
        "[{:6.1}s] resync: {} objects recorded; starting a fresh operator",
        secs(start),
        before.len()
    );
    let api_before = ApiCounts::read(admin).await;
    let fresh = OperatorProcess::start(
        &args.operator_bin(),
        kubeconfig,
        logs,
        "resync",
        args.operator_concurrency,
    )
    .await?;
    let n = args.tenants() as u64;
    wait_for(
        "the fresh operator to reconcile every tenant",
        Duration::from_secs(600),
        Duration::from_millis(100),
        || async { Ok((fresh.tenant_reconciles().await? >= n).then_some(())) },
    )
    .await?;
    out.to_all_reconciled_secs = fresh.started.elapsed().as_secs_f64();
    // Watch events of the initial lists may trigger a second round: let it finish.
    if !quiet(&fresh, Duration::from_secs(3), Duration::from_secs(60)).await {
        out.notes
            .push("the fresh operator was still reconciling 60 s after reaching N".into());
    }
    let metrics = fresh.metrics().await?;
    out.usage = fresh.usage()?;
    out.tenant_writes = metrics.tenant_writes();
    out.all_writes = metrics.all_writes();
    out.reconciles = metrics.tenant_reconciles();
    out.reconcile_errors = metrics.tenant_reconcile_errors();
    out.api = ApiCounts::read(admin).await.since(&api_before);
    let after = snapshot(admin, names).await?;
    fresh.stop().await?;

    out.objects_checked = before.len();
    for (key, rv) in &before {
        match after.get(key) {
            Some(now) if now == rv => {}
            Some(now) => out.moved.push(format!("{key}: {rv} -> {now}")),
            None => out.moved.push(format!("{key}: gone")),
        }
    }
    for key in after.keys().filter(|k| !before.contains_key(*k)) {
        out.moved.push(format!("{key}: appeared"));
    }
    eprintln!(
        "[{:6.1}s] resync: {} moved, {} writes",
        secs(start),
        out.moved.len(),
        out.all_writes
    );
    Ok(out)
}

/// Until the operator's reconcile and write counters stay still for `still`; false when
/// they did not within `timeout`.
pub async fn quiet(op: &OperatorProcess, still: Duration, timeout: Duration) -> bool {
    let start = Instant::now();
    let mut last = None;
    let mut since = Instant::now();
    while start.elapsed() < timeout {
        let now = op.metrics().await.ok().map(|m| {
            (
                m.sum("citycloud_reconciles_total", &[]) as u64,
                m.all_writes(),
            )
        });
        if now.is_some() && now == last {
            if since.elapsed() >= still {
                return true;
            }
        } else {
            last = now;
            since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Until kube-controller-manager has copied every bench quota's `spec.hard` into its status:
/// before that, its status writes would move resourceVersions the operator never touched.
async fn quotas_synced(admin: &kube::Client, names: &Names) -> anyhow::Result<()> {
    let api = Api::<ResourceQuota>::all(admin.clone());
    wait_for(
        "kube-controller-manager to sync every ResourceQuota's status",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || async {
            let list = api.list(&ListParams::default().labels(MANAGED)).await?;
            let pending = list
                .items
                .iter()
                .filter(|q| ours(*q, names))
                .filter(|q| {
                    let spec = q.spec.as_ref().and_then(|s| s.hard.as_ref());
                    let status = q.status.as_ref().and_then(|s| s.hard.as_ref());
                    !same_hard(spec, status)
                })
                .count();
            Ok((pending == 0).then_some(()))
        },
    )
    .await
}

/// Until every namespace has the ServiceAccount `default` and the ConfigMap `kube-root-ca.crt`
/// that kube-controller-manager creates in each: before a phase is timed, so that it does not
/// pay for the one before it (a phase's 600 namespaces leave ~1,200 such creations behind).
pub async fn kcm_settled(admin: &kube::Client) -> anyhow::Result<()> {
    wait_for(
        "kube-controller-manager to settle every namespace",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let all = Api::<Namespace>::all(admin.clone())
                .list_metadata(&ListParams::default())
                .await?
                .items
                .len();
            let accounts = Api::<ServiceAccount>::all(admin.clone())
                .list_metadata(&ListParams::default().fields("metadata.name=default"))
                .await?
                .items
                .len();
            let roots = Api::<ConfigMap>::all(admin.clone())
                .list_metadata(&ListParams::default().fields("metadata.name=kube-root-ca.crt"))
                .await?
                .items
                .len();
            Ok((accounts >= all && roots >= all).then_some(()))
        },
    )
    .await
}

/// Whether two `hard` maps hold the same amounts (compared as numbers: "1" == "1000m").
fn same_hard(
    a: Option<&BTreeMap<String, Quantity>>,
    b: Option<&BTreeMap<String, Quantity>>,
) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_none() && b.is_none();
    };
    a.len() == b.len()
        && a.iter().all(|(k, v)| {
            b.get(k)
                .is_some_and(|w| match (Milli::of(v), Milli::of(w)) {
                    (Ok(x), Ok(y)) => x == y,
                    _ => v == w,
                })
        })
}

fn ours<K: Resource>(obj: &K, names: &Names) -> bool {
    obj.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(TENANT))
        .is_some_and(|t| names.is_operator_tenant(t))
}

/// The resourceVersion of every object the operator manages for the run's tenants, of the
/// Tenants themselves and of their QuotaProfile, by `Kind namespace/name`.
pub async fn snapshot(
    admin: &kube::Client,
    names: &Names,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    managed::<Namespace>(admin, names, &mut out).await?;
    managed::<RoleBinding>(admin, names, &mut out).await?;
    managed::<ResourceQuota>(admin, names, &mut out).await?;
    managed::<LimitRange>(admin, names, &mut out).await?;
    managed::<NetworkPolicy>(admin, names, &mut out).await?;
    managed::<ClusterRole>(admin, names, &mut out).await?;
    managed::<ClusterRoleBinding>(admin, names, &mut out).await?;
    for t in Api::<Tenant>::all(admin.clone())
        .list(&ListParams::default().labels(&names.selector()))
        .await?
    {
        if names.is_operator_tenant(&t.name_any()) {
            out.insert(key(&t), t.resource_version().unwrap_or_default());
        }
    }
    let profile = Api::<QuotaProfile>::all(admin.clone())
        .get(&names.profile())
        .await?;
    out.insert(
        key(&profile),
        profile.resource_version().unwrap_or_default(),
    );
    Ok(out)
}

async fn managed<K>(
    admin: &kube::Client,
    names: &Names,
    out: &mut BTreeMap<String, String>,
) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let list = Api::<K>::all(admin.clone())
        .list(&ListParams::default().labels(MANAGED))
        .await?;
    for obj in list.items.iter().filter(|o| ours(*o, names)) {
        out.insert(key(obj), obj.resource_version().unwrap_or_default());
    }
    Ok(())
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{} {ns}/{}", K::kind(&()), obj.name_any()),
        None => format!("{} {}", K::kind(&()), obj.name_any()),
    }
}
