//! `bench` (`make bench`): CityCloud's figures on a local control plane.
//!
//! 1. N tenants × K environments provisioned through the operator (a child process,
//!    `citycloud-operator run`): time until every Tenant is Ready, tenants/s, namespaces/s;
//! 2. the same objects (the operator's own `build`, other tenant names) applied directly by a
//!    tight client: the API server's limit on this machine, and the operator's share of it;
//! 3. an idle resync: the operator stopped, a fresh one started; no managed object's
//!    resourceVersion may move and its writes counter must stay 0 (else exit status 1);
//! 4. the operator's CPU seconds and peak RSS for 1 and 3;
//! 5. the budget flow: freed quota in one namespace reaching a waiting Deployment in another.
//!
//! It starts its own control plane in `target/bench/run-<pid>` (or attaches to
//! CITYCLOUD_CLUSTER), and stops by itself after --max-runtime whatever happens.
#[allow(unsafe_code)] // libc: pre_exec death signal, SIGTERM, sysconf for the operator it measures
mod bench;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use citycloud::api::QuotaProfile;
use clap::Parser;
use kube::api::{Api, Patch, PatchParams};
use testbed::controlplane::{ControlPlane, Lifetime};

use bench::cli::Args;
use bench::objects::{self, MANAGER, Names};
use bench::process::OperatorProcess;
use bench::report::Report;

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let command = std::env::args()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let started = Instant::now();
    let facts = bench::machine::facts();
    let sizes = sizes(&args);
    let mut reports: Vec<Report> = sizes
        .iter()
        .map(|a| {
            let mut r = Report::new(a, command.clone(), facts.clone());
            r.tenants = a.measured();
            r.before = a.first();
            r
        })
        .collect();

    // On this (the main) thread, before any runtime: the control plane's start-up blocks on
    // runtimes of its own, and its components die with the thread that spawned them.
    let (cluster, owned) = match control_plane(&args) {
        Ok(c) => c,
        Err(e) => {
            reports[0].errors.push(format!("control plane: {e:#}"));
            reports[0].print();
            return ExitCode::FAILURE;
        }
    };
    let where_ = if owned {
        format!(
            "started by the bench in {} (logs there)",
            cluster.dir.display()
        )
    } else {
        format!("attached to {} (CITYCLOUD_CLUSTER)", cluster.dir.display())
    };
    for r in &mut reports {
        r.cluster = where_.clone();
    }
    eprintln!("control plane ready at {} ({where_})", cluster.server);
    bench::machine::follow_control_plane(&cluster.pids());

    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let outcome = rt.block_on(async {
                tokio::time::timeout(
                    args.max_runtime(),
                    run(&args, &sizes, &cluster, owned, &mut reports),
                )
                .await
            });
            let last = reports.len() - 1;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => reports[last].errors.push(format!("{e:#}")),
                Err(_) => reports[last].errors.push(format!(
                    "stopped after --max-runtime {} s",
                    args.max_runtime
                )),
            }
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        Err(e) => reports[0].errors.push(format!("tokio runtime: {e}")),
    }
    let total = started.elapsed().as_secs_f64();
    for r in &mut reports {
        r.total_secs = total;
    }
    for r in &reports {
        r.print();
    }
    if reports.len() > 1 {
        Report::summary(&reports);
    }
    let out_dir = cluster.dir.join("report");
    match write_files(&out_dir, &reports) {
        Ok(files) => println!("\nreport and charts: {}", files.join(", ")),
        Err(e) => eprintln!(
            "could not write the report files in {}: {e}",
            out_dir.display()
        ),
    }
    if owned {
        cluster.stop();
        // Keep the logs, drop the data (600 namespaces' worth of etcd).
        let _ = std::fs::remove_dir_all(cluster.dir.join("etcd"));
    }
    if reports.iter().any(Report::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The sizes measured: the one of --tenants, or in scale mode 1,000 tenants and then as many
/// more as make 10,000 namespaces in all.
fn sizes(args: &Args) -> Vec<Args> {
    if !args.scale {
        return vec![args.clone()];
    }
    let all = 10_000_u32.div_ceil(args.environments);
    [(0, 1000), (1000, all.max(1001))]
        .into_iter()
        .map(|(first, tenants)| Args {
            first,
            tenants,
            ..args.clone()
        })
        .collect()
}

/// The text report and one SVG chart per size, in `dir`.
fn write_files(dir: &std::path::Path, reports: &[Report]) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let text = dir.join("report.txt");
    std::fs::write(&text, bench::report::printed())?;
    let mut files = vec![text.display().to_string()];
    for r in reports {
        let Some(svg) = r.chart() else { continue };
        let path = dir.join(format!(
            "chart-{}x{}.svg",
            r.before + r.tenants,
            r.environments
        ));
        std::fs::write(&path, svg)?;
        files.push(path.display().to_string());
    }
    Ok(files)
}

