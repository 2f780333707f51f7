//! `citycloud-operator run` as a process: its endpoints (`/metrics` only to authorised
//! readers), its logs, its shutdown.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use citycloud::api::{SharedServiceClaim, Tenant};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use testbed::binaries::{ensure_built, repo_root};
use testbed::builders::{Profile, TenantBuilder};
use testbed::controlplane::Options;
use testbed::env::PrivateControlPlane;
use testbed::eventually;
use testbed::fixtures::{apply_in, code};
use testbed::metrics_reader::{reader_cluster_role, reader_token, service_account_token};
use testbed::operator::{RELEASE_NAMESPACE, install_operator_identity};

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    get_as(port, path, None).await
}

/// GET with `Authorization: Bearer <token>` when a token is given (the test bed's client).
async fn get_as(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    testbed::http::get_as(addr, path, token).await.ok()
}

/// The status code of `GET /metrics` with `token`.
async fn metrics_status(port: u16, token: Option<&str>) -> Option<u16> {
    get_as(port, "/metrics", token).await.map(|r| r.0)
}

/// Waits until `GET /metrics` with `token` answers `code`. A token minted a moment ago may
/// not be known yet to the API server's ServiceAccount cache (401, cached briefly).
async fn metrics_answer(port: u16, token: &str, code: u16, who: &str) {
    eventually(
        &format!("GET /metrics as {who} answering {code}"),
        Duration::from_secs(30),
        || async { (metrics_status(port, Some(token)).await == Some(code)).then_some(()) },
    )
    .await;
}

fn free_port() -> u16 {
    testbed::http::free_addr().expect("a free port").port()
}

