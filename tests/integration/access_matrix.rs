//! Isolation, as an auditor proves it: for three tenants, every verb on every namespaced kind the
//! API server serves is asked of the API server (SubjectAccessReview) as each tenant's owners,
//! members and viewers, against the other tenants' namespaces and cluster-wide objects: nothing is
//! allowed. The same reviews must grant each role what it has at home, so a review that always
//! answers "denied" fails the test. Then alice, with her own certificate, tries concretely.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use citycloud::api::Tenant;
use futures::{StreamExt, stream};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use serde_json::json;
use testbed::builders::{Profile, TenantBuilder};
use testbed::fixtures::{CONVERGE, code, wait_ready};
use testbed::{TestEnv, eventually};

/// Reviews in flight at once: enough to take seconds, few enough for a 2-core test bed.
const IN_FLIGHT: usize = 32;
const RBAC: &str = "rbac.authorization.k8s.io";
const CITYCLOUD: &str = "citycloud.io";
const WRITE: [&str; 4] = ["create", "update", "patch", "delete"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Owners,
    Members,
    Viewers,
}

const ROLES: [Role; 3] = [Role::Owners, Role::Members, Role::Viewers];

/// One tenant of the matrix: its namespaces and the subjects its spec names.
struct Agency {
    tenant: String,
    namespaces: Vec<String>,
    owners: String,
    members: String,
    viewer: String,
}

impl Agency {
    fn new(env: &TestEnv, letter: &str) -> Self {
        let tenant = env.name(&format!("mx{letter}"));
        Agency {
            namespaces: vec![format!("{tenant}-prod"), format!("{tenant}-staging")],
            owners: format!("{tenant}-owners"),
            members: format!("{tenant}-members"),
            viewer: format!("{tenant}-auditor"),
            tenant,
        }
    }

    /// The user and groups a person in `role` authenticates as: a member of the owners or
    /// members Group, or the viewer User itself; every one also `system:authenticated`.
    fn subject(&self, role: Role) -> (String, Vec<String>) {
        let authenticated = "system:authenticated".to_string();
        match role {
            Role::Owners => (
                format!("{}-owner", self.tenant),
                vec![self.owners.clone(), authenticated],
            ),
            Role::Members => (
                format!("{}-member", self.tenant),
                vec![self.members.clone(), authenticated],
            ),
            Role::Viewers => (self.viewer.clone(), vec![authenticated]),
        }
    }

    fn tenant(&self, profile: &str) -> TenantBuilder {
        TenantBuilder::new(&self.tenant, profile)
            .owners(&self.owners)
            .members(&self.members)
            .viewer(&self.viewer)
            .environments(&["prod", "staging"])
    }
}

/// The matrix's QuotaProfile: `pods: 5` per namespace.
fn profile_of(name: &str, description: &str) -> Profile {
    Profile::new(name)
        .description(description)
        .namespace(json!({"pods": "5"}))
}

/// What a review asks: a verb on a resource (and subresource), one object when `name` is set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Action {
    group: String,
    resource: String,
    subresource: String,
    verb: String,
    name: String,
}

fn action(group: &str, resource: &str, verb: &str, name: &str) -> Action {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    Action {
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        verb: verb.into(),
        name: name.into(),
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        if !self.name.is_empty() {
            write!(f, " {}", self.name)?;
        }
        Ok(())
    }
}

