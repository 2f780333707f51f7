//! A hostile tenant owner, and someone holding a stolen operator token, against the guard rails:
//! each test acts as the attacker and proves the attack refused or repaired.
use citycloud::api::{QuotaProfile, Tenant};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::builders::{Profile, TenantBuilder, default_limits};
use testbed::fixtures::{
    CONVERGE, code, condition, pod, wait_condition, wait_namespace_deleted, wait_ready,
    wait_tenant_gone,
};
use testbed::{TestEnv, eventually};

fn profile(name: &str, tenant_cpu: &str, max_environments: u32) -> Profile {
    Profile::new(name)
        .description("hostile-tenant test profile")
        .namespace(json!({"requests.cpu": "2", "limits.cpu": "2", "pods": "20"}))
        .tenant(json!({"requests.cpu": tenant_cpu}))
        .limits(default_limits())
        .max_environments(max_environments)
}

/// A tenant `Phường <name>` owned by the group `owners`.
fn tenant(name: &str, profile: &str, owners: &str) -> TenantBuilder {
    TenantBuilder::new(name, profile)
        .display_name(&format!("Phường {name}"))
        .owners(owners)
}

async fn configmap(client: &kube::Client, ns: &str, name: &str) -> Result<ConfigMap, kube::Error> {
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
            .expect("cm");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
}

fn rolebinding(name: &str, role: &str, group: &str) -> RoleBinding {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]
    }))
    .expect("a RoleBinding")
}

fn message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Asserts the API server refused `what` with 403.
fn refused<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    let err = r.err().unwrap_or_else(|| panic!("{what} was allowed"));
    assert_eq!(code(&err), Some(403), "{what}: {err}");
}

fn labels(ns: &Namespace) -> std::collections::BTreeMap<String, String> {
    ns.metadata.labels.clone().unwrap_or_default()
}

/// Waits until the namespace exists, not terminating, marked retained.
async fn wait_retained(admin: &kube::Client, name: &str) {
    let namespaces = Api::<Namespace>::all(admin.clone());
    eventually(&format!("{name} retained"), CONVERGE, || async {
        let ns = namespaces.get(name).await.ok()?;
        (ns.metadata.deletion_timestamp.is_none()
            && labels(&ns).get("citycloud.io/orphaned").map(String::as_str) == Some("true"))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_owner_cannot_plant_a_binding_under_a_name_the_operator_will_need() {
    let env = TestEnv::with_operator().await;
    let (t, p, owners) = (env.name("plant"), env.name("p"), env.name("plant-admins"));
    env.apply_profile(profile(&p, "4", 5)).await;
    env.tenant_ready(&tenant(&t, &p, &owners)).await;
    let ns = format!("{t}-prod");
    let alice = env.user("alice", &[&owners]).await;
    let rbs = Api::<RoleBinding>::namespaced(alice.clone(), &ns);

    // Before the operator needs "citycloud-viewers", alice tries to take the name.
    for name in [
        "citycloud-viewers",
        "citycloud-members",
        "citycloud-parent-viewers",
    ] {
        let err = rbs
            .create(&PostParams::default(), &rolebinding(name, "edit", &owners))
            .await
            .expect_err("a reserved name");
        assert_eq!(code(&err), Some(403), "{err}");
        assert!(message(&err).contains("reserved"), "{}", message(&err));
    }
    // Her own bindings under other names are hers to make.
    rbs.create(
        &PostParams::default(),
        &rolebinding("team-editors", "edit", &owners),
    )
    .await
    .expect("an ordinary RoleBinding");
}

#[tokio::test]
async fn a_binding_planted_before_the_guard_rails_is_replaced_not_a_silent_wedge() {
    let env = TestEnv::with_operator().await;
    let (t, p, owners) = (env.name("wedge"), env.name("p"), env.name("wedge-admins"));
    env.apply_profile(profile(&p, "4", 5)).await;
    env.tenant_ready(&tenant(&t, &p, &owners)).await;
    let ns = format!("{t}-prod");
    // Planted as a cluster admin could (or anyone before the policies were installed): the
    // viewers' name bound to edit.
    let rbs = Api::<RoleBinding>::namespaced(env.admin.clone(), &ns);
    rbs.create(
        &PostParams::default(),
        &rolebinding("citycloud-viewers", "edit", "intruders"),
    )
    .await
    .unwrap();
    // The tenant now needs that name: its roleRef cannot change in place.
    tenant(&t, &p, &owners)
        .viewer("auditor")
        .apply(&env.admin)
        .await
        .unwrap();
    wait_ready(&env.admin, &t).await;
    let viewers = eventually("citycloud-viewers bound to view", CONVERGE, || async {
        let rb = rbs.get("citycloud-viewers").await.ok()?;
        (rb.role_ref.name == "view").then_some(rb)
    })
    .await;
    let subjects = viewers.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(
        subjects[0].name, "auditor",
        "the intruders' subject is gone"
    );
}

#[tokio::test]
async fn a_step_that_fails_shows_in_status_and_events_and_privileged_needs_the_charts_list() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("priv"), env.name("p"));
    env.apply_profile(profile(&p, "4", 5)).await;
    env.tenant_ready(&tenant(&t, &p, "priv-admins")).await;
    // Asking for privileged pods: the operator's own namespace update is refused by the API
    // server (the tenant is not in admissionPolicies.privilegedTenants). Ready must not stay True.
    tenant(&t, &p, "priv-admins")
        .set("podSecurity", json!("privileged"))
        .apply(&env.admin)
        .await
        .unwrap();
    let failed = wait_condition(&env.admin, &t, "Ready", "False", Some("ApplyFailed")).await;
    let ready = condition(&failed, "Ready");
    assert!(
        ready.message.contains(&format!("Namespace {t}-prod"))
            && ready.message.contains("privilegedTenants"),
        "names the step, the object and the fix: {}",
        ready.message
    );
    // The same in `kubectl describe tenant`: a Warning event.
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(env.admin.clone());
    eventually("a Warning event ApplyFailed", CONVERGE, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(t.as_str())
                    && e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("ApplyFailed")
            })
            .then_some(())
    })
    .await;
    let ns = Api::<Namespace>::all(env.admin.clone())
        .get(&format!("{t}-prod"))
        .await
        .unwrap();
    assert_eq!(
        labels(&ns)["pod-security.kubernetes.io/enforce"],
        "restricted",
        "unchanged"
    );
    // Back to baseline: repaired, Ready again.
    tenant(&t, &p, "priv-admins")
        .set("podSecurity", json!("baseline"))
        .apply(&env.admin)
        .await
        .unwrap();
    wait_ready(&env.admin, &t).await;
}

