//! `testbed`: the local control plane for people and the Makefile.
//!   testbed up   [--dir .cluster]   start it in the background, print the admin kubeconfig
//!   testbed down [--dir .cluster]   stop it
//!   testbed kubeconfig --user NAME [--group G]...   print a kubeconfig for any user
//!   testbed up --node                 the same with a real node (see testbed::node)
//!   testbed import ARCHIVE...         import OCI image archives into the node's containerd
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use testbed::controlplane::{ControlPlane, Lifetime};

#[derive(Parser)]
#[command(
    name = "testbed",
    about = "The local Kubernetes control plane of CityCloud's tests and demo"
)]
struct Cli {
    /// Where the control plane keeps its certificates, data, logs and kubeconfigs.
    #[arg(
        long,
        global = true,
        default_value = ".cluster",
        env = "CITYCLOUD_CLUSTER"
    )]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build what is missing, start etcd, kube-apiserver and kube-controller-manager on loopback.
    Up {
        /// Also a real node: containerd, kubelet, kube-scheduler, kube-proxy, kube-router, in
        /// namespaces of their own (the control plane joins the node's network namespace).
        #[arg(long)]
        node: bool,
        /// OCI image archives to import into the node's containerd (with --node).
        #[arg(long = "image")]
        images: Vec<PathBuf>,
    },
    /// Import OCI image archives into the node's containerd (namespace k8s.io).
    Import { archives: Vec<PathBuf> },
    /// (internal) Relay the host's 127.0.0.1:PORT into the node's network namespace.
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        port: u16,
    },
    /// Stop the control plane started by `up` (its data stays until `--wipe`).
    Down {
        #[arg(long)]
        wipe: bool,
    },
    /// Print a kubeconfig for a user (client certificate signed by the cluster CA).
    Kubeconfig {
        #[arg(long)]
        user: String,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up { node, images } => {
            if cli.dir.join("pids").exists() {
                anyhow::bail!(
                    "a control plane already runs from {} (testbed down first)",
                    cli.dir.display()
                );
            }
            let started = std::time::Instant::now();
            let bin = testbed::binaries::ensure_built()?;
            let built = started.elapsed();
            let _ = std::fs::remove_dir_all(cli.dir.join("etcd"));
            let cp = if node {
                let exe = std::env::current_exe()?;
                let options = testbed::node::StartOptions {
                    relay_exe: Some(exe),
                    images,
                    ..Default::default()
                };
                let (cp, _node) = testbed::node::start(&cli.dir, Lifetime::Detached, &options)?;
                println!(
                    "node {} Ready (IP {} in its own network namespace; pods {})",
                    testbed::node::NODE_NAME,
                    testbed::node::NODE_IP,
                    testbed::node::POD_CIDR
                );
                cp
            } else {
                ControlPlane::start(&cli.dir, &bin, Lifetime::Detached)?
            };
            let dir = std::fs::canonicalize(&cli.dir)?;
            println!(
                "control plane ready at {} ({:.1}s to ready, {:.1}s checking the build)",
                cp.server,
                (started.elapsed() - built).as_secs_f64(),
                built.as_secs_f64()
            );
            println!(
                "  export KUBECONFIG={}",
                dir.join("admin.kubeconfig").display()
            );
            println!("  logs: {}", dir.join("logs").display());
        }
        Cmd::Down { wipe } => {
            if cli.dir.join("node/holder").exists() {
                testbed::node::stop_detached(&cli.dir)?;
            } else {
                ControlPlane::attach(&cli.dir)?.stop();
            }
            if wipe {
                std::fs::remove_dir_all(&cli.dir)?;
            }
            println!("control plane in {} stopped", cli.dir.display());
        }
        Cmd::Import { archives } => {
            let node = testbed::node::Node::attach(&cli.dir.join("node"))?;
            for archive in &archives {
                node.import_image(archive)?;
                println!("imported {}", archive.display());
            }
        }
        Cmd::Relay { netns, port } => testbed::relay::run_forever(&netns, port)?,
        Cmd::Kubeconfig { user, groups } => {
            let cp = ControlPlane::attach(&cli.dir)?;
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            print!("{}", cp.identity(&user, &groups)?.kubeconfig(&cp));
        }
    }
    Ok(())
}
