//! Automatic approval by TenantRequestPolicies.
use kube::Client;

use super::budget::Budget;
use crate::Result;
use crate::api::{Tenant, TenantRequest};

/// The policy approving `request`, and why, if any does.
pub async fn approving(
    _client: &Client,
    _request: &TenantRequest,
    _parent: Option<&str>,
    _existing: Option<&Tenant>,
    _child: &Budget,
) -> Result<Option<(String, String)>> {
    Ok(None)
}
