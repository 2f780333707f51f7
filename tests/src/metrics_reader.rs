//! Reading the operator's `/metrics` as the city's Prometheus does: with the bearer token of a
//! ServiceAccount bound to the chart's `<release>-metrics-reader` ClusterRole (the operator
//! asks the API server whose token it is and whether that user may get `/metrics`).
use std::path::Path;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use crate::operator::{RELEASE, RELEASE_NAMESPACE, apply_yaml_documents, render_chart};

/// The ServiceAccount (in [`RELEASE_NAMESPACE`]) the tests, the demo and the bench read
/// `/metrics` as.
pub const READER: &str = "metrics-reader";

/// The chart's ClusterRole granting `get` on `/metrics`.
pub fn reader_cluster_role() -> String {
    format!("{RELEASE}-metrics-reader")
}

/// Installs the chart's metrics-reader ClusterRole bound (values `metrics.readers`) to the
/// ServiceAccount [`READER`], and returns a token of it valid for `seconds`.
pub async fn reader_token(
    admin: &kube::Client,
    helm: &Path,
    seconds: i64,
) -> anyhow::Result<String> {
    let account = format!(
        "{{apiVersion: v1, kind: Namespace, metadata: {{name: {RELEASE_NAMESPACE}}}}}\n---\n\
         {{apiVersion: v1, kind: ServiceAccount, metadata: {{name: {READER}, namespace: {RELEASE_NAMESPACE}}}}}\n"
    );
    apply_yaml_documents(admin, &account, "citycloud-tests").await?;
    let readers = format!(
        r#"metrics.readers=[{{"kind":"ServiceAccount","name":"{READER}","namespace":"{RELEASE_NAMESPACE}"}}]"#
    );
    let rbac = render_chart(
        helm,
        &["templates/clusterrole-metrics-reader.yaml"],
        &[readers],
    )?;
    apply_yaml_documents(admin, &rbac, "citycloud-tests").await?;
    service_account_token(admin, RELEASE_NAMESPACE, READER, seconds).await
}

/// A token of the ServiceAccount `namespace/name` from the TokenRequest API, valid for
/// `seconds`, requested by `client` (who needs `create` on `serviceaccounts/token` there).
pub async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    seconds: i64,
) -> anyhow::Result<String> {
    let request: TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": seconds}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| anyhow::anyhow!("TokenRequest for {namespace}/{name} returned no token"))
}
