//! What to do with a TenantRequest, from what was read: pure functions, unit-tested.
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::annotations::{APPROVED_BY, REQUEST, REQUESTED_BY};
use crate::api::conditions::reason::{self, APPROVED_BY_POLICY, BUDGET_EXCEEDED, NOT_A_CHILD};
use crate::api::conditions::tenant::READY;
use crate::api::conditions::tenant_request::{APPROVED, DENIED, PROVISIONED};
use crate::api::tenant_request::state;
use crate::api::{Tenant, TenantRequest};
use crate::conditions::Cond;

use crate::quota::carve::Shortfall;

/// Where the request stands, as its conditions say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Pending,
    Approved { by: String },
    Denied,
}

pub fn decision(request: &TenantRequest) -> Decision {
    if request.is(DENIED) {
        Decision::Denied
    } else if request.is(APPROVED) {
        Decision::Approved {
            by: request
                .status
                .as_ref()
                .and_then(|s| s.decided_by.clone())
                .unwrap_or_default(),
        }
    } else {
        Decision::Pending
    }
}

/// The request's name as the Tenant's annotation `citycloud.io/request` holds it.
pub fn request_ref(request: &TenantRequest) -> String {
    format!(
        "{}/{}",
        request.namespace().unwrap_or_default(),
        request.name_any()
    )
}

/// A request still pending that can never be granted, as the operator decides it: an existing
/// Tenant that is not the parent's child, or a budget that does not fit.
pub fn refusal(
    parent: Option<&str>,
    existing: Option<&Tenant>,
    fit: &Result<(), Shortfall>,
) -> Option<Cond> {
    if let Some(t) = existing
        && t.spec.parent.as_deref() != parent
    {
        return Some(Cond::ok(
            DENIED,
            NOT_A_CHILD,
            format!(
                "Tenant {} exists and is not a child of {}: only its parent's owners may request changes to it",
                t.name_any(),
                parent.unwrap_or("the top level")
            ),
        ));
    }
    if let Err(short) = fit {
        return Some(Cond::ok(
            DENIED,
            BUDGET_EXCEEDED,
            format!(
                "does not fit the budget of {}: {short}",
                parent.unwrap_or("the parent")
            ),
        ));
    }
    None
}

/// The policy approval condition.
pub fn approved_by_policy(policy: &str, why: &str) -> Cond {
    Cond::ok(
        APPROVED,
        APPROVED_BY_POLICY,
        format!("approved by TenantRequestPolicy {policy}: {why}"),
    )
}

/// The Tenant an approved request asks for, as a server-side apply body.
pub fn desired_tenant(request: &TenantRequest, parent: Option<&str>, approved_by: &str) -> Value {
    let requested_by = request
        .spec
        .requested_by
        .as_ref()
        .map(|r| r.username.clone())
        .unwrap_or_default();
    json!({
        "apiVersion": Tenant::api_version(&()),
        "kind": Tenant::kind(&()),
        "metadata": {
            "name": request.spec.tenant,
            "annotations": {
                REQUEST: request_ref(request),
                REQUESTED_BY: requested_by,
                APPROVED_BY: approved_by,
            },
        },
        "spec": request.spec.template.to_spec(parent),
    })
}

/// Whether `live` is the Tenant this request asked for (created or changed by it).
pub fn applied(request: &TenantRequest, live: Option<&Tenant>) -> bool {
    live.is_some_and(|t| t.annotations().get(REQUEST) == Some(&request_ref(request)))
}

/// The Provisioned condition for an approved request whose Tenant is `live`.
pub fn provisioned(request: &TenantRequest, live: Option<&Tenant>) -> Cond {
    let name = &request.spec.tenant;
    match live {
        Some(t) if applied(request, Some(t)) => {
            let ready = t.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == READY)
                    .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
            });
            let current =
                t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation;
            match ready {
                Some((true, _, _)) if current => Cond::ok(
                    PROVISIONED,
                    reason::TENANT_READY,
                    format!("Tenant {name} is Ready"),
                ),
                Some((_, reason, message)) => Cond::fail(
                    PROVISIONED,
                    reason::TENANT_NOT_READY,
                    format!("Tenant {name} is not Ready yet ({reason}: {message})"),
                ),
                None => Cond::fail(
                    PROVISIONED,
                    reason::TENANT_NOT_READY,
                    format!("Tenant {name} is being provisioned"),
                ),
            }
        }
        Some(_) => Cond::ok(
            PROVISIONED,
            reason::SUPERSEDED,
            format!("Tenant {name} has since been changed by another request"),
        ),
        None => Cond::fail(
            PROVISIONED,
            reason::PROVISIONING,
            format!("Tenant {name} is being created"),
        ),
    }
}

