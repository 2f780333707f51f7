//! The operator as a child process (`citycloud-operator run`), as it runs in a cluster: its
//! `/metrics` read over HTTP as the city's Prometheus reads it (the bearer token of a
//! ServiceAccount bound to the chart's metrics-reader ClusterRole), its CPU time and peak
//! memory read from `/proc`.
use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the operator may take to answer `/readyz`, and to exit on SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `citycloud-operator run`; killed if dropped while running.
pub struct OperatorProcess {
    pub label: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub started: Instant,
    child: Child,
    /// A token of a reader of `/metrics` (see `testbed::metrics_reader`).
    token: String,
}

/// CPU seconds (user + system) and peak resident memory of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_secs: f64,
    pub peak_rss_mib: f64,
    /// Resident memory now.
    pub rss_mib: f64,
}

/// How a stop went.
#[derive(Debug)]
pub struct Stopped {
    pub status: Option<ExitStatus>,
    pub took: Duration,
    pub killed: bool,
}

impl OperatorProcess {
    /// Starts `bin run --listen 127.0.0.1:<free port>` acting with `kubeconfig`, logging to
    /// `<logs>/operator-<label>.log`, and waits until `/readyz` answers 200. Installs the
    /// chart's metrics-reader ClusterRole, bound to a ServiceAccount whose token reads `/metrics`.
    ///
    /// Must be called from the thread that lives as long as the bench (the runtime's
    /// `block_on` thread): the child gets SIGKILL when the thread that spawned it ends.
    pub async fn start(
        bin: &Path,
        kubeconfig: &Path,
        logs: &Path,
        label: &str,
        concurrency: u16,
    ) -> anyhow::Result<OperatorProcess> {
        let token = metrics_token(kubeconfig)
            .await
            .context("a reader of the operator's /metrics")?;
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = logs.join(format!("operator-{label}.log"));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = testbed::launch::operator_command(bin, kubeconfig, addr);
        cmd.arg("--concurrency")
            .arg(concurrency.to_string())
            // CITYCLOUD_BENCH_OPERATOR_LOG, e.g. `info,kube_runtime=debug`, to see why each
            // reconcile ran (the measurement is made at `warn`).
            .env(
                "RUST_LOG",
                std::env::var("CITYCLOUD_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl(2) is async-signal-safe; it is the only call between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} (make bench builds it)", bin.display()))?;
        let started = Instant::now();
        testbed::launch::wait_ready(&mut child, addr, Some(&log), START_TIMEOUT)
            .await
            .with_context(|| format!("operator {label}"))?;
        Ok(OperatorProcess {
            label: label.to_string(),
            addr,
            log,
            started,
            child,
            token,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its `/metrics`, parsed.
    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let (code, body) = testbed::http::get_as(self.addr, "/metrics", Some(&self.token)).await?;
        if code != 200 {
            bail!("operator {}: GET /metrics answered {code}", self.label);
        }
        Ok(Metrics::parse(&body))
    }

    /// Successful reconciles of the tenant controller so far.
    pub async fn tenant_reconciles(&self) -> anyhow::Result<u64> {
        Ok(self.metrics().await?.tenant_reconciles())
    }

    /// CPU time and peak RSS so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        usage_of(self.pid())
    }

    /// SIGTERM, then up to 30 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) -> anyhow::Result<Stopped> {
        let start = Instant::now();
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        while start.elapsed() < STOP_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Stopped {
                    status: Some(status),
                    took: start.elapsed(),
                    killed: false,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child.kill()?;
        let status = self.child.wait().ok();
        Ok(Stopped {
            status,
            took: start.elapsed(),
            killed: true,
        })
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `/proc/<pid>/stat` (utime + stime) and `/proc/<pid>/status` (VmHWM).
pub fn usage_of(pid: i32) -> anyhow::Result<Usage> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<u64>()? as f64)
    };
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_secs = (ticks(11)? + ticks(12)?) / hz;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .context("no VmHWM in /proc/<pid>/status")?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
    Ok(Usage {
        cpu_secs,
        peak_rss_mib: peak_kib / 1024.0,
        rss_mib: rss_kib / 1024.0,
    })
}

/// The Prometheus text exposition, as samples: name, labels, value.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics { samples }
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The samples named `name`, for breakdowns.
    pub fn samples(&self, name: &str) -> impl Iterator<Item = (&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(move |(n, _, _)| n == name)
            .map(|(_, l, v)| (l, *v))
    }

    /// `citycloud_reconciles_total{controller="tenant",result="success"}`.
    pub fn tenant_reconciles(&self) -> u64 {
        self.sum(
            "citycloud_reconciles_total",
            &[("controller", "tenant"), ("result", "success")],
        ) as u64
    }

    /// `citycloud_reconciles_total{controller="tenant",result="error"}`.
    pub fn tenant_reconcile_errors(&self) -> u64 {
        self.sum(
            "citycloud_reconciles_total",
            &[("controller", "tenant"), ("result", "error")],
        ) as u64
    }

    /// `citycloud_writes_total{controller="tenant"}`.
    pub fn tenant_writes(&self) -> u64 {
        self.sum("citycloud_writes_total", &[("controller", "tenant")]) as u64
    }

    /// Every controller's writes.
    pub fn all_writes(&self) -> u64 {
        self.sum("citycloud_writes_total", &[]) as u64
    }
}

fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (head, value) = line.trim().rsplit_once(' ')?;
    // An optional timestamp follows the value in the format; prometheus-client writes none.
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (head, BTreeMap::new()),
    };
    Some((name.to_string(), labels, value))
}

/// `a="x",b="y\"z"` into a map.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// A token of the test bed's reader of `/metrics`, installed with the admin of `kubeconfig`.
async fn metrics_token(kubeconfig: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let admin = testbed::identity::client_from_kubeconfig(&text).await?;
    let helm = testbed::binaries::ensure_built()?.join("helm");
    testbed::metrics_reader::reader_token(&admin, &helm, 24 * 3600).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_client_text() {
        let text = "# HELP citycloud_reconciles Reconciles\n# TYPE citycloud_reconciles counter\n\
            citycloud_reconciles_total{controller=\"tenant\",result=\"success\"} 12\n\
            citycloud_reconciles_total{controller=\"tenant\",result=\"error\"} 1\n\
            citycloud_reconciles_total{controller=\"quotaprofile\",result=\"success\"} 3\n\
            citycloud_writes_total{controller=\"tenant\"} 40\n\
            citycloud_tenant_quota_used{tenant=\"a,\\\"b\",resource=\"requests.cpu\"} 0.5\n\
            # EOF\n";
        let m = Metrics::parse(text);
        assert_eq!(m.tenant_reconciles(), 12);
        assert_eq!(m.tenant_reconcile_errors(), 1);
        assert_eq!(m.tenant_writes(), 40);
        assert_eq!(m.sum("citycloud_reconciles_total", &[]), 16.0);
        assert_eq!(
            m.sum("citycloud_tenant_quota_used", &[("tenant", "a,\"b")]),
            0.5
        );
    }

    #[test]
    fn reads_its_own_usage() {
        let u = usage_of(std::process::id() as i32).expect("own /proc");
        assert!(u.peak_rss_mib > 0.0);
    }
}
