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
