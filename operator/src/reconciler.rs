//! What every controller's reconcile shares, once: the tracing span, the duration timer, the
//! finalizer outcome, the `citycloud_reconciles_total{error}` count, a per-object exponential
//! backoff, and, when a step fails, a failure its users can see — the kind's top condition
//! (`Ready`, or `Bound` for a claim…) False with the step's reason and message, written
//! through the kind's status, and a Warning Event naming the step and the object.
//!
//! A controller's `reconcile` is then one call to [`reconcile`] (or [`finalized`]) with its
//! steps, and its error policy is [`error_policy`].
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info_span, warn};

use crate::conditions::{Cond, stamp};
use crate::context::Context;
use crate::{Error, Result, StepExt};

/// A kind the operator reconciles, as far as the shared driver needs to know it: its
/// controller's name and how to write a failure into its status.
pub trait Reconciled:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync
{
    type Status: Serialize + Clone + Default + PartialEq + Send + Sync;
    /// The controller's name in metrics and logs.
    const CONTROLLER: &'static str;
    /// The condition a failed step makes False: what `kubectl get` shows first.
    const TOP_CONDITION: &'static str;
    /// Where its API lives (namespaced or cluster-wide).
    fn api(&self, client: kube::Client) -> Api<Self>;
    /// Its status as last seen.
    fn status(&self) -> Option<&Self::Status>;
    /// The conditions of `status`, and the generation it says it observed.
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
    fn observed_generation(status: &mut Self::Status) -> &mut Option<i64>;
    /// Called just before the operator writes `status` (the Tenant controller remembers what
    /// it wrote, to tell the echo of its own write from someone else's change).
    fn writing(&self, _ctx: &Context, _status: &Self::Status) {}
}

/// "Kind namespace/name" (or "Kind name"): how errors, events and logs name an object.
pub use crate::events::describe as object_name;

/// One reconcile of `object` through `steps`: timed, counted, traced; a failure is reported
/// on the object (see [`report`]), a success forgets its backoff.
pub async fn reconcile<K, Fut>(
    ctx: &Context,
    object: Arc<K>,
    steps: impl FnOnce(Arc<K>) -> Fut,
) -> Result<Action>
where
    K: Reconciled,
    Fut: Future<Output = Result<Action>>,
{
    let name = object_name(&*object);
    let span = info_span!("reconcile", controller = K::CONTROLLER, object = %name);
    let _timer = ctx.shared.metrics.time(K::CONTROLLER);
    let result = steps(object.clone()).instrument(span.clone()).await;
    ctx.shared.metrics.reconciled(K::CONTROLLER, &result);
    match &result {
        Ok(_) => ctx.shared.backoff.reset(&name),
        // Seen by the object's users, not only in the operator's log.
        Err(e) => report(ctx, &*object, e).instrument(span).await,
    }
    result
}

/// [`reconcile`] under the finalizer `finalizer_name`: `steps` gets the object to apply or to
/// clean up; the finalizer's benign races are actions, not failures (see
/// [`crate::finalizers::outcome`]).
pub async fn finalized<K, Fut>(
    ctx: &Context,
    object: Arc<K>,
    finalizer_name: &str,
    steps: impl FnOnce(Event<K>) -> Fut,
) -> Result<Action>
where
    K: Reconciled + 'static,
    Fut: Future<Output = Result<Action>>,
{
    finalized_with(ctx, object, finalizer_name, false, steps).await
}

/// [`finalized`], but a new object gets its finalizer and is applied in the same reconcile:
/// the finalizer is added first (nothing is created before it is stored), then `steps` runs
/// on the object as the API server answered the patch. kube-runtime's helper stops after
/// adding it and leaves the apply to the reconcile its watch echo brings: a second reconcile
/// (and a round trip through the queue) per new object; the controller should not count
/// that echo as news.
pub async fn finalized_at_once<K, Fut>(
    ctx: &Context,
    object: Arc<K>,
    finalizer_name: &str,
    steps: impl FnOnce(Event<K>) -> Fut,
) -> Result<Action>
where
    K: Reconciled + 'static,
    Fut: Future<Output = Result<Action>>,
{
    finalized_with(ctx, object, finalizer_name, true, steps).await
}

