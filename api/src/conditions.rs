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

/// Condition types of a QuotaProfile's status.
pub mod quota_profile {
    /// The profile is valid and in use by the tenants its status counts.
    pub const READY: &str = "Ready";
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
    /// The claim is bound: binding Secret and network access provisioned. On a Tenant's
    /// RBACReady: the owners', members' and viewers' RoleBindings are in place.
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
    /// A Tenant is Ready, or its namespaces are: everything the spec asks for is in place.
    pub const PROVISIONED: &str = "Provisioned";
    /// New namespaces whose users get access once their quota is enforced (RBACReady=False).
    pub const AWAITING_QUOTA: &str = "AwaitingQuota";
    /// A QuotaProfile the tenant (or one of its environments) names does not exist.
    pub const QUOTA_PROFILE_NOT_FOUND: &str = "QuotaProfileNotFound";
    /// The tenant uses all of a budgeted resource (QuotaReady=False): working as intended, so
    /// it does not make the tenant un-Ready.
    pub const BUDGET_EXHAUSTED: &str = "BudgetExhausted";
    /// The tenant is suspended: quota allows no pods, shared-service bindings are revoked.
    pub const SUSPENDED: &str = "Suspended";
    /// The objects this condition covers (quota, NetworkPolicies) follow the spec.
    pub const APPLIED: &str = "Applied";
    /// `spec.parent` names a Tenant that does not exist.
    pub const PARENT_NOT_FOUND: &str = "ParentNotFound";
    /// `spec.parent` makes a cycle: a tenant would be its own ancestor.
    pub const PARENT_CYCLE: &str = "ParentCycle";
    /// A QuotaProfile is valid and counted (its Ready condition).
    pub const ACCEPTED: &str = "Accepted";
    /// A TenantRequest was denied: it will not be provisioned.
    pub const DENIED: &str = "Denied";
    /// An approved TenantRequest's Tenant is being created or changed.
    pub const PROVISIONING: &str = "Provisioning";
    /// The QuotaProfile a TenantRequest's template names does not exist.
    pub const PROFILE_NOT_FOUND: &str = "ProfileNotFound";
    /// The budget of an approved TenantRequest is being reserved on its parent.
    pub const RESERVING: &str = "Reserving";
    /// A TenantRequest's parent has no quota (budget) yet to carve from.
    pub const WAITING_FOR_PARENT_QUOTA: &str = "WaitingForParentQuota";
    /// The Tenant a TenantRequest asked for exists as asked and is Ready.
    pub const TENANT_READY: &str = "TenantReady";
    /// The Tenant a TenantRequest asked for is not Ready yet.
    pub const TENANT_NOT_READY: &str = "TenantNotReady";
    /// The Tenant a TenantRequest asked for has since been changed by another request.
    pub const SUPERSEDED: &str = "Superseded";
    /// A TenantRequest waits for someone allowed to approve it.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// Reading what a reconcile needs failed (Ready=False; the message names the object).
    pub const READ_FAILED: &str = "ReadFailed";
    /// Applying an object failed, e.g. refused by RBAC, an admission policy or a quota.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Deleting an object failed.
    pub const DELETE_FAILED: &str = "DeleteFailed";
    /// Retaining a namespace (`deletionPolicy: Retain`) failed.
    pub const RETAIN_FAILED: &str = "RetainFailed";
    /// A reconcile failed at a step not named above.
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
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
