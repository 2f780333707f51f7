//! The finalizers the operator puts on CityCloud objects: while one is there, deleting the
//! object waits for the operator's cleanup.

/// On a Tenant: its namespaces are deleted or retained (`spec.deletionPolicy`) before it goes.
pub const TENANT: &str = "citycloud.io/tenant-cleanup";
/// On a SharedServiceClaim: its binding Secret, token and network access are revoked before
/// it goes.
pub const CLAIM: &str = "citycloud.io/claim-cleanup";
