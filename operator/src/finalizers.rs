//! What kube-runtime's finalizer helper reports, as a reconcile outcome.
//!
//! Adding the finalizer is a JSON patch that first tests the finalizer list as last seen. Two
//! very different failures come back from it as 422: the test failed (a stale view: benign, look
//! again soon) and admission refused the object (a policy, a schema rule: retrying in 250 ms
//! would loop silently for ever). Only the first is a race; the second is an error, logged and
//! retried with the controller's backoff like any failed reconcile.
use std::time::Duration;

use kube::core::Status;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Error as FinalizerError;

use crate::{Error, Result};

/// How soon to look again after a stale view: the watch brings the fresh object within moments.
pub const STALE_VIEW_RETRY: Duration = Duration::from_millis(250);

/// The two benign races become actions; everything else is an error to retry with backoff. A
/// step's own error comes back as it was (naming its step and object), not as the helper's.
pub fn outcome(result: std::result::Result<Action, FinalizerError<Error>>) -> Result<Action> {
    result.or_else(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => Err(e),
        // A queued reconcile of an object whose cleanup already finished: nothing left to do.
        FinalizerError::RemoveFinalizer(kube::Error::Api(s)) if s.code == 404 => {
            Ok(Action::await_change())
        }
        // Another trigger ran before the watch delivered the object with the finalizer just
        // added: the patch's test of the list as last seen failed.
        FinalizerError::AddFinalizer(kube::Error::Api(s)) if is_stale_view(&s) => {
            Ok(Action::requeue(STALE_VIEW_RETRY))
        }
        // Admission (a ValidatingAdmissionPolicy, a CRD rule) refused the object: say so.
        FinalizerError::AddFinalizer(kube::Error::Api(s)) => Err(Error::FinalizerRefused {
            reason: s.reason.clone(),
            message: s.message.clone(),
        }),
        e => Err(Error::Finalizer(e.to_string())),
    })
}

/// What the API server answers when a JSON patch's `test` operation fails: 422 Invalid with
/// this generic message and details naming no object (seen on kube-apiserver 1.37,
/// tests/integration/finalizers.rs). A refusal by admission or by the schema is also 422
/// Invalid, but its message names the object and says why.
pub const PATCH_TEST_FAILED: &str =
    "the server rejected our request due to an error in our request";

/// Whether the API server's answer to the finalizer patch means "your view was stale": a
/// conflict, or the patch's test of the finalizer list failing.
pub fn is_stale_view(status: &Status) -> bool {
    let names_no_object = status
        .details
        .as_ref()
        .is_none_or(|d| d.name.is_empty() && d.causes.is_empty());
    status.code == 409
        || (status.code == 422 && status.message == PATCH_TEST_FAILED && names_no_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let mut s = Status::failure(message, reason);
        s.code = code;
        kube::Error::Api(Box::new(s))
    }

    fn add(code: u16, reason: &str, message: &str) -> Result<Action> {
        outcome(Err(FinalizerError::AddFinalizer(api(
            code, reason, message,
        ))))
    }

    #[test]
    fn a_stale_view_when_adding_the_finalizer_is_looked_at_again_soon() {
        let race = add(422, "Invalid", PATCH_TEST_FAILED);
        assert_eq!(race.ok(), Some(Action::requeue(STALE_VIEW_RETRY)));
        let conflict = add(
            409,
            "Conflict",
            "Operation cannot be fulfilled on tenants.citycloud.io \"a\": the object has been modified; please apply your changes to the latest version and try again",
        );
        assert_eq!(conflict.ok(), Some(Action::requeue(STALE_VIEW_RETRY)));
    }

    #[test]
    fn an_admission_refusal_when_adding_the_finalizer_is_an_error_that_says_why() {
        let denied = add(
            422,
            "Invalid",
            "sharedserviceclaims.citycloud.io \"db\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no finalizers here",
        );
        let err = denied.expect_err("a refusal is not a race");
        assert_eq!(err.metric_label(), "finalizer_refused");
        let text = err.to_string();
        assert!(
            text.contains("denied request: no finalizers here"),
            "{text}"
        );
        assert!(!text.contains("ErrorResponse"), "no debug dump: {text}");
        let invalid = add(
            422,
            "Invalid",
            "Tenant.citycloud.io \"a\" is invalid: spec: Invalid value",
        );
        assert!(invalid.is_err());
        let forbidden = add(
            403,
            "Forbidden",
            "tenants.citycloud.io \"a\" is forbidden: User cannot patch",
        );
        assert_eq!(
            forbidden.expect_err("403").metric_label(),
            "finalizer_refused"
        );
    }

    #[test]
    fn a_steps_error_comes_back_naming_its_step_and_object() {
        let step = Error::Invalid("refused".into()).at("applying", "NetworkPolicy a/b");
        let err = outcome(Err(FinalizerError::ApplyFailed(step))).expect_err("an error");
        assert_eq!(err.metric_label(), "applying");
        assert_eq!(err.reason(), "ApplyFailed");
        assert_eq!(err.to_string(), "applying NetworkPolicy a/b: refused");
        let cleanup = Error::Invalid("gone".into()).at("deleting", "Namespace a-prod");
        let err = outcome(Err(FinalizerError::CleanupFailed(cleanup))).expect_err("an error");
        assert_eq!(err.reason(), "DeleteFailed");
    }

    #[test]
    fn cleanup_already_done_is_nothing_to_do() {
        let gone = outcome(Err(FinalizerError::RemoveFinalizer(api(
            404, "NotFound", "gone",
        ))));
        assert_eq!(gone.ok(), Some(Action::await_change()));
    }
}
