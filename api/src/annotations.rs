//! Annotation keys the operator reads or writes: on Tenants (set by people, or by the operator
//! from a TenantRequest) and on what it manages.

/// On a Tenant: "true" adopts namespaces retained (citycloud.io/orphaned) from an earlier Tenant
/// of the same name, with their data, for this Tenant's owners. Without it such a namespace is
/// a NamespaceConflict: nobody inherits another agency's data by reusing its name.
pub const ADOPT_RETAINED: &str = "citycloud.io/adopt-retained";
/// On a Tenant created or changed from a TenantRequest: who asked (the request's
/// spec.requestedBy.username).
pub const REQUESTED_BY: &str = "citycloud.io/requested-by";
/// On a Tenant created or changed from a TenantRequest: who approved it (a username, or
/// `TenantRequestPolicy/<name>`).
pub const APPROVED_BY: &str = "citycloud.io/approved-by";
/// On a Tenant created or changed from a TenantRequest: the request, as `<namespace>/<name>`.
pub const REQUEST: &str = "citycloud.io/request";
/// On a parent Tenant: the budgets carved out of it for its children, as JSON
/// `{"<child>": {"<resource>": "<quantity>"}}`. Written by the operator with a resourceVersion
/// precondition, so two approvals can never both take the same budget; the parent's own
/// namespaces get what its budget leaves after these.
pub const BUDGET_RESERVATIONS: &str = "citycloud.io/budget-reservations";
/// On every object the operator applies: a digest (SHA-256) of the object as last applied, so
/// a resync that would change nothing writes nothing.
pub const APPLIED_HASH: &str = "citycloud.io/applied-hash";
/// On a tenant's namespace: the tenant's `spec.displayName`.
pub const DISPLAY_NAME: &str = "citycloud.io/display-name";
