//! Label keys and values the operator puts on what it manages, which users, policies and
//! auditors rely on. Annotation keys are in [`crate::annotations`].

/// On a namespace: the Tenant it belongs to.
pub const TENANT: &str = "citycloud.io/tenant";
/// On a namespace: the environment of its tenant it holds.
pub const ENVIRONMENT: &str = "citycloud.io/environment";
/// On a namespace: "true" when its tenant or its environment is gone, and the namespace was
/// kept (`deletionPolicy: Retain`) for a Tenant of the same name to adopt back.
pub const ORPHANED: &str = "citycloud.io/orphaned";
/// On a namespace: its tenant's `network.ingress` (Strict | Open). Admission policies read it
/// to keep a tenant's own NetworkPolicies from undoing the operator's isolation.
pub const INGRESS: &str = "citycloud.io/ingress";
/// On a namespace: its tenant's `network.egress` (Open | Restricted), read by admission policies.
pub const EGRESS: &str = "citycloud.io/egress";
/// On a namespace: "true" lets it reach pods of tenants with `network.ingress: Strict`
/// (ingress controllers, the platform's gateways).
pub const PLATFORM_INGRESS: &str = "citycloud.io/platform-ingress";
/// On a provider-side `<service>-consumers-<tenant>` Secret: the SharedService whose tokens it
/// holds (its tenant is in [`TENANT`]).
pub const SHARED_SERVICE: &str = "citycloud.io/shared-service";
/// The standard label naming who manages an object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`] on every object the operator manages.
pub const MANAGED_BY_VALUE: &str = "citycloud-operator";
/// Pod Security Admission: the level enforced in a namespace.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
/// Pod Security Admission: the level audited in a namespace.
pub const POD_SECURITY_AUDIT: &str = "pod-security.kubernetes.io/audit";
/// Pod Security Admission: the level warned about in a namespace.
pub const POD_SECURITY_WARN: &str = "pod-security.kubernetes.io/warn";
/// On a namespace: the uid of the Tenant that created (or adopted) it. `deletionPolicy: Delete`
/// deletes only namespaces carrying its own Tenant's uid, never one retained from an earlier
/// Tenant of the same name.
pub const TENANT_UID: &str = "citycloud.io/tenant-uid";
/// On what the operator makes for a SharedServiceClaim (its binding Secret): the claim's id.
/// A tenant's pruning leaves objects carrying it alone.
pub const CLAIM: &str = "citycloud.io/claim";
