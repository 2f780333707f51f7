//! The Helm chart as a platform engineer installs it: clean, in sync with deploy/ and crds/,
//! its RBAC sufficient for the samples and refused everything else, and an uninstall that
//! leaves the tenants' data.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use citycloud::api::{SharedServiceClaim, Tenant};
use citycloud::context::OperatorIdentity;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use testbed::binaries::{ensure_built, repo_root};
use testbed::env::PrivateControlPlane;
use testbed::fixtures::code;
use testbed::operator::{RunningOperator, apply_yaml_documents};
use testbed::{eventually, identity::token_kubeconfig};

const RELEASE: &str = "citycloud-operator";
const NAMESPACE: &str = "citycloud-system";
const WAIT: Duration = Duration::from_secs(90);

fn helm() -> PathBuf {
    ensure_built().expect("binaries").join("helm")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running helm");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chart() -> PathBuf {
    repo_root().join("charts/citycloud-operator")
}

#[test]
fn the_chart_lints_clean_and_matches_deploy_and_crds() {
    let lint = run(Command::new(helm())
        .args(["lint", "--strict", "--kube-version", "1.37.2"])
        .arg(chart()));
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let rendered = run(Command::new(helm())
        .args(["template", RELEASE])
        .arg(chart())
        .args([
            "--namespace",
            NAMESPACE,
            "--include-crds",
            "--kube-version",
            "1.30.0",
        ]));
    let checked_in = std::fs::read_to_string(repo_root().join("deploy/citycloud-operator.yaml"))
        .expect("deploy manifest");
    assert!(
        rendered == checked_in,
        "deploy/citycloud-operator.yaml is stale: run `make crds`"
    );
    for entry in std::fs::read_dir(repo_root().join("crds")).expect("crds/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        let copy = chart().join("crds").join(name);
        assert_eq!(
            std::fs::read(&path).ok(),
            std::fs::read(&copy).ok(),
            "{} differs from crds/: run `make crds`",
            copy.display()
        );
    }
}

/// `helm template` of the chart for Kubernetes 1.37.2 with `--set` of each of `values`.
fn template(values: &[&str]) -> Command {
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(chart())
        .args(["--kube-version", "1.37.2"]);
    for v in values {
        cmd.args(["--set", v]);
    }
    cmd
}