#[tokio::test]
async fn a_retained_namespace_keeps_its_data_loses_write_access_stops_growing_and_still_counts() {
    let env = TestEnv::with_operator().await;
    let (t, p, owners) = (env.name("ret"), env.name("p"), env.name("ret-admins"));
    env.apply_profile(profile(&p, "1", 5)).await;
    let both = tenant(&t, &p, &owners)
        .environments(&["prod", "dev"])
        .viewer("ret-auditor");
    env.tenant_ready(&both).await;
    let (prod, dev) = (format!("{t}-prod"), format!("{t}-dev"));
    let alice = env.user("alice", &[&owners]).await;
    configmap(&alice, &dev, "precious").await.unwrap();
    // 400m of the tenant's 1 CPU runs in dev.
    let pods = Api::<Pod>::namespaced(alice.clone(), &dev);
    eventually("dev admits a 400m pod", CONVERGE, || async {
        pods.create(&PostParams::default(), &pod("worker", json!({}), "400m"))
            .await
            .ok()
    })
    .await;

    // dev is dropped from the spec: kept, with its data.
    both.clone()
        .environments(&["prod"])
        .apply(&env.admin)
        .await
        .unwrap();
    wait_retained(&env.admin, &dev).await;
    Api::<ConfigMap>::namespaced(env.admin.clone(), &dev)
        .get("precious")
        .await
        .expect("the data is kept");
    // Write access is gone; the viewer still reads.
    let err = configmap(&alice, &dev, "more")
        .await
        .expect_err("no write access");
    assert_eq!(code(&err), Some(403), "{err}");
    let auditor = env.user("ret-auditor", &[]).await;
    Api::<ConfigMap>::namespaced(auditor, &dev)
        .get("precious")
        .await
        .expect("viewers keep read");
    // Nothing new starts there, not even for a cluster admin (quota binds everyone).
    let err = eventually("a frozen quota refuses new pods", CONVERGE, || async {
        Api::<Pod>::namespaced(env.admin.clone(), &dev)
            .create(&PostParams::default(), &pod("sneaky", json!({}), "100m"))
            .await
            .err()
    })
    .await;
    assert_eq!(code(&err), Some(403), "{err}");
    assert!(
        message(&err).contains("exceeded quota"),
        "{}",
        message(&err)
    );
    // Its 400m still counts: prod gets at most the remaining 600m of the budget.
    eventually(
        "prod's share excludes what dev still uses",
        CONVERGE,
        || async {
            let q = Api::<ResourceQuota>::namespaced(env.admin.clone(), &prod)
                .get("citycloud-quota")
                .await
                .ok()?;
            let hard = q.spec?.hard?;
            (hard.get("requests.cpu")?.0 == "600m").then_some(())
        },
    )
    .await;

    // Adding dev back restores everything.
    env.tenant_ready(&both).await;
    eventually("alice writes in dev again", CONVERGE, || async {
        configmap(&alice, &dev, "again").await.ok()
    })
    .await;
}