async fn finalized_with<K, Fut>(
    ctx: &Context,
    object: Arc<K>,
    finalizer_name: &str,
    add_first: bool,
    steps: impl FnOnce(Event<K>) -> Fut,
) -> Result<Action>
where
    K: Reconciled + 'static,
    Fut: Future<Output = Result<Action>>,
{
    let api = object.api(ctx.client.clone());
    reconcile(ctx, object, |o| async move {
        let o = if add_first {
            match add_finalizer(&api, &o, finalizer_name).await {
                Ok(Some(patched)) => Arc::new(patched),
                Ok(None) => o,
                Err(e) => {
                    return crate::finalizers::outcome(Err(
                        kube::runtime::finalizer::Error::AddFinalizer(e),
                    ));
                }
            }
        } else {
            o
        };
        crate::finalizers::outcome(finalizer(&api, finalizer_name, o, steps).await)
    })
    .await
}

/// Adds `finalizer_name` to an object that is not being deleted and lacks it, with the JSON
/// patch kube-runtime's helper sends (a `test` of the list as last seen, so a concurrent
/// change fails it instead of being overwritten); the object as stored after, or `None` when
/// there was nothing to add.
async fn add_finalizer<K: Reconciled>(
    api: &Api<K>,
    object: &K,
    finalizer_name: &str,
) -> std::result::Result<Option<K>, kube::Error> {
    if object.meta().deletion_timestamp.is_some()
        || object.finalizers().iter().any(|f| f == finalizer_name)
    {
        return Ok(None);
    }
    let patch = if object.finalizers().is_empty() {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer_name]},
        ])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": object.finalizers()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer_name},
        ])
    };
    // The patch type (json_patch's) is known to kube only: built from its JSON form.
    let patch = Patch::Json::<()>(serde_json::from_value(patch).map_err(kube::Error::SerdeError)?);
    api.patch(&object.name_any(), &PatchParams::default(), &patch)
        .await
        .map(Some)
}

/// A controller's context: what reaches the process-wide state (the backoff delays live
/// there, so a controller's error policy needs nothing of its own).
pub trait Controls {
    fn base(&self) -> &Context;
}

impl Controls for Context {
    fn base(&self) -> &Context {
        self
    }
}

