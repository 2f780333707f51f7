//! Claims against a hostile tenant and a stolen operator token (issue 10, holes 5, 9 and 10):
//! `alice` owns tenant a (admin in its namespaces, may claim there); the thief holds the
//! operator's ServiceAccount token.
use std::collections::BTreeMap;

use citycloud::api::{QuotaProfile, SharedService, SharedServiceClaim};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testbed::fixtures::{CONVERGE, apply_in, code};
use testbed::{TestEnv, eventually};

use crate::claims::{
    claim_as, claim_yaml, consumer_secrets, consumers, secret, tenant, text, wait_bound,
    wait_token, world,
};

fn message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Creates the claim `name` as `user` in the first of `namespaces` that admits it, retrying
/// while none does (RBAC not aggregated yet, or the tenant's claim budget still moving to the
/// namespace that asks: quota refusals leave no trace the operator could see as demand).
async fn create_in_any(user: &kube::Client, namespaces: &[&String], name: &str, service: &str) {
    eventually(&format!("claim {name} admitted"), CONVERGE, || async {
        for ns in namespaces {
            match apply_in::<SharedServiceClaim>(user, ns, &claim_yaml(name, service, None)).await {
                Ok(_) => return Some(()),
                Err(e) if code(&e) == Some(403) => {}
                Err(e) => panic!("creating claim {ns}/{name}: {e}"),
            }
        }
        None
    })
    .await;
}

