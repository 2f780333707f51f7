//! What kube-runtime's finalizer helper reports, as a reconcile outcome.
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::Error as FinalizerError;

use crate::{Error, Result};

/// The two benign races become actions; everything else is an error to retry with backoff.
pub fn outcome<E>(result: std::result::Result<Action, FinalizerError<E>>) -> Result<Action>
where
    E: std::error::Error + 'static,
{
    result.or_else(|e| match e {
        // A queued reconcile of an object whose cleanup already finished: nothing left to do.
        FinalizerError::RemoveFinalizer(kube::Error::Api(s)) if s.code == 404 => {
            Ok(Action::await_change())
        }
        // Adding the finalizer tests the object as last seen: a stale view (another trigger
        // ran before the watch delivered the object with the finalizer just added) fails that
        // test. The watch brings the fresh object within moments; look again soon.
        FinalizerError::AddFinalizer(kube::Error::Api(s)) if s.code == 422 => {
            Ok(Action::requeue(Duration::from_millis(250)))
        }
        e => Err(Error::Finalizer(e.to_string())),
    })
}
