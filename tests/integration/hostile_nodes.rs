//! Dedicated nodes (`nodePlacement`) keep everybody else off: another tenant's owner cannot
//! tolerate the pool's taint, the tenant's own pods stay on its pool, the operator checks
//! that the API server enforces it (NodePlacementReady), and a stolen operator token gets
//! no pod out of the dry-run permission that check needs.
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::binaries::repo_root;
use testbed::builders::{Profile, TenantBuilder, default_limits};
use testbed::controlplane::Options;
use testbed::env::PrivateControlPlane;
use testbed::fixtures::{condition, pod, wait_condition, wait_ready};
use testbed::operator::{RunningOperator, chart_identity, install_crds};
use testbed::{TestEnv, eventually};

const POOL: &str = "citycloud.io/pool";

fn profile(name: &str) -> Profile {
    Profile::new(name)
        .namespace(json!({"requests.cpu": "2", "pods": "10"}))
        .limits(default_limits())
}

/// A tenant owned by group `owners`; with `pool`, on the dedicated nodes of that pool
/// (labelled and tainted citycloud.io/pool=<pool>).
fn tenant(name: &str, profile: &str, owners: &str, pool: Option<&str>) -> TenantBuilder {
    let t = TenantBuilder::new(name, profile)
        .display_name(name)
        .owners(owners);
    match pool {
        Some(p) => t.set(
            "nodePlacement",
            json!({"nodeSelector": {POOL: p}, "tolerations": [toleration_of(p)]}),
        ),
        None => t,
    }
}

/// The test fixture's pod (restricted, requesting CPU) with `extra` merged into its spec.
fn pod_with(name: &str, extra: serde_json::Value) -> Pod {
    let mut p = serde_json::to_value(pod(name, json!({}), "100m")).expect("pod JSON");
    if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(p).expect("a valid Pod")
}

fn toleration_of(pool: &str) -> serde_json::Value {
    json!({"key": POOL, "operator": "Equal", "value": pool, "effect": "NoSchedule"})
}

async fn create(client: &kube::Client, ns: &str, p: &Pod) -> Result<Pod, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), p)
        .await
}

fn refused_with(result: Result<Pod, kube::Error>, what: &str, words: &str) {
    match result {
        Err(kube::Error::Api(s)) => {
            // PodTolerationRestriction returns a plain error, which the API server sends as
            // 500 (with the plugin's words); the others say 403 Forbidden.
            assert!([403, 500].contains(&s.code), "{what}: {s:?}");
            assert!(s.message.contains(words), "{what}: {}", s.message);
        }
        Err(e) => panic!("{what}: {e}"),
        Ok(p) => panic!("{what} was admitted: {:?}", p.spec),
    }
}

#[tokio::test]
async fn another_tenant_cannot_tolerate_or_select_a_dedicated_pool_and_its_own_pods_stay_on_it() {
    let env = TestEnv::with_operator().await;
    let (police, a, p) = (env.name("police"), env.name("a"), env.name("nodes"));
    let (police_pool, police_admins, a_admins) = (
        format!("police-{p}"),
        env.name("police-admins"),
        env.name("a-admins"),
    );
    env.apply_profile(profile(&p)).await;
    tenant(&police, &p, &police_admins, Some(&police_pool))
        .apply(&env.admin)
        .await
        .unwrap();
    env.tenant_ready(&tenant(&a, &p, &a_admins, None)).await;
    wait_condition(
        &env.admin,
        &police,
        "NodePlacementReady",
        "True",
        Some("Enforced"),
    )
    .await;
    // Enforced placement keeps police Ready (once its quota binds, like any tenant).
    wait_ready(&env.admin, &police).await;
    let a_status = wait_ready(&env.admin, &a).await.status.expect("status");
    assert!(
        !a_status
            .conditions
            .iter()
            .any(|c| c.type_ == "NodePlacementReady"),
        "a tenant without dedicated nodes is not probed: {:?}",
        a_status.conditions
    );

    // Alice, owner of a, wants police's dedicated nodes.
    let alice = env.user(&env.name("alice"), &[&a_admins]).await;
    let a_ns = format!("{a}-prod");
    let stolen = pod_with(
        "on-police-nodes",
        json!({"nodeSelector": {POOL: police_pool}, "tolerations": [toleration_of(&police_pool)]}),
    );
    refused_with(
        create(&alice, &a_ns, &stolen).await,
        "a pod of tenant a tolerating police's pool",
        "whitelist",
    );
    let any_taint = pod_with(
        "tolerates-all",
        json!({"tolerations": [{"key": POOL, "operator": "Exists"}]}),
    );
    refused_with(
        create(&alice, &a_ns, &any_taint).await,
        "a pod of tenant a tolerating every pool",
        "whitelist",
    );
    // Her ordinary pods are admitted (Burstable: memory-pressure and the
    // DefaultTolerationSeconds tolerations are merged in and allowed).
    let plain = create(&alice, &a_ns, &pod_with("plain", json!({})))
        .await
        .expect("an ordinary pod of tenant a");
    let tolerations = plain.spec.expect("spec").tolerations.unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready")),
        "{tolerations:?}"
    );

    // Tolerations can be added to a running pod: not police's.
    let mut more = tolerations.clone();
    more.push(serde_json::from_value(toleration_of(&police_pool)).expect("toleration"));
    refused_with(
        Api::<Pod>::namespaced(alice.clone(), &a_ns)
            .patch(
                "plain",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"tolerations": more}})),
            )
            .await,
        "tenant a adding police's toleration to a running pod",
        "whitelist",
    );
    // Around the scheduler: a pod bound to a police node by name (the kubelet checks only
    // NoExecute taints, so the pool's NoSchedule taint would not stop it there).
    refused_with(
        create(
            &alice,
            &a_ns,
            &pod_with(
                "by-name",
                json!({"nodeName": format!("{police_pool}-node-1")}),
            ),
        )
        .await,
        "a pod of tenant a naming a police node",
        "spec.nodeName",
    );

    // Police's owner: pods land on the pool, and cannot leave it for another.
    let owner = env.user(&env.name("chief"), &[&police_admins]).await;
    let police_ns = format!("{police}-prod");
    let mine = create(&owner, &police_ns, &pod_with("patrol", json!({})))
        .await
        .expect("a police pod");
    let spec = mine.spec.expect("spec");
    assert_eq!(
        spec.node_selector.unwrap_or_default().get(POOL),
        Some(&police_pool),
        "the pool's nodeSelector is merged in"
    );
    assert!(
        spec.tolerations
            .unwrap_or_default()
            .iter()
            .any(|t| t.value.as_deref() == Some(police_pool.as_str())),
        "the pool's toleration is merged in"
    );
    refused_with(
        create(
            &owner,
            &police_ns,
            &pod_with("elsewhere", json!({"nodeSelector": {POOL: "fire"}})),
        )
        .await,
        "a police pod asking for another pool",
        "node label selector",
    );
    refused_with(
        create(
            &owner,
            &police_ns,
            &pod_with(
                "fire-taint",
                json!({"tolerations": [toleration_of("fire")]}),
            ),
        )
        .await,
        "a police pod tolerating another pool",
        "whitelist",
    );
}

