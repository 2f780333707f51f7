//! Measurement 5 (the Quota issue): how long freed tenant budget takes to reach a Deployment
//! waiting in another namespace of the same tenant.
//!
//! A tenant with a one-CPU budget and namespaces `a` and `b`; `web` in `a` holds the whole
//! budget (10 × 100m); `api` in `b` asks for 2 × 100m and waits, refused by quota. Then `web`
//! is scaled down by 2, and the clock runs until `b` has its 2 pods. No node runs them:
//! pods are admitted and counted by quota, which is all that matters here. Between runs, `api`
//! is scaled to 0 and `web` back to 10; when that does not settle within a minute (or the run
//! timed out), the next run starts on a fresh tenant, set up the same way.
use std::time::{Duration, Instant};

use anyhow::Context;
use citycloud::api::{QuotaProfile, Tenant};
use citycloud::quantity::Milli;
use citycloud::tenant::build::QUOTA;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::fixtures::deployment;

use super::cli::Args;
use super::objects::{self, MANAGER, Names};
use super::provision::is_ready;
use super::{secs, wait_for};

/// Waits of the set-up: they include the ReplicaSet controller's retry backoff.
const SETTLE: Duration = Duration::from_secs(120);
/// How long the reset by scaling may take before the next run starts on a fresh tenant.
const RESET: Duration = Duration::from_secs(60);
/// How long `api` waits, refused, before the budget is freed.
const WAITING: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(50);
/// Timed-out runs after which the measurement stops.
const GIVE_UP_AFTER: usize = 3;

#[derive(Clone, Debug, Default)]
pub struct FlowRun {
    /// Until the operator first raised `b`'s ResourceQuota spec.hard of requests.cpu.
    pub first_raise_secs: Option<f64>,
    /// Until `b`'s spec.hard fit both pods.
    pub fit_secs: Option<f64>,
    /// Until `b` had its 2 pods; `None` when the run timed out.
    pub pods_secs: Option<f64>,
    /// What the quotas looked like when a run timed out.
    pub stuck: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Flow {
    pub runs: Vec<FlowRun>,
    pub wanted: u32,
    pub timeout_secs: u64,
    pub setup_secs: f64,
    pub gave_up: bool,
    /// Tenants used: a run that timed out, or a reset that got stuck, moves on to a fresh one.
    pub tenants: usize,
    pub notes: Vec<String>,
}

impl Flow {
    fn sorted(&self, f: impl Fn(&FlowRun) -> Option<f64>) -> Vec<f64> {
        let mut v: Vec<f64> = self.runs.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    }
    /// Median and worst time to pods, over the runs that got there.
    pub fn pods(&self) -> Option<(f64, f64)> {
        median_worst(&self.sorted(|r| r.pods_secs))
    }
    /// Median and worst time to the first raise of b's quota.
    pub fn first_raise(&self) -> Option<(f64, f64)> {
        median_worst(&self.sorted(|r| r.first_raise_secs))
    }
    /// Median and worst time until b's quota fit both pods.
    pub fn fit(&self) -> Option<(f64, f64)> {
        median_worst(&self.sorted(|r| r.fit_secs))
    }
    pub fn timed_out(&self) -> usize {
        self.runs.iter().filter(|r| r.pods_secs.is_none()).count()
    }
}

fn median_worst(sorted: &[f64]) -> Option<(f64, f64)> {
    let worst = *sorted.last()?;
    let mid = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    Some((median, worst))
}

/// Pods of `app` in `ns` that exist and are not being deleted.
async fn pods(client: &kube::Client, ns: &str, app: &str) -> anyhow::Result<usize> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count())
}

async fn wait_pods(
    client: &kube::Client,
    ns: &str,
    app: &str,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_for(
        &format!("{want} pods of {app} in {ns}"),
        timeout,
        Duration::from_millis(250),
        || async { Ok((pods(client, ns, app).await? == want).then_some(())) },
    )
    .await
}

