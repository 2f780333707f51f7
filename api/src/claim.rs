//! SharedServiceClaim: how an agency asks, self-service, for a shared service in one of its
//! namespaces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema, ResourceExt};
use serde::{Deserialize, Serialize};

use super::validation::dns_subdomain;

/// A request, from a tenant namespace, for a shared service.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "citycloud.io",
    version = "v1alpha1",
    kind = "SharedServiceClaim",
    doc = "A request, from a tenant's namespace, to use a SharedService. A bound claim gets a Secret in the Service Binding layout and the network access to the service.",
    namespaced,
    status = "SharedServiceClaimStatus",
    shortname = "ssc",
    category = "citycloud",
    derive = "PartialEq",
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.service"),
    printcolumn(
        name = "Bound",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Bound\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Bound\")].reason"
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.binding.name"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("size(self.metadata.name) <= 63").message(Message::Message(
        "metadata.name of a SharedServiceClaim must be at most 63 characters: it names the claim's NetworkPolicies and its entry in the service's consumers Secret".into()
    ))
)]
// clippy reads the repeated `type_ = ...` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[serde(rename_all = "camelCase")]
pub struct SharedServiceClaimSpec {
    /// The name of the SharedService claimed. Cannot change: claim another service with
    /// another claim.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(
        validation = dns_subdomain("spec.service"),
        validation = Rule::new("self == oldSelf")
            .message(Message::Message("spec.service is immutable: delete this claim and create another one to claim a different service".into()))
    )]
    pub service: String,

    /// The name of the binding Secret to create in this namespace; the claim's name when
    /// left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = dns_subdomain("spec.secretName"))]
    pub secret_name: Option<String>,
}

/// What the operator observed of a claim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedServiceClaimStatus {
    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Bound, with reason NotPermitted, ServiceNotFound or TenantSuspended when it is not.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The binding Secret, once provisioned: the servicebinding.io "Provisioned Service"
    /// duck type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,

    /// The SHA-256 of the token the operator issued for this claim (`sha256:<hex>`), with
    /// PerClaim credentials. Only a binding Secret whose token has this digest is trusted
    /// and published to the service: nobody but the operator writes a claim's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71))]
    pub token_digest: Option<String>,
}

/// A reference to a binding Secret in the claim's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// The Secret's name.
    pub name: String,
}

impl SharedServiceClaim {
    /// The name of the SharedService claimed.
    pub fn service_name(&self) -> &str {
        &self.spec.service
    }

    /// The name of the binding Secret: spec.secretName, or else the claim's own name.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .unwrap_or_else(|| self.name_any())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(spec: &str) -> SharedServiceClaim {
        serde_yaml_ng::from_str(&format!(
            "{{apiVersion: citycloud.io/v1alpha1, kind: SharedServiceClaim, \
             metadata: {{name: lgsp, namespace: sotttt-prod}}, spec: {spec}}}"
        ))
        .expect("claim parses")
    }

    #[test]
    fn the_secret_is_named_after_the_claim_unless_the_spec_says() {
        assert_eq!(claim("{service: lgsp}").secret_name(), "lgsp");
        assert_eq!(
            claim("{service: lgsp, secretName: lgsp-binding}").secret_name(),
            "lgsp-binding"
        );
        assert_eq!(claim("{service: lgsp}").service_name(), "lgsp");
    }
}