#[tokio::test]
async fn a_stolen_operator_token_gets_no_pod_from_the_dry_run_permission() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("dryrun"), env.name("dryrun-p"));
    env.apply_profile(profile(&p)).await;
    env.tenant_ready(&tenant(&t, &p, &env.name("dryrun-admins"), None))
        .await;
    let id = chart_identity();
    let operator = env
        .user(
            &format!(
                "system:serviceaccount:{}:{}",
                id.namespace, id.service_account
            ),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{}", id.namespace),
                "system:authenticated",
            ],
        )
        .await;
    let ns = format!("{t}-prod");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let probe = pod_with("probe", json!({}));
    Api::<Pod>::namespaced(operator.clone(), &ns)
        .create(&dry_run, &probe)
        .await
        .expect("the operator's dry-run in a tenant namespace");
    refused_with(
        create(&operator, &ns, &probe).await,
        "a real pod created with the operator's token",
        "only as server-side dry-runs",
    );
    refused_with(
        Api::<Pod>::namespaced(operator.clone(), "default")
            .create(&dry_run, &probe)
            .await,
        "a dry-run pod outside tenant namespaces with the operator's token",
        "only in tenant namespaces",
    );
    let gone = Api::<Pod>::namespaced(env.admin.clone(), &ns)
        .get_opt("probe")
        .await
        .expect("get");
    assert!(gone.is_none(), "a dry-run creates nothing");
}

#[tokio::test]
async fn a_cluster_without_the_admission_plugins_reports_node_placement_not_enforced() {
    let pcp = PrivateControlPlane::start_with(
        "no-placement-plugins",
        Options {
            without_admission_plugins: vec![
                "PodNodeSelector".into(),
                "PodTolerationRestriction".into(),
            ],
            // Before kube-controller-manager starts: no 30 s wait for its quota discovery.
            crds: Some(repo_root().join("crds")),
            ..Options::default()
        },
    )
    .await;
    install_crds(&pcp.admin).await.expect("CRDs");
    let kubeconfig =
        std::fs::read_to_string(pcp.cluster.admin_kubeconfig()).expect("admin kubeconfig");
    let _operator = RunningOperator::start(kubeconfig);
    profile("nodes").apply(&pcp.admin).await.unwrap();
    tenant("police", "nodes", "police-admins", Some("police"))
        .apply(&pcp.admin)
        .await
        .unwrap();
    let t = wait_condition(
        &pcp.admin,
        "police",
        "NodePlacementReady",
        "False",
        Some("NodePlacementNotEnforced"),
    )
    .await;
    let placement = condition(&t, "NodePlacementReady");
    for plugin in ["PodTolerationRestriction", "PodNodeSelector"] {
        assert!(placement.message.contains(plugin), "{}", placement.message);
    }
    // Ready says so too, once the namespace's quota is enforced (until then access waits,
    // and Ready names that first).
    wait_condition(
        &pcp.admin,
        "police",
        "Ready",
        "False",
        Some("NodePlacementNotEnforced"),
    )
    .await;
    // Nothing of it was created.
    let pods = eventually(
        "the pod list",
        std::time::Duration::from_secs(10),
        || async {
            Api::<Pod>::namespaced(pcp.admin.clone(), "police-prod")
                .list(&Default::default())
                .await
                .ok()
        },
    )
    .await;
    assert!(pods.items.is_empty(), "{:?}", pods.items);
}
