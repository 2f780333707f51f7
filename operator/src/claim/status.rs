//! A claim's status: the Bound condition and, once bound, the binding Secret's name (the
//! servicebinding.io "Provisioned Service" duck type), and the digest of the token issued
//! (never the token).
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::validate::Refusal;
use crate::api::conditions::{claim as cond, reason};
use crate::api::{Binding, SharedServiceClaim, SharedServiceClaimStatus};
use crate::conditions::{Cond, stamp};

/// The Bound condition: True naming the Secret, or False saying why.
pub fn bound_condition(outcome: &Result<String, Refusal>, service: &str) -> Cond {
    match outcome {
        Ok(secret) => Cond::ok(
            cond::BOUND,
            reason::BOUND,
            format!(
                "Secret {secret} holds the binding to SharedService {service}; the service admits this namespace"
            ),
        ),
        Err(refusal) => Cond::fail(cond::BOUND, refusal.reason(), refusal.message()),
    }
}

pub fn status(
    claim: &SharedServiceClaim,
    outcome: &Result<String, Refusal>,
    token_digest: Option<String>,
    now: &Time,
) -> SharedServiceClaimStatus {
    let previous = claim.status.clone().unwrap_or_default();
    let generation = claim.metadata.generation;
    SharedServiceClaimStatus {
        observed_generation: generation,
        conditions: stamp(
            &previous.conditions,
            &[bound_condition(outcome, claim.service_name())],
            generation,
            now,
        ),
        binding: outcome
            .as_ref()
            .ok()
            .map(|name| Binding { name: name.clone() }),
        token_digest: token_digest.filter(|_| outcome.is_ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::fixtures::claim;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn a_bound_claim_names_its_secret() {
        let st = status(
            &claim(),
            &Ok("sso-binding".into()),
            Some("sha256:00".into()),
            &now(),
        );
        assert_eq!(
            st.binding,
            Some(Binding {
                name: "sso-binding".into()
            })
        );
        assert_eq!(st.conditions[0].type_, "Bound");
        assert_eq!(st.conditions[0].status, "True");
        assert_eq!(st.conditions[0].reason, "Bound");
        assert_eq!(st.token_digest.as_deref(), Some("sha256:00"));
    }

    #[test]
    fn a_refused_claim_has_no_binding_and_says_why() {
        let refusal = Refusal::ServiceNotFound {
            service: "sso".into(),
        };
        let st = status(&claim(), &Err(refusal), Some("sha256:00".into()), &now());
        assert_eq!(st.binding, None);
        assert_eq!(st.token_digest, None, "no binding, no token");
        assert_eq!(st.conditions[0].status, "False");
        assert_eq!(st.conditions[0].reason, "ServiceNotFound");
    }
}
