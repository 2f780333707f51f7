//! The command line of `citycloud-operator`. The binary is this module's [`main`]; the test
//! crate builds the same one (`operator-under-test`) so integration tests can run the
//! real process.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

/// CityCloud operator: isolated hosting for every agency of a city, wired to its shared services.
#[derive(Parser)]
#[command(name = "citycloud-operator", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every controller, with /metrics, /healthz and /readyz.
    Run {
        /// Address of /metrics, /healthz and /readyz (the chart sets 0.0.0.0:8080).
        #[arg(long, env = "CITYCLOUD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Objects each controller reconciles at once.
        #[arg(long, env = "CITYCLOUD_CONCURRENCY", default_value_t = 8)]
        concurrency: u16,
        /// Log format: text or json.
        #[arg(long, env = "CITYCLOUD_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Print every CustomResourceDefinition as YAML, or write one file per kind into --dir.
    Crds {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Parses the command line and runs it.
pub async fn main() -> anyhow::Result<()> {
    // One TLS provider for the whole process: two compiled in make rustls panic at run time.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            listen,
            concurrency,
            log_format,
        } => {
            crate::telemetry::init(matches!(log_format, LogFormat::Json));
            let client = kube::Client::try_default().await?;
            let options = crate::run::Options {
                listen: Some(listen),
                concurrency,
                identity: crate::context::OperatorIdentity::from_env(),
            };
            crate::run::run(
                client,
                options,
                Arc::default(),
                crate::run::shutdown_signal(),
            )
            .await?;
        }
        Command::Crds { dir: Some(dir) } => crate::crds::write_dir(&dir)?,
        Command::Crds { dir: None } => print!("{}", crate::crds::all_yaml()?),
        Command::Version => println!("citycloud-operator {}", crate::VERSION),
    }
    Ok(())
}