async fn scale(api: &Api<Deployment>, name: &str, replicas: i32) -> anyhow::Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .with_context(|| format!("scaling {name} to {replicas}"))?;
    Ok(())
}

/// One flow tenant: namespaces `a` and `b`, `web` in `a` holding the whole budget.
struct Bed {
    a: String,
    b: String,
    in_a: Api<Deployment>,
    in_b: Api<Deployment>,
    quota_a: Api<ResourceQuota>,
    quota_b: Api<ResourceQuota>,
    /// Whether `api` exists in `b` (scaled to 0 after a reset).
    api_exists: bool,
}

impl Bed {
    async fn set_up(admin: &kube::Client, names: &Names, i: usize) -> anyhow::Result<Bed> {
        let apply = PatchParams::apply(MANAGER).force();
        let tenant = names.flow_tenant(i);
        let tenants = Api::<Tenant>::all(admin.clone());
        tenants
            .patch(
                &tenant,
                &apply,
                &Patch::Apply(objects::flow_tenant(names, &tenant)),
            )
            .await?;
        wait_for(
            &format!("the flow tenant {tenant} to be Ready"),
            SETTLE,
            Duration::from_millis(250),
            || async { Ok(tenants.get_opt(&tenant).await?.filter(is_ready)) },
        )
        .await?;
        let (a, b) = (format!("{tenant}-a"), format!("{tenant}-b"));
        for ns in [&a, &b] {
            let sas = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
            wait_for(
                &format!("the default ServiceAccount of {ns}"),
                SETTLE,
                Duration::from_millis(250),
                || async { Ok(sas.get_opt("default").await?) },
            )
            .await?;
        }
        let bed = Bed {
            in_a: Api::namespaced(admin.clone(), &a),
            in_b: Api::namespaced(admin.clone(), &b),
            quota_a: Api::namespaced(admin.clone(), &a),
            quota_b: Api::namespaced(admin.clone(), &b),
            a,
            b,
            api_exists: false,
        };
        bed.in_a
            .create(&PostParams::default(), &deployment("web", 10, "100m"))
            .await?;
        wait_pods(admin, &bed.a, "web", 10, SETTLE).await?;
        Ok(bed)
    }

    /// `api` in `b` asks for its 2 pods.
    async fn want_api(&mut self) -> anyhow::Result<()> {
        if self.api_exists {
            scale(&self.in_b, "api", 2).await
        } else {
            self.in_b
                .create(&PostParams::default(), &deployment("api", 2, "100m"))
                .await?;
            self.api_exists = true;
            Ok(())
        }
    }

    /// The reset by scaling: `api` to 0, `web` back to 10.
    async fn reset(&self, admin: &kube::Client) -> anyhow::Result<()> {
        scale(&self.in_b, "api", 0).await?;
        wait_pods(admin, &self.b, "api", 0, RESET).await?;
        scale(&self.in_a, "web", 10).await?;
        if let Err(e) = wait_pods(admin, &self.a, "web", 10, RESET).await {
            let got = pods(admin, &self.a, "web").await.unwrap_or_default();
            anyhow::bail!("{e:#}: web had {got}/10 pods; {}", self.quotas().await);
        }
        Ok(())
    }

    /// requests.cpu of both namespaces, for the report of a stuck run.
    async fn quotas(&self) -> String {
        let (sa, ha, ua) = cpu(&self.quota_a).await.unwrap_or_default();
        let (sb, hb, ub) = cpu(&self.quota_b).await.unwrap_or_default();
        format!(
            "requests.cpu a: used {ua}m, hard {sa}m (enforced {ha}m); \
             b: used {ub}m, hard {sb}m (enforced {hb}m)"
        )
    }
}

