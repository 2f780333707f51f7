//! Dedicated nodes by scheduling (issue 11): the node is made a pool — labelled and tainted
//! `citycloud.io/pool=police:NoSchedule` — and a Tenant's `nodePlacement` names it. The
//! tenant's pods, written with no selector or toleration of their own, get both from its
//! namespaces (PodNodeSelector, PodTolerationRestriction) and run on the pool; another tenant's
//! pod stays Pending because the scheduler finds no node it tolerates, and the toleration it
//! would need is refused at admission. On a cluster of its own: the taint would keep the other
//! node tests' pods off the shared node.
use citycloud::api::{QuotaProfile, Tenant};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use testbed::binaries::ensure_built;
use testbed::fixtures::{apply, wait_condition, wait_ready};
use testbed::node::{NODE_NAME, NodeCluster};
use testbed::operator::{
    RunningOperator, chart_identity, install_admission_policies, install_crds,
    install_operator_identity,
};
use testbed::{TestEnv, eventually};

use super::{Ends, WAIT, pod};
use testbed::phase::mark;

const POOL: &str = "citycloud.io/pool";

#[tokio::test]
async fn a_tenant_with_node_placement_runs_on_its_pool_and_another_tenants_pod_cannot() {
    mark("placement: test begins");
    // Its cluster starts after the others: this test is short, the chart and traffic tests long.
    let cluster = NodeCluster::start_deferred("placement").await;
    let _report = cluster.report();
    let _end = Ends("placement");
    let admin = cluster.admin().await;
    let env = TestEnv::on(cluster.cluster.clone()).await;

    // The operator of this cluster, as the shared one runs (the chart's identity and RBAC).
    let helm = ensure_built().expect("binaries").join("helm");
    let (crds, policies, identity) = tokio::join!(
        install_crds(&admin),
        install_admission_policies(&admin, &helm),
        install_operator_identity(&admin, &cluster.cluster, &helm),
    );
    crds.expect("CRDs");
    policies.expect("admission policies");
    let kubeconfig = identity.expect("operator identity");
    let _operator = RunningOperator::start_as(kubeconfig, Some(chart_identity()));

    mark("placement: operator running");
    // The node becomes police's pool: only pods tolerating the taint may be scheduled there.
    let pool = "police";
    Api::<Node>::all(admin.clone())
        .patch(
            NODE_NAME,
            &PatchParams::apply("citycloud-tests").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME, "labels": {POOL: pool}},
                "spec": {"taints": [{"key": POOL, "value": pool, "effect": "NoSchedule"}]}
            })),
        )
        .await
        .expect("label and taint the node");

    apply::<QuotaProfile>(
        &admin,
        "{apiVersion: citycloud.io/v1alpha1, kind: QuotaProfile, metadata: {name: pool}, \
         spec: {description: pool, namespace: {requests.cpu: '1', pods: '10'}, \
         limits: {defaultRequest: {cpu: 10m, memory: 16Mi}, default: {cpu: 100m, memory: 32Mi}}}}",
    )
    .await
    .expect("quota profile");
    let (police, other) = (env.name("police"), env.name("other"));
    let (police_admins, other_admins) = (env.name("police-admins"), env.name("other-admins"));
    for (tenant, owners, placement) in [
        (
            &police,
            &police_admins,
            format!(
                ", nodePlacement: {{nodeSelector: {{{POOL}: {pool}}}, \
                 tolerations: [{{key: {POOL}, operator: Equal, value: {pool}, effect: NoSchedule}}]}}"
            ),
        ),
        (&other, &other_admins, String::new()),
    ] {
        apply::<Tenant>(
            &admin,
            &format!(
                "{{apiVersion: citycloud.io/v1alpha1, kind: Tenant, metadata: {{name: {tenant}}}, \
                 spec: {{displayName: '{tenant}', owners: [{{kind: Group, name: {owners}}}], \
                 quotaProfile: pool{placement}}}}}"
            ),
        )
        .await
        .expect("tenant");
    }
    wait_condition(
        &admin,
        &police,
        "NodePlacementReady",
        "True",
        Some("Enforced"),
    )
    .await;
    wait_ready(&admin, &police).await;
    wait_ready(&admin, &other).await;

    mark("placement: tenants Ready");
    // Police's owner starts a pod that says nothing about nodes: its namespace fills in the
    // pool's selector and toleration, and it runs on the pool.
    let police_owner = env.user(&env.name("pia"), &[&police_admins]).await;
    let police_ns = format!("{police}-prod");
    let web = create(
        &police_owner,
        &police_ns,
        &pod("web", &["serve", "8080"], "Always"),
    )
    .await;
    let spec = web.spec.expect("spec");
    assert_eq!(
        spec.node_selector
            .unwrap_or_default()
            .get(POOL)
            .map(String::as_str),
        Some(pool),
        "PodNodeSelector gave police's pod the pool's selector"
    );
    assert!(
        spec.tolerations
            .unwrap_or_default()
            .iter()
            .any(|t| t.key.as_deref() == Some(POOL) && t.value.as_deref() == Some(pool)),
        "PodTolerationRestriction gave police's pod the pool's toleration"
    );
    let pods = Api::<Pod>::namespaced(admin.clone(), &police_ns);
    let on = eventually("police's pod Running on the pool", WAIT, || async {
        let p = pods.get("web").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(p.spec?.node_name?)
    })
    .await;
    assert_eq!(on, NODE_NAME);

    mark("placement: police's pod running");
    // Another tenant's owner starts the same pod: no node it tolerates, so it stays Pending, and
    // the scheduler says why.
    let other_owner = env.user(&env.name("oscar"), &[&other_admins]).await;
    let other_ns = format!("{other}-prod");
    create(
        &other_owner,
        &other_ns,
        &pod("web", &["serve", "8080"], "Always"),
    )
    .await;
    let pods = Api::<Pod>::namespaced(admin.clone(), &other_ns);
    let why = eventually(
        "the other tenant's pod found unschedulable",
        WAIT,
        || async {
            let status = pods.get("web").await.ok()?.status?;
            assert_ne!(status.phase.as_deref(), Some("Running"), "{status:?}");
            status
                .conditions?
                .into_iter()
                .find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })?
                .message
        },
    )
    .await;
    // The scheduler (1.37) says "untolerated taint(s)" without naming them: the node's only
    // taint is the pool's, and police's pod, the same but for the pool's toleration, runs.
    assert!(
        why.contains("untolerated taint"),
        "unschedulable, but not for a taint: {why}"
    );
    let taints: Vec<(String, Option<String>, String)> = Api::<Node>::all(admin.clone())
        .get(NODE_NAME)
        .await
        .expect("node")
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value, t.effect))
        .collect();
    assert_eq!(
        taints,
        vec![(
            POOL.to_string(),
            Some(pool.to_string()),
            "NoSchedule".to_string()
        )],
        "the node's taints"
    );
    let event = eventually("a FailedScheduling event", WAIT, || async {
        Api::<Event>::namespaced(admin.clone(), &other_ns)
            .list(&ListParams::default().fields("involvedObject.name=web"))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))?
            .message
    })
    .await;
    assert!(event.contains("untolerated taint"), "{event}");
    eprintln!("{other_ns}/web Pending: {event}");

    // It cannot tolerate the pool's taint itself: the namespace's whitelist refuses the pod.
    let mut stolen = pod("stolen", &["serve", "8080"], "Always");
    if let Some(spec) = stolen.spec.as_mut() {
        spec.node_selector = Some([(POOL.to_string(), pool.to_string())].into());
        spec.tolerations = Some(vec![
            serde_json::from_value(
                json!({"key": POOL, "operator": "Equal", "value": pool, "effect": "NoSchedule"}),
            )
            .expect("toleration"),
        ]);
    }
    match Api::<Pod>::namespaced(other_owner.clone(), &other_ns)
        .create(&PostParams::default(), &stolen)
        .await
    {
        // PodTolerationRestriction's refusal comes as a 500 carrying the plugin's words.
        Err(kube::Error::Api(e)) => assert!(e.message.contains("whitelist"), "{e:?}"),
        other => panic!("a pod of another tenant tolerating the pool was admitted: {other:?}"),
    }
    // Still nothing of the other tenant on the node.
    let running = Api::<Pod>::namespaced(admin.clone(), &other_ns)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    assert_eq!(running, 0, "a pod of the other tenant was scheduled");
}

/// Creates `p` in `ns` as `client`, retrying while the owner's permissions (RoleBindings the
/// operator just wrote, aggregated roles) or the namespace's ServiceAccount settle.
async fn create(client: &Client, ns: &str, p: &Pod) -> Pod {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    eventually(&format!("a pod created in {ns}"), WAIT, || async {
        match pods.create(&PostParams::default(), p).await {
            Ok(created) => Some(created),
            Err(e) => {
                eprintln!("creating a pod in {ns}: {e}");
                None
            }
        }
    })
    .await
}
