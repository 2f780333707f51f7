//! Whether the API server pushed back: its own /metrics after the run (429s, requests API
//! Priority and Fairness rejected, and which priority levels served the requests).
use super::process::Metrics;

#[derive(Clone, Debug, Default)]
pub struct Throttling {
    pub too_many_requests: u64,
    /// The 429s by verb, resource and component.
    pub too_many_by: Vec<(String, u64)>,
    pub apf_rejected: u64,
    /// Requests dispatched, by APF priority level, most first.
    pub by_priority_level: Vec<(String, u64)>,
    /// Mean time requests waited in APF queues, by priority level (seconds).
    pub queue_wait: Vec<(String, f64)>,
}

pub async fn read(admin: &kube::Client) -> anyhow::Result<Throttling> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = admin.request_text(req).await?;
    let m = Metrics::parse(&text);
    let mut levels: std::collections::BTreeMap<String, u64> = Default::default();
    for (labels, v) in m.samples("apiserver_flowcontrol_dispatched_requests_total") {
        if let Some(level) = labels.get("priority_level") {
            *levels.entry(level.clone()).or_default() += v as u64;
        }
    }
    let mut by_priority_level: Vec<(String, u64)> = levels.into_iter().collect();
    by_priority_level.sort_by_key(|x| std::cmp::Reverse(x.1));
    let mut queue_wait = Vec::new();
    for (level, _) in &by_priority_level {
        let labels = [("priority_level", level.as_str())];
        let sum = m.sum(
            "apiserver_flowcontrol_request_wait_duration_seconds_sum",
            &labels,
        );
        let count = m.sum(
            "apiserver_flowcontrol_request_wait_duration_seconds_count",
            &labels,
        );
        if count > 0.0 {
            queue_wait.push((level.clone(), sum / count));
        }
    }
    let mut too_many_by: Vec<(String, u64)> = m
        .samples("apiserver_request_total")
        .filter(|(l, v)| l.get("code").is_some_and(|c| c == "429") && *v > 0.0)
        .map(|(l, v)| {
            let get = |k: &str| l.get(k).map(String::as_str).unwrap_or("");
            (
                format!("{} {} {}", get("verb"), get("resource"), get("component")),
                v as u64,
            )
        })
        .collect();
    too_many_by.sort_by_key(|x| std::cmp::Reverse(x.1));
    Ok(Throttling {
        too_many_by,
        too_many_requests: m.sum("apiserver_request_total", &[("code", "429")]) as u64,
        apf_rejected: m.sum("apiserver_flowcontrol_rejected_requests_total", &[]) as u64,
        by_priority_level,
        queue_wait,
    })
}

/// Requests the API server answered, by `VERB resource[/subresource]`, from its
/// `apiserver_request_total`; the difference of two readings is what a phase cost it.
#[derive(Clone, Debug, Default)]
pub struct ApiCounts(std::collections::BTreeMap<String, u64>);

impl ApiCounts {
    /// Reads the counters; empty when they cannot be read (the figures then go missing).
    pub async fn read(admin: &kube::Client) -> ApiCounts {
        let Ok(req) = http::Request::get("/metrics").body(Vec::new()) else {
            return ApiCounts::default();
        };
        let Ok(text) = admin.request_text(req).await else {
            return ApiCounts::default();
        };
        let mut out = std::collections::BTreeMap::new();
        for (l, v) in Metrics::parse(&text).samples("apiserver_request_total") {
            let get = |k: &str| l.get(k).map(String::as_str).unwrap_or("");
            let key = match get("subresource") {
                "" => format!("{} {}", get("verb"), get("resource")),
                sub => format!("{} {}/{sub}", get("verb"), get("resource")),
            };
            *out.entry(key).or_default() += v as u64;
        }
        ApiCounts(out)
    }

    /// What was answered after `before`.
    pub fn since(&self, before: &ApiCounts) -> ApiCounts {
        ApiCounts(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(*before.0.get(k).unwrap_or(&0))))
                .filter(|(_, v)| *v > 0)
                .collect(),
        )
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Requests of one `VERB resource`.
    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or_default()
    }

    /// The `n` largest, most first.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.0.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.1));
        v.truncate(n);
        v
    }
}
