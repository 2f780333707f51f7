//! `demo`: the Hải Phòng samples on a local control plane with the operator running, left
//! running for a person to explore (`make demo`, `make demo-down`).
//!   demo up     [--dir .demo] [--operator target/release/citycloud-operator]
//!   demo up --node --image ARCHIVE...   a real node; the operator from its image, by the chart
//!   demo status [--dir .demo]     print the summary again
//!   demo down   [--dir .demo]     stop the operator and the control plane, remove the folder

mod demo;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use demo::summary::{Explore, Snapshot, render};
use demo::{CONVERGE, Layout, process, step};
use testbed::binaries::repo_root;
use testbed::controlplane::ControlPlane;
use testbed::identity::client_from_kubeconfig;

#[derive(Parser)]
#[command(
    name = "demo",
    about = "CityCloud's demo: Hải Phòng's agencies on a local control plane, operator running"
)]
struct Cli {
    /// The demo's folder: control plane, operator log and pid.
    #[arg(long, global = true, default_value = ".demo")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start (or refresh) the demo and print what it runs.
    Up {
        /// The operator binary (`cargo build --release -p citycloud-operator`).
        #[arg(long, default_value = "target/release/citycloud-operator")]
        operator: PathBuf,
        /// A real node (containerd, kubelet, ...): the operator runs in it as a pod, installed
        /// by the chart from the image of `--image` (not from `--operator`).
        #[arg(long)]
        node: bool,
        /// OCI image archives to import into the node (the operator's, with --node).
        #[arg(long = "image")]
        images: Vec<PathBuf>,
    },
    /// (internal) Relay the host's 127.0.0.1:PORT into the node's network namespace.
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        port: u16,
    },
    /// Print the summary of a running demo again.
    Status,
    /// Stop the operator and the control plane, and remove the demo's folder.
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = Layout::new(&cli.dir)
        .map_err(anyhow::Error::from)
        .and_then(|layout| match cli.command {
            Cmd::Up {
                operator,
                node,
                images,
            } => up(&layout, &operator, node.then_some(images)),
            Cmd::Relay { netns, port } => testbed::relay::run_forever(&netns, port)
                .map(|()| true)
                .map_err(Into::into),
            Cmd::Status => status(&layout),
            Cmd::Down => down(&layout).map(|()| true),
        });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Returns whether every tenant ended up Ready. `node`: the image archives to import into a
/// real node, where the chart runs the operator (`make demo NODE=1`).
fn up(layout: &Layout, operator: &Path, node: Option<Vec<PathBuf>>) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    if let Some(images) = node {
        return up_with_node(layout, &images, started);
    }
    let operator = if operator.is_absolute() {
        operator.to_path_buf()
    } else {
        std::env::current_dir()?.join(operator)
    };
    anyhow::ensure!(
        operator.is_file(),
        "no operator binary at {}: build it with `cargo build --release -p citycloud-operator` (make demo does)",
        operator.display()
    );
    std::fs::create_dir_all(&layout.dir)?;

    step(
        "control plane: etcd, kube-apiserver, kube-controller-manager (built from Go modules, cached)",
    );
    let (cp, bin, reused) = demo::control_plane(layout)?;
    step(format!(
        "control plane {} at {} (in {})",
        if reused { "already running" } else { "ready" },
        cp.server,
        layout.show(&layout.cluster())
    ));

    let rt = runtime()?;
    rt.block_on(async {
        let client = client_from_kubeconfig(&std::fs::read_to_string(layout.kubeconfig())?).await?;

        step("CRDs from crds/");
        testbed::operator::install_crds(&client).await?;

        step("the chart's admission policies and agency roles (helm template charts/citycloud-operator --show-only ...)");
        let policies = testbed::operator::render_admission_policies(&bin.join("helm"))?;
        let applied =
            testbed::operator::apply_yaml_documents(&client, &policies, demo::FIELD_MANAGER).await?;
        step(format!("  {} objects applied", applied.len()));

        // /metrics answers only a reader the API server vouches for, as the city's Prometheus.
        let token =
            testbed::metrics_reader::reader_token(&client, &bin.join("helm"), 7 * 24 * 3600).await?;
        write_private(&layout.metrics_token(), &token)?;
        step(format!(
            "a reader of the operator's /metrics: ServiceAccount {}/{} bound to the chart's ClusterRole {}; its token in {}",
            testbed::operator::RELEASE_NAMESPACE,
            testbed::metrics_reader::READER,
            testbed::metrics_reader::reader_cluster_role(),
            layout.show(&layout.metrics_token())
        ));

        for file in demo::SAMPLES {
            let applied = demo::apply_sample(&client, file).await?;
            step(format!("deploy/samples/{file}: {} objects applied", applied.len()));
        }

        if process::stop(layout) {
            step("stopped the operator of an earlier `make demo`");
        }
        let addr = process::start(layout, &operator).await?;
        step(format!(
            "operator running: {} run --listen {addr} (log {})",
            layout.show(&operator),
            layout.show(&layout.operator_log())
        ));
        converge(&client, layout, &cp, None, started).await
    })
}

