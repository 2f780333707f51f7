//! Dedicated nodes (`spec.nodePlacement`) hold only if the API server enforces them, and
//! whether it does is the cluster's choice: two admission plugins, off by default, read the
//! annotations the operator writes on every tenant namespace.
//!
//! - PodNodeSelector merges `scheduler.alpha.kubernetes.io/node-selector` into each new pod
//!   and refuses a pod whose nodeSelector contradicts it: the tenant's pods stay on its pool.
//! - PodTolerationRestriction adds `.../defaultTolerations` to each new pod and refuses any
//!   pod with a toleration outside `.../tolerationsWhitelist`: other tenants' pods cannot
//!   tolerate the pool's taint. Every tenant namespace gets a whitelist (see [`whitelist`]),
//!   also those without dedicated nodes: an absent or empty whitelist allows everything.
//!
//! The operator checks enforcement itself, by server-side dry-run pods that break the
//! placement (nothing is created), and reports `NodePlacementReady`. The verdict is cached
//! per namespace, so an idle resync sends no request.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Toleration};
use kube::api::{Api, PostParams};
use serde_json::json;

use super::build::{NODE_SELECTOR_ANNOTATION, TOLERATIONS_WHITELIST_ANNOTATION};
use crate::FIELD_MANAGER;
use crate::api::conditions::{reason, tenant as cond};
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE};
use crate::api::{NodePlacement, Tenant};
use crate::conditions::Cond;

/// How long a verdict stands before the next dry-run (a cluster's admission plugins change
/// only with an API server restart).
const RECHECK: Duration = Duration::from_secs(600);
/// Between the two dry-runs that must both be admitted before a cluster is reported as not
/// enforcing: right after the operator writes the annotations, the API server's own
/// namespace cache may lag behind for a moment.
const CONFIRM: Duration = Duration::from_secs(1);
/// The taint key of the toleration no whitelist allows (unless it allows every taint).
const PROBE_KEY: &str = "citycloud.io/placement-probe";
const PROBE_VALUE: &str = "citycloud-placement-probe";
/// The plugins' refusals, as kube-apiserver words them (plugin/pkg/admission/...).
/// PodTolerationRestriction's comes as a 500 (a plain error, not a Status), which kube's
/// client logs as an ERROR line: expected, once per check.
const TOLERATION_REFUSAL: &str = "conflict with its namespace whitelist";
const SELECTOR_REFUSAL: &str = "conflicts with its namespace node label selector";

/// The taints Kubernetes itself makes pods tolerate: DefaultTolerationSeconds adds
/// not-ready and unreachable (NoExecute) to every pod, PodTolerationRestriction adds
/// memory-pressure to every pod that is not BestEffort, and the DaemonSet controller adds
/// all of these to DaemonSet pods. None marks a dedicated pool.
const SYSTEM_TOLERATIONS: [(&str, &str); 7] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ("node.kubernetes.io/network-unavailable", "NoSchedule"),
];

/// The tolerations a pod in a tenant's namespace may carry: the system ones, and the
/// tenant's own nodePlacement tolerations (none without dedicated nodes).
pub fn whitelist(placement: Option<&NodePlacement>) -> Vec<Toleration> {
    let system = SYSTEM_TOLERATIONS.iter().map(|(key, effect)| Toleration {
        key: Some((*key).into()),
        operator: Some("Exists".into()),
        effect: Some((*effect).into()),
        ..Default::default()
    });
    let own = placement.into_iter().flat_map(|p| &p.tolerations).map(|t| {
        let mut t = t.clone();
        // An empty operator means Equal, but the plugin's match is literal: an "Equal" entry
        // would refuse a pod that leaves the operator out; an empty one admits both.
        if t.operator.as_deref() == Some("Equal") {
            t.operator = None;
        }
        t
    });
    system.chain(own).collect()
}

/// [`whitelist`] as the annotation's JSON.
pub fn whitelist_annotation(placement: Option<&NodePlacement>) -> String {
    // Serializing plain tolerations cannot fail; "[]" would allow everything, so never that.
    serde_json::to_string(&whitelist(placement)).unwrap_or_else(|_| {
        r#"[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute"}]"#
            .into()
    })
}

/// Whether PodTolerationRestriction admits toleration `t` under `whitelist`
/// (k8s.io/kubernetes pkg/util/tolerations VerifyAgainstWhitelist; empty allows all).
pub fn admits(whitelist: &[Toleration], t: &Toleration) -> bool {
    whitelist.is_empty() || whitelist.iter().any(|w| is_superset(w, t))
}

