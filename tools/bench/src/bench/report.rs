//! The table the bench prints at the end, whatever happened before.

thread_local! {
    /// Everything printed so far, for the report file next to the chart.
    static PRINTED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// `println!` that also keeps the line for [`printed`].
macro_rules! say {
    () => { say!("") };
    ($($t:tt)*) => {{
        let line = format!($($t)*);
        println!("{line}");
        PRINTED.with(|p| {
            let mut p = p.borrow_mut();
            p.push_str(&line);
            p.push('\n');
        });
    }};
}

/// What the reports printed on this thread so far.
pub fn printed() -> String {
    PRINTED.with(|p| p.borrow().clone())
}
use super::cli::Args;
use super::direct::Direct;
use super::flow::Flow;
use super::machine::{Facts, ProcessCpu};
use super::median;
use super::provision::Provisioned;
use super::resync::Resync;
use super::throttling::{ApiCounts, Throttling};

/// One round of the throughput comparison: the operator's provisioning and the direct client's
/// apply of as many tenants, run back to back, so both saw the machine as it was then. A shared
/// 2-core machine changes speed from one minute to the next (the same work took 9.4 s and
/// 14.3 s within one run); the ratio within a round is not moved by that.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Round {
    pub operator_secs: f64,
    pub direct_secs: f64,
    pub direct_enforced_secs: Option<f64>,
}

impl Round {
    pub fn of(provisioned: &Provisioned, direct: &Direct) -> Round {
        Round {
            operator_secs: provisioned.ready_secs,
            direct_secs: direct.secs,
            direct_enforced_secs: direct.enforced_secs,
        }
    }

    /// Operator / direct in namespaces/s (both sides provision as many): the direct client
    /// until its last write answered.
    pub fn raw(&self) -> f64 {
        self.direct_secs / self.operator_secs
    }

