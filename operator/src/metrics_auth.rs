//! Who may read `/metrics`. The caller presents a bearer token; the API server says whose it is
//! (TokenReview) and whether that user may `get` the non-resource URL `/metrics`
//! (SubjectAccessReview), as controller-runtime's secure metrics and kube-rbac-proxy do. The
//! chart's ClusterRole `<release>-metrics-reader` grants exactly that.
//!
//! Decisions are cached per token, keyed by its SHA-256 (the token itself is never kept or
//! logged), so a Prometheus scrape costs no API call while its decision is fresh. Reviews run
//! a few at a time: whoever reaches the port cannot make the operator flood the API server
//! with reviews and use up its own share of the API server's capacity.
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use lru::LruCache;
use tokio::sync::Semaphore;

/// The URL and verb a reader must be allowed (`nonResourceURLs: ["/metrics"]`, `get`).
pub const PATH: &str = "/metrics";
pub const VERB: &str = "get";

/// How long a decision is kept: an allowed reader is not reviewed again for a minute; a
/// refusal is kept briefly, so a reader bound a moment ago is let in soon.
const ALLOWED_TTL: Duration = Duration::from_secs(60);
const REFUSED_TTL: Duration = Duration::from_secs(10);
/// Distinct tokens remembered; the least recently used is forgotten first. (Evaluated at
/// compile time: the unwrap cannot fail at run time.)
const CACHE_SIZE: NonZeroUsize = NonZeroUsize::new(1024).unwrap();
/// TokenReviews and SubjectAccessReviews in flight at once; more callers wait.
const REVIEWS_AT_ONCE: usize = 2;

/// What the API server decided for one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The token names a user allowed `get` on `/metrics`: 200.
    Allowed,
    /// The token names a user without that permission: 403.
    Forbidden,
    /// No token, or one the API server does not accept: 401.
    Unauthenticated,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not review the caller's token (TokenReview): {0}")]
    TokenReview(#[source] kube::Error),
    #[error("could not review the caller's access (SubjectAccessReview): {0}")]
    AccessReview(#[source] kube::Error),
}

/// Reviews callers of `/metrics` with the API server, caching decisions.
pub struct MetricsAuth {
    client: Client,
    cache: Mutex<DecisionCache>,
    reviews: Semaphore,
}

impl MetricsAuth {
    pub fn new(client: Client) -> Self {
        MetricsAuth {
            client,
            cache: Mutex::new(DecisionCache::new(CACHE_SIZE)),
            reviews: Semaphore::new(REVIEWS_AT_ONCE),
        }
    }

    /// The decision for a request whose `Authorization` header is `authorization`.
    pub async fn decide(&self, authorization: Option<&str>) -> Result<Decision, Error> {
        let Some(token) = bearer_token(authorization) else {
            return Ok(Decision::Unauthenticated);
        };
        let key = TokenKey::of(token);
        if let Some(decision) = self.cached(&key) {
            return Ok(decision);
        }
        // A closed semaphore cannot happen (it is never closed); without a permit, review anyway.
        let _permit = self.reviews.acquire().await.ok();
        // Another caller with the same token may have been reviewed while this one waited.
        if let Some(decision) = self.cached(&key) {
            return Ok(decision);
        }
        let decision = self.review(token).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(key, decision, Instant::now());
        }
        Ok(decision)
    }

    fn cached(&self, key: &TokenKey) -> Option<Decision> {
        self.cache.lock().ok()?.get(key, Instant::now())
    }

    async fn review(&self, token: &str) -> Result<Decision, Error> {
        let review = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &token_review(token))
            .await
            .map_err(Error::TokenReview)?;
        let Some(user) = authenticated_user(&review) else {
            return Ok(Decision::Unauthenticated);
        };
        let access = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access_review(user))
            .await
            .map_err(Error::AccessReview)?;
        Ok(access_decision(&access))
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The TokenReview of `token`, for the API server's own audiences.
pub fn token_review(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: None,
        },
        ..Default::default()
    }
}

