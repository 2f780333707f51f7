//! Every validation rule (CEL, `x-kubernetes-validations`) of the CRDs, against the real
//! API server: for each rule one object that breaks it — refused, with the rule's own message —
//! and one near miss that keeps it — accepted. One table per kind, printed; schema defaults that
//! change what the operator does are checked alongside. `every_rule_of_the_crds_has_a_row`
//! fails when a rule is added to the API types without a row here.
//!
//! Objects are sent as untyped JSON (as kubectl sends them) with dry run, so nothing is stored
//! and no client-side type can tidy a bad value away. Run with `-- --nocapture` to see the tables.
use std::collections::BTreeSet;

use citycloud::api::{
    QuotaProfile, SharedService, SharedServiceClaim, Tenant, TenantRequest, TenantRequestPolicy,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use testbed::TestEnv;

/// One rule, named as the CRD names it (schema path and message), with an object that breaks
/// it and one that keeps it, each written as a JSON merge patch on the kind's valid base object.
struct Row {
    /// Where the rule sits in the schema: `.` for the root, `.spec.owners[i]` for list items.
    path: &'static str,
    /// The rule's message, as the API server reports it.
    message: &'static str,
    breaks: Value,
    keeps: Value,
    /// A transition rule (`oldSelf`): the patches are updates of a stored base object.
    update: bool,
}

fn row(path: &'static str, message: &'static str, breaks: Value, keeps: Value) -> Row {
    Row {
        path,
        message,
        breaks,
        keeps,
        update: false,
    }
}

const API_VERSION: &str = "citycloud.io/v1alpha1";

fn a(n: usize) -> String {
    "a".repeat(n)
}

// ---------------------------------------------------------------------------------------------
// The tables
// ---------------------------------------------------------------------------------------------

fn tenant_base() -> Value {
    json!({"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": "admit-tenant"},
        "spec": {"displayName": "Phường Admission", "owners": [{"kind": "Group", "name": "admit-admins"}],
            "quotaProfile": "admit-profile"}})
}

/// The three subject lists (of a Tenant, and of a TenantRequest's template) share their item
/// rules; `spec` puts a list where it belongs.
fn subject_rows(spec: impl Fn(Value) -> Value, item: &'static str, ns: &'static str) -> Vec<Row> {
    vec![
        row(
            item,
            "namespace is required when kind is ServiceAccount",
            spec(json!([{"kind": "ServiceAccount", "name": "ci"}])),
            spec(json!([{"kind": "ServiceAccount", "name": "ci", "namespace": "cicd"}])),
        ),
        row(
            item,
            "namespace is only allowed when kind is ServiceAccount; users and groups are not namespaced",
            spec(json!([{"kind": "User", "name": "lan", "namespace": "cicd"}])),
            spec(json!([{"kind": "User", "name": "lan"}])),
        ),
        row(
            ns,
            "namespace must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit",
            spec(json!([{"kind": "ServiceAccount", "name": "ci", "namespace": "CiCd"}])),
            spec(json!([{"kind": "ServiceAccount", "name": "ci", "namespace": "ci-cd-2"}])),
        ),
    ]
}

