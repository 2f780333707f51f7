//! The condition types and reasons the API promises in its statuses, and small helpers to read
//! them. Conditions are `metav1.Condition`s and follow the API conventions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Condition types of a Tenant's status.
pub mod tenant {
    /// Everything below is True: the tenant's namespaces are ready to use.
    pub const READY: &str = "Ready";
    /// Every environment's namespace exists and belongs to this tenant.
    pub const NAMESPACES_READY: &str = "NamespacesReady";
    /// The owners', members' and viewers' RoleBindings are in place.
    pub const RBAC_READY: &str = "RBACReady";
    /// The ResourceQuota and LimitRange of every namespace follow the profile.
    pub const QUOTA_READY: &str = "QuotaReady";
    /// The NetworkPolicies of every namespace follow `spec.network`.
    pub const NETWORK_READY: &str = "NetworkReady";
    /// The API server enforces `spec.nodePlacement` (checked by dry-run pods); only on
    /// Tenants with a nodePlacement.
    pub const NODE_PLACEMENT_READY: &str = "NodePlacementReady";
    /// Every condition type above.
    pub const ALL: &[&str] = &[
        READY,
        NAMESPACES_READY,
        RBAC_READY,
        QUOTA_READY,
        NETWORK_READY,
        NODE_PLACEMENT_READY,
    ];
}

/// Condition types of a SharedService's status.
pub mod shared_service {
    /// The Service that `spec.endpoint` names exists.
    pub const ENDPOINT_READY: &str = "EndpointReady";
    /// Every tenant's provider-side consumers Secret holds its bound claims' tokens.
    pub const CONSUMERS_PUBLISHED: &str = "ConsumersPublished";
}

/// Condition types of a SharedServiceClaim's status.
pub mod claim {
    /// The binding Secret and the network access are provisioned.
    pub const BOUND: &str = "Bound";
}

/// Condition types of a TenantRequest's status.
pub mod tenant_request {
    /// An approver (or a TenantRequestPolicy) approved the request; exclusive with Denied,
    /// final once set.
    pub const APPROVED: &str = "Approved";
    /// An approver, or the operator (the request does not fit its parent's budget, or names
    /// a Tenant that is not the parent's child), denied the request; final once set.
    pub const DENIED: &str = "Denied";
    /// The Tenant exists as asked and is Ready.
    pub const PROVISIONED: &str = "Provisioned";
}

/// Reasons the API names in its conditions.
pub mod reason {
    /// A TenantRequest does not fit what is left of its parent's budget.
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
    /// A Tenant's children together hold more of a resource than its own budget (children
    /// created directly, which nothing refuses): QuotaReady=False, and a Warning event.
    pub const BUDGET_OVERCOMMITTED: &str = "BudgetOvercommitted";
    /// A TenantRequest names an existing Tenant that is not a child of its parent.
    pub const NOT_A_CHILD: &str = "NotAChild";
    /// A TenantRequestPolicy approved the request.
    pub const APPROVED_BY_POLICY: &str = "ApprovedByPolicy";
    /// A namespace the tenant needs exists and belongs to another tenant, or to nobody.
    pub const NAMESPACE_CONFLICT: &str = "NamespaceConflict";
    /// The tenant lists more environments than its QuotaProfile's `maxEnvironments`.
    pub const TOO_MANY_ENVIRONMENTS: &str = "TooManyEnvironments";
    /// The claim's tenant is not among those the service admits.
    pub const NOT_PERMITTED: &str = "NotPermitted";
    /// The claim names a SharedService that does not exist.
    pub const SERVICE_NOT_FOUND: &str = "ServiceNotFound";
    /// The claim's tenant is suspended.
    pub const TENANT_SUSPENDED: &str = "TenantSuspended";
    /// The claim's environment is not among the service's `access.environments`.
    pub const ENVIRONMENT_NOT_PERMITTED: &str = "EnvironmentNotPermitted";
    /// The claim's namespace names a Tenant that does not exist (or is being deleted).
    pub const TENANT_NOT_FOUND: &str = "TenantNotFound";
    /// The claim is in a namespace that belongs to no tenant.
    pub const NOT_A_TENANT_NAMESPACE: &str = "NotATenantNamespace";
    /// The claim's namespace is being deleted.
    pub const NAMESPACE_TERMINATING: &str = "NamespaceTerminating";
    /// The claim's `secretName` is taken by a Secret the claim did not create.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// The service's endpoint namespace does not exist, so it cannot be reached.
    pub const ENDPOINT_NOT_READY: &str = "EndpointNotReady";
    /// The service's `bindingData` has a key a Secret cannot hold.
    pub const INVALID_BINDING_DATA: &str = "InvalidBindingData";
    /// The claim is bound: binding Secret and network access provisioned.
    pub const BOUND: &str = "Bound";
    /// The Service a SharedService's endpoint names exists.
    pub const SERVICE_FOUND: &str = "ServiceFound";
    /// The Service a SharedService's endpoint names does not exist.
    pub const SERVICE_MISSING: &str = "ServiceMissing";
    /// A dry-run pod breaking the tenant's nodePlacement was admitted: the API server lacks
    /// the PodNodeSelector or PodTolerationRestriction admission plugin.
    pub const NODE_PLACEMENT_NOT_ENFORCED: &str = "NodePlacementNotEnforced";
    /// The dry-run pods were refused by the admission plugins, as they must be.
    pub const NODE_PLACEMENT_ENFORCED: &str = "Enforced";
    /// The check could not tell (its dry-run pod was refused before the admission plugins
    /// ran, e.g. no `default` ServiceAccount yet); retried shortly.
    pub const NODE_PLACEMENT_UNVERIFIED: &str = "NodePlacementUnverified";
    /// The consumers Secrets hold exactly the bound claims' tokens.
    pub const PUBLISHED: &str = "Published";
    /// Some tenant's consumers Secret could not be written (or stale ones removed).
    pub const PUBLISH_FAILED: &str = "PublishFailed";
}

/// The condition of type `type_`, if there is one.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is there with status "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}
