//! TenantRequests as real users: a ward admin asks under its district, the district owner
//! approves, the budget is carved from the district's and never overshoots, decisions are
//! checked by the API server (who may approve, never one's own request, final), and nobody
//! forges who asked.
use std::collections::BTreeMap;

use citycloud::api::tenant_request::{TOP_LEVEL_APPROVAL, TenantRequest};
use citycloud::api::{QuotaProfile, Tenant, TenantRequestPolicy};
use citycloud::quantity::Milli;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::builders::TenantBuilder;
use testbed::fixtures::{CONVERGE, apply, apply_in, code, wait_ready};
use testbed::{TestEnv, eventually};

fn profile(name: &str, tenant_cpu: &str) -> String {
    format!(
        r#"
apiVersion: citycloud.io/v1alpha1
kind: QuotaProfile
metadata: {{name: {name}}}
spec:
  namespace: {{requests.cpu: "4", pods: "20"}}
  tenant: {{requests.cpu: "{tenant_cpu}"}}
  limits: {{defaultRequest: {{cpu: 100m, memory: 32Mi}}, default: {{cpu: 100m, memory: 32Mi}}}}
"#
    )
}

/// A district with `budget` CPUs and the profile its wards may ask for (`ward_cpu` each).
struct District {
    name: String,
    ns: String,
    owners: String,
    ward_profile: String,
}

/// `who` asks the district for a ward (`(request name, tenant name)`): the request is Denied
/// for budget, its message giving `numbers`.
async fn ask_denied_for_budget(
    env: &TestEnv,
    who: &kube::Client,
    d: &District,
    (request, tenant): (&str, &str),
    numbers: &str,
) {
    apply_in::<TenantRequest>(
        who,
        &d.ns,
        &request_yaml(request, tenant, &d.ward_profile, ""),
    )
    .await
    .unwrap();
    let denied = wait_state(&env.admin, &d.ns, request, "Denied").await;
    let c = condition(&denied, "Denied");
    assert_eq!(c.reason, "BudgetExceeded");
    assert!(c.message.contains(numbers), "{}", c.message);
}

async fn district(env: &TestEnv, base: &str, budget: &str, ward_cpu: &str) -> District {
    let (name, p, wp) = (
        env.name(base),
        env.name(&format!("{base}-p")),
        env.name(&format!("{base}-wp")),
    );
    let owners = format!("{name}-admins");
    apply::<QuotaProfile>(&env.admin, &profile(&p, budget))
        .await
        .unwrap();
    apply::<QuotaProfile>(&env.admin, &profile(&wp, ward_cpu))
        .await
        .unwrap();
    let tenant = format!(
        r#"
apiVersion: citycloud.io/v1alpha1
kind: Tenant
metadata: {{name: {name}}}
spec:
  displayName: "Ủy ban nhân dân quận {name}"
  owners: [{{kind: Group, name: {owners}}}]
  quotaProfile: {p}
"#
    );
    apply::<Tenant>(&env.admin, &tenant).await.unwrap();
    wait_ready(&env.admin, &name).await;
    District {
        ns: format!("{name}-prod"),
        name,
        owners,
        ward_profile: wp,
    }
}

fn request_yaml(name: &str, tenant: &str, profile: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: citycloud.io/v1alpha1
kind: TenantRequest
metadata: {{name: {name}}}
spec:
  tenant: {tenant}
  template:
    displayName: "Ủy ban nhân dân phường {tenant}"
    owners: [{{kind: Group, name: {tenant}-admins}}]
    quotaProfile: {profile}
  justification: "Phường mới thành lập theo Nghị quyết của Ủy ban Thường vụ Quốc hội"
{extra}
"#
    )
}