/// The error policy of every controller: a warning in the log and a retry after this
/// object's next backoff delay.
pub fn error_policy<K: Reconciled, C: Controls>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<C>,
) -> Action {
    let name = object_name(&*object);
    let delay = ctx.base().shared.backoff.next(&name);
    warn!(controller = K::CONTROLLER, object = %name, %error, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Writes `status` with the operator's own server-side apply (status subresource). An
/// object deleted meanwhile needs no status: not an error.
pub async fn write_status<K: Reconciled>(ctx: &Context, obj: &K, status: &K::Status) -> Result<()> {
    obj.writing(ctx, status);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match obj
        .api(ctx.client.clone())
        .patch_status(
            &obj.name_any(),
            &crate::apply::params(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).at("writing the status of", object_name(obj)),
    }
}

/// The status after a failed step: the top condition False with the step's reason and the
/// error as its message, the other conditions as they were (they describe what was last
/// seen). `None` when the status already says so: no write, no repeated event.
pub fn failed<K: Reconciled>(object: &K, error: &Error, now: &Time) -> Option<K::Status> {
    let before = object.status().cloned().unwrap_or_default();
    let mut status = before.clone();
    let generation = object.meta().generation;
    let conditions = K::conditions(&mut status);
    let fail = Cond::fail(
        K::TOP_CONDITION,
        error.reason(),
        format!("{error}; the operator retries with backoff"),
    );
    let [stamped] = <[Condition; 1]>::try_from(stamp(conditions, &[fail], generation, now)).ok()?;
    match conditions.iter_mut().find(|c| c.type_ == K::TOP_CONDITION) {
        Some(c) => *c = stamped,
        None => conditions.insert(0, stamped),
    }
    *K::observed_generation(&mut status) = generation;
    (status != before).then_some(status)
}

/// Makes a failed reconcile visible on `object`: the failed status (see [`failed`]) and a
/// Warning Event naming the step and the object, when that is news. Failing to report is
/// logged: the reconcile's own error is what gets retried.
pub async fn report<K: Reconciled>(ctx: &Context, object: &K, error: &Error) {
    // The status as stored now: the cache may not show yet what the reconcile before wrote
    // (a claim's token digest), and the whole status written from a stale view would undo it.
    let fresh = match object
        .api(ctx.client.clone())
        .get_opt(&object.name_any())
        .await
    {
        Ok(Some(fresh)) => fresh,
        Ok(None) => return, // deleted meanwhile: nobody to tell
        Err(e) => {
            warn!(error = %e, "could not read the object to report the failure in its status");
            return warn_on(ctx, object, error).await;
        }
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let Some(status) = failed(&fresh, error, &now) else {
        return;
    };
    warn_on(ctx, &fresh, error).await;
    if let Err(e) = write_status(ctx, &fresh, &status).await {
        warn!(error = %e, "could not report the failure in the status");
    }
}

/// The Warning Event of a failed reconcile, for `kubectl describe`.
async fn warn_on<K: Reconciled>(ctx: &Context, object: &K, error: &Error) {
    ctx.publish(
        object,
        EventType::Warning,
        error.reason(),
        error.to_string(),
    )
    .await;
}

/// The first retry comes after this; each further failure doubles it up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(300);

/// Retry delays by object: doubled on each failed retry, forgotten on success. A failure
/// that comes before the retry was due (another trigger: a watch event) does not double the
/// delay: a burst of events must not push the next retry minutes away.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<BTreeMap<String, Failures>>,
}

struct Failures {
    /// Consecutive failed retries.
    n: u32,
    /// When the last failure was counted.
    at: Instant,
}

impl Backoff {
    /// The delay before retrying `object` after one more failure.
    pub fn next(&self, object: &str) -> Duration {
        self.next_at(object, Instant::now())
    }

    fn next_at(&self, object: &str, now: Instant) -> Duration {
        let Ok(mut map) = self.failures.lock() else {
            return delay(1);
        };
        let f = map
            .entry(object.to_string())
            .or_insert(Failures { n: 0, at: now });
        if f.n == 0 || now.saturating_duration_since(f.at) >= delay(f.n) {
            f.n = f.n.saturating_add(1);
            f.at = now;
        }
        delay(f.n)
    }

    pub fn reset(&self, object: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(object);
        }
    }
}

/// The delay after the `n`th consecutive failure (n ≥ 1).
pub fn delay(n: u32) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
    FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Tenant;
    use crate::api::conditions::tenant as cond;

    #[test]
    fn retries_back_off_exponentially_per_object_up_to_five_minutes() {
        assert_eq!(delay(1), Duration::from_millis(500));
        assert_eq!(delay(2), Duration::from_secs(1));
        assert_eq!(delay(4), Duration::from_secs(4));
        assert_eq!(delay(30), MAX_DELAY);
        let b = Backoff::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(b.next_at("Tenant a", at(0)), delay(1));
        // Retried when due (after 500 ms), failed again: doubled.
        assert_eq!(b.next_at("Tenant a", at(600)), delay(2));
        assert_eq!(b.next_at("Tenant a", at(1700)), delay(3));
        assert_eq!(
            b.next_at("SharedServiceClaim ns/a", at(1700)),
            delay(1),
            "per object"
        );
        b.reset("Tenant a");
        assert_eq!(b.next_at("Tenant a", at(1800)), delay(1));
    }

    #[test]
    fn failures_from_other_triggers_before_the_retry_is_due_do_not_double_the_delay() {
        let b = Backoff::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(b.next_at("Tenant a", at(0)), delay(1));
        assert_eq!(b.next_at("Tenant a", at(600)), delay(2));
        // Watch events reconcile it again at once, several times: still 1 s.
        for ms in [601, 605, 900, 1500] {
            assert_eq!(b.next_at("Tenant a", at(ms)), delay(2));
        }
        assert_eq!(b.next_at("Tenant a", at(1700)), delay(3));
    }

    fn tenant_with(conditions: &[Cond]) -> Tenant {
        let mut t: Tenant = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "generation": 3},
            "spec": {"displayName": "A", "owners": [{"kind": "Group", "name": "g"}]},
        }))
        .expect("a tenant");
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        t.status = Some(crate::api::TenantStatus {
            observed_generation: Some(2),
            conditions: stamp(&[], conditions, Some(2), &now),
            ..Default::default()
        });
        t
    }

    #[test]
    fn a_failed_step_makes_the_top_condition_false_naming_the_step_and_object() {
        let tenant = tenant_with(&[
            Cond::ok(cond::READY, "Provisioned", "2 namespace(s) ready"),
            Cond::ok(cond::RBAC_READY, "Bound", "..."),
        ]);
        let error = Error::Invalid("cannot change roleRef".into())
            .at("applying", "RoleBinding a-prod/citycloud-viewers");
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(60).expect("valid"));
        let status = failed(&tenant, &error, &now).expect("news");
        let ready = &status.conditions[0];
        assert_eq!(ready.type_, cond::READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "ApplyFailed");
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(ready.last_transition_time, now, "a flip");
        assert!(
            ready.message.starts_with(
                "applying RoleBinding a-prod/citycloud-viewers: cannot change roleRef"
            ),
            "{}",
            ready.message
        );
        let before = tenant.status.as_ref().expect("status");
        assert_eq!(
            status.conditions[1], before.conditions[1],
            "the others stay"
        );
        assert_eq!(status.observed_generation, Some(3));

        // Reported once: the same failure again is no news (no write, no second event).
        let mut again = tenant.clone();
        again.status = Some(status);
        assert_eq!(failed(&again, &error, &now), None);
    }

    #[test]
    fn a_kind_without_the_condition_yet_gets_it_first() {
        let tenant = tenant_with(&[Cond::ok(cond::RBAC_READY, "Bound", "...")]);
        let error = Error::Invalid("x".into()).at("reading", "Namespace a-prod");
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let status = failed(&tenant, &error, &now).expect("news");
        assert_eq!(status.conditions[0].type_, cond::READY);
        assert_eq!(status.conditions[0].reason, "ReadFailed");
        assert_eq!(status.conditions.len(), 2);
    }

    #[test]
    fn a_claim_shows_a_failed_step_in_bound_and_keeps_the_rest_of_its_status() {
        let mut claim: crate::api::SharedServiceClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "a-prod", "generation": 1},
            "spec": {"service": "db"},
            "status": {
                "observedGeneration": 1,
                "binding": {"name": "db"},
                "tokenDigest": "sha256:00",
                "conditions": [{"type": "Bound", "status": "True", "reason": "Bound",
                    "message": "bound", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            },
        }))
        .expect("a claim");
        let error = Error::Invalid("forbidden".into()).at("applying", "NetworkPolicy p/x");
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let status = failed(&claim, &error, &now).expect("news");
        let bound = &status.conditions[0];
        assert_eq!(
            (bound.type_.as_str(), bound.status.as_str()),
            ("Bound", "False")
        );
        assert_eq!(bound.reason, "ApplyFailed");
        assert_eq!(status.token_digest.as_deref(), Some("sha256:00"), "kept");
        assert!(status.binding.is_some(), "kept: the Secret is still there");
        claim.status = Some(status);
        assert_eq!(failed(&claim, &error, &now), None, "said once");
    }

    #[test]
    fn objects_are_named_with_their_kind_and_namespace() {
        let tenant = tenant_with(&[]);
        assert_eq!(object_name(&tenant), "Tenant a");
        let claim: crate::api::SharedServiceClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "a-prod"},
            "spec": {"service": "db"},
        }))
        .expect("a claim");
        assert_eq!(object_name(&claim), "SharedServiceClaim a-prod/db");
    }
}