/// What `helm template` says when `values` fail it (and that they do).
fn refused(values: &[&str]) -> String {
    let out = template(values).output().expect("helm");
    assert!(!out.status.success(), "{values:?} rendered");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_values_fail_at_install_with_a_clear_message() {
    let err = refused(&["logFormat=xml"]);
    assert!(err.contains("logFormat"), "{err}");

    // Two operators without leader election would reconcile the same objects at once.
    let err = refused(&["replicas=2", "leaderElection.enabled=false"]);
    assert!(
        err.contains("replicas > 1 needs leaderElection.enabled"),
        "{err}"
    );
    // With it, two replicas roll: a new pod stands by until the old one hands over.
    let rendered = run(&mut template(&["replicas=2"]));
    assert!(rendered.contains("replicas: 2"), "{rendered}");
    assert!(rendered.contains("type: RollingUpdate"), "{rendered}");
    assert!(rendered.contains("CITYCLOUD_LEADER_ELECT"), "{rendered}");

    // Reconciling nothing at a time would stall every controller.
    let err = refused(&["concurrency=0"]);
    assert!(err.contains("concurrency"), "{err}");
    // Set, it reaches the operator; unset, the operator's own default holds.
    let rendered = run(&mut template(&["concurrency=32"]));
    assert!(
        rendered.contains("- name: CITYCLOUD_CONCURRENCY\n              value: \"32\""),
        "{rendered}"
    );
    let rendered = run(&mut template(&[]));
    assert!(!rendered.contains("CITYCLOUD_CONCURRENCY"), "{rendered}");
}

async fn apply_file(client: &kube::Client, file: &str) {
    let text = std::fs::read_to_string(repo_root().join(file)).expect(file);
    apply_yaml_documents(client, &text, "platform-engineer")
        .await
        .unwrap_or_else(|e| panic!("{file}: {e:#}"));
}

async fn service_account_kubeconfig(pcp: &PrivateControlPlane) -> String {
    let sas = Api::<ServiceAccount>::namespaced(pcp.admin.clone(), NAMESPACE);
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).unwrap();
    let token = sas
        .create_token_request(RELEASE, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    let token = token.status.and_then(|s| s.token).expect("token");
    token_kubeconfig(&pcp.cluster, RELEASE, &token)
}

fn helm_on(pcp: &PrivateControlPlane, args: &[&str]) -> String {
    run(Command::new(helm())
        .args(args)
        .arg("--kubeconfig")
        .arg(pcp.cluster.admin_kubeconfig()))
}

#[tokio::test]
async fn the_chart_installs_its_rbac_runs_the_samples_refuses_the_rest_and_uninstalls_clean() {
    let pcp = PrivateControlPlane::start("chart").await;
    // Provider namespaces first: the chart grants the operator Secrets access in them.
    apply_file(&pcp.admin, "deploy/samples/platform.yaml").await;
    let chart = chart();
    helm_on(
        &pcp,
        &[
            "install",
            RELEASE,
            &chart.display().to_string(),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
        ],
    );
    eventually("the CRDs served", WAIT, || async {
        Api::<Tenant>::all(pcp.admin.clone())
            .list(&ListParams::default())
            .await
            .ok()
    })
    .await;

    // The operator, out of the cluster, with the chart's ServiceAccount identity.
    let identity = OperatorIdentity {
        namespace: NAMESPACE.into(),
        service_account: RELEASE.into(),
        secrets_cluster_role: format!("{RELEASE}-secrets"),
    };
    let kubeconfig = service_account_kubeconfig(&pcp).await;
    let operator = RunningOperator::start_as(kubeconfig.clone(), Some(identity));
    for file in ["quota-profiles", "shared-services", "tenants"] {
        apply_file(&pcp.admin, &format!("deploy/samples/{file}.yaml")).await;
    }
    let tenants = Api::<Tenant>::all(pcp.admin.clone());
    let names: Vec<String> = tenants
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|t| t.metadata.name)
        .collect();
    assert!(
        names.len() >= 5,
        "the samples define the city's agencies: {names:?}"
    );
    for name in &names {
        eventually(&format!("sample tenant {name} Ready"), WAIT, || async {
            let t = tenants.get(name).await.ok()?;
            t.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await;
    }
    apply_file(&pcp.admin, "deploy/samples/claims.yaml").await;
    let claims = Api::<SharedServiceClaim>::namespaced(pcp.admin.clone(), "sotttt-prod");
    eventually("sotttt's LGSP claim bound", WAIT, || async {
        let c = claims.get("lgsp").await.ok()?;
        c.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Bound" && c.status == "True")
            .then_some(())
    })
    .await;
    eventually(
        "sotttt's status to list its bound services",
        WAIT,
        || async {
            let t = tenants.get("sotttt").await.ok()?;
            t.status?
                .bound_services
                .contains(&"lgsp".to_string())
                .then_some(())
        },
    )
    .await;
    // Agencies ask for more (deploy/samples/tenant-requests.yaml); kept, like every tenant.
    let requested =
        crate::tenant_request::the_samples_ask_and_are_decided(&pcp.cluster, &pcp.admin).await;
    drop(operator);

    // What that identity must not do.
    let sa = testbed::identity::client_from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let denied = |r: Result<(), kube::Error>, what: &str| match r {
        Err(e) => assert_eq!(code(&e), Some(403), "{what}: {e}"),
        Ok(()) => panic!("the operator's identity was allowed to {what}"),
    };
    denied(
        Api::<Secret>::namespaced(sa.clone(), "kube-system")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "list Secrets in kube-system",
    );
    denied(
        Api::<Secret>::all(sa.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "list Secrets cluster-wide",
    );
    Api::<Secret>::namespaced(sa.clone(), "sotttt-prod")
        .list(&ListParams::default())
        .await
        .expect("Secrets in a tenant namespace");
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "grab-cluster-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
    }))
    .unwrap();
    denied(
        Api::<ClusterRoleBinding>::all(sa.clone())
            .create(&PostParams::default(), &crb)
            .await
            .map(|_| ()),
        "bind cluster-admin",
    );
    let rb = |ns: &str, role: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": "grab", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]
        }))
        .unwrap()
    };
    denied(
        Api::<RoleBinding>::namespaced(sa.clone(), "sotttt-prod")
            .create(&PostParams::default(), &rb("sotttt-prod", "cluster-admin"))
            .await
            .map(|_| ()),
        "bind cluster-admin in a tenant namespace",
    );
    denied(
        Api::<RoleBinding>::namespaced(sa.clone(), "kube-system")
            .create(&PostParams::default(), &rb("kube-system", "admin"))
            .await
            .map(|_| ()),
        "grant itself admin in kube-system",
    );
    let wildcard: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "citycloud:tenant:everything"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    }))
    .unwrap();
    denied(
        Api::<ClusterRole>::all(sa.clone())
            .create(&PostParams::default(), &wildcard)
            .await
            .map(|_| ()),
        "create a wildcard ClusterRole",
    );
    denied(
        Api::<Namespace>::all(sa.clone())
            .delete("kube-public", &DeleteParams::default())
            .await
            .map(|_| ()),
        "delete a namespace of no tenant",
    );

    // Uninstall: nothing cluster-scoped of the release stays; the CRDs and tenants do.
    helm_on(&pcp, &["uninstall", RELEASE, "--namespace", NAMESPACE]);
    let of_release = ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}"));
    assert_none_left::<ClusterRole>(&pcp.admin, &of_release).await;
    assert_none_left::<ClusterRoleBinding>(&pcp.admin, &of_release).await;
    assert_none_left::<ValidatingAdmissionPolicy>(&pcp.admin, &of_release).await;
    let crds = Api::<CustomResourceDefinition>::all(pcp.admin.clone());
    for crd in [
        "tenants.citycloud.io",
        "quotaprofiles.citycloud.io",
        "sharedservices.citycloud.io",
        "sharedserviceclaims.citycloud.io",
    ] {
        crds.get(crd)
            .await
            .unwrap_or_else(|e| panic!("{crd} kept: {e}"));
    }
    assert_eq!(
        tenants
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        names.len() + requested.len(),
        "every tenant kept"
    );
    Api::<Namespace>::all(pcp.admin.clone())
        .get("sotttt-prod")
        .await
        .expect("tenant namespaces kept");
}

/// No cluster-scoped `K` matches `selector` any more.
async fn assert_none_left<K>(admin: &kube::Client, selector: &ListParams)
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let left: Vec<String> = Api::<K>::all(admin.clone())
        .list(selector)
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect();
    assert!(
        left.is_empty(),
        "{} left after uninstall: {left:?}",
        K::kind(&())
    );
}
