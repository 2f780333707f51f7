//! `make demo NODE=1`: the same demo on a cluster with a real node (see [`testbed::node`]), the
//! operator running in it as a pod from its image, installed by the chart (`helm upgrade
//! --install`), as a city would run it.
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::{Layout, api_answers, step};
use testbed::binaries::{ensure_built, repo_root};
use testbed::controlplane::{ControlPlane, Lifetime};
use testbed::node::{NODE_NAME, Node};
use testbed::operator::{RELEASE, RELEASE_NAMESPACE};

/// How long `helm upgrade --install --wait` may take to see the operator's pod Ready.
const HELM_TIMEOUT: &str = "180s";

/// The control plane with its node in `<dir>/cluster` (started detached, or reused when one
/// runs there), and the Go-built binaries. `relay_exe` runs the host's relay to the API server
/// (see [`testbed::controlplane::NodeNetwork`]).
pub fn cluster(
    layout: &Layout,
    relay_exe: PathBuf,
) -> anyhow::Result<(ControlPlane, Node, PathBuf, bool)> {
    let bin = ensure_built()?;
    let dir = layout.cluster();
    if dir.join("pids").exists() {
        anyhow::ensure!(
            dir.join("node/holder").exists(),
            "the demo in {} runs without a node: `make demo-down` first",
            layout.show(&layout.dir)
        );
        let cp = ControlPlane::attach(&dir)?;
        if api_answers(&cp) {
            return Ok((cp, Node::attach(&dir.join("node"))?, bin, true));
        }
        step(format!(
            "a cluster was left in {} but does not answer: restarting it",
            dir.display()
        ));
        testbed::node::stop_detached(&dir)?;
    }
    let _ = std::fs::remove_dir_all(dir.join("etcd"));
    std::fs::create_dir_all(&dir)?;
    // The CRDs before kube-controller-manager starts: its quota controller counts claims at once.
    let options = testbed::node::StartOptions {
        relay_exe: Some(relay_exe),
        crds: Some(repo_root().join("crds")),
        ..Default::default()
    };
    let (cp, node) = testbed::node::start(&dir, Lifetime::Detached, &options)?;
    Ok((cp, node, bin, false))
}

/// `helm upgrade --install` of the chart, waiting until the operator's pod is Ready. The
/// metrics reader's ServiceAccount is named in the chart's `metrics.readers`; `images` (the
/// archives imported) are summed up in a pod annotation, so that a rebuilt image (same name and
/// tag) rolls the operator's pod on a refresh.
pub fn install_chart(helm: &Path, kubeconfig: &Path, images: &[PathBuf]) -> anyhow::Result<()> {
    let readers = format!(
        r#"metrics.readers=[{{"kind":"ServiceAccount","name":"{}","namespace":"{RELEASE_NAMESPACE}"}}]"#,
        testbed::metrics_reader::READER
    );
    let sums = Command::new("sha256sum").args(images).output()?;
    anyhow::ensure!(sums.status.success(), "sha256sum {images:?} failed");
    let digest: String = String::from_utf8_lossy(&sums.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|d| &d[..d.len().min(12)])
        .collect::<Vec<_>>()
        .join("-");
    let annotation = format!(r#"podAnnotations={{"citycloud.io/image-archives":"{digest}"}}"#);
    let out = Command::new(helm)
        .args(["upgrade", "--install", RELEASE])
        .arg(repo_root().join("charts/citycloud-operator"))
        .args(["--namespace", RELEASE_NAMESPACE, "--create-namespace"])
        .args(["--wait", "--timeout", HELM_TIMEOUT, "--set-json", &readers])
        .args(["--set-json", &annotation])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "helm upgrade --install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The metrics reader's ServiceAccount (the chart binds it) and a token of it.
pub async fn reader_token(client: &kube::Client, seconds: i64) -> anyhow::Result<String> {
    let account = format!(
        "{{apiVersion: v1, kind: ServiceAccount, metadata: {{name: {}, namespace: {RELEASE_NAMESPACE}}}}}\n",
        testbed::metrics_reader::READER
    );
    testbed::operator::apply_yaml_documents(client, &account, super::FIELD_MANAGER).await?;
    testbed::metrics_reader::service_account_token(
        client,
        RELEASE_NAMESPACE,
        testbed::metrics_reader::READER,
        seconds,
    )
    .await
}

/// The operator's pod as the summary shows it.
#[derive(Clone, Debug)]
pub struct OperatorPod {
    pub name: String,
    pub ready: bool,
    pub node: String,
    pub image: String,
}

/// The chart's operator pod (the newest one not being deleted), if any.
pub async fn operator_pod(client: &kube::Client) -> Option<OperatorPod> {
    let pods = Api::<Pod>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={RELEASE}")))
        .await
        .ok()?;
    let pod = pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .max_by_key(|p| p.metadata.creation_timestamp.clone())?;
    let status = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    Some(OperatorPod {
        name: pod.metadata.name.clone().unwrap_or_default(),
        ready: status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        node: spec.node_name.unwrap_or_else(|| NODE_NAME.into()),
        image: spec
            .containers
            .first()
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
    })
}