    /// Operator / direct, both until every quota is enforced (the operator's Ready).
    pub fn same_end_point(&self) -> Option<f64> {
        self.direct_enforced_secs.map(|e| e / self.operator_secs)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub command: String,
    pub facts: Facts,
    pub cluster: String,
    pub operator: String,
    /// Tenants measured at this size, and those already there (scale mode's later sizes).
    pub tenants: usize,
    pub before: usize,
    pub environments: usize,
    pub create_concurrency: u32,
    pub flow_runs: u32,
    pub provision: Option<Provisioned>,
    pub resync: Option<Resync>,
    pub direct: Option<Direct>,
    /// Every round of the throughput comparison (three by default), in order.
    pub rounds: Vec<Round>,
    pub flow: Option<Flow>,
    /// The API server's CPU per request of the kinds only the operator's phase has.
    pub costs: Option<super::costs::Costs>,
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

    /// Each round's operator / direct and their median: the ratio that the machine's changing
    /// speed moves least (see [`Round`]).
    fn round_by_round(&self) {
        if self.rounds.len() < 2 {
            return;
        }
        let list = |ratios: &[f64]| {
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let raw: Vec<f64> = self.rounds.iter().map(Round::raw).collect();
        let same: Vec<f64> = self
            .rounds
            .iter()
            .filter_map(Round::same_end_point)
            .collect();
        for (label, ratios) in [
            ("operator / direct by round, raw", raw),
            ("operator / direct by round, same end point", same),
        ] {
            if ratios.len() == self.rounds.len()
                && let Some(m) = median(ratios.clone())
            {
                row(
                    label,
                    &format!(
                        "{m:.2}  median of {} (each round's sides back to back)",
                        list(&ratios)
                    ),
                );
            }
        }
    }

    /// The API server's CPU per tenant on each side, and what the requests only the operator's
    /// phase has cost it, measured alone: the gap the ratio cannot close.
    fn where_the_gap_is(&self, p: &Provisioned, d: &Direct) {
        let (Some(op), Some(direct)) = (&p.processes, &d.processes) else {
            return;
        };
        let [op_ms, ..] = op.per_tenant_ms(p.tenants);
        let [direct_ms, ..] = direct.per_tenant_ms(d.tenants);
        row(
            "API server CPU per tenant: operator's phase, direct",
            &format!(
                "{op_ms:.1} / {direct_ms:.1} ms ({:+.1} ms, {:+.0} %)",
                op_ms - direct_ms,
                100.0 * (op_ms / direct_ms - 1.0)
            ),
        );
        if let Some(c) = &self.costs {
            row(
                "  only the operator's phase has (measured alone)",
                &format!(
                    "{:.1} ms: Tenant create {:.1}, status {:.1}, Event {:.1} ({} each, no operator running)",
                    c.per_tenant_ms(),
                    c.tenant_create_ms,
                    c.tenant_status_ms,
                    c.event_ms,
                    c.requests
                ),
            );
        }
    }

    pub fn print(&self) {
        let f = &self.facts;
        say!();
        say!("== CityCloud bench {}", "=".repeat(60));
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
                "{} tenants × {} environments = {} namespaces{}",
                self.tenants,
                self.environments,
                self.tenants * self.environments,
                if self.before > 0 {
                    format!(
                        ", added to {} tenants already there ({} namespaces in all)",
                        self.before,
                        (self.before + self.tenants) * self.environments
                    )
                } else {
                    String::new()
                }
            ),
        );

        say!();
        say!("1. Provisioning through the operator (time until every Tenant is Ready)");
        match &self.provision {
            Some(p) => {
                row(
                    &format!("tenants created ({} in flight)", self.create_concurrency),
                    &format!("{:.1} s", p.create_secs),
                );
                row("all tenants Ready", &format!("{:.1} s", p.ready_secs));
                if let Some([median, p90, max]) = p.latency {
                    row(
                        "per tenant, created → Ready: median, p90, max",
                        &format!("{median:.1} / {p90:.1} / {max:.1} s"),
                    );
                }
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
                if let Some(cpu) = &p.processes {
                    cpu_per_tenant(cpu, Some(p.usage.cpu_secs), "bench (user)", p.tenants);
                }
                requests(&p.api, p.tenants, "incl. the bench's creates and its watch");
                match &p.timeline {
                    Some(Ok(t)) => {
                        say!(
                            "   where each tenant's time went (API server audit log, {} tenants; median / p90 / max)",
                            t.tenants
                        );
                        for (step, [median, p90, max]) in &t.steps {
                            row(
                                &format!("  {step}"),
                                &format!("{median:.2} / {p90:.2} / {max:.2} s"),
                            );
                        }
                    }
                    Some(Err(e)) => row("where each tenant's time went", &format!("not read: {e}")),
                    None => {}
                }
            }
            None => row("not measured", "see errors"),
        }

        say!();
        say!("2. The API server's own limit (same objects, direct server-side apply)");
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
                if let Some(cpu) = &d.processes {
                    cpu_per_tenant(cpu, None, "bench (the client)", d.tenants);
                }
                requests(&d.api, d.tenants, "");
                // The raw clock stops at the last write's answer; the operator's Ready waits
                // for kube-controller-manager to enforce every quota. Both are shown.
                match d.enforced_secs {
                    Some(e) => row(
                        "until every quota enforced (operator's Ready)",
                        &format!("{e:.1} s, {:.2} namespaces/s", d.namespaces as f64 / e),
                    ),
                    None => row("until every quota enforced", "not measured (see log)"),
                }
                if let Some(p) = &self.provision {
                    row(
                        "operator / direct (namespaces/s)",
                        &format!(
                            "{:.2}  raw: direct until its last write answered",
                            p.namespaces_per_sec() / d.namespaces_per_sec()
                        ),
                    );
                    if let Some(e) = d.enforced_namespaces_per_sec() {
                        row(
                            "operator / direct, same end point",
                            &format!(
                                "{:.2}  both until every quota is enforced",
                                p.namespaces_per_sec() / e
                            ),
                        );
                    }
                    self.round_by_round();
                    self.where_the_gap_is(p, d);
                }
            }
            None => row("not measured", "skipped or failed"),
        }

        say!();
        say!("3. Writes during an idle resync (operator stopped, a fresh one started)");
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
                    &format!(
                        "start until {} reconciles (every tenant verified)",
                        self.before + self.tenants
                    ),
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
                requests(&r.api, self.before + self.tenants, "until the comparison");
                for m in r.moved.iter().take(10) {
                    say!("     moved: {m}");
                }
                if r.moved.len() > 10 {
                    say!("     ... and {} more", r.moved.len() - 10);
                }
            }
            None => row("not measured", "see errors"),
        }

        say!();
        say!("4. The operator's resources (/proc: utime+stime, VmHWM)");
        say!(
            "   {:<30} {:>12} {:>14}",
            "run",
            "CPU seconds",
            "peak RSS MiB"
        );
        if let Some(p) = &self.provision {
            say!(
                "   {:<30} {:>12.2} {:>14.1}",
                "provisioning (until Ready)",
                p.usage.cpu_secs,
                p.usage.peak_rss_mib
            );
        }
        if let Some(r) = &self.resync {
            say!(
                "   {:<30} {:>12.2} {:>14.1}",
                "idle resync (fresh process)",
                r.usage.cpu_secs,
                r.usage.peak_rss_mib
            );
        }

        say!();
        say!(
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
                        say!("     run {}: {s}", i + 1);
                    }
                }
                for n in &fl.notes {
                    say!("     note: {n}");
                }
            }
            None if self.flow_runs == 0 => row("not measured", "--flow-runs 0"),
            None if self.before > 0 => row("measured at the first size", "see above"),
            None => row("not measured", "see errors"),
        }

        say!();
        say!("API server pushback (its /metrics, whole run)");
        match &self.throttling {
            Some(t) => {
                row(
                    "429 responses; APF rejections",
                    &format!("{}; {}", t.too_many_requests, t.apf_rejected),
                );
                for (what, n) in t.too_many_by.iter().take(5) {
                    say!("     429: {what} ×{n}");
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
            None if self.errors.is_empty() => row("read at the end of the run", "see below"),
            None => row("not read", "see errors"),
        }

        let notes: Vec<&String> = self
            .notes
            .iter()
            .chain(self.resync.iter().flat_map(|r| &r.notes))
            .collect();
        if !notes.is_empty() {
            say!();
            say!("Notes");
            for n in notes {
                say!(" - {n}");
            }
        }
        if !self.errors.is_empty() {
            say!();
            say!("Errors");
            for e in &self.errors {
                say!(" - {e}");
            }
        }
        say!();
        say!(
            "total {:.0} s — {}",
            self.total_secs,
            if self.failed() { "FAILED" } else { "ok" }
        );
    }
}