fn tenant_rows() -> Vec<Row> {
    let name = |n: String| json!({"metadata": {"name": n}});
    let spec = |v: Value| json!({"spec": v});
    let mut rows = vec![
        row(
            ".",
            "metadata.name of a Tenant must be a DNS label (lowercase letters, digits and '-', no '.'): it prefixes the names of the tenant's namespaces",
            name("admit.tenant".into()),
            name("admit-tenant-2".into()),
        ),
        row(
            ".",
            "metadata.name of a Tenant must be at most 61 characters: namespaces are named <tenant>-<environment>, at most 63 characters",
            json!({"metadata": {"name": a(62)}, "spec": {"environments": [{"name": "p"}]}}),
            json!({"metadata": {"name": a(61)}, "spec": {"environments": [{"name": "p"}]}}),
        ),
        // The default environment (prod) counts: a 59-character name is too long without
        // naming any environment.
        row(
            ".",
            "every namespace name <tenant>-<environment> must fit in 63 characters: shorten the environment names or metadata.name",
            name(a(59)),
            name(a(58)),
        ),
        row(
            ".",
            "spec.parent must name another Tenant, not this one",
            spec(json!({"parent": "admit-tenant"})),
            spec(json!({"parent": "admit-parent"})),
        ),
        row(
            ".spec.agencyCode",
            "spec.agencyCode must not be blank",
            spec(json!({"agencyCode": "  "})),
            spec(json!({"agencyCode": "HP-01"})),
        ),
        row(
            ".spec.displayName",
            "spec.displayName must not be blank",
            spec(json!({"displayName": " \t"})),
            spec(json!({"displayName": "Sở Y tế"})),
        ),
        row(
            ".spec.environments",
            "spec.environments must have unique names",
            spec(json!({"environments": [{"name": "prod"}, {"name": "prod"}]})),
            spec(json!({"environments": [{"name": "prod"}, {"name": "dev"}]})),
        ),
        row(
            ".spec.environments",
            "spec.environments must list at least one environment; leave the field out to get the default, prod",
            spec(json!({"environments": []})),
            spec(json!({"environments": [{"name": "prod"}]})),
        ),
        row(
            ".spec.environments[i].name",
            "environment name must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit",
            spec(json!({"environments": [{"name": "Prod"}]})),
            spec(json!({"environments": [{"name": "prod-2"}]})),
        ),
        row(
            ".spec.environments[i].quotaProfile",
            "quotaProfile must be a valid object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            spec(json!({"environments": [{"name": "prod", "quotaProfile": "Large_1"}]})),
            spec(json!({"environments": [{"name": "prod", "quotaProfile": "large.v1"}]})),
        ),
        row(
            ".spec.owners",
            "spec.owners must name at least one owner: every Tenant needs someone who administers it",
            spec(json!({"owners": []})),
            spec(json!({"owners": [{"kind": "User", "name": "lan"}]})),
        ),
        row(
            ".spec.parent",
            "spec.parent must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit",
            spec(json!({"parent": "Admit.Parent"})),
            spec(json!({"parent": "admit-parent-2"})),
        ),
        row(
            ".spec.quotaProfile",
            "spec.quotaProfile must be a valid object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            spec(json!({"quotaProfile": "Large_1"})),
            spec(json!({"quotaProfile": "large.v1"})),
        ),
    ];
    rows.extend(subject_rows(
        |v| json!({"spec": {"owners": v}}),
        ".spec.owners[i]",
        ".spec.owners[i].namespace",
    ));
    rows.extend(subject_rows(
        |v| json!({"spec": {"members": v}}),
        ".spec.members[i]",
        ".spec.members[i].namespace",
    ));
    rows.extend(subject_rows(
        |v| json!({"spec": {"viewers": v}}),
        ".spec.viewers[i]",
        ".spec.viewers[i].namespace",
    ));
    rows
}

fn service_base() -> Value {
    json!({"apiVersion": API_VERSION, "kind": "SharedService", "metadata": {"name": "admit-db"},
        "spec": {"displayName": "Cơ sở dữ liệu dùng chung", "category": "Data", "bindingType": "postgresql",
            "endpoint": {"namespace": "admit-platform", "service": "pg", "port": 5432}}})
}

