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
#[path = "../bench/mod.rs"]
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
    let mut report = Report::new(&args, command, bench::machine::facts());

    // On this (the main) thread, before any runtime: the control plane's start-up blocks on
    // runtimes of its own, and its components die with the thread that spawned them.
    let (cluster, owned) = match control_plane(&args) {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(format!("control plane: {e:#}"));
            report.print();
            return ExitCode::FAILURE;
        }
    };
    report.cluster = if owned {
        format!(
            "started by the bench in {} (logs there)",
            cluster.dir.display()
        )
    } else {
        format!("attached to {} (CITYCLOUD_CLUSTER)", cluster.dir.display())
    };
    eprintln!(
        "control plane ready at {} ({})",
        cluster.server, report.cluster
    );

    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let outcome = rt.block_on(async {
                tokio::time::timeout(args.max_runtime(), run(&args, &cluster, owned, &mut report))
                    .await
            });
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => report.errors.push(format!("{e:#}")),
                Err(_) => report.errors.push(format!(
                    "stopped after --max-runtime {} s",
                    args.max_runtime
                )),
            }
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        Err(e) => report.errors.push(format!("tokio runtime: {e}")),
    }
    report.total_secs = started.elapsed().as_secs_f64();
    report.print();
    if owned {
        cluster.stop();
        // Keep the logs, drop the data (600 namespaces' worth of etcd).
        let _ = std::fs::remove_dir_all(cluster.dir.join("etcd"));
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
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
    Ok((ControlPlane::start(&dir, &bin, Lifetime::Owned)?, true))
}

async fn run(
    args: &Args,
    cluster: &ControlPlane,
    owned: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    let kubeconfig = cluster.admin_kubeconfig();
    let logs = cluster.dir.join("logs");
    let admin = testbed::identity::client_from_kubeconfig(
        &std::fs::read_to_string(&kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?,
    )
    .await?;
    report.facts.kube_version = admin.apiserver_version().await?.git_version;
    testbed::operator::install_crds(&admin).await?;

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

    // 1. Provisioning through the operator.
    let operator = OperatorProcess::start(
        &args.operator_bin(),
        &kubeconfig,
        &logs,
        "provision",
        args.operator_concurrency,
    )
    .await?;
    report.provision =
        Some(bench::provision::run(&admin, &names, args, &operator, &profile).await?);

    // 3. The idle resync (stops the provisioning operator, runs and stops a fresh one).
    match bench::resync::run(&admin, &names, args, operator, &kubeconfig, &logs).await {
        Ok(r) => report.resync = Some(r),
        Err(e) => report.errors.push(format!("idle resync: {e:#}")),
    }

    // 2. The API server alone, with no operator running.
    if !args.skip_direct {
        match bench::direct::run(&admin, &names, args, &profile).await {
            Ok(d) => report.direct = Some(d),
            Err(e) => report.errors.push(format!("direct apply: {e:#}")),
        }
    }

    // 5. The budget flow, with an operator again.
    let needs_operator = args.flow_runs > 0 || !owned;
    let operator = if needs_operator {
        Some(
            OperatorProcess::start(
                &args.operator_bin(),
                &kubeconfig,
                &logs,
                "flow",
                args.operator_concurrency,
            )
            .await?,
        )
    } else {
        None
    };
    if args.flow_runs > 0 {
        match bench::flow::run(&admin, &names, args).await {
            Ok(f) => report.flow = Some(f),
            Err(e) => report.errors.push(format!("budget flow: {e:#}")),
        }
    }

    match bench::throttling::read(&admin).await {
        Ok(t) => report.throttling = Some(t),
        Err(e) => report.errors.push(format!("API server metrics: {e:#}")),
    }

    if !owned {
        eprintln!("cleaning up the bench's objects on the attached control plane");
        if let Err(e) = bench::cleanup::tenants(&admin, &names).await {
            report.errors.push(format!("cleanup: {e:#}"));
        }
    }
    if let Some(op) = operator {
        op.stop().await?;
    }
    if !owned {
        match bench::cleanup::leftovers(&admin, &names).await {
            Ok(n) => report.notes.push(format!(
                "removed the run's {n} namespaces, cluster roles and profiles (namespaces finish terminating in the background)"
            )),
            Err(e) => report.errors.push(format!("cleanup: {e:#}")),
        }
    }
    Ok(())
}
