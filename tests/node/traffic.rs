//! Isolation proved by traffic (issue 11): the operator, as the integration tests run it (CRDs,
//! the chart's admission policies and RBAC, in-process as the chart's ServiceAccount), against
//! the node cluster, where kube-router enforces the NetworkPolicies it writes. Every namespace's
//! probe connects to every other namespace's probe, and resolves the API server's and the
//! provider's Service names through the cluster DNS; what answers must be exactly what
//! DESIGN.md promises (Restricted egress: DNS, and nothing else in kube-system).
use std::collections::BTreeMap;
use std::time::Duration;

use citycloud::api::{QuotaProfile, SharedService, SharedServiceClaim, Tenant};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use serde_json::json;
use std::sync::Arc;
use testbed::fixtures::{CONVERGE, apply, apply_in, code, wait_ready};
use testbed::node::{Node, NodeCluster};
use testbed::{TestEnv, eventually};

use super::{Ends, exec_probe, probe_pod};
use testbed::phase::mark;

/// How long one probe tries (it retries every 200 ms within it): kube-router REJECTs, so a
/// blocked attempt fails at once, and a new client pod's address reaches kube-router's ipsets
/// within about a second.
const PROBE_MS: &str = "1500";
/// How long a cell may take to settle after a policy change before its observation stands.
const SETTLE: Duration = Duration::from_secs(45);
const PORT: i32 = 8080;

/// The cluster DNS as the matrix checks it from every namespace: `names` must resolve to their
/// ClusterIPs through kubelet's clusterDNS (the `kube-dns` Service, CoreDNS in kube-system), and
/// the CoreDNS pod's health port (`pod_ip`:8080, not DNS) shows whether kube-system is reachable
/// beyond port 53.
struct Dns {
    names: Vec<(String, String)>,
    pod_ip: String,
}

/// A namespace of the matrix and what DESIGN.md says about it.
#[derive(Clone)]
struct Place {
    /// Short name for the table.
    label: String,
    ns: String,
    tenant: Option<String>,
    strict_ingress: bool,
    restricted_egress: bool,
    platform_ingress: bool,
    provider: bool,
    ip: String,
    /// The probe server's container, where the probes of this namespace run (a long-lived pod:
    /// kube-router fails open for a pod's egress until it has synced it, so a fresh client pod
    /// would not show the steady state).
    container: String,
}

/// Whether `from` may reach `to` per DESIGN.md, `claimed_from` being the namespace holding a
/// bound claim to the provider's service, if any.
fn expected(from: &Place, to: &Place, claimed_from: Option<&str>) -> bool {
    let same_tenant = from.tenant.is_some() && from.tenant == to.tenant;
    let bound = to.provider && claimed_from == Some(from.ns.as_str());
    // Restricted egress: DNS, the same tenant, the services it is bound to.
    if from.restricted_egress && !(same_tenant || bound) {
        return false;
    }
    if to.provider {
        // The provider isolation policy: namespaces of no tenant, and bound claims.
        return from.tenant.is_none() || bound;
    }
    if to.strict_ingress {
        return same_tenant || from.platform_ingress;
    }
    true
}

/// Whether `from` may reach kube-system's CoreDNS on a port other than DNS: Restricted egress
/// opens port 53 there, nothing else.
fn expected_beyond_dns(from: &Place) -> bool {
    !from.restricted_egress
}