fn service_rows() -> Vec<Row> {
    let spec = |v: Value| json!({"spec": v});
    let endpoint = |k: &str, v: &str| json!({"spec": {"endpoint": {k: v}}});
    vec![
        row(
            ".",
            "metadata.name of a SharedService must be at most 63 characters: it is the value of the label citycloud.io/shared-service on the service's consumers Secrets",
            json!({"metadata": {"name": a(64)}}),
            json!({"metadata": {"name": a(63)}}),
        ),
        row(
            ".spec.access.environments",
            "spec.access.environments must hold environment names: DNS labels of lowercase letters, digits and '-'",
            spec(json!({"access": {"environments": ["prod", "Dev"]}})),
            spec(json!({"access": {"environments": ["prod", "dev-2"]}})),
        ),
        row(
            ".spec.bindingData",
            "spec.bindingData may not set type, provider, host, port, uri or token: the operator fills them from the spec",
            spec(json!({"bindingData": {"database": "app", "host": "evil.example"}})),
            spec(json!({"bindingData": {"database": "app", "sslmode": "require"}})),
        ),
        row(
            ".spec.bindingType",
            "spec.bindingType must not be blank",
            spec(json!({"bindingType": " "})),
            spec(json!({"bindingType": "mysql"})),
        ),
        row(
            ".spec.displayName",
            "spec.displayName must not be blank",
            spec(json!({"displayName": "  "})),
            spec(json!({"displayName": "Kho dữ liệu"})),
        ),
        row(
            ".spec.endpoint.namespace",
            "spec.endpoint.namespace must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit",
            endpoint("namespace", "Platform"),
            endpoint("namespace", "platform-2"),
        ),
        row(
            ".spec.endpoint.scheme",
            "spec.endpoint.scheme must be a URI scheme: a lowercase letter, then lowercase letters, digits, '+', '.' or '-'",
            endpoint("scheme", "1http"),
            endpoint("scheme", "postgres+tls"),
        ),
        row(
            ".spec.endpoint.service",
            "spec.endpoint.service must be a valid Service name: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit",
            endpoint("service", "1pg"),
            endpoint("service", "pg-primary"),
        ),
    ]
}

fn claim_base() -> Value {
    json!({"apiVersion": API_VERSION, "kind": "SharedServiceClaim", "metadata": {"name": "admit-claim"},
        "spec": {"service": "admit-db"}})
}

fn claim_rows() -> Vec<Row> {
    let spec = |v: Value| json!({"spec": v});
    vec![
        row(
            ".",
            "metadata.name of a SharedServiceClaim must be at most 63 characters: it names the claim's NetworkPolicies and its entry in the service's consumers Secret",
            json!({"metadata": {"name": a(64)}}),
            json!({"metadata": {"name": a(63)}}),
        ),
        row(
            ".spec.secretName",
            "spec.secretName must be a valid object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            spec(json!({"secretName": "Db_Binding"})),
            spec(json!({"secretName": "db.binding-2"})),
        ),
        row(
            ".spec.service",
            "spec.service must be a valid object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            spec(json!({"service": "Admit_DB"})),
            spec(json!({"service": "admit.db-2"})),
        ),
        Row {
            update: true,
            ..row(
                ".spec.service",
                "spec.service is immutable: delete this claim and create another one to claim a different service",
                spec(json!({"service": "another-db"})),
                spec(json!({"secretName": "another-secret"})),
            )
        },
    ]
}

/// The namespace where top-level agencies are requested (the chart's tenantRequests.namespace,
/// created by the chart). Its admission policy lets anyone RBAC allows create a request there,
/// as themselves; the admin is allowed, so only the CRD's rules decide.
const REQUESTS_NAMESPACE: &str = "citycloud-requests";

const JUSTIFICATION: &str = "Phường mới thành lập theo Nghị quyết";

/// `name` must be unique per run: the transition rule stores the base in a shared namespace.
fn request_base(name: &str) -> Value {
    json!({"apiVersion": API_VERSION, "kind": "TenantRequest", "metadata": {"name": name},
        "spec": {"tenant": "admit-ward", "justification": JUSTIFICATION,
            "template": {"displayName": "Phường Admission", "owners": [{"kind": "Group", "name": "admit-admins"}],
                "quotaProfile": "admit-profile"}}})
}

