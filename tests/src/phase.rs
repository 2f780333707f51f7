//! Phase timings: `mark("chart: helm install done")` prints `[phase  23.4s] chart: helm install
//! done` on stderr, the seconds counted from the test process's start, so the phases of tests
//! running in parallel line up (`cargo test ... -- --nocapture` shows them). They are how the
//! node tests' critical path is found.
use std::fmt::Display;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process's start as an [`Instant`]: from /proc (its start in clock ticks after boot, and
/// the uptime), else the first mark.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let now = Instant::now();
        let age = process_age().unwrap_or_default();
        now.checked_sub(age).unwrap_or(now)
    })
}

fn process_age() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (in parentheses, which may hold spaces); starttime is the
    // 22nd field, the 20th after it.
    let after = stat.rsplit_once(')')?.1;
    let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_secs_f64((uptime - ticks / 100.0).max(0.0)))
}

/// Prints `label` with the seconds since the test process started.
pub fn mark(label: impl Display) {
    eprintln!("[phase {:6.1}s] {label}", origin().elapsed().as_secs_f64());
}
