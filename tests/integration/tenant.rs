//! Tenants, as a platform engineer applies them and as agency users live with them.
use std::collections::BTreeMap;

use citycloud::api::{QuotaProfile, Tenant};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::builders::{Profile, TenantBuilder, default_limits};
use testbed::env::PrivateControlPlane;
use testbed::fixtures::{
    CONVERGE, apply_raw_tenant, code, condition, wait_condition, wait_namespace_deleted,
    wait_ready, wait_tenant_gone,
};
use testbed::{TestEnv, eventually};

fn profile(name: &str, cpu: &str) -> Profile {
    Profile::new(name)
        .description("test profile")
        .namespace(json!({"requests.cpu": cpu, "pods": "20"}))
        .tenant(json!({"requests.cpu": "8"}))
        .limits(default_limits())
}

/// A tenant `Sở Thông tin và Truyền thông <name>` owned by the group `owners`.
fn tenant(name: &str, profile: &str, owners: &str) -> TenantBuilder {
    TenantBuilder::new(name, profile)
        .display_name(&format!("Sở Thông tin và Truyền thông {name}"))
        .owners(owners)
}

async fn configmap_in(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<ConfigMap, kube::Error> {
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
            .expect("cm");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
}

fn labels(ns: &Namespace) -> BTreeMap<String, String> {
    ns.metadata.labels.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_tenant_becomes_namespaces_with_rbac_quota_limits_and_network_policies() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("so"), env.name("medium"));
    env.apply_profile(profile(&p, "4")).await;
    let ready = env
        .tenant_ready(
            &tenant(&t, &p, "so-admins")
                .environments(&["prod", "staging"])
                .set("network", json!({"egress": "Restricted"}))
                .viewer("auditor"),
        )
        .await;
    let status = ready.status.unwrap();
    assert_eq!(
        status.namespaces,
        [format!("{t}-prod"), format!("{t}-staging")]
    );
    for c in ["NamespacesReady", "RBACReady", "QuotaReady", "NetworkReady"] {
        assert!(
            status
                .conditions
                .iter()
                .any(|x| x.type_ == c && x.status == "True"),
            "{c} in {:?}",
            status.conditions
        );
    }

    let ns = Api::<Namespace>::all(env.admin.clone())
        .get(&format!("{t}-staging"))
        .await
        .unwrap();
    let l = labels(&ns);
    assert_eq!(l["citycloud.io/tenant"], t);
    assert_eq!(l["citycloud.io/environment"], "staging");
    assert_eq!(l["app.kubernetes.io/managed-by"], "citycloud-operator");
    assert_eq!(l["pod-security.kubernetes.io/enforce"], "restricted");

    let ns = format!("{t}-prod");
    let rbs = Api::<RoleBinding>::namespaced(env.admin.clone(), &ns);
    assert_eq!(
        rbs.get("citycloud-owners").await.unwrap().role_ref.name,
        "admin"
    );
    assert_eq!(
        rbs.get("citycloud-viewers").await.unwrap().role_ref.name,
        "view"
    );
    let rq = Api::<ResourceQuota>::namespaced(env.admin.clone(), &ns)
        .get("citycloud-quota")
        .await
        .unwrap();
    assert_eq!(rq.spec.unwrap().hard.unwrap()["requests.cpu"].0, "4");
    Api::<LimitRange>::namespaced(env.admin.clone(), &ns)
        .get("citycloud-limits")
        .await
        .unwrap();
    let nps = Api::<NetworkPolicy>::namespaced(env.admin.clone(), &ns);
    nps.get("citycloud-ingress").await.unwrap();
    nps.get("citycloud-egress").await.unwrap();

    // The tenant-wide usage shows the tenant budget as the hard limit.
    let t2 = eventually("usage in status", CONVERGE, || async {
        let tt = Api::<Tenant>::all(env.admin.clone()).get(&t).await.ok()?;
        tt.status?
            .usage
            .get("requests.cpu")
            .map(|u| u.hard.0.clone())
    })
    .await;
    assert_eq!(t2, "8");
}