/// Adds the decision `type_` (Approved or Denied) as `client`, on the status subresource, as
/// `kubectl patch --subresource=status` does; the API server records who decided. The write
/// carries the resourceVersion read, and is retried on a conflict (the operator may write the
/// status in between), as a client does.
async fn decide(
    client: &kube::Client,
    ns: &str,
    name: &str,
    type_: &str,
) -> Result<TenantRequest, kube::Error> {
    let api = Api::<TenantRequest>::namespaced(client.clone(), ns);
    let mut attempts = 0;
    loop {
        let current = api.get_status(name).await?;
        let mut conditions = current
            .status
            .as_ref()
            .map(|s| serde_json::to_value(&s.conditions).unwrap_or_default())
            .unwrap_or_else(|| json!([]));
        if let Some(list) = conditions.as_array_mut() {
            list.push(
                json!({"type": type_, "status": "True", "reason": format!("{type_}ByOwner"),
                "message": "xem xét và quyết định", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
            );
        }
        let patch = json!({"metadata": {"resourceVersion": current.resource_version()},
            "status": {"conditions": conditions}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(e) if code(&e) == Some(409) && attempts < 10 => attempts += 1,
            other => return other,
        }
    }
}

/// Waits until the operator has seen the request (status.state set) and returns it.
async fn wait_state(client: &kube::Client, ns: &str, name: &str, state: &str) -> TenantRequest {
    let api = Api::<TenantRequest>::namespaced(client.clone(), ns);
    eventually(
        &format!("request {ns}/{name} {state}"),
        CONVERGE,
        || async {
            let r = api.get(name).await.ok()?;
            (r.status.as_ref()?.state.as_deref() == Some(state)).then_some(r)
        },
    )
    .await
}

fn condition<'a>(
    r: &'a TenantRequest,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    r.condition(type_)
        .unwrap_or_else(|| panic!("{type_} on {:?}", r.status))
}

fn refused<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) -> String {
    let err = r.err().unwrap_or_else(|| panic!("{what} was allowed"));
    assert!(matches!(code(&err), Some(403) | Some(422)), "{what}: {err}");
    err.to_string()
}

/// `kubectl auth can-i approve tenants/<tenant>` as `client`.
async fn can_approve(client: &kube::Client, tenant: &str) -> bool {
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {
        "resourceAttributes": {"group": "citycloud.io", "resource": "tenants",
            "verb": "approve", "name": tenant}}}))
    .unwrap();
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn a_ward_admin_requests_under_its_district_and_the_district_owner_approves() {
    let env = TestEnv::with_operator().await;
    let d = district(&env, "quan", "4", "1").await;
    let other = district(&env, "quan-khac", "4", "1").await;
    let ward = env.name("phuong");
    let (ward_admin, owner, other_owner) = (
        env.name("ward-admin"),
        env.name("district-owner"),
        env.name("other-owner"),
    );
    let ward_admin = env.user(&ward_admin, &[&d.owners]).await;
    let owner_name = env.name("district-owner");
    let owner = env.user(&owner, &[&d.owners]).await;
    let other_owner = env.user(&other_owner, &[&other.owners]).await;

    // Who may approve for whom is one RBAC question, for auditors.
    eventually(
        "owners hold approve on their own tenant",
        CONVERGE,
        || async { can_approve(&owner, &d.name).await.then_some(()) },
    )
    .await;
    assert!(!can_approve(&other_owner, &d.name).await);
    assert!(!can_approve(&owner, &other.name).await);
    assert!(!can_approve(&owner, TOP_LEVEL_APPROVAL).await);

    // The API server records who asked.
    let yaml = request_yaml("phuong-moi", &ward, &d.ward_profile, "");
    let created = apply_in::<TenantRequest>(&ward_admin, &d.ns, &yaml)
        .await
        .expect("the ward admin (an owner of the district) may ask");
    let asked = created.spec.requested_by.clone().expect("requestedBy");
    assert_eq!(asked.username, env.name("ward-admin"));
    assert_eq!(asked.groups, [d.owners.as_str(), "system:authenticated"]);
    let pending = wait_state(&env.admin, &d.ns, "phuong-moi", "Pending").await;
    assert_eq!(
        pending.status.as_ref().and_then(|s| s.parent.as_deref()),
        Some(d.name.as_str())
    );
    assert!(
        condition(&pending, "Provisioned")
            .message
            .contains(&format!("approve on tenants/{}", d.name))
    );

    // Not the requester, even holding approve; not another district's owner, even made admin
    // of the district's namespace.
    let msg = refused(
        decide(&ward_admin, &d.ns, "phuong-moi", "Approved").await,
        "approving one's own request",
    );
    assert!(msg.contains("own TenantRequest"), "{msg}");
    let grant: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "borrowed-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": env.name("other-owner")}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(env.admin.clone(), &d.ns)
        .create(&PostParams::default(), &grant)
        .await
        .unwrap();
    let borrowed = Api::<TenantRequest>::namespaced(other_owner.clone(), &d.ns);
    eventually("the borrowed admin role in effect", CONVERGE, || async {
        borrowed.get_status("phuong-moi").await.ok()
    })
    .await;
    let msg = refused(
        decide(&other_owner, &d.ns, "phuong-moi", "Approved").await,
        "another district's owner approving",
    );
    assert!(
        msg.contains(&format!("approve on tenants/{}", d.name)),
        "{msg}"
    );

    decide(&owner, &d.ns, "phuong-moi", "Approved")
        .await
        .expect("the district owner approves");
    let done = wait_state(&env.admin, &d.ns, "phuong-moi", "Provisioned").await;
    let status = done.status.clone().unwrap_or_default();
    assert_eq!(status.decided_by.as_deref(), Some(owner_name.as_str()));
    assert_eq!(status.tenant.as_deref(), Some(ward.as_str()));
    let tenant = wait_ready(&env.admin, &ward).await;
    assert_eq!(tenant.spec.parent.as_deref(), Some(d.name.as_str()));
    let annotations = tenant.annotations();
    assert_eq!(
        annotations["citycloud.io/requested-by"],
        env.name("ward-admin")
    );
    assert_eq!(annotations["citycloud.io/approved-by"], owner_name);
    // The ward's new owners may now approve under the ward.
    let ward_owner = env
        .user(&env.name("ward-owner"), &[&format!("{ward}-admins")])
        .await;
    eventually("the ward's owners approve under it", CONVERGE, || async {
        can_approve(&ward_owner, &ward).await.then_some(())
    })
    .await;

    // The district's own namespaces now share 4 - 1 CPUs.
    let quotas = Api::<ResourceQuota>::namespaced(env.admin.clone(), &d.ns);
    eventually("the district's quota carved", CONVERGE, || async {
        let q = quotas.get("citycloud-quota").await.ok()?;
        let hard = q.spec?.hard?.get("requests.cpu").cloned()?;
        (Milli::of(&hard).ok()? <= Milli(3000)).then_some(())
    })
    .await;

    // Re-applying the request from Git (the very manifest, forged requestedBy included)
    // changes nothing.
    let api = Api::<TenantRequest>::namespaced(env.admin.clone(), &d.ns);
    let before = api.get("phuong-moi").await.unwrap();
    let again = apply_in::<TenantRequest>(&ward_admin, &d.ns, &yaml)
        .await
        .expect("re-applying the same request");
    assert_eq!(again.resource_version(), before.resource_version());
    assert_eq!(again.spec, before.spec);
    // A decision is final: no flipping an approval to a denial.
    refused(
        decide(&owner, &d.ns, "phuong-moi", "Denied").await,
        "denying an approved request",
    );
    // Requests are the audit trail; deleting one never touches the Tenant.
    Api::<TenantRequest>::namespaced(env.admin.clone(), &d.ns)
        .delete("phuong-moi", &DeleteParams::default())
        .await
        .unwrap();
    let after = Api::<Tenant>::all(env.admin.clone())
        .get(&ward)
        .await
        .unwrap();
    assert!(after.metadata.deletion_timestamp.is_none());
    assert!(after.owner_references().is_empty());
    assert_eq!(after.metadata.generation, tenant.metadata.generation);
}