impl Report {
    /// The scale mode's figures side by side.
    pub fn summary(reports: &[Report]) {
        say!();
        say!("== Scale summary {}", "=".repeat(52));
        say!(
            "   {:<10} {:>8} {:>9} {:>8} {:>7} {:>7} {:>9} {:>8} {:>8} {:>8} {:>9}",
            "namespaces",
            "Ready s",
            "ns/s",
            "direct",
            "ratio",
            "ratio*",
            "req/ten.",
            "peak MiB",
            "CPU s",
            "restart",
            "writes"
        );
        for r in reports {
            let Some(p) = &r.provision else { continue };
            let direct = r.direct.as_ref().map(|d| d.namespaces_per_sec());
            let enforced = r
                .direct
                .as_ref()
                .and_then(|d| d.enforced_namespaces_per_sec());
            say!(
                "   {:<10} {:>8.1} {:>9.1} {:>8} {:>7} {:>7} {:>9.1} {:>8.1} {:>8.1} {:>8} {:>9}",
                (r.before + r.tenants) * r.environments,
                p.ready_secs,
                p.namespaces_per_sec(),
                direct.map_or("-".into(), |d| format!("{d:.1}")),
                direct.map_or("-".into(), |d| format!("{:.2}", p.namespaces_per_sec() / d)),
                enforced.map_or("-".into(), |d| format!("{:.2}", p.namespaces_per_sec() / d)),
                p.api.total() as f64 / p.tenants.max(1) as f64,
                p.usage.peak_rss_mib,
                p.usage.cpu_secs,
                r.resync
                    .as_ref()
                    .map_or("-".into(), |x| format!("{:.1} s", x.to_all_reconciled_secs)),
                r.resync
                    .as_ref()
                    .map_or("-".into(), |x| x.all_writes.to_string()),
            );
        }
        say!(
            "   (ratio: to the direct client's last write; ratio*: both until every quota is enforced; restart: a fresh operator's start until every tenant is verified; writes: its writes, must be 0)"
        );
    }