#[tokio::test]
async fn an_owner_works_in_their_namespaces_and_cannot_touch_another_tenants() {
    let env = TestEnv::with_operator().await;
    let (a, b, p) = (env.name("ta"), env.name("tb"), env.name("p"));
    let (a_admins, b_admins, a_viewers) = (
        env.name("a-admins"),
        env.name("b-admins"),
        env.name("a-viewers"),
    );
    env.apply_profile(profile(&p, "2")).await;
    tenant(&a, &p, &a_admins)
        .set("viewers", json!([{"kind": "Group", "name": a_viewers}]))
        .apply(&env.admin)
        .await
        .unwrap();
    tenant(&b, &p, &b_admins).apply(&env.admin).await.unwrap();
    wait_ready(&env.admin, &a).await;
    wait_ready(&env.admin, &b).await;

    let owner = env.user(&env.name("an"), &[&a_admins]).await;
    let viewer = env.user(&env.name("binh"), &[&a_viewers]).await;
    let (a_ns, b_ns) = (format!("{a}-prod"), format!("{b}-prod"));

    configmap_in(&owner, &a_ns, "app-config")
        .await
        .expect("an owner can deploy in their namespace");
    let err = configmap_in(&owner, &b_ns, "intrusion").await.unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");
    let err = Api::<ConfigMap>::namespaced(owner.clone(), &b_ns)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some(403),
        "cannot even read another tenant's namespace: {err}"
    );

    // Each agency reads its own Tenant object and nothing of others.
    let tenants = Api::<Tenant>::all(owner.clone());
    tenants
        .get(&a)
        .await
        .expect("an owner reads their own Tenant");
    assert_eq!(code(&tenants.get(&b).await.unwrap_err()), Some(403));
    Api::<Tenant>::all(viewer.clone())
        .get(&a)
        .await
        .expect("a viewer reads their own Tenant");

    // A viewer reads but cannot write.
    Api::<ConfigMap>::namespaced(viewer.clone(), &a_ns)
        .get("app-config")
        .await
        .expect("a viewer reads");
    let err = configmap_in(&viewer, &a_ns, "viewer-write")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");
}

#[tokio::test]
async fn an_owner_cannot_change_what_the_operator_manages() {
    let env = TestEnv::with_operator().await;
    let (t, p, admins) = (env.name("guard"), env.name("p"), env.name("guard-admins"));
    env.apply_profile(profile(&p, "2")).await;
    env.tenant_ready(&tenant(&t, &p, &admins)).await;
    let owner = env.user(&env.name("chi"), &[&admins]).await;
    let ns = format!("{t}-prod");
    let dp = DeleteParams::default();

    let err = Api::<NetworkPolicy>::namespaced(owner.clone(), &ns)
        .delete("citycloud-ingress", &dp)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");
    assert!(
        err.to_string().contains("managed by CityCloud"),
        "the admission policy says why: {err}"
    );
    let err = Api::<RoleBinding>::namespaced(owner.clone(), &ns)
        .delete("citycloud-owners", &dp)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");
    let patch = Patch::Merge(json!({"spec": {"hard": {"requests.cpu": "100"}}}));
    let err = Api::<ResourceQuota>::namespaced(owner.clone(), &ns)
        .patch("citycloud-quota", &PatchParams::default(), &patch)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");
    let err = Api::<LimitRange>::namespaced(owner.clone(), &ns)
        .delete("citycloud-limits", &dp)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");
    let relabel =
        Patch::Merge(json!({"metadata": {"labels": {"citycloud.io/tenant": "someone-else"}}}));
    let err = Api::<Namespace>::all(owner.clone())
        .patch(&ns, &PatchParams::default(), &relabel)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");

    // Their own objects stay theirs to manage.
    let own: NetworkPolicy = serde_json::from_value(
        json!({"metadata": {"name": "allow-web"}, "spec": {"podSelector": {}}}),
    )
    .unwrap();
    let nps = Api::<NetworkPolicy>::namespaced(owner.clone(), &ns);
    nps.create(&PostParams::default(), &own)
        .await
        .expect("an owner creates their own policy");
    nps.delete("allow-web", &dp).await.expect("and deletes it");
}

