//! Facts about the machine, and how busy its CPUs were during a phase (`/proc/stat`).
use std::fs;

/// What the report says about where it ran.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub kube_version: String,
}

pub fn facts() -> Facts {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or_default();
    Facts {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        memory_gib,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        kube_version: String::new(),
    }
}

/// Jiffies of all CPUs together, busy and in total.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSample {
    busy: u64,
    total: u64,
}

impl CpuSample {
    pub fn now() -> CpuSample {
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        CpuSample {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// The share of all CPUs busy since `self` (0..=1).
    pub fn busy_since(&self) -> f64 {
        let now = CpuSample::now();
        let total = now.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        now.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

/// The control plane's processes whose CPU the report splits out, as the test bed names them
/// in its `pids` file's command lines.
const COMPONENTS: [&str; 3] = ["kube-apiserver", "etcd", "kube-controller-manager"];

/// The control plane's processes (pid, component), found once at the start of a run; empty
/// when none of them could be identified.
static CONTROL_PLANE: std::sync::OnceLock<Vec<(i32, &'static str)>> = std::sync::OnceLock::new();

/// Tells [`ProcessCpu`] which processes are the control plane's (`pids`: the test bed's), by
/// their command lines. Later calls change nothing.
pub fn follow_control_plane(pids: &[i32]) {
    let found = pids
        .iter()
        .filter_map(|&pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).take(2).collect();
            COMPONENTS
                .into_iter()
                .find(|c| args.iter().any(|a| a.ends_with(c.as_bytes())))
                .map(|c| (pid, c))
        })
        .collect();
    let _ = CONTROL_PLANE.set(found);
}

/// CPU seconds (user + system) used so far by each control-plane component and by the bench
/// itself: with the operator's own, where a phase's CPU went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessCpu {
    pub apiserver: f64,
    pub etcd: f64,
    pub controller_manager: f64,
    /// This process: the direct client, or the user creating Tenants and watching them.
    pub bench: f64,
}

impl ProcessCpu {
    /// `None` when the control plane's processes are unknown (an attached cluster).
    pub fn now() -> Option<ProcessCpu> {
        let components = CONTROL_PLANE.get().filter(|c| !c.is_empty())?;
        let mut cpu = ProcessCpu {
            bench: super::process::usage_of(std::process::id() as i32)
                .map(|u| u.cpu_secs)
                .unwrap_or_default(),
            ..ProcessCpu::default()
        };
        for (pid, component) in components {
            let secs = super::process::usage_of(*pid)
                .map(|u| u.cpu_secs)
                .unwrap_or_default();
            match *component {
                "kube-apiserver" => cpu.apiserver += secs,
                "etcd" => cpu.etcd += secs,
                _ => cpu.controller_manager += secs,
            }
        }
        Some(cpu)
    }

    /// What each used since `earlier`.
    pub fn since(&self, earlier: &ProcessCpu) -> ProcessCpu {
        ProcessCpu {
            apiserver: self.apiserver - earlier.apiserver,
            etcd: self.etcd - earlier.etcd,
            controller_manager: self.controller_manager - earlier.controller_manager,
            bench: self.bench - earlier.bench,
        }
    }

    /// Each per tenant, in milliseconds: (API server, etcd, kube-controller-manager, bench).
    pub fn per_tenant_ms(&self, tenants: usize) -> [f64; 4] {
        let per = |secs: f64| 1000.0 * secs / tenants.max(1) as f64;
        [
            per(self.apiserver),
            per(self.etcd),
            per(self.controller_manager),
            per(self.bench),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_tenant_is_what_each_process_used_since_divided_by_tenants() {
        let before = ProcessCpu {
            apiserver: 10.0,
            etcd: 1.0,
            controller_manager: 2.0,
            bench: 0.5,
        };
        let after = ProcessCpu {
            apiserver: 20.0,
            etcd: 2.5,
            controller_manager: 3.0,
            bench: 1.5,
        };
        assert_eq!(
            after.since(&before).per_tenant_ms(200),
            [50.0, 7.5, 5.0, 5.0]
        );
    }

    #[test]
    fn only_the_control_planes_processes_are_followed() {
        // This process (the test runner) is none of them: nothing to follow, nothing reported.
        follow_control_plane(&[std::process::id() as i32]);
        assert_eq!(ProcessCpu::now(), None);
    }
}