#[tokio::test]
async fn alice_cannot_hold_more_claims_than_max_claims_nor_name_one_past_63_characters() {
    let env = TestEnv::with_operator().await;
    let w = world(&env, "").await;
    Api::<QuotaProfile>::all(env.admin.clone())
        .patch(
            &w.profile,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxClaims": 3}})),
        )
        .await
        .unwrap();
    let (a, admins) = (env.name("qa"), env.name("qa-admins"));
    env.tenant_ready(&tenant(&w, &a, &admins).environments(&["prod", "dev"]))
        .await;
    let alice = env.user(&env.name("alice"), &[&admins]).await;
    let (prod, dev) = (format!("{a}-prod"), format!("{a}-dev"));

    // A name past 63 characters: refused by the CRD, whatever the quota.
    let long = "c".repeat(64);
    let err = eventually("the 64-character name refused", CONVERGE, || async {
        match apply_in::<SharedServiceClaim>(&alice, &prod, &claim_yaml(&long, &w.service, None))
            .await
        {
            // RBAC (claims aggregated into admin) not there yet.
            Err(e) if code(&e) == Some(403) => None,
            Err(e) => Some(e),
            Ok(_) => panic!("a claim named with 64 characters was created"),
        }
    })
    .await;
    assert_eq!(code(&err), Some(422), "{err}");
    assert!(message(&err).contains("at most 63 characters"), "{err}");

    // Three claims over her two namespaces (each holds at least one of the 3 at first): the
    // tenant's budget.
    create_in_any(&alice, &[&dev], "c1", &w.service).await;
    for name in ["c2", "c3"] {
        create_in_any(&alice, &[&prod, &dev], name, &w.service).await;
    }
    // A fourth is refused by the API server's quota, in either namespace.
    for ns in [&prod, &dev] {
        let err = apply_in::<SharedServiceClaim>(&alice, ns, &claim_yaml("c4", &w.service, None))
            .await
            .expect_err("a fourth claim was admitted");
        assert_eq!(code(&err), Some(403), "{err}");
        let text = message(&err);
        assert!(
            text.contains("exceeded quota")
                && text.contains("count/sharedserviceclaims.citycloud.io"),
            "{text}"
        );
    }
    let mut total = 0;
    for ns in [&prod, &dev] {
        total += Api::<SharedServiceClaim>::namespaced(env.admin.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
    }
    assert_eq!(total, 3);
}

#[tokio::test]
async fn a_token_alice_plants_as_the_operators_field_manager_is_replaced_and_never_published() {
    let env = TestEnv::with_operator().await;
    let w = world(&env, "").await;
    let (a, b, admins) = (env.name("ta"), env.name("tb"), env.name("ta-admins"));
    env.tenant_ready(&tenant(&w, &a, &admins)).await;
    env.tenant_ready(&tenant(&w, &b, &env.name("tb-admins")))
        .await;
    let alice = env.user(&env.name("alice"), &[&admins]).await;
    let (ns_a, ns_b) = (format!("{a}-prod"), format!("{b}-prod"));
    claim_as(&alice, &ns_a, &claim_yaml("lgsp", &w.service, None)).await;
    claim_as(&alice, &ns_a, &claim_yaml("extra", &w.service, None)).await;
    apply_in::<SharedServiceClaim>(&env.admin, &ns_b, &claim_yaml("lgsp", &w.service, None))
        .await
        .unwrap();
    let issued = wait_token(&env, &w, &w.service, &ns_a, "lgsp", "lgsp").await;
    let extra = wait_token(&env, &w, &w.service, &ns_a, "extra", "extra").await;
    let b_token = wait_token(&env, &w, &w.service, &ns_b, "lgsp", "lgsp").await;
    let (shard_a, shard_b) = (
        format!("{}-consumers-{a}", w.service),
        format!("{}-consumers-{b}", w.service),
    );
    let b_shard = BTreeMap::from([(format!("{ns_b}.lgsp"), b_token)]);
    assert_eq!(
        consumer_secrets(&env, &w, &w.service).await.get(&shard_b),
        Some(&b_shard),
        "b's consumers Secret holds b's claim alone"
    );

    // Alice applies her binding Secret with a token of her choosing, as the field manager the
    // operator uses, keeping everything else as it was.
    let secrets = Api::<Secret>::namespaced(alice.clone(), &ns_a);
    let live = secrets.get("lgsp").await.expect("alice reads her binding");
    let chosen = "alice-chose-this-token-0123456789abcdefghij".to_string();
    let mut data = live.data.clone().unwrap_or_default();
    data.insert("token".into(), ByteString(chosen.clone().into_bytes()));
    let planted = Secret {
        metadata: ObjectMeta {
            name: Some("lgsp".into()),
            labels: live.metadata.labels.clone(),
            ..Default::default()
        },
        type_: live.type_.clone(),
        data: Some(data),
        ..Default::default()
    };
    secrets
        .patch(
            "lgsp",
            &PatchParams::apply("citycloud-operator").force(),
            &Patch::Apply(&planted),
        )
        .await
        .expect("alice may write the Secrets of her namespace");

    // The operator replaces it with a fresh token; hers never reaches the provider, and b's
    // consumers Secret does not move.
    let fresh = eventually("a fresh token replaces alice's", CONVERGE, || async {
        let shards = consumer_secrets(&env, &w, &w.service).await;
        assert!(
            !shards
                .values()
                .flat_map(|s| s.values())
                .any(|t| *t == chosen),
            "alice's own token reached the provider"
        );
        assert_eq!(
            shards.get(&shard_b),
            Some(&b_shard),
            "b's consumers changed"
        );
        let token = secret(&env.admin, &ns_a, "lgsp")
            .await?
            .get("token")?
            .clone();
        (token != chosen
            && token != issued
            && shards.get(&shard_a)?.get(&format!("{ns_a}.lgsp")) == Some(&token))
        .then_some(token)
    })
    .await;
    // The status is written after the Secrets it describes: wait for it, then it must name the
    // token issued (never alice's).
    let claims_admin = Api::<SharedServiceClaim>::namespaced(env.admin.clone(), &ns_a);
    let recorded = eventually("the status records a token digest", CONVERGE, || async {
        let claim = claims_admin.get("lgsp").await.ok()?;
        let digest = claim.status.and_then(|s| s.token_digest)?;
        (digest != citycloud::claim::token::digest(&issued)).then_some(digest)
    })
    .await;
    assert_eq!(
        recorded,
        citycloud::claim::token::digest(&fresh),
        "the status records the digest of the token issued"
    );

    // Revocation: her deleted claim's token leaves her consumers Secret; deleting her last
    // claim removes that Secret. b's is untouched throughout.
    let claims = Api::<SharedServiceClaim>::namespaced(alice.clone(), &ns_a);
    claims
        .delete("lgsp", &DeleteParams::default())
        .await
        .expect("alice deletes her claim");
    let only_extra = BTreeMap::from([(format!("{ns_a}.extra"), extra)]);
    eventually("the deleted claim's token revoked", CONVERGE, || async {
        let shards = consumer_secrets(&env, &w, &w.service).await;
        assert_eq!(
            shards.get(&shard_b),
            Some(&b_shard),
            "b's consumers changed"
        );
        (shards.get(&shard_a) == Some(&only_extra)).then_some(())
    })
    .await;
    claims
        .delete("extra", &DeleteParams::default())
        .await
        .expect("alice deletes her other claim");
    eventually("alice's consumers Secret removed", CONVERGE, || async {
        let shards = consumer_secrets(&env, &w, &w.service).await;
        assert_eq!(
            shards.get(&shard_b),
            Some(&b_shard),
            "b's consumers changed"
        );
        (!shards.contains_key(&shard_a)).then_some(())
    })
    .await;
    assert!(
        !consumers(&env, &w, &w.service)
            .await
            .values()
            .any(|t| *t == fresh || *t == chosen)
    );
}

#[tokio::test]
async fn a_stolen_operator_token_can_neither_read_nor_write_the_providers_own_secrets() {
    let env = TestEnv::with_operator().await;
    let w = world(&env, "").await;
    let t = env.name("st");
    env.tenant_ready(&tenant(&w, &t, &env.name("st-admins")))
        .await;
    let ns = format!("{t}-prod");
    apply_in::<Secret>(
        &env.admin,
        &w.provider_ns,
        "{apiVersion: v1, kind: Secret, metadata: {name: tls-key, labels: {app: gateway}}, \
         stringData: {tls.key: the-providers-private-key}}",
    )
    .await
    .unwrap();
    apply_in::<Secret>(
        &env.admin,
        &ns,
        "{apiVersion: v1, kind: Secret, metadata: {name: db, labels: {app: db}}, \
         stringData: {password: the-tenants-password}}",
    )
    .await
    .unwrap();
    let thief = env.operator_client().await;
    let provider = Api::<Secret>::namespaced(thief.clone(), &w.provider_ns);
    let refused = |err: kube::Error, what: &str| {
        assert!(matches!(code(&err), Some(403) | Some(422)), "{what}: {err}");
        assert!(
            !message(&err).contains("the-providers-private-key"),
            "{what} leaked the key"
        );
        err
    };

    // No read, in any form.
    let err = refused(provider.get("tls-key").await.unwrap_err(), "get");
    assert_eq!(code(&err), Some(403), "RBAC: {err}");
    let err = refused(
        provider.list(&ListParams::default()).await.unwrap_err(),
        "list",
    );
    assert_eq!(code(&err), Some(403), "RBAC: {err}");

    // No write to the provider's Secret (whose answer would return it): not a patch, not one
    // dressed up with the operator's labels, not a delete, not a delete by label.
    let err = refused(
        provider
            .patch(
                "tls-key",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"extra": "eA=="}})),
            )
            .await
            .unwrap_err(),
        "merge patch",
    );
    assert!(
        message(&err).contains("citycloud-operator-secrets"),
        "{err}"
    );
    let disguised = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls-key",
        "labels": {"app.kubernetes.io/managed-by": "citycloud-operator",
                   "citycloud.io/shared-service": w.service}}});
    refused(
        provider
            .patch(
                "tls-key",
                &PatchParams::apply("citycloud-operator").force(),
                &Patch::Apply(&disguised),
            )
            .await
            .unwrap_err(),
        "apply with the operator's labels",
    );
    refused(
        provider
            .delete("tls-key", &DeleteParams::default())
            .await
            .unwrap_err(),
        "delete",
    );
    refused(
        provider
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels("app=gateway"),
            )
            .await
            .unwrap_err(),
        "deletecollection",
    );

    // No Secret of its own making but the consumers ones: not unlabelled, not labelled as a
    // service's but named otherwise.
    let plain: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "planted"}, "stringData": {"k": "v"}}))
    .unwrap();
    let err = refused(
        provider
            .create(&PostParams::default(), &plain)
            .await
            .unwrap_err(),
        "create",
    );
    assert!(message(&err).contains("consumers Secrets"), "{err}");
    let labelled: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tls-key-2", "labels": {
            "app.kubernetes.io/managed-by": "citycloud-operator",
            "citycloud.io/shared-service": w.service}}, "stringData": {"k": "v"}}))
    .unwrap();
    refused(
        provider
            .create(&PostParams::default(), &labelled)
            .await
            .unwrap_err(),
        "create a mislabelled Secret",
    );

    // In a tenant namespace: only the claims' binding Secrets.
    let tenant_secrets = Api::<Secret>::namespaced(thief.clone(), &ns);
    refused(
        tenant_secrets
            .create(&PostParams::default(), &plain)
            .await
            .unwrap_err(),
        "create in a tenant namespace",
    );
    let err = tenant_secrets
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "stolen"}})),
        )
        .await
        .unwrap_err();
    assert!(matches!(code(&err), Some(403) | Some(422)), "{err}");
    assert!(message(&err).contains("binding Secrets of claims"), "{err}");

    // Both Secrets are as their owners left them.
    let key = secret(&env.admin, &w.provider_ns, "tls-key").await.unwrap();
    assert_eq!(
        key,
        BTreeMap::from([("tls.key".into(), "the-providers-private-key".into())])
    );
    let live = Api::<Secret>::namespaced(env.admin.clone(), &w.provider_ns)
        .get("tls-key")
        .await
        .unwrap();
    assert_eq!(
        live.metadata.labels,
        Some(BTreeMap::from([("app".into(), "gateway".into())]))
    );
    let db = secret(&env.admin, &ns, "db").await.unwrap();
    assert_eq!(db["password"], "the-tenants-password");
    assert_eq!(text(&live).len(), 1);
}

