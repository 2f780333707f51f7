//! Several replicas of the operator: one leads and reconciles, the others stand by; a clean
//! shutdown hands over at once, and a replica that loses its lease stops reconciling.
use std::time::Duration;

use citycloud::api::Tenant;
use citycloud::leader::LeaderElection;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use testbed::builders::{Profile, TenantBuilder};
use testbed::env::PrivateControlPlane;
use testbed::fixtures::CONVERGE;
use testbed::operator::RELEASE_NAMESPACE;
use testbed::{TestEnv, eventually};

fn election(lease: &str, replica: &str) -> LeaderElection {
    LeaderElection {
        namespace: RELEASE_NAMESPACE.into(),
        lease: lease.into(),
        identity: replica.into(),
        lease_duration: Duration::from_secs(6),
    }
}

async fn holder(leases: &Api<Lease>, lease: &str) -> Option<String> {
    leases.get_opt(lease).await.ok()??.spec?.holder_identity
}

/// A tenant `base` on a profile of its own (the profile applied, the tenant not yet).
async fn tenant(env: &TestEnv, base: &str) -> TenantBuilder {
    let p = env
        .apply_profile(
            Profile::new(&env.name(&format!("{base}-p"))).namespace(json!({"pods": "10"})),
        )
        .await;
    let name = env.name(base);
    TenantBuilder::new(&name, &p)
        .display_name(&format!("Phường {name}"))
        .environments(&["prod"])
}

#[tokio::test]
async fn one_replica_leads_a_standby_takes_over_at_once_on_shutdown_and_a_usurped_leader_stops() {
    // Its own control plane, with no operator but the replicas: a leader reconciles every
    // tenant it sees, and on the shared one it would act on other tests' tenants.
    let (pcp, env) = PrivateControlPlane::for_operators("leader").await;
    let lease = env.name("lease");
    let leases = Api::<Lease>::namespaced(env.admin.clone(), RELEASE_NAMESPACE);

    let first = pcp.replica(election(&lease, "replica-a"));
    eventually("replica-a to lead", CONVERGE, || async {
        (first.leading() && holder(&leases, &lease).await.as_deref() == Some("replica-a"))
            .then_some(())
    })
    .await;
    let second = pcp.replica(election(&lease, "replica-b"));

    // Work arrives: the leader reconciles it (no other operator runs here), the standby does
    // nothing.
    env.tenant_ready(&tenant(&env, "lead").await).await;
    eventually("the leader to reconcile tenants", CONVERGE, || async {
        (first.reconciles("tenant") > 0).then_some(())
    })
    .await;
    // Longer than a renew period, so the standby has tried for the lease and been refused.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !second.leading(),
        "the standby must not lead while replica-a renews"
    );
    assert_eq!(second.reconciles("tenant"), 0, "the standby reconciled");
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("replica-a"));

    // A clean shutdown releases the lease: the standby leads within a renew period (2 s),
    // not after the 6 s lease expires, and reconciles everything there is.
    drop(first);
    eventually("replica-b to lead", CONVERGE, || async {
        (second.leading() && holder(&leases, &lease).await.as_deref() == Some("replica-b"))
            .then_some(())
    })
    .await;
    eventually("replica-b to reconcile the tenants", CONVERGE, || async {
        (second.reconciles("tenant") > 0).then_some(())
    })
    .await;
    let transitions = leases
        .get(&lease)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.lease_transitions);
    assert_eq!(transitions, Some(1), "one hand-over");

    // Someone else takes the lease (a partition healed, a replica that did not see us): the
    // leader finds it on its next renewal and stops reconciling rather than run beside it.
    leases
        .patch(
            &lease,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600,
                "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}}),
            ),
        )
        .await
        .unwrap();
    eventually("replica-b to stop leading", CONVERGE, || async {
        (!second.leading()).then_some(())
    })
    .await;
    let before = second.reconciles("tenant");
    let after = tenant(&env, "after").await;
    after.apply(&env.admin).await.expect("the tenant applied");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        second.reconciles("tenant"),
        before,
        "a replica that lost the lease went on reconciling"
    );
    // Nobody leads here now: the new tenant is left as stored (with the finalizer the API
    // server adds on create): no status, and no write by any manager but its creator.
    let untouched = Api::<Tenant>::all(env.admin.clone())
        .get(after.name())
        .await
        .expect("the tenant");
    let managers: Vec<String> = untouched
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        untouched.status.is_none() && managers == ["platform-engineer"],
        "a replica that lost the lease wrote to a tenant: {:?}",
        untouched.metadata
    );
}