#[tokio::test]
async fn a_request_over_the_parents_budget_is_denied_with_the_numbers_and_stays_denied() {
    let env = TestEnv::with_operator().await;
    let d = district(&env, "quan-nho", "2", "3").await;
    let ward = env.name("phuong-lon");
    let ward_admin = env.user(&env.name("ward-admin"), &[&d.owners]).await;
    let owner = env.user(&env.name("district-owner"), &[&d.owners]).await;
    ask_denied_for_budget(
        &env,
        &ward_admin,
        &d,
        ("phuong-lon", &ward),
        "requests.cpu: asks for 3 but 2 of the parent's budget is left",
    )
    .await;
    // The requester sees why in the events of the namespace too.
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(ward_admin.clone(), &d.ns);
    eventually("a BudgetExceeded event", CONVERGE, || async {
        events
            .list(&ListParams::default().fields("involvedObject.name=phuong-lon"))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("BudgetExceeded"))
    })
    .await;
    // Final: the owner can neither approve it nor take the denial back.
    let msg = refused(
        decide(&owner, &d.ns, "phuong-lon", "Approved").await,
        "approving a denied request",
    );
    assert!(msg.contains("final") || msg.contains("never both"), "{msg}");
    let api = Api::<TenantRequest>::namespaced(owner.clone(), &d.ns);
    refused(
        api.patch_status(
            "phuong-lon",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": []}})),
        )
        .await,
        "removing the denial",
    );
    assert!(
        Api::<Tenant>::all(env.admin.clone())
            .get_opt(&ward)
            .await
            .unwrap()
            .is_none(),
        "nothing created"
    );
}