#[tokio::test]
async fn delete_deletes_only_what_this_tenant_created_and_retained_data_is_adopted_only_on_purpose()
{
    let env = TestEnv::with_operator().await;
    let (t, p, owners) = (env.name("del"), env.name("p"), env.name("del-admins"));
    env.apply_profile(profile(&p, "4", 5)).await;
    env.tenant_ready(&tenant(&t, &p, &owners).environments(&["prod", "dev"]))
        .await;
    let (prod, dev) = (format!("{t}-prod"), format!("{t}-dev"));
    configmap(&env.admin, &dev, "old-data").await.unwrap();
    // dev dropped under Retain, then the tenant switched to Delete.
    tenant(&t, &p, &owners)
        .environments(&["prod"])
        .apply(&env.admin)
        .await
        .unwrap();
    wait_retained(&env.admin, &dev).await;
    let delete = tenant(&t, &p, &owners)
        .environments(&["prod"])
        .set("deletionPolicy", json!("Delete"));
    env.tenant_ready(&delete).await;
    // Deleting the tenant deletes prod (its own), never the retained dev.
    Api::<Tenant>::all(env.admin.clone())
        .delete(&t, &DeleteParams::default())
        .await
        .unwrap();
    let namespaces = Api::<Namespace>::all(env.admin.clone());
    wait_namespace_deleted(&env.admin, &prod).await;
    wait_tenant_gone(&env.admin, &t).await;
    wait_retained(&env.admin, &dev).await;

    // A new Tenant of the same name, with other owners and Delete, does not inherit dev.
    let newcomers = env.name("newcomers");
    tenant(&t, &p, &newcomers)
        .environments(&["dev"])
        .set("deletionPolicy", json!("Delete"))
        .apply(&env.admin)
        .await
        .unwrap();
    let refused = wait_condition(
        &env.admin,
        &t,
        "NamespacesReady",
        "False",
        Some("NamespaceConflict"),
    )
    .await;
    let msg = condition(&refused, "NamespacesReady").message;
    assert!(msg.contains("citycloud.io/adopt-retained"), "{msg}");
    let bob = env.user("bob", &[&newcomers]).await;
    let err = Api::<ConfigMap>::namespaced(bob, &dev)
        .get("old-data")
        .await
        .expect_err("no access to the retained data");
    assert_eq!(code(&err), Some(403), "{err}");
    // Adopted on purpose: annotated.
    let tenants = Api::<Tenant>::all(env.admin.clone());
    tenants
        .patch(
            &t,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"citycloud.io/adopt-retained": "true"}}}),
            ),
        )
        .await
        .unwrap();
    wait_ready(&env.admin, &t).await;
    let ns = namespaces.get(&dev).await.unwrap();
    assert!(!labels(&ns).contains_key("citycloud.io/orphaned"));
    Api::<ConfigMap>::namespaced(env.admin.clone(), &dev)
        .get("old-data")
        .await
        .expect("the data came along");
}

#[tokio::test]
async fn environments_beyond_the_profiles_maximum_are_not_created_and_say_why() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("many"), env.name("p"));
    env.apply_profile(profile(&p, "4", 2)).await;
    tenant(&t, &p, "many-admins")
        .environments(&["prod", "staging", "dev"])
        .apply(&env.admin)
        .await
        .unwrap();
    let tenant = wait_condition(
        &env.admin,
        &t,
        "NamespacesReady",
        "False",
        Some("TooManyEnvironments"),
    )
    .await;
    assert_eq!(
        tenant.status.as_ref().unwrap().namespaces,
        [format!("{t}-prod"), format!("{t}-staging")]
    );
    let c = condition(&tenant, "Ready");
    assert_eq!(c.status, "False");
    assert!(c.message.contains(&format!("{t}-dev")), "{}", c.message);
    let dev = Api::<Namespace>::all(env.admin.clone())
        .get_opt(&format!("{t}-dev"))
        .await
        .unwrap();
    assert!(dev.is_none(), "the third environment was not created");
}

