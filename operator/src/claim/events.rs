//! The Events of a claim's reconcile, for its agency to read (`kubectl describe ssc`): bound,
//! revoked, refused (once per reason), a new token, a recreated Secret. Never a token.
use kube::runtime::events::EventType;

use super::Bound;
use super::status;
use super::validate::Refusal;
use crate::api::conditions::{claim as cond, find, is_true};
use crate::api::{SharedServiceClaim, SharedServiceClaimStatus};
use crate::context::Context;

/// The events of a reconcile, for the claim's agency (`kubectl describe ssc`): bound,
/// revoked, refused (once per reason), a new token or a recreated Secret.
pub(super) async fn announce(
    ctx: &Context,
    claim: &SharedServiceClaim,
    previous: &SharedServiceClaimStatus,
    outcome: &Result<Bound, (Refusal, usize)>,
) {
    let was_bound = is_true(&previous.conditions, cond::BOUND);
    let was_reason = find(&previous.conditions, cond::BOUND).map(|c| c.reason.as_str());
    match outcome {
        Ok(bound) if was_bound && bound.issued => {
            publish(
                ctx,
                claim,
                EventType::Normal,
                "TokenIssued",
                format!(
                    "Issued a new token in Secret {} (the previous Secret was deleted, or its token changed); the service accepts only the new one",
                    claim.secret_name()
                ),
            )
            .await;
        }
        Ok(bound) if was_bound && bound.secret_created => {
            publish(
                ctx,
                claim,
                EventType::Normal,
                "SecretRecreated",
                format!("Recreated the binding Secret {}", claim.secret_name()),
            )
            .await;
        }
        Ok(_) if !was_bound => {
            let result = Ok(claim.secret_name());
            let message = status::bound_condition(&result, claim.service_name()).message;
            publish(ctx, claim, EventType::Normal, "Bound", message).await;
        }
        Err((refusal, removed)) if was_bound || *removed > 0 => {
            let note = format!(
                "Revoked the binding: removed the binding Secret and the NetworkPolicies on both sides ({})",
                refusal.message()
            );
            publish(ctx, claim, EventType::Warning, "Revoked", note).await;
        }
        Err((refusal, _)) if was_reason != Some(refusal.reason()) => {
            publish(
                ctx,
                claim,
                EventType::Warning,
                refusal.reason(),
                refusal.message(),
            )
            .await;
        }
        _ => {}
    }
}

/// An event on the claim, for its agency to read (`kubectl describe ssc`). Never a token.
pub(super) async fn publish(
    ctx: &Context,
    claim: &SharedServiceClaim,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.publish(claim, type_, reason, note).await;
}
