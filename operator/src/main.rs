use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

/// CityCloud operator: isolated hosting for every agency of a city, wired to its shared services.
#[derive(Parser)]
#[command(name = "citycloud-operator", version)]
struct Cli {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One TLS provider for the whole process: two compiled in make rustls panic at run time.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            listen,
            concurrency,
            log_format,
        } => {
            citycloud::telemetry::init(matches!(log_format, LogFormat::Json));
            let client = kube::Client::try_default().await?;
            let options = citycloud::run::Options {
                listen: Some(listen),
                concurrency,
                identity: citycloud::context::OperatorIdentity::from_env(),
            };
            citycloud::run::run(
                client,
                options,
                Arc::default(),
                citycloud::run::shutdown_signal(),
            )
            .await?;
        }
        Command::Crds { dir: Some(dir) } => citycloud::crds::write_dir(&dir)?,
        Command::Crds { dir: None } => print!("{}", citycloud::crds::all_yaml()?),
        Command::Version => println!("citycloud-operator {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
