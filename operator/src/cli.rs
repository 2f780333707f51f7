//! The command line of `citycloud-operator`. The binary is this module's [`main`]; the test
//! crate builds the same one (`operator-under-test`) so integration tests can run the
//! real process.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

/// Objects each controller reconciles at once unless `--concurrency` says otherwise. With 16
/// tenants under way instead of 12, etcd and kube-controller-manager work in larger batches
/// (commits, quota recounts) and 200 new tenants are Ready sooner; more buys little and costs
/// memory, about 0.5 MiB each at a burst (`make bench` with `--operator-concurrency`).
pub const DEFAULT_CONCURRENCY: u16 = 16;

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
        /// Serve /metrics to anyone who reaches the port. By default a caller needs a bearer
        /// token of a user the API server allows `get` on /metrics (TokenReview, then
        /// SubjectAccessReview). Local development only: /metrics tells every tenant's usage.
        #[arg(long, env = "CITYCLOUD_METRICS_INSECURE")]
        metrics_insecure: bool,
        /// Objects each controller reconciles at once.
        #[arg(long, env = "CITYCLOUD_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY,
              value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: u16,
        /// Log format: text or json.
        #[arg(long, env = "CITYCLOUD_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
        /// Reconcile only while holding a Lease, so several replicas can run and one leads
        /// (the chart turns this on).
        #[arg(long, env = "CITYCLOUD_LEADER_ELECT")]
        leader_elect: bool,
        /// The Lease's name.
        #[arg(
            long,
            env = "CITYCLOUD_LEADER_ELECTION_LEASE",
            default_value = "citycloud-operator"
        )]
        leader_election_lease: String,
        /// The Lease's namespace: the operator's own.
        #[arg(long, env = "CITYCLOUD_OPERATOR_NAMESPACE")]
        leader_election_namespace: Option<String>,
        /// How long a leader's lease lasts without renewal: a standby takes over at most this
        /// long after the leader's node fails (at once when the leader shuts down cleanly).
        #[arg(long, env = "CITYCLOUD_LEASE_DURATION_SECONDS", default_value_t = 15)]
        lease_duration_seconds: u64,
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
            metrics_insecure,
            concurrency,
            log_format,
            leader_elect,
            leader_election_lease,
            leader_election_namespace,
            lease_duration_seconds,
        } => {
            crate::telemetry::init(matches!(log_format, LogFormat::Json));
            let leader_election = if leader_elect {
                let namespace = leader_election_namespace.ok_or_else(|| {
                    anyhow::anyhow!(
                        "--leader-elect needs the Lease's namespace: --leader-election-namespace \
                         or CITYCLOUD_OPERATOR_NAMESPACE"
                    )
                })?;
                anyhow::ensure!(
                    lease_duration_seconds >= 3,
                    "--lease-duration-seconds must be at least 3"
                );
                Some(crate::leader::LeaderElection {
                    namespace,
                    lease: leader_election_lease,
                    identity: crate::leader::replica_identity(),
                    lease_duration: std::time::Duration::from_secs(lease_duration_seconds),
                })
            } else {
                None
            };
            let client = kube::Client::try_default().await?;
            let options = crate::run::Options {
                listen: Some(listen),
                concurrency,
                identity: crate::context::OperatorIdentity::from_env(),
                leader_election,
                metrics_insecure,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_zero_is_refused_and_unset_is_the_default() {
        let zero = Cli::try_parse_from(["citycloud-operator", "run", "--concurrency", "0"]);
        let err = zero.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("--concurrency"), "{err}");
        let Ok(Cli {
            command: Command::Run { concurrency, .. },
        }) = Cli::try_parse_from(["citycloud-operator", "run"])
        else {
            panic!("`run` alone parses");
        };
        assert_eq!(concurrency, 16);
    }
}