#[tokio::test]
async fn a_stolen_operator_token_cannot_grant_more_than_tenant_reads_nor_rewrite_what_people_asked_for()
 {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("victim"), env.name("p"));
    env.apply_profile(profile(&p, "4", 5)).await;
    env.tenant_ready(&tenant(&t, &p, "victim-admins")).await;
    let thief = env.operator_client().await;

    // A per-tenant ClusterRole that grants more than reading that Tenant.
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": format!("citycloud:tenant:{t}-x")},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "delete"]}]
    }))
    .unwrap();
    refused(
        Api::<ClusterRole>::all(thief.clone())
            .create(&PostParams::default(), &role)
            .await,
        "a ClusterRole granting namespaces",
    );
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": format!("citycloud:tenant:{t}-y")},
        "rules": [{"apiGroups": ["citycloud.io"], "resources": ["tenants"], "verbs": ["get"]}]
    }))
    .unwrap();
    refused(
        Api::<ClusterRole>::all(thief.clone())
            .create(&PostParams::default(), &role)
            .await,
        "a ClusterRole reading every Tenant",
    );
    // A binding named for one tenant's reader role, of another's role.
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("citycloud:tenant:{t}-z")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("citycloud:tenant:{t}")},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}]
    }))
    .unwrap();
    refused(
        Api::<ClusterRoleBinding>::all(thief.clone())
            .create(&PostParams::default(), &binding)
            .await,
        "a ClusterRoleBinding named unlike its role",
    );
    // A namespace posing as a tenant's, or a privileged one.
    let ns = |name: String, enforce: &str| -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {
            "citycloud.io/tenant": t, "citycloud.io/environment": "x",
            "app.kubernetes.io/managed-by": "citycloud-operator",
            "pod-security.kubernetes.io/enforce": enforce}}}))
        .unwrap()
    };
    let namespaces = Api::<Namespace>::all(thief.clone());
    refused(
        namespaces
            .create(&PostParams::default(), &ns(env.name("evil"), "restricted"))
            .await,
        "a namespace named unlike <tenant>-<environment>",
    );
    refused(
        namespaces
            .create(&PostParams::default(), &ns(format!("{t}-x"), "privileged"))
            .await,
        "a privileged tenant namespace",
    );
    // Rewriting what a platform engineer asked for: another owner on the Tenant.
    let tenants = Api::<Tenant>::all(thief.clone());
    refused(
        tenants
            .patch(
                &t,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"owners": [{"kind": "User", "name": "mallory"}]}})),
            )
            .await,
        "a Tenant spec change",
    );
    refused(
        tenants
            .patch(
                &t,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}})),
            )
            .await,
        "switching a Tenant to Delete",
    );
    refused(
        Api::<QuotaProfile>::all(thief.clone())
            .patch(
                &p,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"tenant": {"requests.cpu": "999"}}})),
            )
            .await,
        "a QuotaProfile change",
    );
    let t2 = Api::<Tenant>::all(env.admin.clone()).get(&t).await.unwrap();
    assert_eq!(t2.spec.owners.len(), 1);
    assert_eq!(t2.spec.owners[0].name, "victim-admins");
}

#[tokio::test]
async fn an_owner_cannot_capture_other_namespaces_traffic_with_external_ips() {
    let env = TestEnv::with_operator().await;
    let (t, p, owners) = (env.name("mitm"), env.name("p"), env.name("mitm-admins"));
    env.apply_profile(profile(&p, "4", 5)).await;
    env.tenant_ready(&tenant(&t, &p, &owners)).await;
    let alice = env.user("alice", &[&owners]).await;
    let services =
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(alice, &format!("{t}-prod"));
    let service = |name: &str, external: Option<&str>| -> k8s_openapi::api::core::v1::Service {
        let mut spec = json!({"selector": {"app": "web"}, "ports": [{"port": 443}]});
        if let Some(ip) = external {
            spec["externalIPs"] = json!([ip]);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
            .expect("a Service")
    };
    // The platform gateway's address, say: traffic to it from every namespace would reach her.
    let err = services
        .create(
            &PostParams::default(),
            &service("gateway", Some("10.0.0.50")),
        )
        .await
        .expect_err("externalIPs in a tenant namespace");
    assert_eq!(code(&err), Some(403), "{err}");
    assert!(message(&err).contains("externalIPs"), "{}", message(&err));
    // An ordinary Service is hers to make; adding externalIPs to it later is refused too.
    services
        .create(&PostParams::default(), &service("web", None))
        .await
        .expect("an ordinary Service");
    let err = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"externalIPs": ["10.0.0.50"]}})),
        )
        .await
        .expect_err("externalIPs added later");
    assert_eq!(code(&err), Some(403), "{err}");
}