#[tokio::test]
async fn two_concurrent_approvals_that_together_exceed_the_budget_never_both_take_effect() {
    let env = TestEnv::with_operator().await;
    // 3 CPUs: either ward's 2 fits alone, both do not.
    let d = district(&env, "quan-chat", "3", "2").await;
    let ward_admin = env.user(&env.name("ward-admin"), &[&d.owners]).await;
    let owner = env.user(&env.name("district-owner"), &[&d.owners]).await;
    let wards = [env.name("phuong-a"), env.name("phuong-b")];
    for (i, w) in wards.iter().enumerate() {
        apply_in::<TenantRequest>(
            &ward_admin,
            &d.ns,
            &request_yaml(&format!("r{i}"), w, &d.ward_profile, ""),
        )
        .await
        .unwrap();
        wait_state(&env.admin, &d.ns, &format!("r{i}"), "Pending").await;
    }
    // Both approvals land together: the operator reconciles the two requests concurrently, and
    // each reads the parent fresh and writes its reservation under the parent's
    // resourceVersion. (Not with a second operator: other tests share this control plane.)
    let (a, b) = tokio::join!(
        decide(&owner, &d.ns, "r0", "Approved"),
        decide(&owner, &d.ns, "r1", "Approved")
    );
    // The operator may have denied the second before its approval arrived (the first took the
    // budget): the approval is then refused, a decision being final. At least one goes through.
    assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");

    let api = Api::<TenantRequest>::namespaced(env.admin.clone(), &d.ns);
    let over = |r: &TenantRequest| {
        r.condition("Provisioned")
            .is_some_and(|c| c.status == "False" && c.reason == "BudgetExceeded")
            || r.condition("Denied")
                .is_some_and(|c| c.reason == "BudgetExceeded")
    };
    let (won, lost) = eventually(
        "one provisioned, one refused for budget",
        CONVERGE,
        || async {
            let r0 = api.get("r0").await.ok()?;
            let r1 = api.get("r1").await.ok()?;
            let state = |r: &TenantRequest| r.status.as_ref().and_then(|s| s.state.clone());
            match (state(&r0).as_deref(), state(&r1).as_deref()) {
                (Some("Provisioned"), _) if over(&r1) => Some((r0, r1)),
                (_, Some("Provisioned")) if over(&r0) => Some((r1, r0)),
                _ => None,
            }
        },
    )
    .await;
    let refusal = lost
        .condition("Denied")
        .or(lost.condition("Provisioned"))
        .expect("a refusal");
    let message = &refusal.message;
    assert!(
        message.contains("requests.cpu: asks for 2 but 1"),
        "{message}"
    );
    let tenants = Api::<Tenant>::all(env.admin.clone());
    assert!(tenants.get_opt(&won.spec.tenant).await.unwrap().is_some());
    assert!(
        tenants.get_opt(&lost.spec.tenant).await.unwrap().is_none(),
        "nothing half-created"
    );
    // The parent's own namespaces and its children's budgets within the parent's budget.
    let parent = tenants.get(&d.name).await.unwrap();
    let reserved: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(&parent.annotations()["citycloud.io/budget-reservations"]).unwrap();
    assert_eq!(reserved.len(), 1, "{reserved:?}");
    let quotas = Api::<ResourceQuota>::all(env.admin.clone());
    eventually("parent + children within the budget", CONVERGE, || async {
        let list = quotas
            .list(&ListParams::default().labels(&format!("citycloud.io/tenant={}", d.name)))
            .await
            .ok()?;
        let own: i128 = list
            .items
            .iter()
            .filter_map(|q| {
                q.status
                    .as_ref()?
                    .hard
                    .as_ref()?
                    .get("requests.cpu")
                    .cloned()
            })
            .filter_map(|h| Milli::of(&h).ok())
            .map(|m| m.0)
            .sum();
        (own + 2000 <= 3000).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_hostile_requester_cannot_forge_who_asked_nor_the_parent_nor_ask_outside_its_tree() {
    let env = TestEnv::with_operator().await;
    let d = district(&env, "quan-gian", "4", "1").await;
    let other = district(&env, "quan-ben", "4", "1").await;
    let mallory = env.user(&env.name("mallory"), &[&d.owners]).await;
    // She writes that the chairman asked, as a cluster admin; the API server records her.
    let forged = apply_in::<TenantRequest>(
        &mallory,
        &d.ns,
        &request_yaml(
            "r",
            &env.name("phuong-x"),
            &d.ward_profile,
            "  requestedBy: {username: chu-tich-ubnd, groups: [system:masters]}",
        ),
    )
    .await
    .unwrap();
    let recorded = forged.spec.requested_by.expect("requestedBy");
    assert_eq!(recorded.username, env.name("mallory"));
    assert_eq!(recorded.groups, [d.owners.as_str(), "system:authenticated"]);
    wait_state(&env.admin, &d.ns, "r", "Pending").await;
    let api = Api::<TenantRequest>::namespaced(mallory.clone(), &d.ns);
    // status.parent: the operator's, from the namespace.
    refused(
        api.patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"parent": other.name}})),
        )
        .await,
        "rewriting status.parent",
    );
    // The spec is immutable: no swapping the profile after approval is asked.
    refused(
        api.patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"quotaProfile": "huge"}}})),
        )
        .await,
        "changing the spec",
    );
    // Not in someone else's tree (no rights there), nor for the namespace's own tenant.
    refused(
        apply_in::<TenantRequest>(
            &mallory,
            &other.ns,
            &request_yaml("r", &env.name("phuong-y"), &d.ward_profile, ""),
        )
        .await,
        "asking under another district",
    );
    let msg = refused(
        apply_in::<TenantRequest>(
            &mallory,
            &d.ns,
            &request_yaml("self", &d.name, &d.ward_profile, ""),
        )
        .await,
        "asking to change its own tenant",
    );
    assert!(msg.contains("does not request changes to itself"), "{msg}");
    // Nor in a namespace of nobody's, even as its admin.
    let scratch = env.name("scratch");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": scratch}})).unwrap();
    Api::<Namespace>::all(env.admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let grant: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": env.name("mallory")}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(env.admin.clone(), &scratch)
        .create(&PostParams::default(), &grant)
        .await
        .unwrap();
    // The API server's RBAC cache follows the binding a moment later: until then RBAC, not
    // the admission policy under test, would refuse her.
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {
        "resourceAttributes": {"group": "citycloud.io", "resource": "tenantrequests",
            "verb": "create", "namespace": scratch}}}))
    .unwrap();
    let reviews = Api::<SelfSubjectAccessReview>::all(mallory.clone());
    eventually(
        "mallory admin in the scratch namespace",
        CONVERGE,
        || async {
            let r = reviews.create(&PostParams::default(), &review).await.ok()?;
            r.status.is_some_and(|s| s.allowed).then_some(())
        },
    )
    .await;
    let msg = refused(
        apply_in::<TenantRequest>(
            &mallory,
            &scratch,
            &request_yaml("r", &env.name("phuong-z"), &d.ward_profile, ""),
        )
        .await,
        "asking in a namespace of no tenant",
    );
    assert!(msg.contains("neither"), "{msg}");
    // Privileged pods cannot be asked for.
    refused(
        apply_in::<TenantRequest>(
            &mallory,
            &d.ns,
            &request_yaml("priv", &env.name("phuong-p"), &d.ward_profile, "").replace(
                "    quotaProfile:",
                "    podSecurity: privileged\n    quotaProfile:",
            ),
        )
        .await,
        "asking for privileged",
    );
}

