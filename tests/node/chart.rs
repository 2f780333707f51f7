//! The chart installed for real (issue 11 item 4): the operator's image (the test build's
//! binary, packed by tests/image/build.sh) imported into the node, `helm install`, and the
//! operator running as a pod: Ready through its probes, reconciling, surviving the loss of its
//! pod, and `helm uninstall` leaving what it made. The node cluster has the CRDs before its
//! controllers start (see `testbed::node::NodeCluster`), so helm finds them in place and skips
//! them: tests/integration/chart.rs proves that the chart installs them.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use citycloud::api::Tenant;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use testbed::ControlPlane;
use testbed::binaries::{ensure_built, repo_root};
use testbed::controlplane::block_on_admin;
use testbed::eventually;
use testbed::fixtures::{apply, wait_ready};
use testbed::node::{ControlPlaneWork, Hooks, LaterImages, NodeCluster};
use testbed::operator::apply_yaml_documents;
use testbed::phase::mark;

const RELEASE: &str = "citycloud-operator";
const NAMESPACE: &str = "citycloud-system";
const WAIT: Duration = Duration::from_secs(120);

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The operator's pods, Ready ones only.
async fn ready_pods(admin: &Client) -> Vec<String> {
    let pods = Api::<Pod>::namespaced(admin.clone(), NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/name=citycloud-operator"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.metadata.name)
        .collect()
}

async fn lease_holder(admin: &Client) -> Option<String> {
    Api::<Lease>::namespaced(admin.clone(), NAMESPACE)
        .get_opt(RELEASE)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// Applies the platform samples (the chart binds the operator's Secrets role in their
/// namespaces) and `helm install`s the chart with the image's default name (as the test's image
/// is tagged), as the cluster's admin.
fn install_chart(cp: &ControlPlane, root: &Path) -> Result<(), String> {
    let kubeconfig = cp.admin_kubeconfig();
    let platform = std::fs::read_to_string(root.join("deploy/samples/platform.yaml"))
        .map_err(|e| format!("platform samples: {e}"))?;
    block_on_admin(cp, |admin| async move {
        apply_yaml_documents(&admin, &platform, "citycloud-tests")
            .await
            .map_err(|e| format!("platform namespaces: {e}"))
    })
    .map_err(|e| e.to_string())?;
    mark("chart: platform namespaces applied");
    let helm = ensure_built().map_err(|e| e.to_string())?.join("helm");
    let mut cmd = Command::new(&helm);
    cmd.args(["install", RELEASE])
        .arg(root.join("charts/citycloud-operator"))
        .args([
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            // A standby (here the replacement pod, which may start before the deleted one has
            // handed the Lease over) retries every third of this: 2 s, not 5 s.
            "--set",
            "leaderElection.leaseDurationSeconds=6",
            "--kubeconfig",
        ])
        .arg(&kubeconfig);
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    mark("chart: helm install returned");
    Ok(())
}

#[tokio::test]
async fn the_chart_runs_the_operator_image_on_the_node_and_uninstalls_leaving_tenants() {
    // The image from this test build's operator binary (no second compile), packed while the
    // cluster starts and imported into its node as soon as it is packed, while the cluster
    // goes on starting.
    mark("chart: test begins");
    let root = repo_root();
    let build_root = root.clone();
    let (packed, pack) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = Command::new("bash")
            .arg(build_root.join("tests/image/build.sh"))
            .args(["operator", "debug"])
            .env("IMAGE_BINARY", env!("CARGO_BIN_EXE_operator-under-test"))
            .current_dir(&build_root)
            .output();
        let result = match out {
            Ok(out) if out.status.success() => Ok(vec![
                build_root.join("target/image/citycloud-operator-debug.tar"),
            ]),
            Ok(out) => Err(format!(
                "tests/image/build.sh operator debug: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("tests/image/build.sh: {e}")),
        };
        mark("chart: image packed");
        let _ = packed.send(result);
    });
    let later: LaterImages = Box::new(move || {
        pack.recv()
            .map_err(|_| "the image thread ended without a word".to_string())?
    });
    // The chart is installed as soon as the API server and the controllers are: its pod waits
    // for the node (and the image) while kubelet, kube-proxy and kube-router start.
    let install_root = root.clone();
    let install: ControlPlaneWork = Box::new(move |cp| install_chart(cp, &install_root));
    let hooks = Hooks {
        later_images: Some(later),
        on_control_plane: Some(install),
    };
    let cluster = NodeCluster::start_with_hooks("chart", hooks).await;
    let _report = cluster.report();
    mark("chart: cluster up, image imported, chart installed");
    let admin = cluster.admin().await;
    let kubeconfig = cluster.cluster.admin_kubeconfig();
    let helm = ensure_built().expect("binaries").join("helm");

    // Ready means its readiness probe (/readyz) passes in the pod.
    let first = eventually("the operator pod Ready", WAIT, || async {
        ready_pods(&admin).await.into_iter().next()
    })
    .await;
    eventually("the operator pod holding the Lease", WAIT, || async {
        lease_holder(&admin).await.filter(|h| h.starts_with(&first))
    })
    .await;

    mark("chart: operator pod Ready, holding the Lease");
    apply::<citycloud::api::QuotaProfile>(
        &admin,
        "{apiVersion: citycloud.io/v1alpha1, kind: QuotaProfile, metadata: {name: chart}, \
         spec: {description: chart, namespace: {pods: '10'}}}",
    )
    .await
    .expect("quota profile");
    apply::<Tenant>(
        &admin,
        "{apiVersion: citycloud.io/v1alpha1, kind: Tenant, metadata: {name: so-chart}, \
         spec: {displayName: 'Sở Thông tin và Truyền thông', owners: [{kind: Group, name: so-admins}], \
         quotaProfile: chart}}",
    )
    .await
    .expect("tenant");
    wait_ready(&admin, "so-chart").await;

    mark("chart: tenant Ready");
    // Its pod lost: the Deployment's new pod takes the Lease over and keeps reconciling.
    Api::<Pod>::namespaced(admin.clone(), NAMESPACE)
        .delete(&first, &DeleteParams::default())
        .await
        .expect("delete the operator pod");
    let second = eventually("a new operator pod Ready", WAIT, || async {
        ready_pods(&admin).await.into_iter().find(|p| *p != first)
    })
    .await;
    mark("chart: second operator pod Ready");
    eventually("the new pod holding the Lease", WAIT, || async {
        lease_holder(&admin)
            .await
            .filter(|h| h.starts_with(&second))
    })
    .await;
    mark("chart: second pod holds the Lease");
    apply::<Tenant>(
        &admin,
        "{apiVersion: citycloud.io/v1alpha1, kind: Tenant, metadata: {name: so-chart}, \
         spec: {displayName: 'Sở Thông tin và Truyền thông', owners: [{kind: Group, name: so-admins}], \
         quotaProfile: chart, environments: [{name: prod}, {name: dev}]}}",
    )
    .await
    .expect("tenant change");
    eventually("the new pod reconciling a change", WAIT, || async {
        Api::<Namespace>::all(admin.clone())
            .get_opt("so-chart-dev")
            .await
            .ok()
            .flatten()
    })
    .await;
    wait_ready(&admin, "so-chart").await;

    mark("chart: change reconciled by the second pod");
    // helm uninstall: the operator goes, the Tenant (CRDs are kept) and its namespaces stay.
    let (h, k) = (helm.clone(), kubeconfig.clone());
    tokio::task::spawn_blocking(move || {
        run(Command::new(&h)
            .args([
                "uninstall",
                RELEASE,
                "--namespace",
                NAMESPACE,
                // No --wait: it would also wait ~5 s for the chart's request namespace to
                // finish deleting. The operator's pods going (below) is what matters here.
                "--kubeconfig",
            ])
            .arg(&k))
    })
    .await
    .expect("helm thread");
    eventually("the Deployment gone", WAIT, || async {
        Api::<Deployment>::namespaced(admin.clone(), NAMESPACE)
            .get_opt(RELEASE)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    mark("chart: helm uninstall done, Deployment gone");
    // Its pods gone too: the garbage collector has acted on what the uninstall deleted.
    eventually("the operator's pods gone", WAIT, || async {
        Api::<Pod>::namespaced(admin.clone(), NAMESPACE)
            .list(&ListParams::default().labels("app.kubernetes.io/name=citycloud-operator"))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    mark("chart: operator pods gone");
    let tenant = Api::<Tenant>::all(admin.clone())
        .get("so-chart")
        .await
        .expect("the Tenant survives helm uninstall");
    assert!(tenant.metadata.deletion_timestamp.is_none());
    for ns in ["so-chart-prod", "so-chart-dev"] {
        let n = Api::<Namespace>::all(admin.clone())
            .get(ns)
            .await
            .unwrap_or_else(|e| panic!("{ns} survives helm uninstall: {e}"));
        assert!(
            n.metadata.deletion_timestamp.is_none(),
            "{ns} is being deleted"
        );
    }
    mark("chart: test ends");
}