/// The template repeats the Tenant's rules (under `.spec.template`, with their own messages
/// where they name the field), and adds what a request may not ask for.
fn request_rows() -> Vec<Row> {
    let template = |v: Value| json!({"spec": {"template": v}});
    let mut rows = vec![
        Row {
            update: true,
            ..row(
                ".",
                "the spec of a TenantRequest is immutable: create a new request instead",
                json!({"spec": {"justification": "Lý do khác"}}),
                // The same spec sent again, with a label: not a change of the spec.
                json!({"metadata": {"labels": {"citycloud.io/admit": "again"}},
                    "spec": {"justification": JUSTIFICATION}}),
            )
        },
        row(
            ".spec.template.displayName",
            "spec.template.displayName must not be blank",
            template(json!({"displayName": " \t"})),
            template(json!({"displayName": "Sở Y tế"})),
        ),
        row(
            ".spec.template.environments",
            "spec.template.environments must have unique names",
            template(json!({"environments": [{"name": "prod"}, {"name": "prod"}]})),
            template(json!({"environments": [{"name": "prod"}, {"name": "dev"}]})),
        ),
        row(
            ".spec.template.environments[i].name",
            "environment name must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit",
            template(json!({"environments": [{"name": "Prod"}]})),
            template(json!({"environments": [{"name": "prod-2"}]})),
        ),
        row(
            ".spec.template.environments[i].quotaProfile",
            "quotaProfile must be a valid object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            template(json!({"environments": [{"name": "prod", "quotaProfile": "Large_1"}]})),
            template(json!({"environments": [{"name": "prod", "quotaProfile": "large.v1"}]})),
        ),
        row(
            ".spec.template.podSecurity",
            "spec.template.podSecurity privileged cannot be requested: ask the platform team",
            template(json!({"podSecurity": "privileged"})),
            template(json!({"podSecurity": "baseline"})),
        ),
        row(
            ".spec.template.quotaProfile",
            "spec.template.quotaProfile must be a valid object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            template(json!({"quotaProfile": "Large_1"})),
            template(json!({"quotaProfile": "large.v1"})),
        ),
        row(
            ".spec.tenant",
            "spec.tenant must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit",
            json!({"spec": {"tenant": "Admit.Ward"}}),
            json!({"spec": {"tenant": "admit-ward-2"}}),
        ),
    ];
    rows.extend(subject_rows(
        |v| json!({"spec": {"template": {"owners": v}}}),
        ".spec.template.owners[i]",
        ".spec.template.owners[i].namespace",
    ));
    rows.extend(subject_rows(
        |v| json!({"spec": {"template": {"members": v}}}),
        ".spec.template.members[i]",
        ".spec.template.members[i].namespace",
    ));
    rows.extend(subject_rows(
        |v| json!({"spec": {"template": {"viewers": v}}}),
        ".spec.template.viewers[i]",
        ".spec.template.viewers[i].namespace",
    ));
    rows
}

// ---------------------------------------------------------------------------------------------
// Running a table
// ---------------------------------------------------------------------------------------------

/// RFC 7386 JSON merge patch.
fn merge(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            let mut out = b.clone();
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge(b.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (_, p) => p.clone(),
    }
}

/// The name under which the base object is stored for the transition rules (the dry-run
/// creates use the base's own name, which must stay free).
fn stored_name(base: &Value) -> String {
    format!(
        "{}-stored",
        base["metadata"]["name"].as_str().expect("base name")
    )
}

fn dry_run_create() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// Sends `patch` on the kind's base object: a dry-run create, or for a transition rule a
/// dry-run merge patch of the stored base. Ok, or the API server's status.
async fn send(
    api: &Api<DynamicObject>,
    base: &Value,
    row: &Row,
    patch: &Value,
) -> Result<(), kube::core::Status> {
    let result = if row.update {
        let name = stored_name(base);
        let pp = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        api.patch(&name, &pp, &Patch::Merge(patch))
            .await
            .map(|_| ())
    } else {
        let obj: DynamicObject = serde_json::from_value(merge(base, patch)).expect("object");
        api.create(&dry_run_create(), &obj).await.map(|_| ())
    };
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) => Err(*s),
        Err(e) => panic!("not an answer of the API server: {e}"),
    }
}