/// Every namespaced resource and subresource the API server serves (every version of every
/// group, CityCloud's own included) with the verbs discovery lists, plus what RBAC checks that
/// discovery does not list, plus the objects the operator manages in a tenant namespace by name
/// (a grant limited to resourceNames answers only a review that names the object).
async fn namespaced_actions(admin: &kube::Client) -> Vec<Action> {
    let discovery = Discovery::new(admin.clone())
        .run()
        .await
        .expect("discovery of the API server's resources");
    let mut verbs: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for group in discovery.groups() {
        for version in group.versions() {
            for (ar, caps) in group.versioned_resources(version) {
                if caps.scope != Scope::Namespaced {
                    continue;
                }
                let resource = (ar.group.clone(), ar.plural.clone());
                verbs
                    .entry(resource)
                    .or_default()
                    .extend(caps.operations.iter().cloned());
                for (sub, sub_caps) in &caps.subresources {
                    let resource = (ar.group.clone(), format!("{}/{}", ar.plural, sub.plural));
                    verbs
                        .entry(resource)
                        .or_default()
                        .extend(sub_caps.operations.iter().cloned());
                }
            }
        }
    }
    let mut out: Vec<Action> = verbs
        .iter()
        .flat_map(|((g, r), vs)| vs.iter().map(|v| action(g, r, v, "")))
        .collect();
    // RBAC's own verbs: a RoleBinding in a namespace needs `bind` on the Role or ClusterRole it
    // names, checked in that namespace; writing a Role with more than one holds needs `escalate`;
    // acting as a ServiceAccount of the namespace needs `impersonate`.
    for verb in ["bind", "escalate"] {
        out.push(action(RBAC, "roles", verb, ""));
        out.push(action(RBAC, "clusterroles", verb, ""));
        for role in ["admin", "edit", "view"] {
            out.push(action(RBAC, "clusterroles", verb, role));
        }
    }
    out.push(action("", "serviceaccounts", "impersonate", ""));
    out.push(action("", "serviceaccounts", "impersonate", "default"));
    let managed = [
        (RBAC, "rolebindings", "citycloud-owners"),
        (RBAC, "rolebindings", "citycloud-members"),
        (RBAC, "rolebindings", "citycloud-viewers"),
        ("", "resourcequotas", "citycloud-quota"),
        ("", "limitranges", "citycloud-limits"),
        ("networking.k8s.io", "networkpolicies", "citycloud-ingress"),
        ("networking.k8s.io", "networkpolicies", "citycloud-egress"),
    ];
    for (g, r, name) in managed {
        for verb in ["get", "update", "patch", "delete"] {
            out.push(action(g, r, verb, name));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Cluster-scoped actions aimed at `target`: its Tenant, its namespaces (a namespace's own
/// requests carry it as their namespace), its reader ClusterRole, its people.
fn cluster_actions_against(target: &Agency) -> Vec<(String, Action)> {
    let t = &target.tenant;
    let mut out = Vec::new();
    for verb in ["get", "list", "watch", "update", "patch", "delete"] {
        out.push((String::new(), action(CITYCLOUD, "tenants", verb, t)));
    }
    for verb in ["get", "update", "patch"] {
        out.push((String::new(), action(CITYCLOUD, "tenants/status", verb, t)));
    }
    for ns in &target.namespaces {
        for verb in ["get", "update", "patch", "delete"] {
            out.push((ns.clone(), action("", "namespaces", verb, ns)));
        }
        for sub in ["namespaces/status", "namespaces/finalize"] {
            out.push((ns.clone(), action("", sub, "update", ns)));
        }
    }
    let reader = format!("citycloud:tenant:{t}");
    for verb in ["update", "patch", "delete", "bind", "escalate"] {
        out.push((String::new(), action(RBAC, "clusterroles", verb, &reader)));
    }
    for verb in ["update", "patch", "delete"] {
        out.push((
            String::new(),
            action(RBAC, "clusterrolebindings", verb, &reader),
        ));
    }
    out.push((
        String::new(),
        action("", "users", "impersonate", &target.viewer),
    ));
    for group in [&target.owners, &target.members] {
        out.push((String::new(), action("", "groups", "impersonate", group)));
    }
    out
}

/// Cluster-scoped actions that belong to no tenant: no agency may create tenants or namespaces,
/// change the sizes or the catalogue, grant itself cluster roles, or lift the guard rails.
fn cluster_actions(profile: &str) -> Vec<Action> {
    let mut out = Vec::new();
    for verb in ["list", "watch", "create", "deletecollection"] {
        out.push(action(CITYCLOUD, "tenants", verb, ""));
    }
    for verb in ["list", "watch", "create", "deletecollection"] {
        out.push(action("", "namespaces", verb, ""));
    }
    for resource in ["quotaprofiles", "sharedservices"] {
        for verb in WRITE.iter().chain(&["deletecollection"]) {
            out.push(action(CITYCLOUD, resource, verb, ""));
        }
        out.push(action(
            CITYCLOUD,
            &format!("{resource}/status"),
            "update",
            "",
        ));
    }
    for verb in ["update", "patch", "delete"] {
        out.push(action(CITYCLOUD, "quotaprofiles", verb, profile));
    }
    for resource in ["clusterroles", "clusterrolebindings"] {
        for verb in WRITE.iter().chain(&["deletecollection"]) {
            out.push(action(RBAC, resource, verb, ""));
        }
    }
    for verb in ["bind", "escalate"] {
        out.push(action(RBAC, "clusterroles", verb, ""));
        out.push(action(RBAC, "clusterroles", verb, "cluster-admin"));
    }
    let guard_rails = [
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        (
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
        ),
        (
            "admissionregistration.k8s.io",
            "validatingadmissionpolicybindings",
        ),
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
        ),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
        ),
    ];
    for (g, r) in guard_rails {
        for verb in WRITE {
            out.push(action(g, r, verb, ""));
        }
    }
    for verb in ["update", "patch", "delete"] {
        out.push(action("", "nodes", verb, ""));
    }
    out.push(action("", "nodes/proxy", "get", ""));
    out.push(action("", "persistentvolumes", "create", ""));
    out.push(action(
        "certificates.k8s.io",
        "certificatesigningrequests/approval",
        "update",
        "",
    ));
    for kind in ["users", "groups"] {
        out.push(action("", kind, "impersonate", ""));
    }
    out.push(action("", "groups", "impersonate", "system:masters"));
    out
}

/// One review: `role` of agency `from`, in `namespace` ("" for cluster-scoped), counted in the
/// matrix column `column` (a target agency, or `agencies.len()` for the cluster).
#[derive(Clone, Debug)]
struct Review {
    from: usize,
    role: Role,
    column: usize,
    namespace: String,
    action: Action,
}

/// Asks the API server, as the cluster admin, whether `user` in `groups` may do `review`.
async fn allowed(admin: &kube::Client, user: &str, groups: &[String], review: &Review) -> bool {
    let a = &review.action;
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(ResourceAttributes {
                namespace: some(&review.namespace),
                verb: Some(a.verb.clone()),
                group: Some(a.group.clone()),
                resource: Some(a.resource.clone()),
                subresource: some(&a.subresource),
                name: some(&a.name),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api = Api::<SubjectAccessReview>::all(admin.clone());
    let mut attempt = 0;
    loop {
        match api.create(&PostParams::default(), &sar).await {
            Ok(answer) => {
                return answer
                    .status
                    .expect("a SubjectAccessReview answers with a status")
                    .allowed;
            }
            Err(e @ kube::Error::Api(_)) => panic!("reviewing {a} in {:?}: {e}", review.namespace),
            // A kept-alive connection the server closed is no answer; retry it.
            Err(e) if attempt >= 5 => panic!("reviewing {a}: {e}"),
            Err(_) => attempt += 1,
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The result for agency `from`'s `role` doing `verb resource` in its own first namespace.
fn at_home(
    results: &[(Review, bool)],
    from: usize,
    role: Role,
    group: &str,
    resource: &str,
    verb: &str,
) -> bool {
    let wanted = action(group, resource, verb, "");
    results
        .iter()
        .find(|(r, _)| r.from == from && r.role == role && r.column == from && r.action == wanted)
        .unwrap_or_else(|| panic!("no review of {wanted} at home: did discovery miss it?"))
        .1
}

#[tokio::test]
async fn no_role_of_any_tenant_is_allowed_anything_in_another_tenants_namespaces() {
    let env = TestEnv::with_operator().await;
    let profile = env.name("mx");
    env.apply_profile(profile_of(&profile, "matrix")).await;
    let agencies: Vec<Agency> = ["a", "b", "c"]
        .iter()
        .map(|l| Agency::new(&env, l))
        .collect();
    for a in &agencies {
        a.tenant(&profile).apply(&env.admin).await.unwrap();
    }
    for a in &agencies {
        wait_ready(&env.admin, &a.tenant).await;
    }
    // Claims reach admin/edit/view through kube-controller-manager's aggregation, and the
    // authorizer follows new bindings from its cache: wait until owners may claim at home.
    let first = Review {
        from: 0,
        role: Role::Owners,
        column: 0,
        namespace: agencies[0].namespaces[0].clone(),
        action: action(CITYCLOUD, "sharedserviceclaims", "create", ""),
    };
    for a in &agencies {
        let (user, groups) = a.subject(Role::Owners);
        let review = Review {
            namespace: a.namespaces[1].clone(),
            ..first.clone()
        };
        eventually(
            &format!("{user} may claim shared services in {}", review.namespace),
            CONVERGE,
            || async {
                allowed(&env.admin, &user, &groups, &review)
                    .await
                    .then_some(())
            },
        )
        .await;
    }

    let namespaced = namespaced_actions(&env.admin).await;
    let cluster = cluster_actions(&profile);
    let mut reviews = Vec::new();
    for (from, _) in agencies.iter().enumerate() {
        for role in ROLES {
            let base = Review {
                from,
                role,
                ..first.clone()
            };
            for (column, target) in agencies.iter().enumerate() {
                for ns in &target.namespaces {
                    for a in &namespaced {
                        reviews.push(Review {
                            column,
                            namespace: ns.clone(),
                            action: a.clone(),
                            ..base.clone()
                        });
                    }
                }
                for (namespace, a) in cluster_actions_against(target) {
                    reviews.push(Review {
                        column,
                        namespace,
                        action: a,
                        ..base.clone()
                    });
                }
            }
            for a in &cluster {
                reviews.push(Review {
                    column: agencies.len(),
                    namespace: String::new(),
                    action: a.clone(),
                    ..base.clone()
                });
            }
        }
    }

    let started = Instant::now();
    let total = reviews.len();
    let results: Vec<(Review, bool)> = stream::iter(reviews)
        .map(|review| {
            let (user, groups) = agencies[review.from].subject(review.role);
            let admin = env.admin.clone();
            async move {
                let ok = allowed(&admin, &user, &groups, &review).await;
                (review, ok)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();

    // The matrix: rows are subjects, columns the tenants they target (their own marked) and the
    // cluster; each cell "allowed/checked".
    let mut cells: BTreeMap<(usize, Role, usize), (usize, usize)> = BTreeMap::new();
    for (r, ok) in &results {
        let cell = cells.entry((r.from, r.role, r.column)).or_default();
        cell.0 += usize::from(*ok);
        cell.1 += 1;
    }
    let mut table = format!(
        "cross-tenant access matrix: {total} SubjectAccessReviews ({} namespaced actions × 6 \
         namespaces, plus cluster-scoped) in {elapsed:.1?}, {IN_FLIGHT} in flight\n{:<16}",
        namespaced.len(),
        "subject"
    );
    for (i, _) in agencies.iter().enumerate() {
        table += &format!("| tenant {:<13}", (b'a' + i as u8) as char);
    }
    table += "| cluster\n";
    for (from, _) in agencies.iter().enumerate() {
        for role in ROLES {
            table += &format!(
                "{:<16}",
                format!("{} {role:?}", (b'a' + from as u8) as char)
            );
            for column in 0..=agencies.len() {
                let (ok, n) = cells[&(from, role, column)];
                let own = if column == from { " (own)" } else { "" };
                table += &format!("| {:<20}", format!("{ok}/{n}{own}"));
            }
            table += "\n";
        }
    }
    println!("{table}");

    // Nothing across tenants, nothing cluster-wide; each hole is named.
    let mut holes: Vec<String> = results
        .iter()
        .filter(|(r, ok)| *ok && r.column != r.from)
        .map(|(r, _)| {
            let subject = agencies[r.from].subject(r.role).0;
            format!(
                "{subject} ({:?}) may {} in {:?}",
                r.role, r.action, r.namespace
            )
        })
        .collect();
    holes.sort();
    assert!(
        holes.is_empty(),
        "{} cross-tenant or cluster-wide grants:\n{}\n{table}",
        holes.len(),
        holes.join("\n")
    );

    // The same reviews see what each role has at home, so they are not denying everything.
    for (i, a) in agencies.iter().enumerate() {
        let home = |role, group, resource, verb| at_home(&results, i, role, group, resource, verb);
        let t = &a.tenant;
        assert!(home(Role::Owners, "apps", "deployments", "create"), "{t}");
        assert!(home(Role::Owners, RBAC, "rolebindings", "create"), "{t}");
        assert!(
            home(Role::Owners, CITYCLOUD, "sharedserviceclaims", "create"),
            "{t}"
        );
        assert!(home(Role::Owners, "", "pods/exec", "create"), "{t}");
        assert!(home(Role::Owners, "", "secrets", "get"), "{t}");
        assert!(home(Role::Members, "apps", "deployments", "create"), "{t}");
        assert!(home(Role::Members, "", "secrets", "get"), "{t}");
        assert!(!home(Role::Members, RBAC, "rolebindings", "create"), "{t}");
        assert!(home(Role::Viewers, "", "pods", "list"), "{t}");
        assert!(
            home(Role::Viewers, CITYCLOUD, "sharedserviceclaims", "list"),
            "{t}"
        );
        assert!(!home(Role::Viewers, "", "pods", "create"), "{t}");
        assert!(!home(Role::Viewers, "", "secrets", "get"), "{t}");
        // Each reads its own Tenant and its own namespaces by name (and nothing else there).
        for role in ROLES {
            let own = |wanted: &Action| {
                results
                    .iter()
                    .find(|(r, _)| {
                        r.from == i && r.role == role && r.column == i && &r.action == wanted
                    })
                    .expect("reviewed")
                    .1
            };
            assert!(own(&action(CITYCLOUD, "tenants", "get", t)), "{t} {role:?}");
            assert!(
                own(&action("", "namespaces", "get", &a.namespaces[0])),
                "{t} {role:?}"
            );
        }
        // Owners hold more than members, members more than viewers, viewers something.
        let allowed_at_home = |role| cells[&(i, role, i)].0;
        assert!(
            allowed_at_home(Role::Owners) > allowed_at_home(Role::Members)
                && allowed_at_home(Role::Members) > allowed_at_home(Role::Viewers)
                && allowed_at_home(Role::Viewers) > 0,
            "{table}"
        );
    }
    // Discovery saw the cluster's kinds, CityCloud's own included.
    for resource in ["pods/exec", "pods/log", "secrets", "sharedserviceclaims"] {
        assert!(
            namespaced.iter().any(|a| {
                let full = if a.subresource.is_empty() {
                    a.resource.clone()
                } else {
                    format!("{}/{}", a.resource, a.subresource)
                };
                full == resource
            }),
            "discovery found no {resource}"
        );
    }
}

#[tokio::test]
async fn alice_owner_of_one_tenant_is_refused_in_another_tenants_namespaces() {
    let env = TestEnv::with_operator().await;
    let profile = env.name("alice");
    env.apply_profile(profile_of(&profile, "alice")).await;
    let (a, b) = (Agency::new(&env, "alice-a"), Agency::new(&env, "alice-b"));
    for t in [&a, &b] {
        t.tenant(&profile).apply(&env.admin).await.unwrap();
    }
    for t in [&a, &b] {
        wait_ready(&env.admin, &t.tenant).await;
    }
    let alice_name = env.name("alice");
    let alice = env.user(&alice_name, &[&a.owners]).await;

    // At home she works: the refusals below are about the other tenant, not her identity.
    let home = a.namespaces[0].clone();
    eventually(
        &format!("alice lists pods and secrets in {home}"),
        CONVERGE,
        || async {
            Api::<Pod>::namespaced(alice.clone(), &home)
                .list(&ListParams::default())
                .await
                .ok()?;
            Api::<Secret>::namespaced(alice.clone(), &home)
                .list(&ListParams::default())
                .await
                .ok()
        },
    )
    .await;

    let forbidden = |what: &str, err: kube::Error| {
        assert_eq!(code(&err), Some(403), "{what}: {err}");
    };
    for ns in &b.namespaces {
        let err = Api::<Pod>::namespaced(alice.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap_err();
        forbidden(&format!("listing pods in {ns}"), err);
        let err = Api::<Secret>::namespaced(alice.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap_err();
        forbidden(&format!("listing secrets in {ns}"), err);
    }
    let err = Api::<Secret>::all(alice.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    forbidden("listing secrets in every namespace", err);

    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-was-here"},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": alice_name}],
    }))
    .unwrap();
    let err = Api::<RoleBinding>::namespaced(alice.clone(), &b.namespaces[0])
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_err();
    forbidden("binding herself admin in the other tenant's namespace", err);

    let err = Api::<Tenant>::all(alice.clone())
        .get(&b.tenant)
        .await
        .unwrap_err();
    forbidden("reading the other Tenant", err);

    let relabel = Patch::Merge(json!({"metadata": {"labels": {"owned-by": alice_name}}}));
    for ns in &b.namespaces {
        let err = Api::<Namespace>::all(alice.clone())
            .patch(ns, &PatchParams::default(), &relabel)
            .await
            .unwrap_err();
        forbidden(&format!("labelling {ns}"), err);
    }
    // Nothing of hers landed there.
    let labels = Api::<Namespace>::all(env.admin.clone())
        .get(&b.namespaces[0])
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    assert!(!labels.contains_key("owned-by"), "{labels:?}");
    let planted = Api::<RoleBinding>::namespaced(env.admin.clone(), &b.namespaces[0])
        .get_opt("alice-was-here")
        .await
        .unwrap();
    assert!(planted.is_none());
}