/// `make demo NODE=1`: a cluster with a real node, the operator's image imported into it and
/// installed by the chart, then the samples.
fn up_with_node(
    layout: &Layout,
    images: &[PathBuf],
    started: std::time::Instant,
) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&layout.dir)?;
    step(
        "control plane and a node: etcd, kube-apiserver, kube-controller-manager; containerd + runc, \
         kubelet, kube-scheduler, kube-proxy, kube-router, CoreDNS (built from Go modules, cached)",
    );
    let (cp, node, bin, reused) = demo::node::cluster(layout, std::env::current_exe()?)?;
    step(format!(
        "cluster {} at {}, node {} (in {})",
        if reused { "already running" } else { "ready" },
        cp.server,
        testbed::node::NODE_NAME,
        layout.show(&layout.cluster())
    ));
    for image in images {
        node.import_image(image)?;
        step(format!("imported {} into the node", layout.show(image)));
    }
    if process::stop(layout) {
        step("stopped the operator process of an earlier `make demo`");
    }

    let rt = runtime()?;
    rt.block_on(async {
        let client = client_from_kubeconfig(&std::fs::read_to_string(layout.kubeconfig())?).await?;
        // Provider namespaces first: the chart binds the operator's Secrets role in them.
        let applied = demo::apply_sample(&client, "platform.yaml").await?;
        step(format!("deploy/samples/platform.yaml: {} objects applied", applied.len()));

        step("helm upgrade --install citycloud-operator charts/citycloud-operator --wait (CRDs, RBAC, admission policies, the operator's Deployment)");
        let (helm, kubeconfig, archives) = (bin.join("helm"), layout.kubeconfig(), images.to_vec());
        tokio::task::spawn_blocking(move || demo::node::install_chart(&helm, &kubeconfig, &archives))
            .await??;
        let pod = demo::node::operator_pod(&client).await;
        step(format!(
            "operator pod {} Ready",
            pod.map(|p| p.name).unwrap_or_default()
        ));

        let token = demo::node::reader_token(&client, 7 * 24 * 3600).await?;
        write_private(&layout.metrics_token(), &token)?;
        step(format!(
            "a reader of the operator's /metrics: ServiceAccount {}/{} (the chart's metrics.readers); its token in {}",
            testbed::operator::RELEASE_NAMESPACE,
            testbed::metrics_reader::READER,
            layout.show(&layout.metrics_token())
        ));

        for file in demo::SAMPLES {
            let applied = demo::apply_sample(&client, file).await?;
            step(format!("deploy/samples/{file}: {} objects applied", applied.len()));
        }
        converge(&client, layout, &cp, Some(&node), started).await
    })
}

