//! Whether a claim may be bound, and if not, why, in words the agency can act on.
use kube::ResourceExt;

use super::build::{Permit, claim_id, legacy_claim_id};
use super::dereference::{Found, tenant_of};
use crate::api::conditions::reason;
use crate::api::labels::CLAIM as CLAIM_LABEL;
use crate::api::labels::{ENVIRONMENT, MANAGED_BY, MANAGED_BY_VALUE};
use crate::api::{SharedService, SharedServiceClaim, Tenant};

/// Why a claim is not bound. A refused claim provisions nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotATenantNamespace {
        namespace: String,
        orphaned: bool,
    },
    NamespaceTerminating {
        namespace: String,
    },
    TenantNotFound {
        tenant: String,
        deleting: bool,
    },
    TenantSuspended {
        tenant: String,
    },
    ServiceNotFound {
        service: String,
    },
    NotPermitted {
        tenant: String,
        service: String,
        selector: String,
    },
    MalformedSelector {
        service: String,
        error: String,
    },
    EnvironmentNotPermitted {
        environment: String,
        service: String,
        allowed: Vec<String>,
    },
    EndpointNotReady {
        service: String,
        namespace: String,
    },
    InvalidBindingData {
        service: String,
        keys: Vec<String>,
    },
    SecretConflict {
        secret: String,
    },
}

impl Refusal {
    /// The reason of the claim's Bound=False condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotATenantNamespace { .. } => reason::NOT_A_TENANT_NAMESPACE,
            Refusal::NamespaceTerminating { .. } => reason::NAMESPACE_TERMINATING,
            Refusal::TenantNotFound { .. } => reason::TENANT_NOT_FOUND,
            Refusal::TenantSuspended { .. } => reason::TENANT_SUSPENDED,
            Refusal::ServiceNotFound { .. } => reason::SERVICE_NOT_FOUND,
            Refusal::NotPermitted { .. } | Refusal::MalformedSelector { .. } => {
                reason::NOT_PERMITTED
            }
            Refusal::EnvironmentNotPermitted { .. } => reason::ENVIRONMENT_NOT_PERMITTED,
            Refusal::EndpointNotReady { .. } => reason::ENDPOINT_NOT_READY,
            Refusal::InvalidBindingData { .. } => reason::INVALID_BINDING_DATA,
            Refusal::SecretConflict { .. } => reason::SECRET_CONFLICT,
        }
    }

    /// What the agency reads in the condition's message and the event.
    pub fn message(&self) -> String {
        match self {
            Refusal::NotATenantNamespace {
                namespace,
                orphaned: false,
            } => format!(
                "namespace {namespace} belongs to no tenant (no citycloud.io/tenant label): shared services are claimed from a tenant's namespace"
            ),
            Refusal::NotATenantNamespace {
                namespace,
                orphaned: true,
            } => format!(
                "namespace {namespace} was kept after its tenant or environment went away (citycloud.io/orphaned=true): it can claim nothing until a tenant adopts it back"
            ),
            Refusal::NamespaceTerminating { namespace } => {
                format!("namespace {namespace} is being deleted: nothing more is provisioned in it")
            }
            Refusal::TenantNotFound {
                tenant,
                deleting: false,
            } => format!("the namespace belongs to Tenant {tenant}, which does not exist"),
            Refusal::TenantNotFound {
                tenant,
                deleting: true,
            } => {
                format!("Tenant {tenant} is being deleted")
            }
            Refusal::TenantSuspended { tenant } => format!(
                "Tenant {tenant} is suspended: its shared-service bindings are revoked until it is resumed"
            ),
            Refusal::ServiceNotFound { service } => format!(
                "SharedService {service} does not exist (kubectl get sharedservices lists the catalogue); the claim binds as soon as it is created"
            ),
            Refusal::NotPermitted {
                tenant,
                service,
                selector,
            } => format!(
                "Tenant {tenant} is not selected by SharedService {service}'s access.tenantSelector ({selector}): ask the platform team for access"
            ),
            Refusal::MalformedSelector { service, error } => format!(
                "SharedService {service}'s access.tenantSelector is malformed ({error}), so it admits no tenant: the platform team must fix it"
            ),
            Refusal::EnvironmentNotPermitted {
                environment,
                service,
                allowed,
            } => format!(
                "SharedService {service} may be claimed from the environments {} only, not from {environment}",
                allowed.join(", ")
            ),
            Refusal::EndpointNotReady { service, namespace } => format!(
                "the namespace {namespace} of SharedService {service}'s endpoint does not exist: the platform team must deploy the service; the claim binds once it does"
            ),
            Refusal::InvalidBindingData { service, keys } => format!(
                "SharedService {service}'s bindingData has key(s) a Secret cannot hold ({}): keys are letters, digits, '-', '_' and '.'; the platform team must fix it",
                keys.join(", ")
            ),
            Refusal::SecretConflict { secret } => format!(
                "a Secret {secret} exists in this namespace and was not made for this claim: CityCloud will not overwrite it; set spec.secretName to another name"
            ),
        }
    }
}