#[tokio::test]
async fn drift_of_every_managed_kind_is_repaired() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("drift"), env.name("p"));
    env.apply_profile(profile(&p, "3")).await;
    env.tenant_ready(
        &tenant(&t, &p, "drift-admins").set("members", json!([{"kind": "User", "name": "dev"}])),
    )
    .await;
    let ns = format!("{t}-prod");
    let dp = DeleteParams::default();
    let a = &env.admin;
    Api::<RoleBinding>::namespaced(a.clone(), &ns)
        .delete("citycloud-members", &dp)
        .await
        .unwrap();
    Api::<NetworkPolicy>::namespaced(a.clone(), &ns)
        .delete("citycloud-ingress", &dp)
        .await
        .unwrap();
    Api::<LimitRange>::namespaced(a.clone(), &ns)
        .delete("citycloud-limits", &dp)
        .await
        .unwrap();
    let patch = Patch::Merge(json!({"spec": {"hard": {"requests.cpu": "100"}}}));
    Api::<ResourceQuota>::namespaced(a.clone(), &ns)
        .patch("citycloud-quota", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let relabel = Patch::Merge(
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}),
    );
    Api::<Namespace>::all(a.clone())
        .patch(&ns, &PatchParams::default(), &relabel)
        .await
        .unwrap();

    eventually("every managed object repaired", CONVERGE, || async {
        Api::<RoleBinding>::namespaced(a.clone(), &ns)
            .get_opt("citycloud-members")
            .await
            .ok()??;
        Api::<NetworkPolicy>::namespaced(a.clone(), &ns)
            .get_opt("citycloud-ingress")
            .await
            .ok()??;
        Api::<LimitRange>::namespaced(a.clone(), &ns)
            .get_opt("citycloud-limits")
            .await
            .ok()??;
        let rq = Api::<ResourceQuota>::namespaced(a.clone(), &ns)
            .get("citycloud-quota")
            .await
            .ok()?;
        (rq.spec?.hard?["requests.cpu"].0 == "3").then_some(())?;
        let n = Api::<Namespace>::all(a.clone()).get(&ns).await.ok()?;
        (labels(&n)["pod-security.kubernetes.io/enforce"] == "restricted").then_some(())
    })
    .await;

    // Told on the Tenant: everything a new tenant got in one Created Event (access included),
    // and each repair in an Event of its own naming what it put back, not folded into an
    // earlier Event of the same reason that names something else.
    let told = eventually("each repair told", CONVERGE, || async {
        let notes = notes_about(a, &t).await;
        let repaired = [
            format!("RoleBinding {ns}/citycloud-members"),
            format!("NetworkPolicy {ns}/citycloud-ingress"),
            format!("LimitRange {ns}/citycloud-limits"),
            format!("ResourceQuota {ns}/citycloud-quota"),
        ];
        repaired
            .iter()
            .all(|r| notes.iter().skip(1).any(|n| n.contains(r.as_str())))
            .then_some(notes)
    })
    .await;
    let first = &told[0];
    assert!(
        first.starts_with("Created")
            && first.contains(&format!("Namespace {ns}"))
            && first.contains(&format!("RoleBinding {ns}/citycloud-owners")),
        "one Created Event for the new tenant, its access included: {told:?}"
    );
}

/// The notes of the Events on Tenant `name`, oldest first.
async fn notes_about(admin: &kube::Client, name: &str) -> Vec<String> {
    let list = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("events");
    let mut events: Vec<_> = list
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Tenant")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events.into_iter().filter_map(|e| e.note).collect()
}

#[tokio::test]
async fn a_profile_change_reaches_every_tenant_using_it() {
    let env = TestEnv::with_operator().await;
    let (t1, t2, p) = (env.name("pa"), env.name("pb"), env.name("shared"));
    env.apply_profile(profile(&p, "2")).await;
    tenant(&t1, &p, "x").apply(&env.admin).await.unwrap();
    tenant(&t2, &p, "y")
        .set("quotaOverrides", json!({"namespace": {"pods": "7"}}))
        .apply(&env.admin)
        .await
        .unwrap();
    wait_ready(&env.admin, &t1).await;
    wait_ready(&env.admin, &t2).await;
    env.apply_profile(profile(&p, "5")).await;
    for (t, pods) in [(&t1, "20"), (&t2, "7")] {
        let rqs = Api::<ResourceQuota>::namespaced(env.admin.clone(), &format!("{t}-prod"));
        eventually(&format!("{t} to follow the profile"), CONVERGE, || async {
            let hard = rqs.get("citycloud-quota").await.ok()?.spec?.hard?;
            (hard["requests.cpu"].0 == "5" && hard["pods"].0 == pods).then_some(())
        })
        .await;
    }
}

