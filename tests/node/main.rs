//! Tests on a real node: kubelet, containerd + runc, a CNI bridge, kube-proxy and kube-router
//! (NetworkPolicy) in namespaces of their own, with the local control plane. Traffic is real:
//! the probe image (`tests/cluster/node/probe.c`) serves HTTP, and client pods run to completion
//! (Succeeded = answered, Failed = refused or timed out).
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, LogParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use testbed::eventually;
use testbed::node::{NODE_IP, NODE_NAME, NodeCluster};
use testbed::phase::mark;

mod chart;
mod placement;
mod traffic;

const WAIT: Duration = Duration::from_secs(90);

/// How many of these tests run at once unless `RUST_TEST_THREADS` or `--test-threads` say
/// otherwise: all of them. libtest's default is one per CPU (2 here), but these tests mostly wait
/// on clusters and pods, and with two at a time the traffic test queued behind the chart test
/// for half a minute although its cluster had long been up. How much CPU they take at once is
/// bounded where it is spent: see `testbed::node::NodeCluster` (cluster start-ups).
const TEST_THREADS: &str = "8";

/// Sets `RUST_TEST_THREADS` (see [`TEST_THREADS`]) before libtest reads it: a constructor in
/// `.init_array`, run before `main`, while the process has one thread.
#[allow(unsafe_code)] // an .init_array entry and set_var; see the SAFETY notes
mod test_threads {
    extern "C" fn set() {
        if std::env::var_os("RUST_TEST_THREADS").is_none() {
            // SAFETY: run by the loader before main, when no other thread exists that could
            // read the environment at the same time.
            unsafe { std::env::set_var("RUST_TEST_THREADS", super::TEST_THREADS) };
        }
    }

    // SAFETY: a plain `extern "C" fn()` in .init_array is what the ELF loader calls there.
    #[used]
    #[unsafe(link_section = ".init_array")]
    static SET: extern "C" fn() = set;
}
static COUNTER: AtomicU32 = AtomicU32::new(0);

#[tokio::test]
async fn the_node_is_ready_and_the_kubernetes_service_has_a_real_endpoint() {
    mark("the_node_is: test begins");
    let cluster = NodeCluster::shared().await;
    let _end = Ends("the_node_is");
    let _report = cluster.report();
    let admin = cluster.admin().await;

    let node = Api::<Node>::all(admin.clone())
        .get(NODE_NAME)
        .await
        .expect("the node registered");
    let status = node.status.expect("node status");
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready.status, "True", "{ready:?}");
    let addresses = status.addresses.unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == NODE_IP),
        "{addresses:?}"
    );
    let runtime = status
        .node_info
        .expect("node info")
        .container_runtime_version;
    assert!(runtime.starts_with("containerd://"), "{runtime}");

    // The API server advertises the node IP: the default endpoint reconciler keeps
    // default/kubernetes pointing at it (no hand-made EndpointSlice).
    let slices = Api::<EndpointSlice>::namespaced(admin, "default");
    let slice = slices.get("kubernetes").await.expect("default/kubernetes");
    let addresses: Vec<String> = slice
        .endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.clone())
        .collect();
    assert_eq!(addresses, vec![NODE_IP.to_string()]);
}

#[tokio::test]
async fn pods_reach_the_api_server_and_the_api_server_reaches_the_kubelet() {
    mark("pods_reach_the: test begins");
    let cluster = NodeCluster::shared().await;
    let _end = Ends("pods_reach_the");
    let _report = cluster.report();
    let admin = cluster.admin().await;
    let ns = namespace(&admin, "api").await;
    let ip = server(&admin, &ns).await;
    assert!(!ip.is_empty());

    // Pod → Service 10.0.0.1:443 → kube-proxy (iptables) → the API server on the node IP.
    assert!(
        run_probe(&admin, &ns, &["connect", "10.0.0.1", "443", "3000"]).await,
        "a pod could not connect to the kubernetes Service"
    );
    // API server → kubelet (pods/log): its client certificate, checked by the kubelet's
    // webhook authentication and authorisation.
    let logs = Api::<Pod>::namespaced(admin, &ns)
        .logs("web", &LogParams::default())
        .await
        .expect("pod logs through the kubelet");
    assert!(logs.contains("serving on :8080"), "{logs}");
}