#[tokio::test]
async fn a_stolen_operator_token_approves_nothing_and_creates_no_privileged_tenant() {
    let env = TestEnv::with_operator().await;
    let d = district(&env, "quan-trom", "4", "1").await;
    let asker = env.user(&env.name("asker"), &[&d.owners]).await;
    apply_in::<TenantRequest>(
        &asker,
        &d.ns,
        &request_yaml("r", &env.name("phuong-t"), &d.ward_profile, ""),
    )
    .await
    .unwrap();
    wait_state(&env.admin, &d.ns, "r", "Pending").await;
    let thief = env.operator_client().await;
    // Approving as a person, or as a policy that says nothing.
    let msg = refused(
        decide(&thief, &d.ns, "r", "Approved").await,
        "the operator approving without a policy",
    );
    assert!(msg.contains("TenantRequestPolicy"), "{msg}");
    // A Tenant with the request annotations, but privileged or to be deleted with its data.
    let tenants = Api::<Tenant>::all(thief.clone());
    for (what, extra) in [
        ("privileged", "  podSecurity: privileged"),
        ("deletionPolicy Delete", "  deletionPolicy: Delete"),
    ] {
        let t: Tenant = serde_yaml_ng::from_str(&format!(
            r#"
metadata:
  name: {}
  annotations: {{citycloud.io/request: x/y, citycloud.io/requested-by: a, citycloud.io/approved-by: b}}
spec:
  displayName: Evil
  owners: [{{kind: User, name: mallory}}]
{extra}
"#,
            env.name("evil")
        ))
        .unwrap();
        refused(tenants.create(&PostParams::default(), &t).await, what);
    }
    refused(
        tenants.delete(&d.name, &DeleteParams::default()).await,
        "deleting a Tenant",
    );
}