/// The profile controller counts from an index kept from the Tenant watch: a tenant moving to
/// another profile recounts the one it left at once (not at the next resync), and a deleted
/// tenant is counted out.
#[tokio::test]
async fn a_profile_counts_its_tenants_and_recounts_the_one_a_tenant_leaves() {
    let env = TestEnv::with_operator().await;
    let (t1, t2) = (env.name("ca"), env.name("cb"));
    let (p1, p2) = (env.name("count-a"), env.name("count-b"));
    env.apply_profile(profile(&p1, "2")).await;
    env.apply_profile(profile(&p2, "2")).await;
    tenant(&t1, &p1, "x").apply(&env.admin).await.unwrap();
    tenant(&t2, &p1, "y").apply(&env.admin).await.unwrap();
    let profiles = Api::<QuotaProfile>::all(env.admin.clone());
    let counted = |want: [(&String, i32); 2]| {
        let profiles = profiles.clone();
        let want = want.map(|(p, n)| (p.clone(), n));
        async move {
            for (p, n) in want {
                let status = profiles.get(&p).await.ok()?.status?;
                (status.tenants == n).then_some(())?;
            }
            Some(())
        }
    };
    eventually("both tenants counted", CONVERGE, || {
        counted([(&p1, 2), (&p2, 0)])
    })
    .await;
    tenant(&t2, &p2, "y").apply(&env.admin).await.unwrap();
    eventually(
        "the moved tenant counted where it went only",
        CONVERGE,
        || counted([(&p1, 1), (&p2, 1)]),
    )
    .await;
    Api::<Tenant>::all(env.admin.clone())
        .delete(&t1, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted tenant counted out", CONVERGE, || {
        counted([(&p1, 0), (&p2, 1)])
    })
    .await;
}

#[tokio::test]
async fn retain_keeps_namespaces_and_a_new_tenant_of_the_same_name_adopts_them_on_purpose() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("keep"), env.name("p"));
    env.apply_profile(profile(&p, "2")).await;
    env.tenant_ready(&tenant(&t, &p, "keep-admins").environments(&["prod", "dev"]))
        .await;
    let (prod, dev) = (format!("{t}-prod"), format!("{t}-dev"));
    configmap_in(&env.admin, &prod, "precious-data")
        .await
        .unwrap();
    let namespaces = Api::<Namespace>::all(env.admin.clone());
    let orphaned = |name: String| {
        let namespaces = namespaces.clone();
        async move {
            let ns = namespaces.get(&name).await.ok()?;
            (ns.metadata.deletion_timestamp.is_none()
                && labels(&ns).get("citycloud.io/orphaned").map(String::as_str) == Some("true"))
            .then_some(())
        }
    };

    // Dropping an environment keeps its namespace.
    tenant(&t, &p, "keep-admins")
        .environments(&["prod"])
        .apply(&env.admin)
        .await
        .unwrap();
    eventually(
        "the dropped environment's namespace kept and marked",
        CONVERGE,
        || orphaned(dev.clone()),
    )
    .await;

    // Deleting the tenant keeps every namespace and its data.
    Api::<Tenant>::all(env.admin.clone())
        .delete(&t, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&env.admin, &t).await;
    orphaned(prod.clone())
        .await
        .expect("prod kept and marked orphaned");
    Api::<ConfigMap>::namespaced(env.admin.clone(), &prod)
        .get("precious-data")
        .await
        .expect("the data survived");

    // A new tenant of the same name adopts its namespace back, on purpose (annotated).
    let adopting = tenant(&t, &p, "keep-admins")
        .environments(&["prod"])
        .annotation("citycloud.io/adopt-retained", "true");
    env.tenant_ready(&adopting).await;
    let ns = namespaces.get(&prod).await.unwrap();
    assert!(
        !labels(&ns).contains_key("citycloud.io/orphaned"),
        "adopted: {:?}",
        labels(&ns)
    );
    Api::<ConfigMap>::namespaced(env.admin.clone(), &prod)
        .get("precious-data")
        .await
        .expect("still there");
}