/// Runs every row of a kind's table, prints it, and fails naming every row that did not hold.
async fn check_table(kind: &str, api: Api<DynamicObject>, base: Value, rows: Vec<Row>) {
    send(&api, &base, &row(".", "", json!({}), json!({})), &json!({}))
        .await
        .unwrap_or_else(|s| panic!("the {kind} base object must be valid: {}", s.message));
    if rows.iter().any(|r| r.update) {
        let stored = merge(&base, &json!({"metadata": {"name": stored_name(&base)}}));
        let obj: DynamicObject = serde_json::from_value(stored).expect("base");
        api.create(&PostParams::default(), &obj)
            .await
            .expect("store the base object for the transition rules");
    }
    let mut failures = Vec::new();
    println!("\n{kind}: {} rules", rows.len());
    println!(
        "  {:<44} {:<10} {:<10} message",
        "rule at", "breaks", "keeps"
    );
    for r in &rows {
        let broken = send(&api, &base, r, &r.breaks).await;
        let kept = send(&api, &base, r, &r.keeps).await;
        let refused_with_message = match &broken {
            Err(s) => s.code == 422 && s.message.contains(r.message),
            Ok(()) => false,
        };
        println!(
            "  {:<44} {:<10} {:<10} {}",
            r.path,
            if refused_with_message {
                "refused"
            } else {
                "WRONG"
            },
            if kept.is_ok() { "accepted" } else { "WRONG" },
            r.message
        );
        if !refused_with_message {
            failures.push(format!(
                "{} {:?}: breaking it must be refused with the rule's message; got {:?}",
                r.path,
                r.message,
                broken.map_err(|s| (s.code, s.message))
            ));
        }
        if let Err(s) = kept {
            failures.push(format!(
                "{} {:?}: the near miss must be accepted; refused: {}",
                r.path, r.message, s.message
            ));
        }
    }
    assert!(failures.is_empty(), "{kind}:\n{}", failures.join("\n"));
}

fn cluster_api<K: kube::Resource<DynamicType = ()>>(env: &TestEnv) -> Api<DynamicObject> {
    Api::all_with(env.admin.clone(), &ApiResource::erase::<K>(&()))
}

#[tokio::test]
async fn every_tenant_rule_refuses_what_breaks_it_and_accepts_a_near_miss() {
    let env = TestEnv::with_operator().await;
    check_table(
        "Tenant",
        cluster_api::<Tenant>(&env),
        tenant_base(),
        tenant_rows(),
    )
    .await;
}

#[tokio::test]
async fn every_shared_service_rule_refuses_what_breaks_it_and_accepts_a_near_miss() {
    let env = TestEnv::with_operator().await;
    let api = cluster_api::<SharedService>(&env);
    check_table("SharedService", api, service_base(), service_rows()).await;
}

