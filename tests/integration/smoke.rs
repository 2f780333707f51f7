//! The control plane is real: authentication, RBAC, admission, and the controllers that
//! garbage-collect, delete namespaces and count quota.
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use testbed::{TestEnv, eventually};

const WAIT: Duration = Duration::from_secs(60);

async fn create_namespace(env: &TestEnv, name: &str, labels: serde_json::Value) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(env.admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn wait_default_sa(env: &TestEnv, ns: &str) {
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(env.admin.clone(), ns);
    eventually("the default ServiceAccount", WAIT, || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await;
}

fn pod(name: &str, cpu: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app", "image": "registry.invalid/app:1",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"cpu": cpu, "memory": "64Mi"}}
            }]
        }
    }))
    .unwrap()
}

fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn admin_creates_a_namespace_and_reads_it_back() {
    let env = TestEnv::new().await;
    let name = env.name("smoke-ns");
    create_namespace(&env, &name, json!({"purpose": "smoke"})).await;
    let got = Api::<Namespace>::all(env.admin.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(got.metadata.labels.unwrap()["purpose"], "smoke");
}

#[tokio::test]
async fn a_user_sees_only_what_a_role_binding_grants() {
    let env = TestEnv::new().await;
    let (granted, other) = (env.name("smoke-granted"), env.name("smoke-other"));
    create_namespace(&env, &granted, json!({})).await;
    create_namespace(&env, &other, json!({})).await;
    let user_name = env.name("alice");
    let alice = env.user(&user_name, &["agency-staff"]).await;

    let err = Api::<Namespace>::all(alice.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(403),
        "listing namespaces without a binding: {err}"
    );
    let err = Api::<Pod>::namespaced(alice.clone(), &granted)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(403),
        "listing pods without a binding: {err}"
    );

    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user_name}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(env.admin.clone(), &granted)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();

    let pods = Api::<Pod>::namespaced(alice.clone(), &granted);
    eventually("view access after the RoleBinding", WAIT, || async {
        pods.list(&ListParams::default()).await.ok()
    })
    .await;
    let err = Api::<Pod>::namespaced(alice.clone(), &other)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(403),
        "the binding must not reach another namespace: {err}"
    );
}

#[tokio::test]
async fn deleting_a_namespace_with_objects_completes() {
    let env = TestEnv::new().await;
    let name = env.name("smoke-del");
    create_namespace(&env, &name, json!({})).await;
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "data"}, "data": {"k": "v"}})).unwrap();
    Api::<ConfigMap>::namespaced(env.admin.clone(), &name)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let namespaces = Api::<Namespace>::all(env.admin.clone());
    namespaces
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace to be gone", WAIT, || async {
        matches!(namespaces.get_opt(&name).await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_orphaned_dependent_is_garbage_collected() {
    let env = TestEnv::new().await;
    let ns = env.name("smoke-gc");
    create_namespace(&env, &ns, json!({})).await;
    let cms = Api::<ConfigMap>::namespaced(env.admin.clone(), &ns);
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap();
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dependent", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()
    }]}}))
    .unwrap();
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("the dependent to be collected", WAIT, || async {
        matches!(cms.get_opt("dependent").await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn quota_is_counted_and_enforced_at_admission() {
    let env = TestEnv::new().await;
    let ns = env.name("smoke-quota");
    create_namespace(&env, &ns, json!({})).await;
    wait_default_sa(&env, &ns).await;
    let quotas = Api::<ResourceQuota>::namespaced(env.admin.clone(), &ns);
    let rq: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "q"}, "spec": {"hard": {"requests.cpu": "250m", "pods": "5"}}}),
    )
    .unwrap();
    quotas.create(&PostParams::default(), &rq).await.unwrap();
    eventually("quota status.hard", WAIT, || async {
        quotas
            .get("q")
            .await
            .ok()
            .and_then(|q| q.status)
            .and_then(|s| s.hard)
            .filter(|h| !h.is_empty())
    })
    .await;

    let pods = Api::<Pod>::namespaced(env.admin.clone(), &ns);
    pods.create(&PostParams::default(), &pod("fits", "200m"))
        .await
        .unwrap();
    let used = eventually("quota status.used to count the pod", WAIT, || async {
        let used = quotas.get("q").await.ok()?.status?.used?;
        (used.get("pods")?.0 == "1").then(|| used["requests.cpu"].0.clone())
    })
    .await;
    assert_eq!(used, "200m");

    let err = pods
        .create(&PostParams::default(), &pod("too-much", "100m"))
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), Some(403));
    assert!(
        err.to_string().contains("exceeded quota"),
        "the API server's own message: {err}"
    );
}

#[tokio::test]
async fn pod_security_admission_enforces_restricted() {
    let env = TestEnv::new().await;
    let ns = env.name("smoke-psa");
    create_namespace(
        &env,
        &ns,
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    wait_default_sa(&env, &ns).await;
    let pods = Api::<Pod>::namespaced(env.admin.clone(), &ns);
    let privileged: Pod = serde_json::from_value(json!({
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1", "securityContext": {"privileged": true}}]}
    }))
    .unwrap();
    let err = pods
        .create(&PostParams::default(), &privileged)
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), Some(403));
    assert!(
        err.to_string()
            .contains("violates PodSecurity \"restricted"),
        "{err}"
    );
    pods.create(&PostParams::default(), &pod("compliant", "10m"))
        .await
        .unwrap();
}