#[tokio::test]
async fn isolation_is_proved_by_traffic_between_tenants_platform_and_provider() {
    mark("traffic: test begins");
    let cluster = NodeCluster::shared().await;
    let _report = cluster.report();
    let _end = Ends("traffic");
    let env = TestEnv::with_operator_on(TestEnv::on(cluster.cluster.clone()).await).await;
    let admin = env.admin.clone();
    mark("traffic: operator running");

    let profile = env.name("traffic");
    apply::<QuotaProfile>(
        &admin,
        &format!(
            "{{apiVersion: citycloud.io/v1alpha1, kind: QuotaProfile, metadata: {{name: {profile}}}, \
             spec: {{description: traffic, namespace: {{requests.cpu: '2', pods: '20'}}, \
             tenant: {{requests.cpu: '4'}}, \
             limits: {{defaultRequest: {{cpu: 10m, memory: 16Mi}}, default: {{cpu: 100m, memory: 32Mi}}}}}}}}"
        ),
    )
    .await
    .expect("quota profile");

    // The platform's namespaces, restricted Pod Security like the tenants'.
    let plat = env.name("plat");
    let prov = env.name("prov");
    namespace(
        &admin,
        &plat,
        json!({"citycloud.io/platform-ingress": "true"}),
    )
    .await;
    namespace(&admin, &prov, json!({})).await;
    // As the chart's providerNamespaces value does (the operator tidies consumers Secrets there).
    env.provider_namespace(&prov).await;
    apply_in::<Service>(
        &admin,
        &prov,
        &format!(
            "{{apiVersion: v1, kind: Service, metadata: {{name: gateway}}, \
             spec: {{selector: {{app: web}}, ports: [{{name: http, port: {PORT}, targetPort: {PORT}}}]}}}}"
        ),
    )
    .await
    .expect("provider Service");
    let service = env.name("gw");
    apply::<SharedService>(
        &admin,
        &format!(
            "{{apiVersion: citycloud.io/v1alpha1, kind: SharedService, metadata: {{name: {service}}}, \
             spec: {{displayName: Gateway, category: Integration, credentials: None, bindingType: http, \
             endpoint: {{namespace: {prov}, service: gateway, port: {PORT}, scheme: http}}}}}}"
        ),
    )
    .await
    .expect("SharedService");

    // Three tenants; their owners are users acting with their own credentials.
    let (t1, t2, t3) = (env.name("t1"), env.name("t2"), env.name("t3"));
    let (ana, bob) = (env.name("ana"), env.name("bob"));
    for (t, owner, extra) in [
        (
            &t1,
            &ana,
            "environments: [{name: prod}, {name: dev}], network: {ingress: Strict, egress: Open}",
        ),
        (&t2, &bob, "network: {ingress: Strict, egress: Restricted}"),
        (&t3, &env.name("cy"), "network: {ingress: Open}"),
    ] {
        apply::<Tenant>(
            &admin,
            &format!(
                "{{apiVersion: citycloud.io/v1alpha1, kind: Tenant, metadata: {{name: {t}}}, \
                 spec: {{displayName: 'Sở {t}', owners: [{{kind: User, name: {owner}}}], \
                 quotaProfile: {profile}, {extra}}}}}"
            ),
        )
        .await
        .expect("tenant");
    }
    for t in [&t1, &t2, &t3] {
        wait_ready(&admin, t).await;
    }
    eventually("the provider isolation policy", CONVERGE, || async {
        Api::<NetworkPolicy>::namespaced(admin.clone(), &prov)
            .get_opt("citycloud-provider-isolation")
            .await
            .ok()
            .flatten()
    })
    .await;

    mark("traffic: tenants Ready");
    // Restricted Pod Security: a non-compliant pod is refused, the compliant probes run.
    let refused = Api::<Pod>::namespaced(admin.clone(), &format!("{t1}-prod"))
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "careless"},
                "spec": {"containers": [{
                    "name": "probe",
                    "image": NodeCluster::probe_image(),
                    "imagePullPolicy": "Never",
                    "args": ["serve", "8080"]
                }]}
            }))
            .expect("pod"),
        )
        .await;
    match refused {
        Err(kube::Error::Api(e)) => assert!(
            e.code == 403 && e.message.contains("PodSecurity"),
            "refused, but not by Pod Security: {e:?}"
        ),
        other => panic!("a pod violating restricted Pod Security was admitted: {other:?}"),
    }

    let tenant = |label: &str, t: &str, env_name: &str, strict: bool, restricted: bool| Place {
        label: label.into(),
        ns: format!("{t}-{env_name}"),
        tenant: Some(t.to_string()),
        strict_ingress: strict,
        restricted_egress: restricted,
        platform_ingress: false,
        provider: false,
        ip: String::new(),
        container: String::new(),
    };
    let mut places = vec![
        tenant("t1-prod", &t1, "prod", true, false),
        tenant("t1-dev", &t1, "dev", true, false),
        tenant("t2-prod", &t2, "prod", true, true),
        tenant("t3-prod", &t3, "prod", false, false),
        Place {
            label: "platform".into(),
            ns: plat.clone(),
            tenant: None,
            strict_ingress: false,
            restricted_egress: false,
            platform_ingress: true,
            provider: false,
            ip: String::new(),
            container: String::new(),
        },
        Place {
            label: "provider".into(),
            ns: prov.clone(),
            tenant: None,
            strict_ingress: false,
            restricted_egress: false,
            platform_ingress: false,
            provider: true,
            ip: String::new(),
            container: String::new(),
        },
    ];
    let ips = futures::future::join_all(places.iter().map(|p| probe_pod(&admin, &p.ns))).await;
    for (p, (ip, container)) in places.iter_mut().zip(ips) {
        p.ip = ip;
        p.container = container;
    }
    let t1_prod = places[0].ns.clone();
    let t2_prod = places[2].ns.clone();

    // t2's owner tries to re-open egress with a NetworkPolicy of her own: refused.
    let bob_client = env.user(&bob, &[]).await;
    let reopen: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "let-me-out"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
    }))
    .expect("policy");
    let attempt = eventually("the owner's NetworkPolicy decided", CONVERGE, || async {
        // Her `admin` role comes through aggregation: a 403 from RBAC right after start-up
        // is retried; the admission policy's refusal names the Tenant's egress.
        match Api::<NetworkPolicy>::namespaced(bob_client.clone(), &t2_prod)
            .create(&PostParams::default(), &reopen)
            .await
        {
            Err(kube::Error::Api(e)) if e.message.contains("egress") => Some(Err(e)),
            Err(_) => None,
            Ok(p) => Some(Ok(p)),
        }
    })
    .await;
    assert!(attempt.is_err(), "t2's owner re-opened egress: {attempt:?}");

    mark("traffic: probe pods running");
    // Before any claim: the whole matrix (t2 -> anything shows egress stays closed).
    let all: Vec<(usize, usize)> = (0..places.len())
        .flat_map(|i| {
            (0..places.len())
                .filter(move |j| *j != i)
                .map(move |j| (i, j))
        })
        .collect();
    // DNS: the API server's Service and the provider's, by name, from every namespace.
    let gateway_ip = Api::<Service>::namespaced(admin.clone(), &prov)
        .get("gateway")
        .await
        .expect("provider Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("provider ClusterIP");
    let coredns = Api::<Pod>::namespaced(admin.clone(), "kube-system")
        .list(&kube::api::ListParams::default().labels("k8s-app=kube-dns"))
        .await
        .expect("CoreDNS pods");
    let dns = Dns {
        names: vec![
            (
                "kubernetes.default.svc.cluster.local".into(),
                "10.0.0.1".into(),
            ),
            (format!("gateway.{prov}.svc.cluster.local"), gateway_ip),
        ],
        pod_ip: coredns
            .items
            .iter()
            .find_map(|p| p.status.as_ref()?.pod_ip.clone())
            .expect("a CoreDNS pod with an IP"),
    };

    let node = &cluster.node;
    let mut failures = matrix(node, &places, &all, None, Some(&dns), "no claim").await;

    mark("traffic: matrix and DNS checked");
    // t1 claims the service from t1-prod (as its owner): t1-prod gets in, no one else.
    let claims = Api::<SharedServiceClaim>::namespaced(admin.clone(), &t1_prod);
    let ana_client = env.user(&ana, &[]).await;
    let claim_yaml = format!(
        "{{apiVersion: citycloud.io/v1alpha1, kind: SharedServiceClaim, metadata: {{name: gw}}, \
         spec: {{service: {service}}}}}"
    );
    eventually("t1's owner claims the service", CONVERGE, || async {
        apply_in::<SharedServiceClaim>(&ana_client, &t1_prod, &claim_yaml)
            .await
            .map_err(|e| eprintln!("claim: {e} ({:?})", code(&e)))
            .ok()
    })
    .await;
    eventually("the claim Bound", CONVERGE, || async {
        let c = claims.get("gw").await.ok()?;
        c.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Bound" && c.status == "True")
            .then_some(())
    })
    .await;
    let to_provider: Vec<(usize, usize)> = (0..5).map(|i| (i, 5)).collect();
    failures += matrix(
        node,
        &places,
        &to_provider,
        Some(&t1_prod),
        None,
        "t1-prod claimed",
    )
    .await;

    mark("traffic: claim checked");
    // The claim deleted: revoked again.
    claims
        .delete("gw", &DeleteParams::default())
        .await
        .expect("delete the claim");
    eventually("the claim gone", CONVERGE, || async {
        claims.get_opt("gw").await.ok()?.is_none().then_some(())
    })
    .await;
    failures += matrix(node, &places, &to_provider, None, None, "claim deleted").await;

    assert_eq!(failures, 0, "cells differ from DESIGN.md (see the tables)");
}