/// Attaches to CITYCLOUD_CLUSTER, or starts a control plane under target/bench/.
fn control_plane(args: &Args) -> anyhow::Result<(ControlPlane, bool)> {
    if let Some(dir) = &args.cluster {
        return Ok((ControlPlane::attach(dir)?, false));
    }
    let bin = testbed::binaries::ensure_built()?;
    let root = testbed::binaries::repo_root().join("target/bench");
    testbed::controlplane::prune_old_runs(&root);
    let dir = root.join(format!("run-{}", std::process::id()));
    eprintln!("starting a control plane in {}", dir.display());
    // The CRDs before kube-controller-manager starts: its quota controller counts claims from
    // the start instead of after its next 30 s discovery (the warm-up below then passes at once).
    let options = testbed::controlplane::Options {
        crds: Some(testbed::binaries::repo_root().join("crds")),
        ..Default::default()
    };
    Ok((
        ControlPlane::start_with(&dir, &bin, Lifetime::Owned, &options)?,
        true,
    ))
}

async fn run(
    args: &Args,
    sizes: &[Args],
    cluster: &ControlPlane,
    owned: bool,
    reports: &mut [Report],
) -> anyhow::Result<()> {
    let kubeconfig = cluster.admin_kubeconfig();
    let logs = cluster.dir.join("logs");
    let admin = testbed::identity::client_from_kubeconfig(
        &std::fs::read_to_string(&kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?,
    )
    .await?;
    let version = admin.apiserver_version().await?.git_version;
    for r in reports.iter_mut() {
        r.facts.kube_version = version.clone();
    }
    testbed::operator::install_crds(&admin).await?;
    if owned {
        // The cluster as `helm install` leaves it: the chart's guard rails, and its mutating
        // policy that stores a new Tenant with its cleanup finalizer (one write fewer each).
        let helm = testbed::binaries::ensure_built()?.join("helm");
        testbed::operator::install_admission_policies(&admin, &helm).await?;
        testbed::operator::admission_policies_in_force(&admin).await?;
        reports[0].notes.push(
            "the chart's admission policies installed and in force, as `helm install` leaves them"
                .into(),
        );
    }

    // Unique per run, so that runs against one attached cluster never collide.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
    let names = Names {
        run: format!("b{:04x}", seed & 0xffff),
    };
    let profiles = Api::<QuotaProfile>::all(admin.clone());
    let profile = profiles
        .patch(
            &names.profile(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(objects::profile(&names)),
        )
        .await?;

    // A cluster whose kube-controller-manager knows the CRDs, as any cluster in use does.
    let waited = bench::warmup::crds_discovered(&admin, &names).await?;
    reports[0].notes.push(format!(
        "before measuring, waited {waited:.1} s for kube-controller-manager to discover the CRDs (it counts count/sharedserviceclaims.citycloud.io in quotas only then; a cluster in use has long done so)"
    ));

    if let Some(prefill) = args.prefilled() {
        let written = bench::direct::run(&admin, &names, &prefill, &profile).await?;
        bench::resync::kcm_settled(&admin).await?;
        reports[0].notes.push(format!(
            "before measuring, the direct client wrote {} tenants' objects ({} namespaces, {:.1} s, not counted) so that both sides run on a cluster in use (--prefill)",
            written.tenants, written.namespaces, written.secs
        ));
    }
    for (i, (size, report)) in sizes.iter().zip(reports.iter_mut()).enumerate() {
        if sizes.len() > 1 {
            eprintln!(
                "== size {}: tenants {}..{} ({} in all)",
                i + 1,
                size.first(),
                size.tenants(),
                size.tenants()
            );
        }
        // The budget flow once, at the first size (1,000 tenants in scale mode).
        let flow = i == 0 && args.flow_runs > 0;
        let on = On {
            admin: &admin,
            names: &names,
            profile: &profile,
            kubeconfig: &kubeconfig,
            logs: &logs,
        };
        measure(size, on, flow, report).await?;
    }
    let last = reports.len() - 1;
    // Last, with no operator running: its tenants are never provisioned.
    if bench::machine::ProcessCpu::now().is_some() {
        let model = names.tenant(sizes[last].first());
        match bench::costs::run(
            &admin,
            &names,
            &model,
            &profile,
            args.environments(),
            COST_REQUESTS,
        )
        .await
        {
            Ok(c) => reports[last].costs = Some(c),
            Err(e) => reports[last].errors.push(format!("request costs: {e:#}")),
        }
    }
    match bench::throttling::read(&admin).await {
        Ok(t) => reports[last].throttling = Some(t),
        Err(e) => reports[last]
            .errors
            .push(format!("API server metrics: {e:#}")),
    }

    if !owned {
        eprintln!("cleaning up the bench's objects on the attached control plane");
        let operator = OperatorProcess::start(
            &args.operator_bin(),
            &kubeconfig,
            &logs,
            "cleanup",
            args.operator_concurrency,
        )
        .await?;
        if let Err(e) = bench::cleanup::tenants(&admin, &names).await {
            reports[last].errors.push(format!("cleanup: {e:#}"));
        }
        operator.stop().await?;
        match bench::cleanup::leftovers(&admin, &names).await {
            Ok(n) => reports[last].notes.push(format!(
                "removed the run's {n} namespaces, cluster roles and profiles (namespaces finish terminating in the background)"
            )),
            Err(e) => reports[last].errors.push(format!("cleanup: {e:#}")),
        }
    }
    Ok(())
}

/// Requests of each kind the request-cost measurement makes (see `bench::costs`).
const COST_REQUESTS: usize = 200;

/// What every measurement runs on: the cluster (its admin, kubeconfig and logs folder) and
/// the run's names and QuotaProfile.
#[derive(Clone, Copy)]
struct On<'a> {
    admin: &'a kube::Client,
    names: &'a Names,
    profile: &'a QuotaProfile,
    kubeconfig: &'a std::path::Path,
    logs: &'a std::path::Path,
}

/// One size: provisioning, the idle resync, the direct client, and the budget flow if `flow`.
async fn measure(args: &Args, on: On<'_>, flow: bool, report: &mut Report) -> anyhow::Result<()> {
    let On {
        admin,
        names,
        profile,
        kubeconfig,
        logs,
    } = on;
    let label = |what: &str| format!("{what}-{}", args.tenants());
    // 1. Provisioning through the operator.
    let operator = OperatorProcess::start(
        &args.operator_bin(),
        kubeconfig,
        logs,
        &label("provision"),
        args.operator_concurrency,
    )
    .await?;
    let mut provisioned = bench::provision::run(admin, names, args, &operator, profile).await?;
    provisioned.timeline = bench::timeline::of_round(logs, names, args.first()..args.tenants());
    report.provision = Some(provisioned);

    // 3. The idle resync (stops the provisioning operator, runs and stops a fresh one).
    match bench::resync::run(admin, names, args, operator, kubeconfig, logs).await {
        Ok(r) => report.resync = Some(r),
        Err(e) => report.errors.push(format!("idle resync: {e:#}")),
    }

    // 2. The API server alone, with no operator running.
    if !args.skip_direct {
        bench::resync::kcm_settled(admin).await?;
        match bench::direct::run(admin, names, args, profile).await {
            Ok(d) => report.direct = Some(d),
            Err(e) => report.errors.push(format!("direct apply: {e:#}")),
        }
    }

    // More rounds on as many new tenants, the sides taking turns to go first: each side's
    // fastest round counts, and neither side always goes first.
    if args.rounds > 1 && !args.scale && !args.skip_direct {
        more_rounds(args, on, report).await?;
    }

    // 5. The budget flow, with an operator again.
    if flow {
        let operator = OperatorProcess::start(
            &args.operator_bin(),
            kubeconfig,
            logs,
            &label("flow"),
            args.operator_concurrency,
        )
        .await?;
        match bench::flow::run(admin, names, args).await {
            Ok(f) => report.flow = Some(f),
            Err(e) => report.errors.push(format!("budget flow: {e:#}")),
        }
        operator.stop().await?;
    }
    Ok(())
}

/// Rounds 2 and on of the throughput comparison: round 2 direct first, round 3 the operator
/// first, and so on. The report keeps each side's fastest round and notes them all.
async fn more_rounds(args: &Args, on: On<'_>, report: &mut Report) -> anyhow::Result<()> {
    let mut operator_secs: Vec<f64> = report.provision.iter().map(|p| p.ready_secs).collect();
    let mut direct_secs: Vec<f64> = report.direct.iter().map(|d| d.secs).collect();
    if let (Some(p), Some(d)) = (&report.provision, &report.direct) {
        report.rounds.push(bench::report::Round::of(p, d));
    }
    let mut round = args.clone();
    for k in 2..=args.rounds {
        round = round.next_round();
        let (provisioned, direct) = if k % 2 == 0 {
            let direct = direct_round(on, &round).await?;
            (operator_round(args, on, &round, k).await?, direct)
        } else {
            let provisioned = operator_round(args, on, &round, k).await?;
            (provisioned, direct_round(on, &round).await?)
        };
        operator_secs.push(provisioned.ready_secs);
        direct_secs.push(direct.secs);
        report
            .rounds
            .push(bench::report::Round::of(&provisioned, &direct));
        if report
            .provision
            .as_ref()
            .is_none_or(|p| provisioned.ready_secs < p.ready_secs)
        {
            report.provision = Some(provisioned);
        }
        if report.direct.as_ref().is_none_or(|d| direct.secs < d.secs) {
            report.direct = Some(direct);
        }
    }
    let list = |secs: &[f64]| {
        secs.iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.notes.push(format!(
        "{} rounds, the sides taking turns to go first (operator, direct, direct, operator, ...); each side's fastest is reported: operator {} s, direct {} s",
        args.rounds,
        list(&operator_secs),
        list(&direct_secs),
    ));
    Ok(())
}

/// The direct client on `round`'s tenants, once kube-controller-manager caught up with the
/// phase before.
async fn direct_round(on: On<'_>, round: &Args) -> anyhow::Result<bench::direct::Direct> {
    bench::resync::kcm_settled(on.admin).await?;
    bench::direct::run(on.admin, on.names, round, on.profile).await
}

/// A fresh operator provisioning `round`'s tenants (round `k`), once it has verified the
/// tenants already there.
async fn operator_round(
    args: &Args,
    on: On<'_>,
    round: &Args,
    k: u32,
) -> anyhow::Result<bench::provision::Provisioned> {
    bench::resync::kcm_settled(on.admin).await?;
    let operator = OperatorProcess::start(
        &args.operator_bin(),
        on.kubeconfig,
        on.logs,
        &format!("provision-round{k}-{}", args.tenants()),
        args.operator_concurrency,
    )
    .await?;
    // A fresh operator first verifies every tenant already there (the earlier rounds'): that
    // is the restart measured above, not this round's provisioning.
    let existing = round.first() as u64;
    bench::wait_for(
        "the round's operator to verify the tenants already there",
        Duration::from_secs(600),
        Duration::from_millis(100),
        || async { Ok((operator.tenant_reconciles().await? >= existing).then_some(())) },
    )
    .await?;
    bench::resync::quiet(&operator, Duration::from_secs(3), Duration::from_secs(60)).await;
    let provisioned = bench::provision::run(on.admin, on.names, round, &operator, on.profile).await;
    operator.stop().await?;
    let mut provisioned = provisioned?;
    provisioned.timeline =
        bench::timeline::of_round(on.logs, on.names, round.first()..round.tenants());
    Ok(provisioned)
}