#[tokio::test]
async fn one_tenants_consumers_secret_failing_leaves_the_others_published_and_revocable() {
    let env = TestEnv::with_operator().await;
    let w = world(&env, "").await;
    let (a, c) = (env.name("fa"), env.name("fc"));
    env.tenant_ready(&tenant(&w, &a, &env.name("fa-admins")))
        .await;
    env.tenant_ready(&tenant(&w, &c, &env.name("fc-admins")))
        .await;
    // The name of c's consumers Secret is taken by a Secret of the platform team: the
    // operator may not overwrite it, so c's publication fails.
    let taken = format!("{}-consumers-{c}", w.service);
    apply_in::<Secret>(
        &env.admin,
        &w.provider_ns,
        &format!(
            "{{apiVersion: v1, kind: Secret, metadata: {{name: {taken}}}, stringData: {{x: y}}}}"
        ),
    )
    .await
    .unwrap();
    let (ns_a, ns_c) = (format!("{a}-prod"), format!("{c}-prod"));
    for ns in [&ns_a, &ns_c] {
        apply_in::<SharedServiceClaim>(&env.admin, ns, &claim_yaml("lgsp", &w.service, None))
            .await
            .unwrap();
    }
    wait_bound(&env, &ns_c, "lgsp", "True", "Bound").await;
    wait_token(&env, &w, &w.service, &ns_a, "lgsp", "lgsp").await;

    // The failure is reported, naming the tenant, as a condition and a Warning event.
    let services = Api::<SharedService>::all(env.admin.clone());
    eventually("ConsumersPublished=False naming c", CONVERGE, || async {
        let s = services.get(&w.service).await.ok()?;
        let cond = s
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "ConsumersPublished")?;
        (cond.status == "False"
            && cond.reason == "PublishFailed"
            && cond.message.contains(&format!("tenant {c}")))
        .then_some(())
    })
    .await;
    let events = Api::<Event>::all(env.admin.clone());
    eventually("a PublishFailed event", CONVERGE, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("PublishFailed")
                    && e.involved_object.name.as_deref() == Some(w.service.as_str())
                    && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;

    // Revocation of a's claim does not wait for c.
    Api::<SharedServiceClaim>::namespaced(env.admin.clone(), &ns_a)
        .delete("lgsp", &DeleteParams::default())
        .await
        .unwrap();
    let shard_a = format!("{}-consumers-{a}", w.service);
    eventually("a's consumers Secret removed", CONVERGE, || async {
        (!consumer_secrets(&env, &w, &w.service)
            .await
            .contains_key(&shard_a))
        .then_some(())
    })
    .await;
    let foreign = secret(&env.admin, &w.provider_ns, &taken).await.unwrap();
    assert_eq!(
        foreign,
        BTreeMap::from([("x".into(), "y".into())]),
        "not overwritten"
    );

    // Once the name is free, c's tokens are published and the condition clears.
    Api::<Secret>::namespaced(env.admin.clone(), &w.provider_ns)
        .delete(&taken, &DeleteParams::default())
        .await
        .unwrap();
    wait_token(&env, &w, &w.service, &ns_c, "lgsp", "lgsp").await;
    eventually("ConsumersPublished=True", CONVERGE, || async {
        let s = services.get(&w.service).await.ok()?;
        let cond = s
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "ConsumersPublished")?;
        (cond.status == "True").then_some(())
    })
    .await;
}
