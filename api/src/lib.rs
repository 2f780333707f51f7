//! The CityCloud API, group `citycloud.io`, version `v1alpha1`: one module per kind, and the
//! pieces they share.
//!
//! - [`Tenant`]: an agency and its namespaces (cluster-scoped, `tnt`).
//! - [`QuotaProfile`]: a standard size for tenants (cluster-scoped, `qp`).
//! - [`SharedService`]: a shared platform service tenants may claim (cluster-scoped, `ssvc`).
//! - [`SharedServiceClaim`]: a tenant's request for a shared service (namespaced, `ssc`).
//! - [`TenantRequest`]: an agency's request for a Tenant, approved by its parent (namespaced,
//!   `treq`).
//! - [`TenantRequestPolicy`]: automatic approval rules for TenantRequests (cluster-scoped, `trp`).
//!
//! Each type carries its CRD schema: defaults, and the CEL rules
//! (`x-kubernetes-validations`) for what one object can check alone. Cross-object problems
//! (a missing profile, a cycle of parents) are for the controllers to report in conditions.
//!
//! The labels, annotations, finalizers and condition reasons the operator writes are here too
//! ([`labels`], [`annotations`], [`finalizers`], [`conditions`]): whoever reads them (a client, a policy, the operator itself)
//! uses these constants, never a copy of the string.
//!
//! This crate holds types and constants only: no async runtime, no HTTP client. It enables no
//! version feature of `k8s-openapi` (that crate's rule for libraries): the binary using it picks
//! the Kubernetes version, e.g. `k8s-openapi = { version = "0.29", features = ["v1_37"] }`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod annotations;
pub mod claim;
pub mod conditions;
pub mod finalizers;
pub mod labels;
pub mod quota_profile;
pub mod shared_service;
pub mod subject;
pub mod tenant;
pub mod tenant_request;
pub mod tenant_request_policy;
pub mod validation;

pub use claim::{Binding, SharedServiceClaim, SharedServiceClaimSpec, SharedServiceClaimStatus};
pub use quota_profile::{ContainerLimits, QuotaProfile, QuotaProfileSpec, QuotaProfileStatus};
pub use shared_service::{
    Access, Category, Credentials, Endpoint, SharedService, SharedServiceSpec, SharedServiceStatus,
};
pub use subject::{Subject, SubjectKind};
pub use tenant::{
    DeletionPolicy, Egress, Environment, Ingress, Network, NodePlacement, PodSecurity,
    QuotaOverrides, ResourceUsage, Tenant, TenantSpec, TenantStatus, namespace_name,
};
pub use tenant_request::{RequestedBy, TenantRequest, TenantRequestSpec, TenantRequestStatus};
pub use tenant_request_policy::{NewChildren, TenantRequestPolicy, TenantRequestPolicySpec};

/// The API group of every CityCloud kind.
pub const GROUP: &str = "citycloud.io";

/// The API version of every CityCloud kind.
pub const VERSION: &str = "v1alpha1";

/// The category every CityCloud kind belongs to: `kubectl get citycloud` lists them all.
pub const CATEGORY: &str = "citycloud";