/// pkg/util/tolerations isSuperset: whether `ss` tolerates everything `t` does.
fn is_superset(ss: &Toleration, t: &Toleration) -> bool {
    fn s(v: &Option<String>) -> &str {
        v.as_deref().unwrap_or("")
    }
    fn fields(x: &Toleration) -> (&str, &str, &str, &str, Option<i64>) {
        (
            s(&x.key),
            s(&x.operator),
            s(&x.value),
            s(&x.effect),
            x.toleration_seconds,
        )
    }
    if fields(ss) == fields(t) {
        return true;
    }
    if s(&t.key) != s(&ss.key) && (!s(&ss.key).is_empty() || s(&ss.operator) != "Exists") {
        return false;
    }
    if s(&t.effect) != s(&ss.effect) && !s(&ss.effect).is_empty() {
        return false;
    }
    if s(&ss.effect) == "NoExecute"
        && let Some(max) = ss.toleration_seconds
        && t.toleration_seconds.is_none_or(|secs| secs > max)
    {
        return false;
    }
    match s(&ss.operator) {
        "Equal" | "" => s(&t.operator) == "Equal" && s(&t.value) == s(&ss.value),
        "Exists" => true,
        _ => false,
    }
}

/// What a check found, per namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Enforced,
    /// The plugins whose dry-run pod was admitted.
    NotEnforced(Vec<&'static str>),
}

struct Entry {
    /// The annotations the verdict was found under.
    fingerprint: String,
    checked: Instant,
    verdict: Verdict,
}

/// The last verdict per namespace, shared by the tenant controller's reconciles.
#[derive(Default)]
pub struct Verdicts(Mutex<BTreeMap<String, Entry>>);

impl Verdicts {
    fn fresh(&self, ns: &str, fingerprint: &str) -> Option<Verdict> {
        let entries = self.0.lock().ok()?;
        let e = entries.get(ns)?;
        (e.fingerprint == fingerprint && e.checked.elapsed() < RECHECK).then(|| e.verdict.clone())
    }

    fn last(&self, ns: &str) -> Option<Verdict> {
        Some(self.0.lock().ok()?.get(ns)?.verdict.clone())
    }

    fn record(&self, ns: &str, fingerprint: String, verdict: Verdict) {
        if let Ok(mut entries) = self.0.lock() {
            let checked = Instant::now();
            entries.insert(
                ns.into(),
                Entry {
                    fingerprint,
                    checked,
                    verdict,
                },
            );
        }
    }
}

/// `NodePlacementReady`, and whether it is settled (else: look again in a few seconds).
pub struct Outcome {
    pub condition: Cond,
    pub settled: bool,
}

/// What one dry-run pod met.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Refused by the plugin under test: enforced.
    Refused,
    /// Admitted, or refused by a check that runs only after the plugin would have.
    Admitted,
    /// Refused before the plugin ran, or no answer: no verdict.
    Unknown(String),
}

/// Classifies a dry-run's answer. The plugins mutate, and every mutating admission step
/// runs before object validation and every validating step (PodSecurity, LimitRanger's
/// limits, ResourceQuota, ValidatingAdmissionPolicies, webhooks): a refusal by one of those
/// means the plugin let the pod through.
fn classify(result: Result<Pod, kube::Error>, refusal: &str) -> Probe {
    const LATER: [&str; 6] = [
        "exceeded quota",
        "violates PodSecurity",
        "denied request",
        "denied the request",
        "maximum",
        "minimum",
    ];
    match result {
        Ok(_) => Probe::Admitted,
        Err(kube::Error::Api(s)) if s.message.contains(refusal) => Probe::Refused,
        // Invalid (object validation) and AlreadyExists (storage) both come after admission.
        Err(kube::Error::Api(s))
            if s.code == 422 || s.code == 409 || LATER.iter().any(|m| s.message.contains(m)) =>
        {
            Probe::Admitted
        }
        Err(kube::Error::Api(s)) => Probe::Unknown(s.message.to_string()),
        Err(e) => Probe::Unknown(e.to_string()),
    }
}

