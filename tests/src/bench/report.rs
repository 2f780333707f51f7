//! The table the bench prints at the end, whatever happened before.
use super::cli::Args;
use super::direct::Direct;
use super::flow::Flow;
use super::machine::Facts;
use super::provision::Provisioned;
use super::resync::Resync;
use super::throttling::{ApiCounts, Throttling};

#[derive(Debug, Default)]
pub struct Report {
    pub command: String,
    pub facts: Facts,
    pub cluster: String,
    pub operator: String,
    pub tenants: usize,
    pub environments: usize,
    pub create_concurrency: u32,
    pub flow_runs: u32,
    pub provision: Option<Provisioned>,
    pub resync: Option<Resync>,
    pub direct: Option<Direct>,
    pub flow: Option<Flow>,
    pub throttling: Option<Throttling>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
    pub total_secs: f64,
}

impl Report {
    pub fn new(args: &Args, command: String, facts: Facts) -> Report {
        Report {
            command,
            facts,
            operator: format!(
                "{} run --concurrency {} (RUST_LOG=warn, admin kubeconfig)",
                args.operator_bin().display(),
                args.operator_concurrency
            ),
            tenants: args.tenants(),
            environments: args.environments(),
            create_concurrency: args.create_concurrency,
            flow_runs: args.flow_runs,
            ..Default::default()
        }
    }