/// Waits for the operator's work on the samples (claims applied once the tenants are Ready),
/// prints the summary and returns whether every tenant is Ready.
async fn converge(
    client: &kube::Client,
    layout: &Layout,
    cp: &ControlPlane,
    node: Option<&testbed::node::Node>,
    started: std::time::Instant,
) -> anyhow::Result<bool> {
    let client = client.clone();
    let wanted = demo::namespaces_of(demo::CLAIMS)?;
    step(format!(
        "waiting for the operator to create the namespaces the claims go to ({})",
        wanted.iter().cloned().collect::<Vec<_>>().join(", ")
    ));
    if let Err(why) = demo::wait_until(CONVERGE, || demo::namespaces_exist(&client, &wanted)).await
    {
        anyhow::bail!(
            "after {}s, {why}. The tenants say:\n  {}\nThe operator's log: {}",
            CONVERGE.as_secs(),
            demo::tenants_ready(&client).await.err().unwrap_or_default(),
            layout.show(&layout.operator_log())
        );
    }
    // Ready means the tenant's quota is enforced, claims count included: kube-controller-
    // manager counts a custom resource only once it has discovered it (seconds after the
    // CRDs), and until then the API server refuses claims ("status unknown for quota").
    step(format!(
        "waiting (at most {}s) for every tenant to be Ready",
        CONVERGE.as_secs()
    ));
    let tenants = demo::wait_until(CONVERGE, || demo::tenants_ready(&client)).await;
    if let Err(why) = &tenants {
        step(format!("gave up waiting: {why}"));
    }
    let applied = demo::apply_sample(&client, demo::CLAIMS).await?;
    step(format!(
        "deploy/samples/{}: {} objects applied",
        demo::CLAIMS,
        applied.len()
    ));
    step("waiting for every claim to be bound or refused");
    if let Err(why) = demo::wait_until(std::time::Duration::from_secs(60), || {
        demo::claims_decided(&client)
    })
    .await
    {
        step(format!("gave up waiting: {why}"));
    }
    // Tenants' boundServices and services' claim counts follow the claims a moment later.
    if let Err(why) = demo::wait_until(std::time::Duration::from_secs(30), || {
        demo::statuses_settled(&client)
    })
    .await
    {
        step(format!("statuses still lag the claims: {why}"));
    }

    let snap = Snapshot::read(&client).await?;
    let pod = match node {
        Some(_) => demo::node::operator_pod(&client).await,
        None => None,
    };
    print!("{}", render(&snap, &explore(layout, cp, pod)));
    step(format!(
        "{} of {} tenants Ready {:.1}s after `demo up` started",
        snap.tenants.len() - snap.not_ready().len(),
        snap.tenants.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(report_not_ready(&snap, layout))
}

/// Names the tenants that are not Ready; returns whether all are.
fn report_not_ready(snap: &Snapshot, layout: &Layout) -> bool {
    let not_ready = snap.not_ready();
    if not_ready.is_empty() {
        return true;
    }
    eprintln!(
        "\n✗ {} of {} tenants are not Ready (the demo keeps running; see {}):",
        not_ready.len(),
        snap.tenants.len(),
        layout.show(&layout.operator_log())
    );
    for (name, why) in not_ready {
        eprintln!("  {name}: {why}");
    }
    false
}

fn explore(layout: &Layout, cp: &ControlPlane, pod: Option<demo::node::OperatorPod>) -> Explore {
    let operator = process::running(layout).map(|pid| {
        let addr = std::fs::read_to_string(layout.operator_addr()).unwrap_or_default();
        (pid, addr.trim().to_string())
    });
    Explore {
        server: cp.server.clone(),
        kubeconfig: layout.kubeconfig().display().to_string(),
        cluster_dir: layout.show(&layout.cluster()),
        demo_dir: layout.show(&layout.dir),
        cluster_logs: layout.show(&layout.cluster().join("logs")),
        operator_log: if pod.is_some() {
            format!(
                "kubectl -n {} logs deploy/{}",
                testbed::operator::RELEASE_NAMESPACE,
                testbed::operator::RELEASE
            )
        } else {
            layout.show(&layout.operator_log())
        },
        operator,
        operator_pod: pod,
        metrics_token: layout.show(&layout.metrics_token()),
    }
}

/// Writes a secret file only its owner may read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn status(layout: &Layout) -> anyhow::Result<bool> {
    anyhow::ensure!(
        layout.cluster().join("pids").exists(),
        "no demo runs from {} (make demo starts one)",
        layout.dir.display()
    );
    let cp = ControlPlane::attach(&layout.cluster())?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = client_from_kubeconfig(&std::fs::read_to_string(layout.kubeconfig())?).await?;
        let snap = Snapshot::read(&client).await?;
        let pod = match layout.cluster().join("node/holder").exists() {
            true => demo::node::operator_pod(&client).await,
            false => None,
        };
        print!("{}", render(&snap, &explore(layout, &cp, pod)));
        Ok(report_not_ready(&snap, layout))
    })
}

fn down(layout: &Layout) -> anyhow::Result<()> {
    if !layout.dir.exists() {
        println!("no demo in {}: nothing to stop", layout.show(&layout.dir));
        return Ok(());
    }
    if process::stop(layout) {
        println!("operator stopped");
    }
    let cluster = layout.cluster();
    if cluster.join("node/holder").exists() {
        // The node's components, the control plane, then the node's namespaces and cgroups.
        testbed::node::stop_detached(&cluster)?;
        println!(
            "control plane and node in {} stopped",
            layout.show(&cluster)
        );
    } else if cluster.join("pids").exists() {
        ControlPlane::attach(&cluster)?.stop();
        println!("control plane in {} stopped", layout.show(&cluster));
    }
    // Only a folder the demo made: never the repository, nor a folder without its files.
    let ours = ["cluster", "operator.log", "operator.pid", "operator.addr"]
        .iter()
        .any(|f| layout.dir.join(f).exists());
    anyhow::ensure!(
        ours && layout.dir != repo_root(),
        "{} does not look like a demo folder: not removing it",
        layout.dir.display()
    );
    std::fs::remove_dir_all(&layout.dir)?;
    println!("removed {}", layout.show(&layout.dir));
    Ok(())
}