/// A pod every tenant namespace's other checks admit (Pod Security restricted, nothing
/// mounted, no resources named so the LimitRange fills them in), made to break the
/// placement by `spec`.
fn probe_pod(spec: serde_json::Value) -> Option<Pod> {
    let mut pod = json!({
        "metadata": {
            "generateName": "citycloud-placement-probe-",
            "labels": {MANAGED_BY: MANAGED_BY_VALUE}
        },
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65534,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": "probe",
                "image": "registry.k8s.io/pause:3.10",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                }
            }]
        }
    });
    if let (Some(s), Some(extra)) = (pod["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(pod).ok()
}

/// The dry-runs for namespace `ns` with these annotations: each plugin and its probe.
fn probes(ns: &Namespace) -> Vec<(&'static str, Pod, &'static str)> {
    let annotations = ns.metadata.annotations.clone().unwrap_or_default();
    let mut out = Vec::new();
    let forbidden = Toleration {
        key: Some(PROBE_KEY.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    };
    let listed: Vec<Toleration> = annotations
        .get(TOLERATIONS_WHITELIST_ANNOTATION)
        .and_then(|w| serde_json::from_str(w).ok())
        .unwrap_or_default();
    // A whitelist that tolerates every taint refuses nothing: no probe can tell.
    if !admits(&listed, &forbidden)
        && let Some(pod) = probe_pod(json!({"tolerations": [forbidden]}))
    {
        out.push(("PodTolerationRestriction", pod, TOLERATION_REFUSAL));
    }
    let first = annotations
        .get(NODE_SELECTOR_ANNOTATION)
        .and_then(|s| s.split(',').next())
        .and_then(|pair| pair.split_once('='));
    if let Some((key, value)) = first {
        let other = if value == PROBE_VALUE {
            "citycloud-placement-probe-other"
        } else {
            PROBE_VALUE
        };
        if let Some(pod) = probe_pod(json!({"nodeSelector": {key.trim(): other}})) {
            out.push(("PodNodeSelector", pod, SELECTOR_REFUSAL));
        }
    }
    out
}

/// Runs the dry-runs: the plugins that admitted their probe, or why no verdict.
async fn run_probes(client: &kube::Client, ns: &Namespace) -> Result<Verdict, String> {
    let name = ns.metadata.name.as_deref().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(client.clone(), name);
    let params = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let mut missing = Vec::new();
    for (plugin, pod, refusal) in probes(ns) {
        match classify(pods.create(&params, &pod).await, refusal) {
            Probe::Refused => {}
            Probe::Admitted => missing.push(plugin),
            Probe::Unknown(why) => return Err(why),
        }
    }
    Ok(if missing.is_empty() {
        Verdict::Enforced
    } else {
        Verdict::NotEnforced(missing)
    })
}

/// `NodePlacementReady` of a tenant with a nodePlacement (None without one: nothing to
/// enforce for it, and no request sent). Checks one of its namespaces (`provisioned`):
/// the plugins are the API server's, the same for every namespace.
pub async fn check(
    client: &kube::Client,
    verdicts: &Verdicts,
    tenant: &Tenant,
    provisioned: &[String],
    namespaces: &super::cache::Indexed<Namespace>,
) -> Option<Outcome> {
    let placement = tenant.spec.node_placement.as_ref()?;
    let whitelist = whitelist_annotation(Some(placement));
    // Only once the operator's own watch shows the annotations: the write is then visible.
    let Some(ns) = provisioned
        .iter()
        .filter_map(|n| namespaces.get(None, n))
        .find(|n| {
            n.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TOLERATIONS_WHITELIST_ANNOTATION))
                == Some(&whitelist)
        })
    else {
        return Some(unverified(
            "waiting for the tenant's namespaces and their scheduling annotations".into(),
        ));
    };
    let name = ns.metadata.name.clone().unwrap_or_default();
    let annotations = ns.metadata.annotations.clone().unwrap_or_default();
    let fingerprint = format!(
        "{whitelist}\n{}",
        annotations
            .get(NODE_SELECTOR_ANNOTATION)
            .map(String::as_str)
            .unwrap_or_default()
    );
    if let Some(verdict) = verdicts.fresh(&name, &fingerprint) {
        return Some(settled(&name, &verdict));
    }
    let mut found = run_probes(client, &ns).await;
    let was_not_enforced = matches!(verdicts.last(&name), Some(Verdict::NotEnforced(_)));
    if matches!(found, Ok(Verdict::NotEnforced(_))) && !was_not_enforced {
        // News, and possibly the API server's cache lagging our write: ask once more.
        tokio::time::sleep(CONFIRM).await;
        found = run_probes(client, &ns).await;
    }
    match found {
        Ok(verdict) => {
            let outcome = settled(&name, &verdict);
            verdicts.record(&name, fingerprint, verdict);
            Some(outcome)
        }
        Err(why) => Some(match verdicts.last(&name) {
            // It still describes the API server; the next reconcile asks again.
            Some(last) => settled(&name, &last),
            None => unverified(format!(
                "the dry-run pod in {name} was refused before the admission plugins ran: {why}"
            )),
        }),
    }
}

fn unverified(why: String) -> Outcome {
    Outcome {
        condition: Cond::fail(
            cond::NODE_PLACEMENT_READY,
            reason::NODE_PLACEMENT_UNVERIFIED,
            format!("not yet known whether the API server enforces nodePlacement: {why}"),
        ),
        settled: false,
    }
}

fn settled(ns: &str, verdict: &Verdict) -> Outcome {
    Outcome {
        condition: condition(ns, verdict),
        settled: true,
    }
}

fn condition(ns: &str, verdict: &Verdict) -> Cond {
    match verdict {
        Verdict::Enforced => Cond::ok(
            cond::NODE_PLACEMENT_READY,
            reason::NODE_PLACEMENT_ENFORCED,
            format!(
                "the API server refuses pods that break nodePlacement (dry-run pods in {ns}): only this tenant's pods tolerate its nodes' taints"
            ),
        ),
        Verdict::NotEnforced(missing) => {
            let what: Vec<&str> = missing
                .iter()
                .map(|plugin| match *plugin {
                    "PodTolerationRestriction" => {
                        "any tenant's pods may tolerate this tenant's node taints"
                    }
                    _ => "this tenant's pods may choose other nodes than its nodeSelector",
                })
                .collect();
            Cond::fail(
                cond::NODE_PLACEMENT_READY,
                reason::NODE_PLACEMENT_NOT_ENFORCED,
                format!(
                    "the API server admitted a dry-run pod in {ns} that breaks nodePlacement: {}. The cluster must enable the admission plugin(s) {} (kube-apiserver --enable-admission-plugins)",
                    what.join("; "),
                    missing.join(", ")
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests;
