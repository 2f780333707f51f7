//! Where each tenant's time goes, read from the API server's audit log: run the bench with
//! CITYCLOUD_APISERVER_AUDIT=1 (the test bed then logs every request's metadata, with times
//! to the microsecond). Per operator tenant of the run, the steps between:
//! its create answered → the operator's first write of one of its namespaces (waiting in the
//! controller's queue) → its last ResourceQuota written (its objects) → kube-controller-manager
//! writing that quota's status (enforcement) → its owners' RoleBindings written (access) → its
//! Ready status written.
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde::Deserialize;

/// The audit event's fields read here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    verb: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    stage_timestamp: MicroTime,
}

#[derive(Deserialize, Default)]
struct ObjectRef {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
}

/// When each step of one tenant ended (seconds since the epoch).
#[derive(Debug, Default, Clone, Copy)]
struct Marks {
    created: Option<f64>,
    first_write: Option<f64>,
    quotas_written: Option<f64>,
    enforced: Option<f64>,
    access: Option<f64>,
    ready: Option<f64>,
}

/// Median, 90th percentile and longest of each step over the run's tenants, in seconds.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub tenants: usize,
    pub steps: Vec<(&'static str, [f64; 3])>,
}

/// The steps of the run's operator tenants `first..last`, when the API server keeps an audit log
/// (CITYCLOUD_APISERVER_AUDIT=1: `audit.log` next to the cluster's `logs`); a note of what went
/// wrong if it could not be read.
pub fn of_round(
    logs: &Path,
    names: &super::objects::Names,
    tenants: std::ops::Range<usize>,
) -> Option<Result<Timeline, String>> {
    if !testbed::controlplane::audit_log_enabled() {
        return None;
    }
    let path = logs.parent()?.join("audit.log");
    let wanted: std::collections::HashSet<String> = tenants.map(|i| names.tenant(i)).collect();
    Some(read(&path, |t| wanted.contains(t)).map_err(|e| format!("{e:#}")))
}

/// The steps of the tenants `is_tenant` picks (by name) from the audit log at `path`.
pub fn read(path: &Path, is_tenant: impl Fn(&str) -> bool) -> anyhow::Result<Timeline> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut marks: HashMap<String, Marks> = HashMap::new();
    let mut first_status: HashMap<String, f64> = HashMap::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let Ok(event) = serde_json::from_str::<AuditEvent>(&line) else {
            continue;
        };
        let Some(object) = event.object_ref else {
            continue;
        };
        let at = event.stage_timestamp.0.as_microsecond() as f64 / 1e6;
        let resource = object.resource.as_deref().unwrap_or_default();
        let sub = object.subresource.as_deref();
        let name = object.name.as_deref().unwrap_or_default();
        let (tenant, step): (Option<String>, fn(&mut Marks, f64)) =
            match (event.verb.as_str(), resource, sub) {
                ("patch", "tenants", None) => (Some(name.to_string()), |m, t| {
                    m.created.get_or_insert(t);
                }),
                ("patch", "tenants", Some("status")) => (Some(name.to_string()), |m, t| {
                    m.ready = Some(t);
                }),
                ("patch", "namespaces", None) => (tenant_of_namespace(name), |m, t| {
                    m.first_write.get_or_insert(t);
                }),
                ("patch", "resourcequotas", None) => (
                    object.namespace.as_deref().and_then(tenant_of_namespace),
                    |m, t| m.quotas_written = Some(t),
                ),
                ("update", "resourcequotas", Some("status")) => {
                    // Enforced at the first status write; later ones only count usage.
                    if let Some(ns) = object.namespace {
                        first_status.entry(ns).or_insert(at);
                    }
                    (None, |_, _| {})
                }
                ("patch", "rolebindings", None) if name == "citycloud-owners" => (
                    object.namespace.as_deref().and_then(tenant_of_namespace),
                    |m, t| m.access = Some(t),
                ),
                _ => (None, |_, _| {}),
            };
        if let Some(tenant) = tenant.filter(|t| is_tenant(t)) {
            step(marks.entry(tenant).or_default(), at);
        }
    }
    // A tenant's quotas are enforced when the last of them is.
    for (ns, at) in first_status {
        if let Some(m) = tenant_of_namespace(&ns).and_then(|t| marks.get_mut(&t)) {
            m.enforced = Some(m.enforced.map_or(at, |e| e.max(at)));
        }
    }
    Ok(summarise(marks.values()))
}