    /// Namespaces over time through the operator and directly, and the operator's RSS.
    pub fn chart(&self) -> Option<String> {
        let p = self.provision.as_ref()?;
        let mut upper = vec![super::chart::Line {
            label: "operator: namespaces of Ready tenants",
            colour: "#1f77b4",
            points: p.series.iter().map(|(t, n, _)| (*t, *n as f64)).collect(),
        }];
        if let Some(d) = &self.direct {
            upper.push(super::chart::Line {
                label: "direct client: namespaces with all objects applied",
                colour: "#ff7f0e",
                points: d.series.iter().map(|(t, n)| (*t, *n as f64)).collect(),
            });
            if !d.enforced_series.is_empty() {
                upper.push(super::chart::Line {
                    label: "direct client: namespaces with the quota enforced",
                    colour: "#d62728",
                    points: d
                        .enforced_series
                        .iter()
                        .map(|(t, n)| (*t, *n as f64))
                        .collect(),
                });
            }
        }
        let lower = [super::chart::Line {
            label: "operator RSS",
            colour: "#2ca02c",
            points: p.series.iter().map(|(t, _, m)| (*t, *m)).collect(),
        }];
        let title = format!(
            "CityCloud bench: {} tenants × {} environments{}",
            self.tenants,
            self.environments,
            if self.before > 0 {
                format!(" (after {} tenants)", self.before)
            } else {
                String::new()
            }
        );
        Some(super::chart::svg(
            &title,
            &upper,
            "namespaces",
            &lower,
            "MiB",
        ))
    }
}

/// The API requests of a phase: total, per tenant, and the largest kinds.
/// Where a phase's CPU went, per tenant: the control plane's components, the operator's CPU
/// seconds (on its side) and the bench process, named `bench`.
fn cpu_per_tenant(cpu: &ProcessCpu, operator_secs: Option<f64>, bench: &str, tenants: usize) {
    let [apiserver, etcd, kcm, own] = cpu.per_tenant_ms(tenants);
    let operator_ms = operator_secs.map(|s| 1000.0 * s / tenants.max(1) as f64);
    let mut parts = vec![
        format!("API server {apiserver:.1}"),
        format!("etcd {etcd:.1}"),
        format!("kube-controller-manager {kcm:.1}"),
    ];
    parts.extend(operator_ms.map(|ms| format!("operator {ms:.1}")));
    parts.push(format!("{bench} {own:.1}"));
    row(
        "CPU per tenant (ms)",
        &format!(
            "{:.1}: {}",
            apiserver + etcd + kcm + own + operator_ms.unwrap_or_default(),
            parts.join(", ")
        ),
    );
}

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
    // What kube-controller-manager writes for every new namespace, whoever made it.
    let kcm: u64 = [
        "PUT resourcequotas/status",
        "POST serviceaccounts",
        "POST configmaps",
    ]
    .iter()
    .map(|k| api.get(k))
    .sum();
    if kcm > 0 {
        row(
            "  of which kube-controller-manager's (approx.)",
            &format!(
                "{kcm} (quota status, default ServiceAccount, root CA ConfigMap); the rest {:.1} per tenant",
                (api.total() - kcm.min(api.total())) as f64 / tenants.max(1) as f64
            ),
        );
    }
    let top: Vec<String> = api
        .top(16)
        .into_iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    for chunk in top.chunks(4) {
        say!("     {}", chunk.join(", "));
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAIL (must be 0)" }
}

fn field(name: &str, value: &str) {
    say!("{name:<11} {value}");
}

fn row(label: &str, value: &str) {
    say!("   {label:<46} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_round_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![0.87, 1.05, 1.03]), Some(1.03));
        assert_eq!(median(vec![1.2, 0.8, 1.0, 0.9]), Some(0.95));
    }

    #[test]
    fn a_round_compares_its_two_sides_in_namespaces_per_second() {
        let round = Round {
            operator_secs: 8.0,
            direct_secs: 7.2,
            direct_enforced_secs: Some(7.6),
        };
        // The operator took longer: below 1.
        assert!((round.raw() - 0.9).abs() < 1e-9);
        assert!((round.same_end_point().expect("measured") - 0.95).abs() < 1e-9);
    }
}
