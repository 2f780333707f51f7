//! Small YAML fixtures for the claim controller's unit tests: what `dereference` would find.
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};

use super::dereference::Found;
use crate::api::{SharedService, SharedServiceClaim, Tenant};

pub fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml_ng::from_str(yaml).expect("fixture")
}

pub const SOTTTT: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: Tenant
metadata: {name: sotttt, labels: {city.io/level: department}}
spec:
  displayName: "Sở Thông tin và Truyền thông"
  owners: [{kind: Group, name: sotttt-admins}]
  environments: [{name: prod}, {name: staging}]
  network: {egress: Restricted}
"#;

pub const SOTTTT_PROD: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: sotttt-prod
  labels: {citycloud.io/tenant: sotttt, citycloud.io/environment: prod, kubernetes.io/metadata.name: sotttt-prod}
"#;

pub const SSO: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: SharedService
metadata: {name: sso}
spec:
  displayName: "Hệ thống xác thực tập trung (SSO)"
  category: Identity
  endpoint: {namespace: platform-sso, service: keycloak, port: 8443}
  access:
    tenantSelector: {matchLabels: {city.io/level: department}}
    environments: [prod]
  credentials: PerClaim
  bindingType: oidc
  bindingData: {issuer: "https://sso.haiphong.gov.vn/realms/haiphong"}
"#;

pub const KEYCLOAK: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: keycloak, namespace: platform-sso}
spec:
  selector: {app: keycloak}
  ports: [{name: https, port: 8443, targetPort: https}]
"#;

pub const CLAIM: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: SharedServiceClaim
metadata: {name: sso, namespace: sotttt-prod}
spec: {service: sso, secretName: sso-binding}
"#;

/// A permitted claim's world: the department's prod namespace claiming SSO, Service deployed.
pub fn found() -> Found {
    Found {
        namespace: Some(parse::<Namespace>(SOTTTT_PROD)),
        tenant: Some(parse::<Tenant>(SOTTTT)),
        service: Some(parse::<SharedService>(SSO)),
        provider_namespace: true,
        provider: Some(parse::<Service>(KEYCLOAK)),
        secret: None::<Secret>,
    }
}

pub fn claim() -> SharedServiceClaim {
    parse(CLAIM)
}