/// The Provisioned condition of a request waiting for a decision.
pub fn awaiting_approval(parent: Option<&str>, top_level: &str) -> Cond {
    let on = parent.unwrap_or(top_level);
    Cond::fail(
        PROVISIONED,
        reason::AWAITING_APPROVAL,
        format!(
            "waiting for someone holding approve on tenants/{on} (kubectl auth can-i approve tenants/{on})"
        ),
    )
}

/// The state column for the request's conditions.
pub fn state_of(decision: &Decision, provisioned: bool) -> &'static str {
    match decision {
        Decision::Pending => state::PENDING,
        Decision::Denied => state::DENIED,
        Decision::Approved { .. } if provisioned => state::PROVISIONED,
        Decision::Approved { .. } => state::APPROVED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn request(status: &str) -> TenantRequest {
        serde_yaml_ng::from_str(&format!(
            r#"
metadata: {{name: phuong-moi, namespace: quan-prod}}
spec:
  tenant: phuong-moi
  template: {{displayName: "Phường Mới", owners: [{{kind: Group, name: pm}}], quotaProfile: small}}
  requestedBy: {{username: ward-admin, groups: [x]}}
status: {status}
"#
        ))
        .expect("request")
    }

    fn tenant(parent: Option<&str>, annotations: &[(&str, &str)]) -> Tenant {
        let mut t: Tenant = serde_yaml_ng::from_str(
            "metadata: {name: phuong-moi, generation: 1}\nspec: {displayName: P, owners: [{kind: Group, name: pm}]}",
        )
        .expect("tenant");
        t.spec.parent = parent.map(str::to_owned);
        for (k, v) in annotations {
            t.annotations_mut().insert(k.to_string(), v.to_string());
        }
        t
    }

    #[test]
    fn approved_and_denied_read_from_the_conditions() {
        assert_eq!(decision(&request("{}")), Decision::Pending);
        let approved = request(
            r#"{conditions: [{type: Approved, status: "True", reason: R, message: m, lastTransitionTime: "2026-01-01T00:00:00Z"}], decidedBy: district-owner}"#,
        );
        assert_eq!(
            decision(&approved),
            Decision::Approved {
                by: "district-owner".into()
            }
        );
        let denied = request(
            r#"{conditions: [{type: Denied, status: "True", reason: R, message: m, lastTransitionTime: "2026-01-01T00:00:00Z"}]}"#,
        );
        assert_eq!(decision(&denied), Decision::Denied);
    }

    #[test]
    fn a_request_over_budget_or_for_someone_elses_tenant_is_denied_saying_why() {
        let short = Err(Shortfall {
            resource: "requests.cpu".into(),
            asked: Some(Quantity("8".into())),
            left: Quantity("2".into()),
        });
        let denied = refusal(Some("quan"), None, &short).expect("denied");
        assert_eq!(denied.reason, BUDGET_EXCEEDED);
        assert!(
            denied.message.contains("asks for 8 but 2"),
            "{}",
            denied.message
        );
        let foreign = tenant(Some("quan-khac"), &[]);
        let denied = refusal(Some("quan"), Some(&foreign), &Ok(())).expect("denied");
        assert_eq!(denied.reason, NOT_A_CHILD);
        assert_eq!(
            refusal(Some("quan"), Some(&tenant(Some("quan"), &[])), &Ok(())),
            None
        );
        assert_eq!(refusal(Some("quan"), None, &Ok(())), None);
    }

    #[test]
    fn the_tenant_carries_its_parent_and_who_asked_and_approved() {
        let body = desired_tenant(&request("{}"), Some("quan"), "district-owner");
        assert_eq!(body["spec"]["parent"], "quan");
        assert_eq!(body["spec"]["deletionPolicy"], "Retain");
        assert_eq!(body["spec"]["podSecurity"], "restricted");
        let annotations = &body["metadata"]["annotations"];
        assert_eq!(annotations[REQUESTED_BY], "ward-admin");
        assert_eq!(annotations[APPROVED_BY], "district-owner");
        assert_eq!(annotations[REQUEST], "quan-prod/phuong-moi");
    }

    #[test]
    fn provisioned_follows_the_tenants_readiness_and_yields_to_a_newer_request() {
        let r = request("{}");
        assert!(!provisioned(&r, None).ok);
        let mut ours = tenant(Some("quan"), &[(REQUEST, "quan-prod/phuong-moi")]);
        assert!(!provisioned(&r, Some(&ours)).ok);
        ours.status = serde_json::from_value(serde_json::json!({
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }))
        .ok();
        assert!(provisioned(&r, Some(&ours)).ok);
        let newer = tenant(Some("quan"), &[(REQUEST, "quan-prod/later")]);
        assert_eq!(provisioned(&r, Some(&newer)).reason, "Superseded");
        let _ = BTreeMap::<String, String>::new();
    }
}