#[tokio::test]
async fn delete_policy_deletes_namespaces() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("gone"), env.name("p"));
    env.apply_profile(profile(&p, "2")).await;
    let delete = tenant(&t, &p, "gone-admins").set("deletionPolicy", json!("Delete"));
    env.tenant_ready(&delete.clone().environments(&["prod", "dev"]))
        .await;
    // The dropped environment is deleted, then prod with its tenant.
    delete
        .environments(&["prod"])
        .apply(&env.admin)
        .await
        .unwrap();
    wait_namespace_deleted(&env.admin, &format!("{t}-dev")).await;
    Api::<Tenant>::all(env.admin.clone())
        .delete(&t, &DeleteParams::default())
        .await
        .unwrap();
    wait_namespace_deleted(&env.admin, &format!("{t}-prod")).await;
}

#[tokio::test]
async fn a_new_tenant_is_stored_with_its_cleanup_finalizer_and_a_removed_one_is_put_back() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("fin"), env.name("p"));
    env.apply_profile(profile(&p, "2")).await;
    let created = tenant(&t, &p, "fin-admins")
        .apply(&env.admin)
        .await
        .unwrap();
    // Set by the API server on create (the chart's policy): deleting the Tenant waits for
    // its namespaces' cleanup from the first moment, not from the operator's first look.
    assert_eq!(created.finalizers(), [citycloud::api::finalizers::TENANT]);
    let ready = wait_ready(&env.admin, &t).await;
    // Provisioned without writing the finalizer again: nobody owns it (what admission adds is
    // no manager's; the operator's own patch would show as its entry).
    let owners = |t: Tenant| -> Vec<String> {
        t.metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.to_string().contains("f:finalizers"))
            })
            .filter_map(|m| m.manager)
            .collect()
    };
    assert_eq!(owners(ready), Vec::<String>::new(), "written again");
    // Taken off by hand: the operator puts it back.
    Api::<Tenant>::all(env.admin.clone())
        .patch(
            &t,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let back = eventually("the finalizer put back", CONVERGE, || async {
        let t = Api::<Tenant>::all(env.admin.clone()).get(&t).await.ok()?;
        (t.finalizers() == [citycloud::api::finalizers::TENANT]).then_some(t)
    })
    .await;
    assert_eq!(
        owners(back).len(),
        1,
        "the operator's patch shows as its entry"
    );
}

#[tokio::test]
async fn a_namespace_of_someone_else_is_never_taken_over() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("clash"), env.name("p"));
    env.apply_profile(profile(&p, "2")).await;
    let squatter: Namespace = serde_json::from_value(
        json!({"metadata": {"name": format!("{t}-prod"), "labels": {"team": "legacy"}}}),
    )
    .unwrap();
    Api::<Namespace>::all(env.admin.clone())
        .create(&PostParams::default(), &squatter)
        .await
        .unwrap();
    tenant(&t, &p, "clash-admins")
        .environments(&["prod", "dev"])
        .apply(&env.admin)
        .await
        .unwrap();
    let t_obj = wait_condition(
        &env.admin,
        &t,
        "NamespacesReady",
        "False",
        Some("NamespaceConflict"),
    )
    .await;
    let ready = condition(&t_obj, "Ready");
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains(&format!("{t}-prod")),
        "{}",
        ready.message
    );
    let ns = Api::<Namespace>::all(env.admin.clone())
        .get(&format!("{t}-prod"))
        .await
        .unwrap();
    assert_eq!(
        labels(&ns),
        BTreeMap::from([
            ("team".into(), "legacy".into()),
            ("kubernetes.io/metadata.name".into(), format!("{t}-prod"))
        ])
    );
    let rbs = Api::<RoleBinding>::namespaced(env.admin.clone(), &format!("{t}-prod"))
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(rbs.items.is_empty(), "nothing was put into it");
    Api::<Namespace>::all(env.admin.clone())
        .get(&format!("{t}-dev"))
        .await
        .expect("the other environment is provisioned");
}