/// What one cell checks, from a namespace's probe container.
#[derive(Clone, Copy)]
enum Check {
    /// HTTP to the probe server of `places[j]`.
    Place(usize),
    /// Every name of [`Dns::names`] resolves to its address.
    Resolve,
    /// A TCP connection to the CoreDNS pod's health port.
    BeyondDns,
}

/// Observes `cells` (from, to) — and with `dns`, each namespace's DNS columns — and prints them
/// as a table: `ok` answered, `--` blocked, `!` before a cell that differs from DESIGN.md. Each
/// cell is probed until it matches (a policy change takes about a second to reach kube-router)
/// or [`SETTLE`] has passed; the observation then stands. Returns how many cells differ.
async fn matrix(
    node: &Arc<Node>,
    places: &[Place],
    cells: &[(usize, usize)],
    claimed_from: Option<&str>,
    dns: Option<&Dns>,
    title: &str,
) -> usize {
    let want = |i: usize, check: Check| match check {
        Check::Place(j) => expected(&places[i], &places[j], claimed_from),
        // DESIGN.md: every namespace resolves names, Restricted egress included.
        Check::Resolve => true,
        Check::BeyondDns => expected_beyond_dns(&places[i]),
    };
    let mut checks: Vec<(usize, Check)> =
        cells.iter().map(|&(i, j)| (i, Check::Place(j))).collect();
    if dns.is_some() {
        for i in 0..places.len() {
            checks.extend([(i, Check::Resolve), (i, Check::BeyondDns)]);
        }
    }
    let observed: BTreeMap<(usize, String), bool> = futures::stream::iter(checks)
        .map(|(i, check)| async move {
            let want = want(i, check);
            let deadline = tokio::time::Instant::now() + SETTLE;
            loop {
                let container = &places[i].container;
                let got = match (check, dns) {
                    (Check::Place(j), _) => get(node, container, &places[j].ip).await,
                    (Check::Resolve, Some(dns)) => resolves(node, container, &dns.names).await,
                    (Check::BeyondDns, Some(dns)) => {
                        exec_probe(node, container, &["connect", &dns.pod_ip, "8080", PROBE_MS])
                            .await
                            .is_ok()
                    }
                    (_, None) => unreachable!("DNS checks are only queued with `dns`"),
                };
                if got == want || tokio::time::Instant::now() > deadline {
                    return ((i, column(check)), got);
                }
            }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    let mut columns: Vec<Check> = (0..places.len()).map(Check::Place).collect();
    if dns.is_some() {
        columns.extend([Check::Resolve, Check::BeyondDns]);
    }
    let mut out = format!("\n{title}: from (rows) to (columns)\n{:>10}", "");
    for c in &columns {
        let label = match c {
            Check::Place(j) => places[*j].label.as_str(),
            Check::Resolve => "DNS",
            Check::BeyondDns => "dns:8080",
        };
        out += &format!("{label:>10}");
    }
    let mut failures = 0;
    for (i, from) in places.iter().enumerate() {
        out += &format!("\n{:>10}", from.label);
        for &c in &columns {
            let cell = match observed.get(&(i, column(c))) {
                None => "".to_string(),
                Some(&got) => {
                    let wrong = got != want(i, c);
                    failures += usize::from(wrong);
                    format!(
                        "{}{}",
                        if wrong { "!" } else { "" },
                        if got { "ok" } else { "--" }
                    )
                }
            };
            out += &format!("{cell:>10}");
        }
    }
    if let Some(dns) = dns {
        out += &format!(
            "\n DNS: {} resolved through the kube-dns Service; dns:8080: CoreDNS's pod ({}) on a port that is not DNS",
            dns.names
                .iter()
                .map(|(n, ip)| format!("{n} = {ip}"))
                .collect::<Vec<_>>()
                .join(", "),
            dns.pod_ip
        );
    }
    eprintln!("{out}\n");
    failures
}

/// A check's key in the observations.
fn column(check: Check) -> String {
    match check {
        Check::Place(j) => j.to_string(),
        Check::Resolve => "dns".into(),
        Check::BeyondDns => "dns:8080".into(),
    }
}

/// Whether every name resolves (`probe resolve`, through the pod's /etc/resolv.conf) to its
/// expected address.
async fn resolves(node: &Arc<Node>, container: &str, names: &[(String, String)]) -> bool {
    for (name, ip) in names {
        match exec_probe(node, container, &["resolve", name, PROBE_MS]).await {
            Ok(out) if out.trim_end().ends_with(&format!(" {ip}")) => {}
            Ok(out) => panic!("{name} resolved to something else than {ip}: {out}"),
            Err(_) => return false,
        }
    }
    true
}

/// A namespace enforcing restricted Pod Security, with `labels`.
async fn namespace(admin: &Client, name: &str, labels: serde_json::Value) {
    let mut all = json!({"pod-security.kubernetes.io/enforce": "restricted"});
    if let (Some(a), Some(extra)) = (all.as_object_mut(), labels.as_object()) {
        a.extend(extra.clone());
    }
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": all}})).expect("ns");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// Runs `probe get ip 8080` in `container`: true if it was answered, false if refused or timed
/// out.
async fn get(node: &Arc<Node>, container: &str, ip: &str) -> bool {
    exec_probe(node, container, &["get", ip, &PORT.to_string(), PROBE_MS])
        .await
        .is_ok()
}
