//! Integration tests against the real local control plane (one per test run, shared).
//! Each module reads as a specification of behaviour a user would notice.

mod access_matrix;
mod admission_table;
mod chart;
mod claims;
mod failures;
mod finalizers;
mod hostile_claims;
mod hostile_network;
mod hostile_nodes;
mod hostile_tenant;
mod leader;
mod process;
mod quota;
mod smoke;
mod tenant;
mod tenant_request;
