//! `citycloud-operator run` as a process: its endpoints, its logs, its shutdown.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use citycloud::api::{QuotaProfile, Tenant};
use testbed::env::PrivateControlPlane;
use testbed::eventually;
use testbed::fixtures::{apply, wait_ready};

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        code,
        buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string(),
    ))
}

#[tokio::test]
async fn the_operator_process_serves_health_and_metrics_logs_json_spans_and_stops_on_sigterm() {
    let pcp = PrivateControlPlane::start("process").await;
    testbed::operator::install_crds(&pcp.admin).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_operator-under-test"))
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", pcp.cluster.admin_kubeconfig())
        .env("CITYCLOUD_LOG_FORMAT", "json")
        .env("RUST_LOG", "citycloud=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("operator process");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    eventually("/readyz", Duration::from_secs(30), || async {
        (get(port, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));

    let p = "process-p";
    apply::<QuotaProfile>(&pcp.admin, &format!("apiVersion: citycloud.io/v1alpha1\nkind: QuotaProfile\nmetadata: {{name: {p}}}\nspec:\n  namespace: {{pods: \"5\"}}\n  tenant: {{pods: \"8\"}}\n")).await.unwrap();
    apply::<Tenant>(&pcp.admin, &format!("apiVersion: citycloud.io/v1alpha1\nkind: Tenant\nmetadata: {{name: so-xay-dung}}\nspec:\n  displayName: \"Sở Xây dựng\"\n  owners: [{{kind: Group, name: soxd-admins}}]\n  quotaProfile: {p}\n")).await.unwrap();
    wait_ready(&pcp.admin, "so-xay-dung").await;

    let metrics = eventually(
        "the tenant in /metrics",
        Duration::from_secs(30),
        || async {
            let (_, body) = get(port, "/metrics").await?;
            body.contains("citycloud_tenant_quota_hard{tenant=\"so-xay-dung\",resource=\"pods\"} 8")
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

    // SIGTERM: in-flight work finishes, the process exits cleanly.
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let lines = lines.join().unwrap();
    let reconcile = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["span"]["name"] == "reconcile" && v["span"]["tenant"] == "so-xay-dung")
        .unwrap_or_else(|| {
            panic!(
                "a JSON log line inside the reconcile span naming the tenant:\n{}",
                lines.join("\n")
            )
        });
    assert_eq!(reconcile["span"]["controller"], "tenant");
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