/// requests.cpu of a ResourceQuota in millicores: (spec.hard, status.hard, status.used).
async fn cpu(quotas: &Api<ResourceQuota>) -> anyhow::Result<(i128, i128, i128)> {
    let q = quotas.get(QUOTA).await?;
    let milli = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| {
        m.and_then(|m| m.get("requests.cpu"))
            .and_then(|v| Milli::of(v).ok())
            .map(|v| v.0)
            .unwrap_or_default()
    };
    let spec = milli(q.spec.as_ref().and_then(|s| s.hard.as_ref()));
    let status_hard = milli(q.status.as_ref().and_then(|s| s.hard.as_ref()));
    let used = milli(q.status.as_ref().and_then(|s| s.used.as_ref()));
    Ok((spec, status_hard, used))
}

pub async fn run(admin: &kube::Client, names: &Names, args: &Args) -> anyhow::Result<Flow> {
    let runs = args.flow_runs;
    let timeout = Duration::from_secs(args.flow_timeout);
    let start = Instant::now();
    Api::<QuotaProfile>::all(admin.clone())
        .patch(
            &names.flow_profile(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(objects::flow_profile(names)),
        )
        .await?;
    let mut bed = Bed::set_up(admin, names, 0).await?;
    let mut flow = Flow {
        wanted: runs,
        timeout_secs: args.flow_timeout,
        setup_secs: secs(start),
        tenants: 1,
        ..Default::default()
    };
    eprintln!(
        "[{:6.1}s] flow: web holds the whole budget in {}; {runs} runs",
        flow.setup_secs, bed.a
    );

    for run in 0..runs {
        bed.want_api().await?;
        tokio::time::sleep(WAITING).await;
        let early = pods(admin, &bed.b, "api").await?;
        if early > 0 {
            flow.notes.push(format!(
                "run {}: api had {early} pod(s) before the budget was freed",
                run + 1
            ));
        }
        let hard_before = cpu(&bed.quota_b).await.map(|c| c.0).unwrap_or_default();
        let t0 = Instant::now();
        scale(&bed.in_a, "web", 8).await?;
        let mut result = FlowRun::default();
        loop {
            if result.fit_secs.is_none() {
                let hard = cpu(&bed.quota_b).await.map(|c| c.0).unwrap_or_default();
                if hard > hard_before && result.first_raise_secs.is_none() {
                    result.first_raise_secs = Some(secs(t0));
                }
                if hard >= hard_before + 200 {
                    result.fit_secs = Some(secs(t0));
                }
            }
            let got = pods(admin, &bed.b, "api").await?;
            if got >= 2 {
                result.pods_secs = Some(secs(t0));
                break;
            }
            if t0.elapsed() > timeout {
                result.stuck = Some(format!(
                    "api had {got}/2 pods after {}s; {}",
                    timeout.as_secs(),
                    bed.quotas().await
                ));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let show = |s: Option<f64>| s.map_or_else(|| "-".to_string(), |s| format!("{s:.2}s"));
        eprintln!(
            "[{:6.1}s] flow: run {}/{runs}: b's quota first raised {}, fit {}, 2 pods {}{}",
            secs(start),
            run + 1,
            show(result.first_raise_secs),
            show(result.fit_secs),
            show(result.pods_secs),
            result
                .stuck
                .as_ref()
                .map(|s| format!(" — TIMED OUT: {s}"))
                .unwrap_or_default()
        );
        let timed_out = result.stuck.is_some();
        flow.runs.push(result);
        if flow.timed_out() >= GIVE_UP_AFTER {
            flow.gave_up = true;
            break;
        }
        if run + 1 == runs {
            break;
        }
        let fresh = if timed_out {
            Some("it timed out".to_string())
        } else {
            bed.reset(admin)
                .await
                .err()
                .map(|e| format!("the reset by scaling got stuck: {e:#}"))
        };
        if let Some(why) = fresh {
            eprintln!(
                "[{:6.1}s] flow: after run {}, {why}; next run on a fresh tenant",
                secs(start),
                run + 1
            );
            flow.notes.push(format!(
                "after run {}, {why}; the next run used a fresh tenant",
                run + 1
            ));
            bed = Bed::set_up(admin, names, flow.tenants).await?;
            flow.tenants += 1;
        }
    }
    Ok(flow)
}