/// The tenant whose namespace `ns` is: they are named `<tenant>-<environment>`.
fn tenant_of_namespace(ns: &str) -> Option<String> {
    ns.rsplit_once('-').map(|(t, _)| t.to_string())
}

fn summarise<'a>(marks: impl Iterator<Item = &'a Marks>) -> Timeline {
    let marks: Vec<&Marks> = marks.collect();
    let step = |from: fn(&Marks) -> Option<f64>, to: fn(&Marks) -> Option<f64>| {
        super::median_p90_max(
            marks
                .iter()
                .filter_map(|m| Some((to(m)? - from(m)?).max(0.0)))
                .collect(),
        )
    };
    let steps = [
        (
            "queued (created → first namespace written)",
            step(|m| m.created, |m| m.first_write),
        ),
        (
            "its objects (→ last quota written)",
            step(|m| m.first_write, |m| m.quotas_written),
        ),
        (
            "kube-controller-manager (→ quotas enforced)",
            step(|m| m.quotas_written, |m| m.enforced),
        ),
        (
            "access (→ owners' RoleBindings written)",
            step(|m| m.enforced, |m| m.access),
        ),
        ("status (→ Ready written)", step(|m| m.access, |m| m.ready)),
        (
            "all (created → Ready written)",
            step(|m| m.created, |m| m.ready),
        ),
    ];
    Timeline {
        tenants: marks.len(),
        steps: steps
            .into_iter()
            .filter_map(|(label, q)| Some((label, q?)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(verb: &str, object: serde_json::Value, at: &str) -> String {
        serde_json::json!({"verb": verb, "objectRef": object, "stageTimestamp": at}).to_string()
    }

    #[test]
    fn each_step_is_measured_between_its_writes() {
        let dir = std::env::temp_dir().join(format!("timeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("audit.log");
        let lines = [
            event(
                "patch",
                serde_json::json!({"resource": "tenants", "name": "r-t0001"}),
                "2026-01-01T00:00:00.000000Z",
            ),
            event(
                "patch",
                serde_json::json!({"resource": "namespaces", "name": "r-t0001-dev"}),
                "2026-01-01T00:00:01.000000Z",
            ),
            event(
                "patch",
                serde_json::json!({"resource": "resourcequotas", "namespace": "r-t0001-dev", "name": "citycloud-quota"}),
                "2026-01-01T00:00:01.250000Z",
            ),
            event(
                "update",
                serde_json::json!({"resource": "resourcequotas", "namespace": "r-t0001-dev", "name": "citycloud-quota", "subresource": "status"}),
                "2026-01-01T00:00:01.500000Z",
            ),
            event(
                "patch",
                serde_json::json!({"resource": "rolebindings", "namespace": "r-t0001-dev", "name": "citycloud-owners"}),
                "2026-01-01T00:00:02.000000Z",
            ),
            event(
                "patch",
                serde_json::json!({"resource": "tenants", "name": "r-t0001", "subresource": "status"}),
                "2026-01-01T00:00:02.100000Z",
            ),
            // Another run's tenant, and a line that is not an event: neither counts.
            event(
                "patch",
                serde_json::json!({"resource": "tenants", "name": "x-t0001"}),
                "2026-01-01T00:00:00.000000Z",
            ),
            "not json".to_string(),
        ];
        std::fs::write(&path, lines.join("\n")).expect("the log");
        let timeline = read(&path, |t| t.starts_with("r-")).expect("read");
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(timeline.tenants, 1);
        let secs: Vec<f64> = timeline.steps.iter().map(|(_, q)| q[0]).collect();
        let want = [1.0, 0.25, 0.25, 0.5, 0.1, 2.1];
        assert_eq!(secs.len(), want.len(), "{timeline:?}");
        for (got, want) in secs.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{timeline:?}");
        }
    }
}
