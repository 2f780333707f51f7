//! `make demo`: the Hải Phòng samples on a local control plane, with the operator running as
//! its own process, left running for a person to explore; `make demo-down` stops it all.
//!
//! Everything lives in one folder (`.demo/` by default):
//!   cluster/          the control plane (`testbed up --dir .demo/cluster` layout)
//!   operator.log      the operator's log
//!   operator.pid      its process id (it runs in a session of its own, outliving `make`)
//!   operator.addr     where it serves /metrics, /healthz and /readyz
//!   metrics.token     a token that may read /metrics (ServiceAccount citycloud-system/metrics-reader)
pub mod node;
pub mod process;
pub mod summary;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use citycloud::api::{SharedServiceClaim, Tenant};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

use testbed::binaries::{ensure_built, repo_root};
use testbed::controlplane::{ControlPlane, Lifetime, Options};
use testbed::identity::client_from_kubeconfig;

/// The field manager of everything the demo applies.
pub const FIELD_MANAGER: &str = "citycloud-demo";

/// The samples, in the order they are applied (claims last: their namespaces are the
/// operator's work).
pub const SAMPLES: [&str; 4] = [
    "quota-profiles.yaml",
    "platform.yaml",
    "shared-services.yaml",
    "tenants.yaml",
];
pub const CLAIMS: &str = "claims.yaml";

/// How long the demo waits for the operator to create the tenants' namespaces, and for the
/// tenants to be Ready and the claims to be decided.
pub const CONVERGE: Duration = Duration::from_secs(180);

/// The demo's folder and what it holds.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// `dir` made absolute (the printed commands must work from anywhere).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()?.join(dir)
        };
        Ok(Layout { dir })
    }
    pub fn cluster(&self) -> PathBuf {
        self.dir.join("cluster")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.cluster().join("admin.kubeconfig")
    }
    pub fn operator_log(&self) -> PathBuf {
        self.dir.join("operator.log")
    }
    pub fn operator_pid(&self) -> PathBuf {
        self.dir.join("operator.pid")
    }
    pub fn operator_addr(&self) -> PathBuf {
        self.dir.join("operator.addr")
    }
    pub fn metrics_token(&self) -> PathBuf {
        self.dir.join("metrics.token")
    }
    /// The path as the user typed it relative to the repository, when it is inside it.
    pub fn show(&self, path: &Path) -> String {
        let cwd = std::env::current_dir().unwrap_or_default();
        path.strip_prefix(&cwd)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string())
    }
}

/// Step 1 (synchronous: the control plane's start-up code blocks): the Go-built binaries,
/// then a control plane in `<dir>/cluster`, started or, when one already runs there, reused.
pub fn control_plane(layout: &Layout) -> anyhow::Result<(ControlPlane, PathBuf, bool)> {
    let bin = ensure_built()?;
    let dir = layout.cluster();
    if dir.join("pids").exists() {
        let cp = ControlPlane::attach(&dir)?;
        if api_answers(&cp) {
            return Ok((cp, bin, true));
        }
        step(format!(
            "a control plane was left in {} but does not answer: restarting it",
            dir.display()
        ));
        cp.stop();
    }
    let _ = std::fs::remove_dir_all(dir.join("etcd"));
    std::fs::create_dir_all(&dir)?;
    // The CRDs before kube-controller-manager starts: its quota controller counts claims at once.
    let options = Options {
        crds: Some(repo_root().join("crds")),
        ..Options::default()
    };
    let cp = ControlPlane::start_with(&dir, &bin, Lifetime::Detached, &options)?;
    Ok((cp, bin, false))
}

pub(crate) fn api_answers(cp: &ControlPlane) -> bool {
    let Ok(text) = std::fs::read_to_string(cp.admin_kubeconfig()) else {
        return false;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        let Ok(client) = client_from_kubeconfig(&text).await else {
            return false;
        };
        let probe = async {
            let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
            client.request_text(req).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(5), probe).await,
            Ok(Some(body)) if body.trim() == "ok"
        )
    })
}

/// Prints one progress line (to stderr, so that stdout is the summary alone).
pub fn step(line: impl std::fmt::Display) {
    eprintln!("==> {line}");
}

/// The objects a sample file holds, applied with server-side apply.
pub async fn apply_sample(client: &kube::Client, file: &str) -> anyhow::Result<Vec<String>> {
    let path = repo_root().join("deploy/samples").join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    testbed::operator::apply_yaml_documents(client, &text, FIELD_MANAGER).await
}

/// The namespaces the objects of a sample file live in.
pub fn namespaces_of(file: &str) -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(repo_root().join("deploy/samples").join(file))?;
    let mut out = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let obj: Option<kube::api::DynamicObject> = serde::Deserialize::deserialize(doc)?;
        if let Some(ns) = obj.and_then(|o| o.metadata.namespace) {
            out.insert(ns);
        }
    }
    Ok(out)
}

/// Polls `probe` every half second until it returns `Ok`, or gives up after `timeout` with
/// the last `Err` it returned (what is still missing, in words).
pub async fn wait_until<F, Fut>(timeout: Duration, probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    testbed::poll::until(timeout, Duration::from_millis(500), probe).await
}

/// Until every namespace in `wanted` exists and is not being deleted.
pub async fn namespaces_exist(
    client: &kube::Client,
    wanted: &BTreeSet<String>,
) -> Result<(), String> {
    let api = Api::<Namespace>::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let active: BTreeSet<String> = list
        .items
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let missing: Vec<&String> = wanted.difference(&active).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "namespace(s) not created yet: {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Until every Tenant reports `Ready=True` for its current generation.
pub async fn tenants_ready(client: &kube::Client) -> Result<(), String> {
    let tenants = Api::<Tenant>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let not_ready: Vec<String> = tenants
        .items
        .iter()
        .filter_map(|t| {
            let name = t.metadata.name.clone().unwrap_or_default();
            let status = t.status.as_ref();
            let current = status.and_then(|s| s.observed_generation) >= t.metadata.generation;
            let ready =
                status.and_then(|s| citycloud::api::conditions::find(&s.conditions, "Ready"));
            match ready {
                Some(c) if current && c.status == "True" => None,
                Some(c) => Some(format!("{name} ({}: {})", c.reason, c.message)),
                None => Some(format!("{name} (no status yet)")),
            }
        })
        .collect();
    if not_ready.is_empty() {
        Ok(())
    } else {
        Err(format!("tenant(s) not Ready: {}", not_ready.join("; ")))
    }
}

/// Until every claim has a `Bound` condition (True or False) for its current generation.
pub async fn claims_decided(client: &kube::Client) -> Result<(), String> {
    let claims = Api::<SharedServiceClaim>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let pending: Vec<String> = claims
        .items
        .iter()
        .filter(|c| {
            let status = c.status.as_ref();
            let current = status.and_then(|s| s.observed_generation) >= c.metadata.generation;
            let bound =
                status.and_then(|s| citycloud::api::conditions::find(&s.conditions, "Bound"));
            !(current && bound.is_some())
        })
        .map(|c| {
            format!(
                "{}/{}",
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if pending.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "claim(s) without a Bound condition yet: {}",
            pending.join(", ")
        ))
    }
}

/// Until the statuses that summarise claims agree with the claims (see
/// [`summary::Snapshot::unsettled`]).
pub async fn statuses_settled(client: &kube::Client) -> Result<(), String> {
    let snap = summary::Snapshot::read(client)
        .await
        .map_err(|e| e.to_string())?;
    let unsettled = snap.unsettled();
    if unsettled.is_empty() {
        Ok(())
    } else {
        Err(unsettled.join("; "))
    }
}
