//! The parts of `bench` (tools/bench/src/main.rs): its options, the operator as a child
//! process, the objects it creates, the five measurements and the report.
pub mod chart;
pub mod cleanup;
pub mod cli;
pub mod costs;
pub mod direct;
pub mod flow;
pub mod machine;
pub mod objects;
pub mod process;
pub mod provision;
pub mod report;
pub mod resync;
pub mod throttling;
pub mod timeline;
pub mod warmup;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `probe` every `every` until it yields a value, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() >= timeout {
            let cause = last_error
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            anyhow::bail!(
                "timed out after {:.0}s waiting for {what}{cause}",
                timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// The median, 90th percentile and largest of `secs` (sorted here); `None` when empty.
pub fn median_p90_max(mut secs: Vec<f64>) -> Option<[f64; 3]> {
    secs.sort_by(f64::total_cmp);
    let at = |q: f64| secs[((secs.len() - 1) as f64 * q).round() as usize];
    (!secs.is_empty()).then(|| [at(0.5), at(0.9), at(1.0)])
}

/// The middle value (the mean of the two middle ones for an even count): a few rounds' ratios,
/// where [`median_p90_max`]'s nearest rank would pick one of the two middle rounds.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Seconds since `start`, for progress lines.
pub fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