#[tokio::test]
async fn a_deny_all_network_policy_blocks_other_namespaces_until_an_allow_policy() {
    mark("a_deny_all: test begins");
    let cluster = NodeCluster::shared().await;
    let _end = Ends("a_deny_all");
    let _report = cluster.report();
    let admin = cluster.admin().await;
    let (a, b, c) = tokio::join!(
        namespace(&admin, "np-a"),
        namespace(&admin, "np-b"),
        namespace(&admin, "np-c"),
    );
    // The checks run in long-lived probe pods of b and c (`ctr task exec`): a pod started for
    // each check would cost seconds, and kube-router may let a new pod through until it has
    // synced it (see traffic.rs).
    let (ip, (_, from_b), (_, from_c)) = tokio::join!(
        server(&admin, &a),
        probe_pod(&admin, &b),
        probe_pod(&admin, &c),
    );
    let node = &cluster.node;
    // Each check tries for 3 s (see probe.c): "blocked" means no answer in that whole time.
    let get = ["get", ip.as_str(), "8080", "3000"];
    let answered = |from: &str| {
        let from = from.to_string();
        async move { exec_probe(node, &from, &get).await.is_ok() }
    };

    // Without a policy everything answers: the blocks below are the policies' doing.
    let (b_to_a, c_to_a) = tokio::join!(answered(&from_b), answered(&from_c));
    assert!(b_to_a, "b -> a before any policy");
    assert!(c_to_a, "c -> a before any policy");

    let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), &a);
    let deny: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "deny-all-ingress"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &deny)
        .await
        .expect("deny-all");
    tokio::join!(
        eventually("b -> a blocked by deny-all", WAIT, || async {
            (!answered(&from_b).await).then_some(())
        }),
        eventually("c -> a blocked by deny-all", WAIT, || async {
            (!answered(&from_c).await).then_some(())
        }),
    );

    let allow: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "allow-from-b"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": b}
            }}]}]
        }
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &allow)
        .await
        .expect("allow-from-b");
    eventually("b -> a allowed again", WAIT, || async {
        answered(&from_b).await.then_some(())
    })
    .await;
    assert!(
        !answered(&from_c).await,
        "c -> a must stay blocked: the allow names b only"
    );

    policies
        .delete("allow-from-b", &DeleteParams::default())
        .await
        .expect("delete allow");
    eventually(
        "b -> a blocked again once the allow is gone",
        WAIT,
        || async { (!answered(&from_b).await).then_some(()) },
    )
    .await;
}

/// Marks a test's end (see [`mark`]) when dropped.
pub(crate) struct Ends(pub(crate) &'static str);

impl Drop for Ends {
    fn drop(&mut self) {
        mark(format!("{}: test ends", self.0));
    }
}

/// A namespace enforcing the restricted Pod Security level (the probe complies).
async fn namespace(admin: &Client, base: &str) -> String {
    let name = format!(
        "{base}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"
        }}
    }))
    .expect("namespace");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    // Pods need the namespace's default ServiceAccount.
    eventually("the default ServiceAccount", WAIT, || async {
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &name)
            .get_opt("default")
            .await
            .ok()
            .flatten()
    })
    .await;
    name
}

/// A probe pod that complies with Pod Security restricted, with requests and limits within the
/// tests' quota profiles; a server (`restart: Always`) is Ready once it listens on 8080.
pub(crate) fn pod(name: &str, args: &[&str], restart: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": "probe",
                "image": NodeCluster::probe_image(),
                "imagePullPolicy": "Never",
                "args": args,
                "readinessProbe": if restart == "Always" {
                    json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1})
                } else {
                    serde_json::Value::Null
                },
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"cpu": "100m", "memory": "32Mi"}
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                }
            }]
        }
    }))
    .expect("pod")
}

