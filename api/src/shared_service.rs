//! SharedService: an entry of the city's service catalogue (LGSP, single sign-on, the data
//! warehouse, ...), run by the platform team, that tenants claim.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::{ParseExpressionError, Selector, SelectorExt};
use kube::{CustomResource, KubeSchema, ResourceExt};
use serde::{Deserialize, Serialize};

use super::tenant::Tenant;
use super::validation::{dns_1035_label, dns_label, not_blank};

/// Keys of a binding Secret that the operator fills from the spec, which `bindingData` may
/// therefore not set.
pub const RESERVED_BINDING_KEYS: [&str; 6] = ["type", "provider", "host", "port", "uri", "token"];

/// A shared platform service and who may claim it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "citycloud.io",
    version = "v1alpha1",
    kind = "SharedService",
    doc = "A shared platform service of the city (data integration, single sign-on, data warehouse, open data, monitoring), run by the platform team in a platform namespace, and which tenants may claim it.",
    status = "SharedServiceStatus",
    shortname = "ssvc",
    category = "citycloud",
    derive = "PartialEq",
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(name = "Category", type_ = "string", json_path = ".spec.category"),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"EndpointReady\")].status"
    ),
    printcolumn(name = "Claims", type_ = "integer", json_path = ".status.claims"),
    printcolumn(
        name = "Binding Type",
        type_ = "string",
        priority = 1,
        json_path = ".spec.bindingType"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("size(self.metadata.name) <= 63").message(Message::Message(
        "metadata.name of a SharedService must be at most 63 characters: it is the value of the label citycloud.io/shared-service on the service's consumers Secrets".into()
    ))
)]
// clippy reads the repeated `type_ = ...` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[serde(rename_all = "camelCase")]
pub struct SharedServiceSpec {
    /// The service's name, as people read it (UTF-8); 1 to 256 characters.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = not_blank("spec.displayName"))]
    pub display_name: String,

    /// Integration, Identity, Data, OpenData, Monitoring or Other.
    pub category: Category,

    /// Where the service listens, inside the cluster.
    pub endpoint: Endpoint,

    /// Which tenants and environments may claim the service; everyone when left out.
    #[serde(default)]
    pub access: Access,

    /// None: claims get no credentials. PerClaim (default): each claim gets a random token,
    /// which the service finds in the Secrets `<service>-consumers-<tenant>` of its namespace
    /// (one per tenant with bound claims, labelled `citycloud.io/shared-service=<service>`).
    #[serde(default)]
    pub credentials: Credentials,

    /// The Service Binding "type" entry of every binding Secret (e.g. lgsp, oidc, postgresql).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = not_blank("spec.bindingType"))]
    pub binding_type: String,

    /// Extra non-secret entries of every binding Secret (e.g. issuer). May not set the keys
    /// the operator fills: type, provider, host, port, uri, token.
    #[serde(default)]
    #[schemars(extend(
        "maxProperties" = 32,
        "additionalProperties" = {"type": "string", "maxLength": 4096}
    ))]
    #[x_kube(
        validation = Rule::new(
            "!('type' in self) && !('provider' in self) && !('host' in self) && !('port' in self) && !('uri' in self) && !('token' in self)"
        )
        .message(Message::Message("spec.bindingData may not set type, provider, host, port, uri or token: the operator fills them from the spec".into()))
        .reason(Reason::FieldValueForbidden)
    )]
    pub binding_data: BTreeMap<String, String>,
}

/// The kind of a shared service, for the catalogue.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[allow(
    missing_docs,
    reason = "schemars would turn documented variants into a oneOf in the CRD; the fields of this type say what each value means"
)]
pub enum Category {
    Integration,
    Identity,
    Data,
    OpenData,
    Monitoring,
    Other,
}

/// Where a shared service listens: a Service in a platform namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The namespace of the Service.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = dns_label("spec.endpoint.namespace"))]
    pub namespace: String,

    /// The name of the Service.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = dns_1035_label("spec.endpoint.service"))]
    pub service: String,

    /// The port claimants connect to, 1 to 65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The URI scheme claimants use (https by default, http, grpc, postgresql, ...).
    #[serde(default = "default_scheme")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z][a-z0-9+.-]*$')")
            .message(Message::Message("spec.endpoint.scheme must be a URI scheme: a lowercase letter, then lowercase letters, digits, '+', '.' or '-'".into()))
    )]
    pub scheme: String,
}

fn default_scheme() -> String {
    "https".to_owned()
}

impl Endpoint {
    /// The host claimants connect to: `<service>.<namespace>.svc`, which resolves in every
    /// cluster whatever its DNS domain.
    pub fn host(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }

    /// The URI claimants connect to: `<scheme>://<host>:<port>`.
    pub fn uri(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host(), self.port)
    }
}

/// Who may claim a shared service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    /// Selects, by their labels, the Tenants that may claim the service; empty selects every
    /// tenant.
    #[serde(default)]
    pub tenant_selector: LabelSelector,

    /// The environment names whose namespaces may claim the service; empty allows all.
    #[serde(default)]
    #[schemars(length(max = 20), inner(length(min = 1, max = 63)))]
    #[x_kube(
        validation = Rule::new("self.all(e, e.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))")
            .message(Message::Message("spec.access.environments must hold environment names: DNS labels of lowercase letters, digits and '-'".into()))
    )]
    pub environments: Vec<String>,
}