/// `citycloud-operator run` as the chart's Deployment runs it: acting with `kubeconfig` (the
/// chart's ServiceAccount), knowing its identity, JSON logs on a pipe.
fn spawn_operator(kubeconfig: &Path, port: u16, extra: &[&str]) -> Child {
    let identity = testbed::operator::chart_identity();
    let binary = Path::new(env!("CARGO_BIN_EXE_operator-under-test"));
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    testbed::launch::operator_command(binary, kubeconfig, listen)
        .args(extra)
        .env("CITYCLOUD_LOG_FORMAT", "json")
        .env("RUST_LOG", "citycloud=debug")
        .env("CITYCLOUD_OPERATOR_NAMESPACE", &identity.namespace)
        .env(
            "CITYCLOUD_OPERATOR_SERVICE_ACCOUNT",
            &identity.service_account,
        )
        .env(
            "CITYCLOUD_SECRETS_CLUSTER_ROLE",
            &identity.secrets_cluster_role,
        )
        .env_remove("CITYCLOUD_METRICS_INSECURE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("operator process")
}

/// SIGTERM: in-flight work finishes, the process exits cleanly.
#[allow(unsafe_code)] // libc: SIGTERM (std can only SIGKILL) to test the graceful shutdown
async fn stop(child: Child) {
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

async fn create_service_account(client: &kube::Client, namespace: &str, name: &str) {
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap_or_else(|e| panic!("creating ServiceAccount {namespace}/{name}: {e}"));
}

/// The operator as the chart runs it. Probes answer anyone; `/metrics` (every tenant's usage)
/// answers only a token the API server says may get `/metrics`: not anonymous callers, not a
/// made-up token, not a ServiceAccount without the reader role, not alice (a tenant owner)
/// with any ServiceAccount token she can mint, even after binding the reader role in her
/// namespace. Series of her claims naming no SharedService share one label and go with the
/// claims; a deleted tenant's series go with it. `--metrics-insecure` opens /metrics again.
#[tokio::test]
async fn the_operator_process_guards_metrics_serves_probes_logs_json_and_stops_on_sigterm() {
    // The CRDs before kube-controller-manager starts (no 30 s wait for its quota discovery).
    let pcp = PrivateControlPlane::start_with(
        "process",
        Options {
            crds: Some(repo_root().join("crds")),
            ..Options::default()
        },
    )
    .await;
    testbed::operator::install_crds(&pcp.admin).await.unwrap();
    let helm = ensure_built().unwrap().join("helm");
    // The chart's guard rails and agency roles (owners may create claims).
    testbed::operator::install_admission_policies(&pcp.admin, &helm)
        .await
        .unwrap();
    // The chart's ServiceAccount with exactly the chart's RBAC: it must suffice for the
    // TokenReviews and SubjectAccessReviews that guard /metrics.
    let kubeconfig = install_operator_identity(&pcp.admin, &pcp.cluster, &helm)
        .await
        .unwrap();
    let kubeconfig_path = pcp.cluster.dir.join("operator.kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig).unwrap();
    let port = free_port();
    let mut child = spawn_operator(&kubeconfig_path, port, &[]);
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    // The kubelet's probes need no token.
    eventually("/readyz", Duration::from_secs(30), || async {
        (get(port, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));

    let p = "process-p";
    Profile::new(p)
        .namespace(json!({"pods": "5"}))
        .tenant(json!({"pods": "8"}))
        .apply(&pcp.admin)
        .await
        .unwrap();
    let tenant = TenantBuilder::new("so-xay-dung", p)
        .display_name("Sở Xây dựng")
        .owners("soxd-admins")
        .apply_ready(&pcp.admin)
        .await;

    // /metrics tells every tenant's usage: not to anyone who reaches the port.
    assert_eq!(metrics_status(port, None).await, Some(401), "anonymous");
    assert_eq!(
        metrics_status(port, Some("made-up-token")).await,
        Some(401),
        "a token the API server does not know"
    );
    // A real identity of the cluster, not granted the reader role.
    create_service_account(&pcp.admin, RELEASE_NAMESPACE, "nobody").await;
    let nobody = service_account_token(&pcp.admin, RELEASE_NAMESPACE, "nobody", 600)
        .await
        .unwrap();
    metrics_answer(
        port,
        &nobody,
        403,
        "a ServiceAccount without the reader role",
    )
    .await;

    // alice, an owner of the tenant, with the credentials she can mint herself: a
    // ServiceAccount of her namespace (what any of her pods carries).
    let alice = pcp
        .cluster
        .identity("alice", &["soxd-admins"])
        .unwrap()
        .client(&pcp.cluster)
        .await
        .unwrap();
    let own = tenant.namespaces().first().cloned().expect("a namespace");
    create_service_account(&alice, &own, "scraper").await;
    let alices = service_account_token(&alice, &own, "scraper", 600)
        .await
        .expect("alice mints a token of her own ServiceAccount");
    metrics_answer(port, &alices, 403, "alice's ServiceAccount").await;
    // Granting it the reader role in her namespace is refused (she does not hold it) or
    // does nothing (a RoleBinding grants no non-resource URL): still 403, with a new token
    // so no cached decision answers.
    let grab: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "read-metrics", "namespace": own},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader_cluster_role()},
        "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": own}]
    }))
    .unwrap();
    let _ = Api::<RoleBinding>::namespaced(alice.clone(), &own)
        .create(&PostParams::default(), &grab)
        .await;
    let alices = service_account_token(&alice, &own, "scraper", 600)
        .await
        .unwrap();
    metrics_answer(
        port,
        &alices,
        403,
        "alice's ServiceAccount after her RoleBinding",
    )
    .await;

    // The city's Prometheus: a ServiceAccount bound to the chart's metrics-reader ClusterRole.
    let reader = reader_token(&pcp.admin, &helm, 600).await.unwrap();
    let metrics = eventually(
        "the tenant in /metrics, read as the metrics reader",
        Duration::from_secs(30),
        || async {
            let (code, body) = get_as(port, "/metrics", Some(&reader)).await?;
            (code == 200
                && body.contains(
                    "citycloud_tenant_quota_hard{tenant=\"so-xay-dung\",resource=\"pods\"} 8",
                ))
            .then_some(body)
        },
    )
    .await;
    for family in [
        "citycloud_reconciles_total{controller=\"tenant\",result=\"success\"}",
        "citycloud_reconcile_duration_seconds_bucket",
        "citycloud_tenants{ready=\"true\"} 1",
    ] {
        assert!(metrics.contains(family), "{family} in\n{metrics}");
    }
    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));

    // alice's claims naming services that do not exist create no series of their own: they
    // count under one label, which goes when they go.
    let claims = Api::<SharedServiceClaim>::namespaced(alice.clone(), &own);
    for i in 0..5 {
        let yaml = format!(
            "{{apiVersion: citycloud.io/v1alpha1, kind: SharedServiceClaim, metadata: {{name: c{i}}}, spec: {{service: made-up-{i}}}}}"
        );
        eventually("alice's claim created", Duration::from_secs(60), || async {
            // The chart's roles reach admin through aggregation, a moment after they exist.
            match apply_in::<SharedServiceClaim>(&alice, &own, &yaml).await {
                Ok(_) => Some(()),
                Err(e) if code(&e) == Some(403) => None,
                Err(e) => panic!("alice creating a claim: {e}"),
            }
        })
        .await;
    }
    let metrics = eventually(
        "alice's claims counted under <unknown>",
        Duration::from_secs(60),
        || async {
            let (_, body) = get_as(port, "/metrics", Some(&reader)).await?;
            body.contains(r#"citycloud_claims{service="<unknown>",state="refused"} 5"#)
                .then_some(body)
        },
    )
    .await;
    assert!(!metrics.contains("made-up"), "{metrics}");
    for i in 0..5 {
        claims
            .delete(&format!("c{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    eventually(
        "the <unknown> series removed with the claims",
        Duration::from_secs(60),
        || async {
            let (code, body) = get_as(port, "/metrics", Some(&reader)).await?;
            (code == 200 && !body.contains("citycloud_claims{")).then_some(())
        },
    )
    .await;

    // A deleted tenant's series go with it.
    Api::<Tenant>::all(pcp.admin.clone())
        .delete("so-xay-dung", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the deleted tenant's series removed",
        Duration::from_secs(60),
        || async {
            let (code, body) = get_as(port, "/metrics", Some(&reader)).await?;
            (code == 200 && !body.contains("tenant=\"so-xay-dung\"")).then_some(())
        },
    )
    .await;

    stop(child).await;
    let lines = lines.join().unwrap();
    let reconcile = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["span"]["name"] == "reconcile" && v["span"]["object"] == "Tenant so-xay-dung")
        .unwrap_or_else(|| {
            panic!(
                "a JSON log line inside the reconcile span naming the tenant:\n{}",
                lines.join("\n")
            )
        });
    assert_eq!(reconcile["span"]["controller"], "tenant");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(&reader) || l.contains(&alices)),
        "a token in the operator's log"
    );

    // --metrics-insecure (local development): /metrics to anyone.
    let port = free_port();
    let child = spawn_operator(&kubeconfig_path, port, &["--metrics-insecure"]);
    eventually("/readyz", Duration::from_secs(30), || async {
        (get(port, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let (code, body) = get(port, "/metrics").await.expect("/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("citycloud_leader 1"), "{body}");
    stop(child).await;
}

#[test]
fn leader_election_without_a_lease_namespace_is_refused_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_operator-under-test"))
        .args(["run", "--leader-elect"])
        .env_remove("CITYCLOUD_OPERATOR_NAMESPACE")
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("running the operator");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--leader-election-namespace"), "{err}");
}