#[tokio::test]
async fn a_policy_in_git_approves_a_small_ward_without_a_person_up_to_its_limit() {
    let env = TestEnv::with_operator().await;
    let d = district(&env, "quan-tu-dong", "4", "1").await;
    let level = env.name("district");
    Api::<Tenant>::all(env.admin.clone())
        .patch(
            &d.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"citycloud.io/level": level}}})),
        )
        .await
        .unwrap();
    let policy = env.name("phuong-nho");
    apply::<TenantRequestPolicy>(
        &env.admin,
        &format!(
            r#"
apiVersion: citycloud.io/v1alpha1
kind: TenantRequestPolicy
metadata: {{name: {policy}}}
spec:
  parentSelector: {{matchLabels: {{citycloud.io/level: {level}}}}}
  newChildren: {{profiles: [{}], maxChildren: 1}}
"#,
            d.ward_profile
        ),
    )
    .await
    .unwrap();
    let ward_admin = env.user(&env.name("ward-admin"), &[&d.owners]).await;
    let ward = env.name("phuong-tu-dong");
    let started = std::time::Instant::now();
    apply_in::<TenantRequest>(
        &ward_admin,
        &d.ns,
        &request_yaml("r", &ward, &d.ward_profile, ""),
    )
    .await
    .unwrap();
    wait_ready(&env.admin, &ward).await;
    // The figure of the issue, measured here and reported (never asserted on).
    eprintln!(
        "automatic approval: request created to Tenant Ready in {} ms",
        started.elapsed().as_millis()
    );
    let done = wait_state(&env.admin, &d.ns, "r", "Provisioned").await;
    assert_eq!(condition(&done, "Approved").reason, "ApprovedByPolicy");
    assert_eq!(
        done.status.as_ref().and_then(|s| s.decided_by.clone()),
        Some(format!("TenantRequestPolicy/{policy}"))
    );
    assert_eq!(
        wait_ready(&env.admin, &ward).await.annotations()["citycloud.io/approved-by"],
        format!("TenantRequestPolicy/{policy}")
    );
    // The district has its one automatic ward: the next waits for a person.
    apply_in::<TenantRequest>(
        &ward_admin,
        &d.ns,
        &request_yaml("r2", &env.name("phuong-hai"), &d.ward_profile, ""),
    )
    .await
    .unwrap();
    let waiting = wait_state(&env.admin, &d.ns, "r2", "Pending").await;
    assert_eq!(
        condition(&waiting, "Provisioned").reason,
        "AwaitingApproval"
    );
    assert!(waiting.condition("Approved").is_none());
}

/// deploy/samples/tenant-requests.yaml as its README says to apply it, on a control plane
/// running the samples (the chart test's): each request created by an owner of its parent,
/// the ward approved by another district owner, the over-sized one denied for budget, the
/// department's unit approved by the sample policy. Returns the Tenants created.
pub async fn the_samples_ask_and_are_decided(
    cluster: &testbed::controlplane::ControlPlane,
    admin: &kube::Client,
) -> Vec<String> {
    let user = |name: &'static str, group: &'static str| async move {
        cluster
            .identity(name, &[group])
            .expect("a client certificate")
            .client(cluster)
            .await
            .expect("a client")
    };
    let text = std::fs::read_to_string(
        testbed::binaries::repo_root().join("deploy/samples/tenant-requests.yaml"),
    )
    .expect("tenant-requests.yaml");
    let policies = std::fs::read_to_string(
        testbed::binaries::repo_root().join("deploy/samples/tenant-request-policies.yaml"),
    )
    .expect("tenant-request-policies.yaml");
    testbed::operator::apply_yaml_documents(admin, &policies, "platform-engineer")
        .await
        .expect("the sample policies");
    let mai = user("tran.thi.mai", "ubnd-le-chan-admins").await;
    let hung = user("pham.quoc.hung", "sotttt-admins").await;
    for doc in text.split("\n---\n") {
        let asker = if doc.contains("namespace: sotttt-prod") {
            &hung
        } else {
            &mai
        };
        eventually("the sample request created", CONVERGE, || async {
            testbed::operator::apply_yaml_documents(asker, doc, "agency")
                .await
                .ok()
        })
        .await;
    }
    let district = "ubnd-le-chan-prod";
    let denied = wait_state(admin, district, "phuong-qua-lon", "Denied").await;
    assert_eq!(condition(&denied, "Denied").reason, "BudgetExceeded");
    let unit = wait_state(
        admin,
        "sotttt-prod",
        "trung-tam-chuyen-doi-so",
        "Provisioned",
    )
    .await;
    assert_eq!(
        unit.status.and_then(|s| s.decided_by).as_deref(),
        Some("TenantRequestPolicy/don-vi-truc-thuoc-so")
    );
    wait_state(admin, district, "phuong-du-hang-kenh", "Pending").await;
    let nam = user("le.van.nam", "ubnd-le-chan-admins").await;
    decide(&nam, district, "phuong-du-hang-kenh", "Approved")
        .await
        .expect("another district owner approves");
    wait_state(admin, district, "phuong-du-hang-kenh", "Provisioned").await;
    vec![
        "phuong-du-hang-kenh".into(),
        "trung-tam-chuyen-doi-so".into(),
    ]
}