#[tokio::test]
async fn every_claim_rule_refuses_what_breaks_it_and_accepts_a_near_miss() {
    let env = TestEnv::with_operator().await;
    let ns = env.name("admit-claims");
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
    Api::<Namespace>::all(env.admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("a namespace for the claims");
    let api = Api::namespaced_with(
        env.admin.clone(),
        &ns,
        &ApiResource::erase::<SharedServiceClaim>(&()),
    );
    check_table("SharedServiceClaim", api, claim_base(), claim_rows()).await;
}

/// As the admin, in the requests namespace: the admission policies on TenantRequests (who asked,
/// where, never for oneself) let the near misses through, so each verdict is the CRD's rule's.
#[tokio::test]
async fn every_tenant_request_rule_refuses_what_breaks_it_and_accepts_a_near_miss() {
    let env = TestEnv::with_operator().await;
    let api = Api::namespaced_with(
        env.admin.clone(),
        REQUESTS_NAMESPACE,
        &ApiResource::erase::<TenantRequest>(&()),
    );
    let base = request_base(&env.name("admit-request"));
    check_table("TenantRequest", api.clone(), base.clone(), request_rows()).await;
    // The base stored for the transition rule sits among real top-level requests: take it away.
    api.delete(&stored_name(&base), &DeleteParams::default())
        .await
        .expect("delete the stored request");
}

/// The defaults the operator relies on, filled in by the API server from the schema.
#[tokio::test]
async fn schema_defaults_fill_what_the_operator_relies_on() {
    let env = TestEnv::with_operator().await;
    let created = |api: Api<DynamicObject>, obj: Value| async move {
        let obj: DynamicObject = serde_json::from_value(obj).expect("object");
        let out = api.create(&dry_run_create(), &obj).await.expect("accepted");
        serde_json::to_value(out).expect("json")
    };

    let tenant = created(cluster_api::<Tenant>(&env), tenant_base()).await;
    let spec = &tenant["spec"];
    // One environment, prod: the namespace <tenant>-prod, and what the length rule counts.
    assert_eq!(spec["environments"], json!([{"name": "prod"}]));
    assert_eq!(
        spec["network"],
        json!({"egress": "Open", "ingress": "Strict"})
    );
    assert_eq!(
        spec["deletionPolicy"], "Retain",
        "data is kept unless asked"
    );
    assert_eq!(spec["podSecurity"], "restricted");
    assert_eq!(spec["suspended"], false);
    let mut no_profile = tenant_base();
    no_profile["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("quotaProfile");
    let tenant = created(cluster_api::<Tenant>(&env), no_profile).await;
    assert_eq!(tenant["spec"]["quotaProfile"], "default");

    let profile = json!({"apiVersion": API_VERSION, "kind": "QuotaProfile",
        "metadata": {"name": "admit-profile"}, "spec": {"description": "admission"}});
    let created_profile = created(cluster_api::<QuotaProfile>(&env), profile.clone()).await;
    assert_eq!(
        created_profile["spec"]["maxClaims"], 100,
        "claims are bounded by default"
    );
    assert_eq!(created_profile["spec"]["maxEnvironments"], 5);

    let service = created(cluster_api::<SharedService>(&env), service_base()).await;
    let spec = &service["spec"];
    assert_eq!(
        spec["credentials"], "PerClaim",
        "a token per claim unless said otherwise"
    );
    assert_eq!(spec["endpoint"]["scheme"], "https");
    // An empty selector and no environments: every tenant's every environment may claim.
    assert_eq!(
        spec["access"],
        json!({"environments": [], "tenantSelector": {}})
    );
}

/// For a kind without CEL rules: each schema bound (the field, a value past it, the limit)
/// refuses what breaks it, naming the field, and accepts the limit. Printed.
async fn check_bounds(kind: &str, api: Api<DynamicObject>, base: Value, cases: Vec<Bound>) {
    println!("\n{kind}: no CEL rule; schema bounds");
    for (field, breaks, keeps) in cases {
        let r = row(".", "", breaks, keeps);
        let broken = send(&api, &base, &r, &r.breaks).await;
        let kept = send(&api, &base, &r, &r.keeps).await;
        println!("  {field:<32} {} / {}", r.breaks, r.keeps);
        let s = broken.expect_err("out of bounds must be refused");
        assert!(
            s.code == 422 && s.message.contains(field),
            "{kind} {field}: {}",
            s.message
        );
        kept.unwrap_or_else(|s| {
            panic!("{kind} {field}: the limit must be accepted: {}", s.message)
        });
    }
}

/// A schema bound: the field, a value past it, the limit.
type Bound = (&'static str, Value, Value);

/// QuotaProfile has no CEL rule: its bounds are plain schema (minimum/maximum).
#[tokio::test]
async fn quota_profile_bounds_refuse_what_breaks_them_and_accept_the_limits() {
    let env = TestEnv::with_operator().await;
    let base = json!({"apiVersion": API_VERSION, "kind": "QuotaProfile",
        "metadata": {"name": "admit-profile-bounds"}, "spec": {"description": "admission"}});
    let cases = vec![
        (
            "spec.maxClaims",
            json!({"spec": {"maxClaims": 1001}}),
            json!({"spec": {"maxClaims": 1000}}),
        ),
        (
            "spec.maxClaims",
            json!({"spec": {"maxClaims": -1}}),
            json!({"spec": {"maxClaims": 0}}),
        ),
        (
            "spec.maxEnvironments",
            json!({"spec": {"maxEnvironments": 0}}),
            json!({"spec": {"maxEnvironments": 1}}),
        ),
        (
            "spec.namespace",
            json!({"spec": {"namespace": {"requests.cpu": "two"}}}),
            json!({"spec": {"namespace": {"requests.cpu": "2"}}}),
        ),
    ];
    check_bounds(
        "QuotaProfile",
        cluster_api::<QuotaProfile>(&env),
        base,
        cases,
    )
    .await;
}

/// TenantRequestPolicy has no CEL rule either: what bounds an automatic approval is schema.
#[tokio::test]
async fn tenant_request_policy_bounds_refuse_what_breaks_them_and_accept_the_limits() {
    let env = TestEnv::with_operator().await;
    let base = json!({"apiVersion": API_VERSION, "kind": "TenantRequestPolicy",
        "metadata": {"name": "admit-policy-bounds"},
        "spec": {"newChildren": {"maxChildren": 5, "profiles": ["admit-profile"]}}});
    let children = |max: i64, profiles: Value| json!({"spec": {"newChildren": {"maxChildren": max, "profiles": profiles}}});
    let ladder = |n: usize| json!({"spec": {"ladder": (0..n).map(|i| format!("admit-{i}")).collect::<Vec<_>>()}});
    let cases = vec![
        (
            "spec.newChildren.maxChildren",
            children(1001, json!(["admit-profile"])),
            children(1000, json!(["admit-profile"])),
        ),
        (
            "spec.newChildren.maxChildren",
            children(-1, json!(["admit-profile"])),
            children(0, json!(["admit-profile"])),
        ),
        (
            "spec.newChildren.profiles",
            children(5, json!([])),
            children(5, json!(["admit-profile"])),
        ),
        (
            "spec.newChildren.profiles[0]",
            children(5, json!([""])),
            children(5, json!(["a"])),
        ),
        ("spec.ladder", ladder(21), ladder(20)),
        (
            "spec.raiseAbovePercent",
            json!({"spec": {"raiseAbovePercent": 101}}),
            json!({"spec": {"raiseAbovePercent": 100}}),
        ),
        (
            "spec.raiseAbovePercent",
            json!({"spec": {"raiseAbovePercent": -1}}),
            json!({"spec": {"raiseAbovePercent": 0}}),
        ),
    ];
    check_bounds(
        "TenantRequestPolicy",
        cluster_api::<TenantRequestPolicy>(&env),
        base,
        cases,
    )
    .await;
}

/// Every rule in crds/*.yaml, as (kind, schema path, message).
fn rules_in_crds() -> BTreeSet<(String, String, String)> {
    fn walk(node: &Value, path: &str, kind: &str, out: &mut BTreeSet<(String, String, String)>) {
        let Some(obj) = node.as_object() else { return };
        for rule in obj
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let message = rule["message"].as_str().unwrap_or("<no message>");
            let at = if path.is_empty() { "." } else { path };
            out.insert((kind.to_string(), at.to_string(), message.to_string()));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), kind, out);
            }
        }
        if let Some(items) = obj.get("items") {
            walk(items, &format!("{path}[i]"), kind, out);
        }
        if let Some(values) = obj.get("additionalProperties") {
            walk(values, &format!("{path}[*]"), kind, out);
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("crds/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("a CRD");
        let crd: Value = serde_yaml_ng::from_str(&text).expect("CRD YAML");
        let kind = crd["spec"]["names"]["kind"].as_str().expect("kind");
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            walk(&version["schema"]["openAPIV3Schema"], "", kind, &mut out);
        }
    }
    out
}

#[test]
fn every_rule_of_the_crds_has_a_row() {
    let rules = rules_in_crds();
    let rows: BTreeSet<(String, String, String)> = [
        ("Tenant", tenant_rows()),
        ("SharedService", service_rows()),
        ("SharedServiceClaim", claim_rows()),
        ("TenantRequest", request_rows()),
    ]
    .into_iter()
    .flat_map(|(kind, rows)| {
        rows.into_iter()
            .map(move |r| (kind.to_string(), r.path.to_string(), r.message.to_string()))
    })
    .collect();
    let missing: Vec<_> = rules.difference(&rows).collect();
    let stale: Vec<_> = rows.difference(&rules).collect();
    println!("{} rules in crds/, {} rows", rules.len(), rows.len());
    assert!(
        missing.is_empty(),
        "rules without a row in tests/integration/admission_table.rs: {missing:#?}"
    );
    assert!(stale.is_empty(), "rows naming no rule of crds/: {stale:#?}");
    assert!(
        rules.len() >= 51,
        "the walk found the rules: {}",
        rules.len()
    );
}