/// The tenant environment a namespace holds: its `citycloud.io/environment` label, or the
/// tenant's environment whose namespace has this name.
fn environment_of<'a>(found: &'a Found, tenant: &'a Tenant, ns: &str) -> &'a str {
    found
        .namespace
        .as_ref()
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(ENVIRONMENT))
        .map(String::as_str)
        .or_else(|| {
            tenant
                .environments()
                .iter()
                .find(|e| tenant.namespace_for(&e.name) == ns)
                .map(|e| e.name.as_str())
        })
        .unwrap_or_default()
}

fn valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn selector_text(service: &SharedService) -> String {
    match service.tenant_selector() {
        Ok(s) => {
            let text = s.to_string();
            if text.is_empty() {
                "every tenant".into()
            } else {
                text
            }
        }
        Err(e) => e.to_string(),
    }
}

/// Decides whether the claim may be bound, in this order: a tenant namespace, an existing
/// tenant, not suspended, an existing service, the tenant selected, the environment allowed,
/// the service reachable and well-formed, and the Secret name free.
pub fn decide<'a>(claim: &SharedServiceClaim, found: &'a Found) -> Result<Permit<'a>, Refusal> {
    let ns = claim.namespace().unwrap_or_default();
    let Some(tenant_name) = found.namespace.as_ref().and_then(tenant_of) else {
        let orphaned = found
            .namespace
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .is_some_and(|l| l.contains_key(crate::api::labels::TENANT));
        return Err(Refusal::NotATenantNamespace {
            namespace: ns,
            orphaned,
        });
    };
    if found
        .namespace
        .as_ref()
        .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    {
        return Err(Refusal::NamespaceTerminating { namespace: ns });
    }
    let tenant = match &found.tenant {
        Some(t) if t.metadata.deletion_timestamp.is_none() => t,
        other => {
            return Err(Refusal::TenantNotFound {
                tenant: tenant_name.into(),
                deleting: other.is_some(),
            });
        }
    };
    if tenant.is_suspended() {
        return Err(Refusal::TenantSuspended {
            tenant: tenant_name.into(),
        });
    }
    let Some(service) = &found.service else {
        return Err(Refusal::ServiceNotFound {
            service: claim.service_name().into(),
        });
    };
    let service_name = service.name_any();
    match service.tenant_selector() {
        Err(e) => {
            return Err(Refusal::MalformedSelector {
                service: service_name,
                error: e.to_string(),
            });
        }
        Ok(selector) => {
            use kube::core::SelectorExt;
            if !selector.matches(tenant.labels()) {
                return Err(Refusal::NotPermitted {
                    tenant: tenant_name.into(),
                    service: service_name,
                    selector: selector_text(service),
                });
            }
        }
    }
    let environment = environment_of(found, tenant, &ns);
    if !service.admits_environment(environment) {
        return Err(Refusal::EnvironmentNotPermitted {
            environment: environment.into(),
            service: service_name,
            allowed: service.spec.access.environments.clone(),
        });
    }
    if !found.provider_namespace {
        return Err(Refusal::EndpointNotReady {
            service: service_name,
            namespace: service.spec.endpoint.namespace.clone(),
        });
    }
    let bad_keys: Vec<String> = service
        .spec
        .binding_data
        .keys()
        .filter(|k| !valid_secret_key(k))
        .cloned()
        .collect();
    if !bad_keys.is_empty() {
        return Err(Refusal::InvalidBindingData {
            service: service_name,
            keys: bad_keys,
        });
    }
    if let Some(secret) = &found.secret {
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        let id = labels.get(CLAIM_LABEL);
        let name = claim.name_any();
        let ours = (id == Some(&claim_id(&ns, &name))
            || id.is_some_and(|id| legacy_claim_id(&ns, &name).as_ref() == Some(id)))
            && labels.get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE);
        if !ours {
            return Err(Refusal::SecretConflict {
                secret: claim.secret_name(),
            });
        }
    }
    Ok(Permit {
        tenant,
        service,
        environment,
    })
}

#[cfg(test)]
mod tests;
