//! Before any clock starts: kube-controller-manager has discovered the CRDs.
//!
//! The CRDs are installed by the bench moments before it measures. kube-controller-manager's
//! quota controller counts a custom resource (`count/sharedserviceclaims.citycloud.io`, which
//! every tenant namespace limits) only once its periodic discovery has found the CRD, about
//! 30 s later; until then the API server refuses everything such a quota limits ("status
//! unknown for quota") and the operator rightly keeps tenants un-Ready. A real cluster has
//! long discovered the CRDs when tenants come: that steady state is what the bench measures.
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::objects::{MANAGER, Names};
use super::{secs, wait_for};

/// The resource kube-controller-manager must have discovered.
const CLAIMS: &str = "count/sharedserviceclaims.citycloud.io";

/// Creates a probe namespace with a quota on claims, waits until its usage is counted, and
/// removes it. Returns the seconds waited.
pub async fn crds_discovered(admin: &kube::Client, names: &Names) -> anyhow::Result<f64> {
    let start = Instant::now();
    let ns = format!("{}-warmup", names.run);
    let params = PatchParams::apply(MANAGER).force();
    Api::<Namespace>::all(admin.clone())
        .patch(
            &ns,
            &params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns}})),
        )
        .await
        .context("creating the warm-up namespace")?;
    let quotas = Api::<ResourceQuota>::namespaced(admin.clone(), &ns);
    quotas
        .patch(
            "claims",
            &params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": "claims"}, "spec": {"hard": {CLAIMS: "1"}}})),
        )
        .await
        .context("creating the warm-up quota")?;
    eprintln!(
        "[{:6.1}s] warm-up: waiting for kube-controller-manager to count {CLAIMS}",
        0.0
    );
    wait_for(
        "kube-controller-manager to count custom resources in quotas",
        Duration::from_secs(180),
        Duration::from_millis(250),
        || {
            let quotas = quotas.clone();
            async move {
                let q = quotas.get("claims").await?;
                let counted = q
                    .status
                    .and_then(|s| s.used)
                    .is_some_and(|u| u.contains_key(CLAIMS));
                Ok(counted.then_some(()))
            }
        },
    )
    .await?;
    let waited = secs(start);
    eprintln!("[{waited:6.1}s] warm-up: counted");
    // Terminates in the background; nothing measured depends on it.
    let _ = Api::<Namespace>::all(admin.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
    Ok(waited)
}
