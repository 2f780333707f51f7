//! The bench's options; every one can also come from the environment.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Measures CityCloud on a local control plane: provisioning throughput through the operator
/// against the API server's own limit, writes during an idle resync, the operator's CPU and
/// memory, and how fast freed tenant budget reaches a waiting Deployment.
#[derive(Parser, Debug, Clone)]
#[command(name = "bench")]
pub struct Args {
    /// Tenants provisioned through the operator (and as many again applied directly).
    #[arg(long, env = "BENCH_TENANTS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub tenants: u32,

    /// Environments (namespaces) per tenant.
    #[arg(long, env = "BENCH_ENVIRONMENTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub environments: u32,

    /// Tenants' objects the direct client writes before anything is measured (untimed), so
    /// that both sides run on a cluster already in use rather than an empty one.
    #[arg(long, env = "BENCH_PREFILL", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=5000))]
    pub prefill: u32,

    /// Runs of the budget-flow measurement; 0 skips it.
    #[arg(long, env = "BENCH_FLOW_RUNS", default_value_t = 20)]
    pub flow_runs: u32,

    /// Seconds a budget-flow run may take before it counts as timed out; the flow gives up
    /// after 3 timed-out runs.
    #[arg(long, env = "BENCH_FLOW_TIMEOUT", default_value_t = 60)]
    pub flow_timeout: u64,

    /// Tenants created at once.
    #[arg(long, env = "BENCH_CREATE_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub create_concurrency: u32,

    /// Requests in flight when applying the same objects directly.
    #[arg(long, env = "BENCH_DIRECT_CONCURRENCY", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub direct_concurrency: u32,

    /// The operator's `--concurrency` (objects each controller reconciles at once); by default
    /// the operator's own default.
    #[arg(long, env = "BENCH_OPERATOR_CONCURRENCY", default_value_t = citycloud::cli::DEFAULT_CONCURRENCY)]
    pub operator_concurrency: u16,

    /// The operator binary [default: target/release/citycloud-operator].
    #[arg(long, env = "BENCH_OPERATOR_BIN")]
    pub operator_bin: Option<PathBuf>,

    /// Attach to the control plane in this folder (e.g. `make cluster-up`'s .cluster) instead
    /// of starting one; no other operator may run against it.
    #[arg(long, env = "CITYCLOUD_CLUSTER")]
    pub cluster: Option<PathBuf>,

    /// Skip the direct-apply measurement (the API server's own limit).
    #[arg(long, env = "BENCH_SKIP_DIRECT")]
    pub skip_direct: bool,

    /// Rounds of the throughput comparison, each on as many new tenants, the sides taking turns
    /// to go first (3: operator, direct, direct, operator, operator, direct); each side's
    /// fastest round is reported. On a shared 2-core machine the same work costs the API server
    /// up to half again as much CPU from one minute to the next; a single round's ratio swings
    /// with it. Scale mode measures one round per size.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=4))]
    pub rounds: u32,

    /// Seconds to wait for every tenant to be Ready.
    #[arg(long, env = "BENCH_READY_TIMEOUT", default_value_t = 1200)]
    pub ready_timeout: u64,

    /// Scale mode: 1,000 tenants, then as many more as make 10,000 namespaces in all (with
    /// --environments 3), each size measured like the default run; --tenants is ignored.
    #[arg(long, env = "BENCH_SCALE")]
    pub scale: bool,

    /// The first tenant index of the current size (scale mode: the tenants already there).
    #[arg(skip)]
    pub first: u32,

    /// Seconds after which the whole bench stops, whatever it is doing.
    #[arg(long, env = "BENCH_MAX_RUNTIME", default_value_t = 3600)]
    pub max_runtime: u64,
}

/// The first tenant index `--prefill` uses: past the largest size (`--tenants` ≤ 5,000; scale
/// mode's 10,000 namespaces).
const PREFILL_FIRST: u32 = 100_000;

impl Args {
    pub fn tenants(&self) -> usize {
        self.tenants as usize
    }

    /// The first tenant of the size being measured (0 but in scale mode's later sizes).
    pub fn first(&self) -> usize {
        self.first as usize
    }

    /// Tenants of the size being measured.
    pub fn measured(&self) -> usize {
        self.tenants() - self.first()
    }

    /// The next round's size: as many tenants again, after this round's.
    pub fn next_round(&self) -> Args {
        let mut next = self.clone();
        next.first = self.tenants;
        next.tenants = self.tenants + (self.tenants - self.first);
        next
    }

    /// The tenants `--prefill` writes, numbered far past any size measured; `None` for none.
    pub fn prefilled(&self) -> Option<Args> {
        (self.prefill > 0).then(|| {
            let mut pre = self.clone();
            pre.first = PREFILL_FIRST;
            pre.tenants = PREFILL_FIRST + self.prefill;
            pre
        })
    }

    pub fn environments(&self) -> usize {
        self.environments as usize
    }

    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout)
    }

    pub fn max_runtime(&self) -> Duration {
        Duration::from_secs(self.max_runtime)
    }

    pub fn operator_bin(&self) -> PathBuf {
        self.operator_bin.clone().unwrap_or_else(|| {
            testbed::binaries::repo_root().join("target/release/citycloud-operator")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefilled tenants share the direct client's names (`<run>-d-t<i>`): a measured
    /// round writing over one would find its objects already there and finish early.
    #[test]
    fn prefilled_tenants_never_share_a_number_with_a_measured_one() {
        let args = Args::parse_from([
            "bench",
            "--tenants",
            "5000",
            "--rounds",
            "4",
            "--prefill",
            "5000",
        ]);
        let mut last = args.clone();
        for _ in 1..args.rounds {
            last = last.next_round();
        }
        let pre = args.prefilled().expect("--prefill 5000 prefills");
        assert!(
            last.tenants() <= pre.first(),
            "round 4 ends at {}",
            last.tenants()
        );
        assert_eq!(pre.measured(), 5000);
        let none = Args::parse_from(["bench"]);
        assert!(
            none.prefilled().is_none(),
            "no --prefill, nothing written before measuring"
        );
    }
}