/// Starts `web` (probe serve 8080) in `ns` and returns its IP once it is Ready.
async fn server(admin: &Client, ns: &str) -> String {
    let pods = Api::<Pod>::namespaced(admin.clone(), ns);
    pods.create(
        &PostParams::default(),
        &pod("web", &["serve", "8080"], "Always"),
    )
    .await
    .expect("create server pod");
    eventually("the server pod Ready", WAIT, || async {
        let p = pods.get("web").await.ok()?;
        let status = p.status?;
        let ready = status
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(status.pod_ip?)
    })
    .await
}

/// Runs the probe with `args` in a pod of `ns` to completion: true if it exited 0.
async fn run_probe(admin: &Client, ns: &str, args: &[&str]) -> bool {
    let pods = Api::<Pod>::namespaced(admin.clone(), ns);
    let name = format!("client-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    pods.create(&PostParams::default(), &pod(&name, args, "Never"))
        .await
        .expect("create client pod");
    let phase = eventually("the client pod to finish", WAIT, || async {
        let phase = pods.get(&name).await.ok()?.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    phase == "Succeeded"
}

/// Starts `web` (probe serve 8080) in `ns` and returns its IP and container id once it runs: a
/// long-lived pod to run probes in with [`exec_probe`]. The namespace's default ServiceAccount
/// may lag its creation: creation is retried.
pub(crate) async fn probe_pod(admin: &Client, ns: &str) -> (String, String) {
    let pods = Api::<Pod>::namespaced(admin.clone(), ns);
    let web = pod("web", &["serve", "8080"], "Always");
    eventually(&format!("the server pod created in {ns}"), WAIT, || async {
        match pods.create(&PostParams::default(), &web).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Some(()),
            Err(e) => {
                eprintln!("server in {ns}: {e}");
                None
            }
        }
    })
    .await;
    eventually(&format!("the server pod running in {ns}"), WAIT, || async {
        let status = pods.get("web").await.ok()?.status?;
        if status.phase.as_deref() != Some("Running") {
            return None;
        }
        let container = status
            .container_statuses?
            .first()?
            .container_id
            .clone()?
            .strip_prefix("containerd://")?
            .to_string();
        Some((status.pod_ip?, container))
    })
    .await
}

/// Runs `/probe ARGS` in `container` (its pod's namespaces, through containerd): Ok(its output)
/// if it succeeded, Err(its complaint) if it reported a failure (FAIL ...); any other error
/// (the probe could not run) fails the test.
pub(crate) async fn exec_probe(
    node: &Arc<testbed::node::Node>,
    container: &str,
    args: &[&str],
) -> Result<String, String> {
    // Under load `ctr task exec` now and then exits 0 having copied none of the probe's output
    // (seen once in ~20 runs): say nothing either way, so run the probe again. A probe only
    // reads (a connection, a lookup), so running it twice changes nothing.
    let mut result = Ok(String::new());
    for _ in 0..3 {
        result = exec_once(node, container, args).await;
        if !matches!(&result, Ok(out) if out.trim().is_empty()) {
            break;
        }
    }
    match result {
        Ok(out) if out.contains("OK ") => Ok(out),
        Err(e) if e.to_string().contains("FAIL ") => Err(e.to_string()),
        other => panic!("the probe {args:?} in {container} did not run: {other:?}"),
    }
}

/// One `ctr task exec` of `/probe ARGS` in `container`.
async fn exec_once(
    node: &Arc<testbed::node::Node>,
    container: &str,
    args: &[&str],
) -> testbed::Result<String> {
    let exec_id = format!(
        "probe-{}",
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut command: Vec<String> = ["ctr", "-n", "k8s.io", "task", "exec", "--exec-id"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    command.extend([exec_id, container.to_string(), "/probe".into()]);
    command.extend(args.iter().map(|s| s.to_string()));
    let node = node.clone();
    tokio::task::spawn_blocking(move || {
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        node.exec(&command)
    })
    .await
    .expect("probe thread")
}
