//! Users of the local control plane: client certificates (CN = user, O = groups).
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Result;
use crate::controlplane::ControlPlane;

/// A user's client certificate and key, signed by the cluster CA.
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Identity {
    /// A self-contained kubeconfig (certificates embedded) for this user.
    pub fn kubeconfig(&self, cp: &ControlPlane) -> String {
        let ca = cp.ca_pem().unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: citycloud-local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {user}@citycloud-local\n  context:\n    cluster: citycloud-local\n    user: {user}\ncurrent-context: {user}@citycloud-local\n",
            server = cp.server,
            ca = STANDARD.encode(ca),
            user = self.user,
            cert = STANDARD.encode(&self.cert_pem),
            key = STANDARD.encode(&self.key_pem),
        )
    }

    /// A kube client acting as this user.
    pub async fn client(&self, cp: &ControlPlane) -> Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig(cp)).await
    }
}

/// A kube client from kubeconfig text.
pub async fn client_from_kubeconfig(text: &str) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's, from the
/// TokenRequest API).
pub fn token_kubeconfig(cp: &ControlPlane, user: &str, token: &str) -> String {
    let ca = cp.ca_pem().unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: citycloud-local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}@citycloud-local\n  context:\n    cluster: citycloud-local\n    user: {user}\ncurrent-context: {user}@citycloud-local\n",
        server = cp.server,
        ca = STANDARD.encode(ca),
    )
}