#[tokio::test]
async fn a_new_top_level_agency_is_requested_in_the_requests_namespace_and_approved_by_the_platform_team()
 {
    let env = TestEnv::with_operator().await;
    let ns = "citycloud-requests";
    let (asker, platform) = (env.name("so-moi-asker"), env.name("platform-engineer"));
    let (askers, approvers) = (env.name("agency-askers"), env.name("platform-team"));
    // As the chart's tenantRequests.requesterGroups / approverGroups values bind them.
    for (kind, name, group) in [
        ("RoleBinding", "citycloud-requesters", &askers),
        ("RoleBinding", "citycloud-approvers", &approvers),
        (
            "ClusterRoleBinding",
            "citycloud-top-level-approvers",
            &approvers,
        ),
    ] {
        let role_kind = if kind == "RoleBinding" {
            "Role"
        } else {
            "ClusterRole"
        };
        let binding = json!({
            "metadata": {"name": format!("{name}-{}", env.name("t"))},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]
        });
        if kind == "RoleBinding" {
            Api::<RoleBinding>::namespaced(env.admin.clone(), ns)
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(binding).unwrap(),
                )
                .await
                .unwrap();
        } else {
            Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(env.admin.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(binding).unwrap(),
                )
                .await
                .unwrap();
        }
    }
    let asker = env.user(&asker, &[&askers]).await;
    let platform_client = env.user(&platform, &[&approvers]).await;
    eventually(
        "the platform team holds approve on the top level",
        CONVERGE,
        || async {
            can_approve(&platform_client, TOP_LEVEL_APPROVAL)
                .await
                .then_some(())
        },
    )
    .await;
    let p = env.name("so-moi-p");
    apply::<QuotaProfile>(&env.admin, &profile(&p, "2"))
        .await
        .unwrap();
    let agency = env.name("so-moi");
    let name = env.name("so-moi");
    eventually("the requester's role in effect", CONVERGE, || async {
        apply_in::<TenantRequest>(&asker, ns, &request_yaml(&name, &agency, &p, ""))
            .await
            .ok()
    })
    .await;
    let pending = wait_state(&env.admin, ns, &name, "Pending").await;
    assert_eq!(pending.status.and_then(|s| s.parent), None);
    assert!(
        !can_approve(&asker, TOP_LEVEL_APPROVAL).await,
        "asking is not approving"
    );
    decide(&platform_client, ns, &name, "Approved")
        .await
        .expect("the platform team approves");
    wait_state(&env.admin, ns, &name, "Provisioned").await;
    let tenant = wait_ready(&env.admin, &agency).await;
    assert_eq!(tenant.spec.parent, None);
    assert_eq!(tenant.annotations()["citycloud.io/approved-by"], platform);
}

#[tokio::test]
async fn a_reservation_written_from_a_stale_read_of_the_parent_is_refused() {
    let env = TestEnv::with_operator().await;
    let d = district(&env, "quan-khoa", "4", "1").await;
    let operator = env.operator_client().await;
    let tenants = Api::<Tenant>::all(operator.clone());
    let read = tenants.get(&d.name).await.unwrap();
    let budget = |cpu: &str| -> citycloud::quota::carve::Reservations {
        serde_json::from_value(json!({"phuong": {"requests.cpu": cpu}})).unwrap()
    };
    // Two approvals read the same parent; the first to write wins, the second must re-read.
    assert!(
        citycloud::tenant_request::reserve(&operator, &read, &budget("3"))
            .await
            .unwrap()
    );
    assert!(
        !citycloud::tenant_request::reserve(&operator, &read, &budget("2"))
            .await
            .unwrap(),
        "a write from a stale read went through"
    );
    let now = tenants.get(&d.name).await.unwrap();
    assert_eq!(citycloud::quota::carve::reservations(&now), budget("3"));
}