/// The user a TokenReview authenticated, if it did.
pub fn authenticated_user(review: &TokenReview) -> Option<&UserInfo> {
    let status = review.status.as_ref()?;
    if status.authenticated != Some(true) {
        return None;
    }
    status
        .user
        .as_ref()
        .filter(|u| u.username.as_deref().is_some_and(|n| !n.is_empty()))
}

/// Whether `user` (all of it: name, uid, groups, extra) may `get` `/metrics`.
pub fn access_review(user: &UserInfo) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(PATH.into()),
                verb: Some(VERB.into()),
            }),
            resource_attributes: None,
        },
        ..Default::default()
    }
}

pub fn access_decision(review: &SubjectAccessReview) -> Decision {
    match &review.status {
        Some(s) if s.allowed && s.denied != Some(true) => Decision::Allowed,
        _ => Decision::Forbidden,
    }
}

/// The SHA-256 of a token: what the cache keeps instead of the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(token: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0; 32];
        key.copy_from_slice(digest.as_ref());
        TokenKey(key)
    }
}

/// Decisions by token, each until it expires, at most `capacity` of them.
pub struct DecisionCache {
    entries: LruCache<TokenKey, (Decision, Instant)>,
}

impl DecisionCache {
    pub fn new(capacity: NonZeroUsize) -> Self {
        DecisionCache {
            entries: LruCache::new(capacity),
        }
    }