/// What credentials a claim gets.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum Credentials {
    /// None: the binding holds where the service is, and no token.
    None,
    /// A random token per claim, in the binding Secret and in the provider-side Secret.
    #[default]
    PerClaim,
}

/// What the operator observed of a SharedService.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedServiceStatus {
    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// EndpointReady: the Service of spec.endpoint exists. ConsumersPublished: every
    /// tenant's consumers Secret holds its bound claims' tokens (False names the tenants
    /// whose Secret could not be written, and why).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The number of claims bound to the service.
    #[serde(default)]
    pub claims: i32,
}

impl SharedService {
    /// The tenant selector as a [`Selector`]; fails on an operator other than In, NotIn,
    /// Exists and DoesNotExist.
    pub fn tenant_selector(&self) -> Result<Selector, ParseExpressionError> {
        Selector::try_from(self.spec.access.tenant_selector.clone())
    }

    /// Whether `environment` may claim the service (an empty list allows every environment).
    pub fn admits_environment(&self, environment: &str) -> bool {
        let allowed = &self.spec.access.environments;
        allowed.is_empty() || allowed.iter().any(|e| e == environment)
    }

    /// Whether `tenant`'s namespace for `environment` may claim the service: the tenant's
    /// labels match the selector and the environment is allowed. Fails when the selector
    /// is malformed.
    pub fn admits(&self, tenant: &Tenant, environment: &str) -> Result<bool, ParseExpressionError> {
        let selector = self.tenant_selector()?;
        Ok(selector.matches(tenant.labels()) && self.admits_environment(environment))
    }

    /// The name of the Secret, in the service's namespace, that lists the tokens of the
    /// PerClaim claims of `tenant`: `<service>-consumers-<tenant>` (at most 63 + 11 + 61
    /// characters). One Secret per tenant: no tenant can make another's overflow.
    pub fn consumers_secret_name(&self, tenant: &str) -> String {
        format!("{}-consumers-{tenant}", self.name_any())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LGSP: &str = r#"
apiVersion: citycloud.io/v1alpha1
kind: SharedService
metadata:
  name: lgsp
spec:
  displayName: "Nền tảng tích hợp, chia sẻ dữ liệu (LGSP)"
  category: Integration
  endpoint: {namespace: platform-lgsp, service: lgsp-gateway, port: 443}
  bindingType: lgsp
"#;

    fn tenant(labels: &str) -> Tenant {
        serde_yaml_ng::from_str(&format!(
            "{{apiVersion: citycloud.io/v1alpha1, kind: Tenant, metadata: {{name: t, labels: {labels}}}, \
             spec: {{displayName: T, owners: [{{kind: User, name: u}}]}}}}"
        ))
        .expect("tenant parses")
    }

    #[test]
    fn a_minimal_service_gets_the_documented_defaults() {
        let service: SharedService = serde_yaml_ng::from_str(LGSP).expect("service parses");
        let spec = &service.spec;
        assert_eq!(spec.endpoint.scheme, "https");
        assert_eq!(spec.credentials, Credentials::PerClaim);
        assert_eq!(spec.access, Access::default());
        assert!(spec.binding_data.is_empty());
        assert_eq!(spec.endpoint.host(), "lgsp-gateway.platform-lgsp.svc");
        assert_eq!(
            spec.endpoint.uri(),
            "https://lgsp-gateway.platform-lgsp.svc:443"
        );
        assert_eq!(
            service.consumers_secret_name("sotttt"),
            "lgsp-consumers-sotttt"
        );
    }

    #[test]
    fn an_empty_access_admits_every_tenant_and_environment() {
        let service: SharedService = serde_yaml_ng::from_str(LGSP).expect("service parses");
        assert_eq!(service.admits(&tenant("{}"), "dev").ok(), Some(true));
    }

    #[test]
    fn access_restricts_by_tenant_labels_and_environment() {
        let mut service: SharedService = serde_yaml_ng::from_str(LGSP).expect("service parses");
        service.spec.access = serde_yaml_ng::from_str(
            "{tenantSelector: {matchLabels: {city.io/level: department}}, environments: [prod]}",
        )
        .expect("access parses");
        let department = tenant("{city.io/level: department}");
        assert_eq!(service.admits(&department, "prod").ok(), Some(true));
        assert_eq!(service.admits(&department, "staging").ok(), Some(false));
        assert_eq!(
            service
                .admits(&tenant("{city.io/level: ward}"), "prod")
                .ok(),
            Some(false)
        );
    }

    #[test]
    fn a_malformed_selector_is_an_error_not_a_match() {
        let mut service: SharedService = serde_yaml_ng::from_str(LGSP).expect("service parses");
        service.spec.access.tenant_selector =
            serde_yaml_ng::from_str("{matchExpressions: [{key: a, operator: Near, values: [b]}]}")
                .expect("selector parses");
        assert!(service.admits(&tenant("{a: b}"), "prod").is_err());
    }
}