/// The `requests.cpu` the operator gives `ns`'s tenant quota (spec.hard), in millicores.
async fn own_cpu(client: &kube::Client, ns: &str) -> Option<i128> {
    let q = Api::<ResourceQuota>::namespaced(client.clone(), ns)
        .get_opt("citycloud-quota")
        .await
        .ok()??;
    let hard = q.spec?.hard?.get("requests.cpu").cloned()?;
    Milli::of(&hard).ok().map(|m| m.0)
}

/// Waits until `ns`'s quota gives `milli` of requests.cpu.
async fn wait_own_cpu(client: &kube::Client, ns: &str, milli: i128) {
    eventually(&format!("{ns} quota at {milli}m CPU"), CONVERGE, || async {
        (own_cpu(client, ns).await == Some(milli)).then_some(())
    })
    .await;
}

/// Waits until the Tenant's QuotaReady has `reason`; returns its message.
async fn wait_quota_reason(client: &kube::Client, tenant: &str, reason: &str) -> String {
    let api = Api::<Tenant>::all(client.clone());
    eventually(
        &format!("Tenant {tenant} QuotaReady {reason}"),
        CONVERGE,
        || async {
            let t = api.get(tenant).await.ok()?;
            let c = citycloud::api::conditions::find(&t.status?.conditions, "QuotaReady")?.clone();
            (c.reason == reason).then_some(c.message)
        },
    )
    .await
}

/// Deletes Tenant `name` as the admin and waits until it is gone (its cleanup done).
async fn delete_tenant(client: &kube::Client, name: &str) {
    let api = Api::<Tenant>::all(client.clone());
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(&format!("Tenant {name} gone"), CONVERGE, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_child_created_directly_is_carved_from_its_parent_and_deleting_it_gives_the_budget_back()
{
    let env = TestEnv::with_operator().await;
    // 3 CPUs; a ward on the ward profile has 2.
    let d = district(&env, "quan-truc-tiep", "3", "2").await;
    wait_own_cpu(&env.admin, &d.ns, 3000).await;
    // A platform engineer creates a ward directly (no TenantRequest, no reservation).
    let ward = |base: &str| {
        TenantBuilder::new(&env.name(base), &d.ward_profile).set("parent", json!(d.name))
    };
    let a = ward("phuong-a");
    env.tenant_ready(&a).await;
    wait_own_cpu(&env.admin, &d.ns, 1000).await;
    wait_quota_reason(&env.admin, &d.name, "Applied").await;

    // A second one over-commits the district: its own namespaces get none, and it says so.
    let b = ward("phuong-b");
    env.tenant_ready(&b).await;
    wait_own_cpu(&env.admin, &d.ns, 0).await;
    let message = wait_quota_reason(&env.admin, &d.name, "BudgetOvercommitted").await;
    assert!(
        message.contains(
            "requests.cpu: the children's budgets add up to 4, over this tenant's budget of 3"
        ),
        "{message}"
    );
    let events = Api::<k8s_openapi::api::core::v1::Event>::all(env.admin.clone());
    eventually("a BudgetOvercommitted warning", CONVERGE, || async {
        events
            .list(&ListParams::default().fields(&format!("involvedObject.name={}", d.name)))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("BudgetOvercommitted")
                    && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;

    // Deleting the children gives their budgets back.
    delete_tenant(&env.admin, b.name()).await;
    wait_own_cpu(&env.admin, &d.ns, 1000).await;
    wait_quota_reason(&env.admin, &d.name, "Applied").await;
    delete_tenant(&env.admin, a.name()).await;
    wait_own_cpu(&env.admin, &d.ns, 3000).await;
}

#[tokio::test]
async fn a_request_that_fits_only_without_a_child_created_directly_is_denied_for_budget() {
    let env = TestEnv::with_operator().await;
    // 3 CPUs: a 2-CPU ward fits alone, not beside the 2-CPU ward created directly.
    let d = district(&env, "quan-day-du", "3", "2").await;
    let direct = TenantBuilder::new(&env.name("phuong-co-san"), &d.ward_profile)
        .set("parent", json!(d.name));
    env.tenant_ready(&direct).await;
    let ward_admin = env.user(&env.name("ward-admin"), &[&d.owners]).await;
    let ward = env.name("phuong-moi");
    ask_denied_for_budget(
        &env,
        &ward_admin,
        &d,
        ("phuong-moi", &ward),
        "requests.cpu: asks for 2 but 1 of the parent's budget is left",
    )
    .await;
    assert!(
        Api::<Tenant>::all(env.admin.clone())
            .get_opt(&ward)
            .await
            .unwrap()
            .is_none(),
        "nothing created"
    );
}