#[tokio::test]
async fn suspension_stops_new_pods_and_deletes_nothing() {
    let env = TestEnv::with_operator().await;
    let (t, p) = (env.name("pause"), env.name("p"));
    env.apply_profile(profile(&p, "2")).await;
    env.tenant_ready(&tenant(&t, &p, "pause-admins")).await;
    configmap_in(&env.admin, &format!("{t}-prod"), "kept")
        .await
        .unwrap();
    tenant(&t, &p, "pause-admins")
        .set("suspended", json!(true))
        .apply(&env.admin)
        .await
        .unwrap();
    wait_condition(&env.admin, &t, "Ready", "False", Some("Suspended")).await;
    let rq = Api::<ResourceQuota>::namespaced(env.admin.clone(), &format!("{t}-prod"))
        .get("citycloud-quota")
        .await
        .unwrap();
    assert_eq!(rq.spec.unwrap().hard.unwrap()["pods"].0, "0");
    Api::<ConfigMap>::namespaced(env.admin.clone(), &format!("{t}-prod"))
        .get("kept")
        .await
        .expect("nothing deleted");
}

#[tokio::test]
async fn a_missing_profile_fails_closed_and_says_so() {
    let env = TestEnv::with_operator().await;
    let t = env.name("noprof");
    tenant(&t, &env.name("nonexistent"), "np-admins")
        .apply(&env.admin)
        .await
        .unwrap();
    let t_obj = wait_condition(
        &env.admin,
        &t,
        "QuotaReady",
        "False",
        Some("QuotaProfileNotFound"),
    )
    .await;
    let c = condition(&t_obj, "QuotaReady");
    assert!(c.message.contains("does not exist"), "{}", c.message);
    let rq = Api::<ResourceQuota>::namespaced(env.admin.clone(), &format!("{t}-prod"))
        .get("citycloud-quota")
        .await
        .unwrap();
    assert_eq!(rq.spec.unwrap().hard.unwrap()["pods"].0, "0");
}

#[tokio::test]
async fn a_parent_cycle_or_missing_parent_is_reported() {
    let env = TestEnv::with_operator().await;
    let (a, b, p) = (env.name("cya"), env.name("cyb"), env.name("p"));
    env.apply_profile(profile(&p, "2")).await;
    tenant(&a, &p, "cy")
        .set("parent", json!(b))
        .apply(&env.admin)
        .await
        .unwrap();
    wait_condition(&env.admin, &a, "Ready", "False", Some("ParentNotFound")).await;
    tenant(&b, &p, "cy")
        .set("parent", json!(a))
        .apply(&env.admin)
        .await
        .unwrap();
    wait_condition(&env.admin, &b, "Ready", "False", Some("ParentCycle")).await;
}

#[tokio::test]
async fn invalid_tenants_are_rejected_naming_the_field() {
    let env = TestEnv::with_operator().await;
    let t = env.name("bad");
    let cases = [
        ("  owners: []\n  displayName: x", "owner"),
        (
            "  owners: [{kind: Group, name: g}]\n  displayName: \"   \"",
            "displayName",
        ),
        (
            "  owners: [{kind: Group, name: g}]\n  displayName: x\n  environments: [{name: prod}, {name: prod}]",
            "environments",
        ),
        (
            "  owners: [{kind: Group, name: g}]\n  displayName: x\n  environments: [{name: Prod_1}]",
            "environments",
        ),
        (
            "  owners: [{kind: ServiceAccount, name: ci}]\n  displayName: x",
            "namespace",
        ),
        (
            "  owners: [{kind: Group, name: g}]\n  displayName: x\n  network: {ingress: Wide}",
            "ingress",
        ),
    ];
    for (spec, field) in cases {
        let yaml = format!(
            "apiVersion: citycloud.io/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n{spec}\n"
        );
        let err = apply_raw_tenant(&env.admin, &yaml).await.expect_err(spec);
        assert_eq!(code(&err), Some(422), "{err}");
        assert!(
            err.to_string().contains(field),
            "the message names {field}: {err}"
        );
    }
    let long = format!("{}-{}", t, "x".repeat(60));
    let yaml = format!(
        "apiVersion: citycloud.io/v1alpha1\nkind: Tenant\nmetadata: {{name: {}}}\nspec:\n  owners: [{{kind: Group, name: g}}]\n  displayName: x\n",
        &long[..61]
    );
    let err = apply_raw_tenant(&env.admin, &yaml)
        .await
        .expect_err("namespace names too long");
    assert!(err.to_string().contains("63"), "{err}");
}