    /// Whether the bench should exit non-zero: an error, or an idle resync that wrote.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty() || self.resync.as_ref().is_some_and(|r| !r.passed())
    }

    pub fn print(&self) {
        let f = &self.facts;
        println!();
        println!("== CityCloud bench {}", "=".repeat(60));
        field("command", &self.command);
        field(
            "machine",
            &format!(
                "{} CPUs ({}), {:.1} GiB RAM, Linux {}",
                f.cpus, f.cpu_model, f.memory_gib, f.kernel
            ),
        );
        field(
            "kubernetes",
            &format!(
                "{} — etcd, kube-apiserver, kube-controller-manager on loopback; API server \
                 flags left at their defaults (--max-requests-inflight=400, \
                 --max-mutating-requests-inflight=200, API Priority and Fairness on)",
                if f.kube_version.is_empty() {
                    "?"
                } else {
                    &f.kube_version
                }
            ),
        );
        field("cluster", &self.cluster);
        field("operator", &self.operator);
        field(
            "size",
            &format!(
                "{} tenants × {} environments = {} namespaces",
                self.tenants,
                self.environments,
                self.tenants * self.environments
            ),
        );

        println!();
        println!("1. Provisioning through the operator (time until every Tenant is Ready)");
        match &self.provision {
            Some(p) => {
                row(
                    &format!("tenants created ({} in flight)", self.create_concurrency),
                    &format!("{:.1} s", p.create_secs),
                );
                row("all tenants Ready", &format!("{:.1} s", p.ready_secs));
                row("tenants/s", &format!("{:.2}", p.tenants_per_sec()));
                row("namespaces/s", &format!("{:.2}", p.namespaces_per_sec()));
                row(
                    &format!("objects/s ({} objects)", p.objects),
                    &format!("{:.1}", p.objects_per_sec()),
                );
                row(
                    "reconciles ok / error; writes",
                    &format!("{} / {}; {}", p.reconciles, p.reconcile_errors, p.writes),
                );
                row(
                    "machine CPUs busy",
                    &format!("{:.0} %", p.machine_busy * 100.0),
                );
                requests(
                    &p.api,
                    p.tenants,
                    "incl. the bench's creates and 250 ms polls",
                );
            }
            None => row("not measured", "see errors"),
        }

        println!();
        println!("2. The API server's own limit (same objects, direct server-side apply)");
        match &self.direct {
            Some(d) => {
                row(
                    &format!(
                        "{} tenants: {} namespaces, {} objects; {} in flight",
                        d.tenants, d.namespaces, d.objects, d.concurrency
                    ),
                    &format!("{:.1} s", d.secs),
                );
                row("objects/s", &format!("{:.1}", d.objects_per_sec()));
                row("namespaces/s", &format!("{:.2}", d.namespaces_per_sec()));
                row(
                    "machine CPUs busy",
                    &format!("{:.0} %", d.machine_busy * 100.0),
                );
                requests(&d.api, d.tenants, "");
                if let Some(p) = &self.provision {
                    row(
                        "operator / direct (namespaces/s)",
                        &format!("{:.2}", p.namespaces_per_sec() / d.namespaces_per_sec()),
                    );
                }
            }
            None => row("not measured", "skipped or failed"),
        }

        println!();
        println!("3. Writes during an idle resync (operator stopped, a fresh one started)");
        match &self.resync {
            Some(r) => {
                row(
                    "objects compared (managed, Tenants, profile)",
                    &r.objects_checked.to_string(),
                );
                row(
                    "resourceVersions moved",
                    &format!("{}  {}", r.moved.len(), verdict(r.moved.is_empty())),
                );
                row(
                    "operator writes (tenant; all controllers)",
                    &format!(
                        "{}; {}  {}",
                        r.tenant_writes,
                        r.all_writes,
                        verdict(r.all_writes == 0)
                    ),
                );
                row(
                    "reconciles ok / error",
                    &format!("{} / {}", r.reconciles, r.reconcile_errors),
                );
                row(
                    &format!("start until {} reconciles", self.tenants),
                    &format!("{:.1} s", r.to_all_reconciled_secs),
                );
                row(
                    "graceful shutdown of the first operator",
                    &format!(
                        "{:.2} s{}",
                        r.shutdown_secs,
                        if r.shutdown_clean { "" } else { " (NOT clean)" }
                    ),
                );
                requests(&r.api, self.tenants, "until the comparison");
                for m in r.moved.iter().take(10) {
                    println!("     moved: {m}");
                }
                if r.moved.len() > 10 {
                    println!("     ... and {} more", r.moved.len() - 10);
                }
            }
            None => row("not measured", "see errors"),
        }

        println!();
        println!("4. The operator's resources (/proc: utime+stime, VmHWM)");
        println!(
            "   {:<30} {:>12} {:>14}",
            "run", "CPU seconds", "peak RSS MiB"
        );
        if let Some(p) = &self.provision {
            println!(
                "   {:<30} {:>12.2} {:>14.1}",
                "provisioning (until Ready)", p.usage.cpu_secs, p.usage.peak_rss_mib
            );
        }
        if let Some(r) = &self.resync {
            println!(
                "   {:<30} {:>12.2} {:>14.1}",
                "idle resync (fresh process)", r.usage.cpu_secs, r.usage.peak_rss_mib
            );
        }

        println!();
        println!(
            "5. Budget flow: freed in one namespace → waiting Deployment in another gets its pods"
        );
        match &self.flow {
            Some(fl) => {
                row(
                    "runs (done / wanted; timed out)",
                    &format!(
                        "{} / {}; {} (after {} s each{})",
                        fl.runs.len(),
                        fl.wanted,
                        fl.timed_out(),
                        fl.timeout_secs,
                        if fl.gave_up { ", then gave up" } else { "" }
                    ),
                );
                if fl.tenants > 1 {
                    row("flow tenants used", &fl.tenants.to_string());
                }
                let span = |x: Option<(f64, f64)>| {
                    x.map_or_else(
                        || "never".to_string(),
                        |(m, w)| format!("median {m:.2} s, worst {w:.2} s"),
                    )
                };
                let worst_note = if fl.timed_out() > 0 {
                    format!(" (+{} runs > {} s)", fl.timed_out(), fl.timeout_secs)
                } else {
                    String::new()
                };
                row(
                    "freed → b has its 2 pods",
                    &format!("{}{worst_note}", span(fl.pods())),
                );
                row("freed → b's quota first raised", &span(fl.first_raise()));
                row("freed → b's quota fits both pods", &span(fl.fit()));
                let all: Vec<String> = fl
                    .runs
                    .iter()
                    .map(|r| {
                        r.pods_secs
                            .map_or_else(|| "-".into(), |s| format!("{s:.1}"))
                    })
                    .collect();
                row("each run (s to pods)", &all.join(" "));
                for (i, r) in fl.runs.iter().enumerate() {
                    if let Some(s) = &r.stuck {
                        println!("     run {}: {s}", i + 1);
                    }
                }
                for n in &fl.notes {
                    println!("     note: {n}");
                }
            }
            None if self.flow_runs == 0 => row("not measured", "--flow-runs 0"),
            None => row("not measured", "see errors"),
        }

        println!();
        println!("API server pushback (its /metrics, whole run)");
        match &self.throttling {
            Some(t) => {
                row(
                    "429 responses; APF rejections",
                    &format!("{}; {}", t.too_many_requests, t.apf_rejected),
                );
                for (what, n) in t.too_many_by.iter().take(5) {
                    println!("     429: {what} ×{n}");
                }
                let levels: Vec<String> = t
                    .by_priority_level
                    .iter()
                    .take(5)
                    .map(|(l, n)| format!("{l} {n}"))
                    .collect();
                row("requests by APF priority level", &levels.join(", "));
                let waits: Vec<String> = t
                    .queue_wait
                    .iter()
                    .filter(|(_, w)| *w > 0.0005)
                    .map(|(l, w)| format!("{l} {:.1} ms", w * 1000.0))
                    .collect();
                if !waits.is_empty() {
                    row("mean APF queue wait", &waits.join(", "));
                }
            }
            None => row("not read", "see errors"),
        }

        let notes: Vec<&String> = self
            .notes
            .iter()
            .chain(self.resync.iter().flat_map(|r| &r.notes))
            .collect();
        if !notes.is_empty() {
            println!();
            println!("Notes");
            for n in notes {
                println!(" - {n}");
            }
        }
        if !self.errors.is_empty() {
            println!();
            println!("Errors");
            for e in &self.errors {
                println!(" - {e}");
            }
        }
        println!();
        println!(
            "total {:.0} s — {}",
            self.total_secs,
            if self.failed() { "FAILED" } else { "ok" }
        );
    }
}

/// The API requests of a phase: total, per tenant, and the largest kinds.
fn requests(api: &ApiCounts, tenants: usize, note: &str) {
    if api.total() == 0 {
        return;
    }
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(", {note}")
    };
    row(
        "API requests",
        &format!(
            "{} ({:.1} per tenant{note})",
            api.total(),
            api.total() as f64 / tenants.max(1) as f64
        ),
    );
    let top: Vec<String> = api
        .top(8)
        .into_iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    for chunk in top.chunks(4) {
        println!("     {}", chunk.join(", "));
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAIL (must be 0)" }
}

fn field(name: &str, value: &str) {
    println!("{name:<11} {value}");
}

fn row(label: &str, value: &str) {
    println!("   {label:<46} {value}");
}