    /// The decision for `key`, unless it expired by `now`.
    pub fn get(&mut self, key: &TokenKey, now: Instant) -> Option<Decision> {
        match self.entries.get(key) {
            Some((decision, expires)) if now < *expires => Some(*decision),
            Some(_) => {
                self.entries.pop(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `decision`, made at `now`, for as long as that kind of decision is kept.
    pub fn put(&mut self, key: TokenKey, decision: Decision, now: Instant) {
        let ttl = match decision {
            Decision::Allowed => ALLOWED_TTL,
            Decision::Forbidden | Decision::Unauthenticated => REFUSED_TTL,
        };
        self.entries.put(key, (decision, now + ttl));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::authentication::v1::TokenReviewStatus;
    use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;

    use super::*;

    #[test]
    fn only_a_bearer_token_is_a_token() {
        assert_eq!(bearer_token(Some("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic YWxpY2U6cHc=")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(None), None);
    }

    fn reviewed(authenticated: bool, name: &str) -> TokenReview {
        TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                user: Some(UserInfo {
                    username: Some(name.into()),
                    uid: Some("uid-1".into()),
                    groups: Some(vec!["system:authenticated".into()]),
                    extra: Some([("scopes".to_string(), vec!["x".to_string()])].into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_unauthenticated_review_names_nobody() {
        assert!(authenticated_user(&reviewed(false, "alice")).is_none());
        assert!(authenticated_user(&reviewed(true, "")).is_none());
        assert!(authenticated_user(&TokenReview::default()).is_none());
        let review = reviewed(true, "system:serviceaccount:monitoring:prometheus");
        assert_eq!(
            authenticated_user(&review).and_then(|u| u.username.as_deref()),
            Some("system:serviceaccount:monitoring:prometheus")
        );
    }

    #[test]
    fn the_access_review_asks_for_get_on_metrics_as_the_whole_user() {
        let review = reviewed(true, "prometheus");
        let sar = access_review(authenticated_user(&review).unwrap());
        assert_eq!(sar.spec.user.as_deref(), Some("prometheus"));
        assert_eq!(sar.spec.uid.as_deref(), Some("uid-1"));
        assert_eq!(
            sar.spec.groups,
            Some(vec!["system:authenticated".to_string()])
        );
        assert!(sar.spec.extra.is_some_and(|e| e.contains_key("scopes")));
        let attrs = sar.spec.non_resource_attributes.unwrap();
        assert_eq!(attrs.path.as_deref(), Some("/metrics"));
        assert_eq!(attrs.verb.as_deref(), Some("get"));
        assert!(sar.spec.resource_attributes.is_none());
    }

    #[test]
    fn only_an_allowed_access_review_allows() {
        let with = |allowed, denied| SubjectAccessReview {
            status: Some(SubjectAccessReviewStatus {
                allowed,
                denied,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(access_decision(&with(true, None)), Decision::Allowed);
        assert_eq!(access_decision(&with(false, None)), Decision::Forbidden);
        assert_eq!(
            access_decision(&with(false, Some(true))),
            Decision::Forbidden
        );
        assert_eq!(
            access_decision(&SubjectAccessReview::default()),
            Decision::Forbidden
        );
    }

    #[test]
    fn decisions_expire_refusals_sooner_and_the_cache_stays_bounded() {
        let mut cache = DecisionCache::new(NonZeroUsize::new(2).unwrap());
        let t0 = Instant::now();
        let (reader, stranger) = (TokenKey::of("reader"), TokenKey::of("stranger"));
        assert_ne!(reader, stranger);
        cache.put(reader, Decision::Allowed, t0);
        cache.put(stranger, Decision::Forbidden, t0);
        let later = t0 + REFUSED_TTL;
        assert_eq!(cache.get(&reader, later), Some(Decision::Allowed));
        assert_eq!(cache.get(&stranger, later), None, "a refusal expires first");
        assert_eq!(cache.get(&reader, t0 + ALLOWED_TTL), None);

        for i in 0..100 {
            cache.put(
                TokenKey::of(&format!("junk-{i}")),
                Decision::Unauthenticated,
                t0,
            );
        }
        assert_eq!(cache.len(), 2, "at most its capacity");
    }

    /// A client whose API server answers TokenReviews with `user` (authenticated unless
    /// empty) and SubjectAccessReviews with `allowed`, counting the requests.
    fn api(user: &'static str, allowed: bool) -> (Client, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let service = tower::service_fn(move |req: axum::http::Request<kube::client::Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let path = req.uri().path().to_string();
                let body = req.into_body().collect_bytes().await?;
                let answer = if path.ends_with("/tokenreviews") {
                    let review: TokenReview = serde_json::from_slice(&body)?;
                    assert_eq!(review.spec.token, "the-token");
                    serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": ""},
                        "status": {"authenticated": !user.is_empty(), "user": {"username": user, "groups": ["g"]}}})
                } else if path.ends_with("/subjectaccessreviews") {
                    let review: SubjectAccessReview = serde_json::from_slice(&body)?;
                    assert_eq!(review.spec.user.as_deref(), Some(user));
                    assert_eq!(review.spec.groups, Some(vec!["g".to_string()]));
                    serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                        "spec": {}, "status": {"allowed": allowed}})
                } else {
                    panic!("unexpected request to {path}");
                };
                let body = kube::client::Body::from(serde_json::to_vec(&answer)?);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(axum::http::Response::new(body))
            }
        });
        (Client::new(service, "default"), calls)
    }

    #[tokio::test]
    async fn a_reader_is_reviewed_once_then_served_from_the_cache() {
        let (client, calls) = api("system:serviceaccount:monitoring:prometheus", true);
        let auth = MetricsAuth::new(client);
        for _ in 0..3 {
            let decision = auth.decide(Some("Bearer the-token")).await.unwrap();
            assert_eq!(decision, Decision::Allowed);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one TokenReview, one SAR");
    }

    #[tokio::test]
    async fn a_user_without_the_role_is_forbidden_and_a_bad_token_unauthenticated() {
        let (client, _) = api("alice", false);
        let auth = MetricsAuth::new(client);
        let decision = auth.decide(Some("Bearer the-token")).await.unwrap();
        assert_eq!(decision, Decision::Forbidden);

        let (client, calls) = api("", true);
        let auth = MetricsAuth::new(client);
        let decision = auth.decide(Some("Bearer the-token")).await.unwrap();
        assert_eq!(decision, Decision::Unauthenticated);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no SAR for nobody");
        let decision = auth.decide(None).await.unwrap();
        assert_eq!(decision, Decision::Unauthenticated);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no review without a token");
    }
}