/// Adds `<kind>/<ns>/<name>` → resourceVersion for each `K` in `ns` labelled for tenant `t`.
async fn versions_of<K>(
    client: &kube::Client,
    ns: &str,
    t: &str,
    kind: &str,
    into: &mut BTreeMap<String, String>,
) where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let lp = ListParams::default().labels(&format!("citycloud.io/tenant={t}"));
    for obj in Api::<K>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        let meta = obj.meta();
        into.insert(
            format!("{kind}/{ns}/{}", meta.name.clone().unwrap_or_default()),
            meta.resource_version.clone().unwrap_or_default(),
        );
    }
}

#[tokio::test]
async fn a_restarted_operator_writes_nothing_over_ready_tenants() {
    // Its own control plane: the restarted operator reconciles every tenant it sees, and on
    // the shared one it would act on other tests' tenants while they run (and count them).
    let (pcp, env) = PrivateControlPlane::for_operators("idle-restart").await;
    let first = pcp.operator();
    let p = env.name("p");
    env.apply_profile(profile(&p, "2")).await;
    let names: Vec<String> = (0..3).map(|i| env.name(&format!("idle{i}"))).collect();
    for t in &names {
        tenant(t, &p, "idle-admins")
            .environments(&["prod", "dev"])
            .set("network", json!({"egress": "Restricted"}))
            .apply(&env.admin)
            .await
            .unwrap();
    }
    for t in &names {
        wait_ready(&env.admin, t).await;
        // Quota status is written by the quota controller, then summed into the tenant's
        // status: wait for both namespaces' caps (2 × 20 pods) to be in.
        eventually("usage summed over both namespaces", CONVERGE, || async {
            let tenant = Api::<Tenant>::all(env.admin.clone()).get(t).await.ok()?;
            (tenant.status?.usage.get("pods")?.hard.0 == "40").then_some(())
        })
        .await;
    }
    let versions = || async {
        let mut v = BTreeMap::new();
        for t in &names {
            let tenant = Api::<Tenant>::all(env.admin.clone()).get(t).await.unwrap();
            v.insert(
                format!("tenant/{t}"),
                tenant.metadata.resource_version.unwrap(),
            );
            for ns in tenant.status.unwrap().namespaces {
                let n = Api::<Namespace>::all(env.admin.clone())
                    .get(&ns)
                    .await
                    .unwrap();
                v.insert(format!("ns/{ns}"), n.metadata.resource_version.unwrap());
                versions_of::<RoleBinding>(&env.admin, &ns, t, "rb", &mut v).await;
                versions_of::<NetworkPolicy>(&env.admin, &ns, t, "np", &mut v).await;
                versions_of::<LimitRange>(&env.admin, &ns, t, "lr", &mut v).await;
            }
        }
        v
    };
    // Let quota status settle (the quota controller, not us, writes ResourceQuota status).
    let before = versions().await;
    let existing = Api::<Tenant>::all(env.admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len() as u64;

    // A restart: the first stops, a fresh one (no memory of what was applied) takes over.
    drop(first);
    let restarted = pcp.operator();
    eventually(
        "the restarted operator to reconcile every tenant",
        CONVERGE,
        || async { (restarted.reconciles("tenant") >= existing).then_some(()) },
    )
    .await;
    let after = versions().await;
    drop(restarted);
    assert_eq!(
        before, after,
        "no managed object or tenant status was written by the restart"
    );
}
