//! One watch of a kind for every controller that follows it.
//!
//! Four controllers follow Tenants: their own, the QuotaProfile counts, the TenantRequests and
//! the claims; three follow SharedServiceClaims; two each follow every Service and Namespace of
//! the cluster, the SharedServices and the QuotaProfiles. Each watching for itself, the API
//! server sent every event of those kinds once per controller and the operator parsed it as
//! often. A [`Feed`] watches once, keeps the one store (if anyone
//! needs it), and hands each subscriber the same event, after the store has taken it in.
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

/// What a kind needs to be watched and kept.
pub trait Watched:
    Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Every object of a kind in the cluster, as a feed passes it on: without the managed fields,
/// which nothing of the operator reads.
pub fn watch_all<K: Watched>(
    client: &kube::Client,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    watcher(Api::<K>::all(client.clone()), crate::watching::config())
        .modify(|o| o.managed_fields_mut().clear())
        .default_backoff()
}

/// How many events a subscriber may be behind before the watch waits for it. Every subscriber
/// drains its events as they come (a controller's triggers are read whatever its reconciles
/// do), so this bounds memory, not throughput.
const BUFFER: usize = 1024;

/// One event as every subscriber gets it.
pub type Event<K> = Arc<watcher::Event<K>>;

/// One watch, its store, and who follows it.
pub struct Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    writer: Option<Writer<K>>,
    subscribers: Vec<mpsc::Sender<Event<K>>>,
}

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    /// A feed with no subscriber yet, and the store it keeps.
    pub fn new() -> (Self, Store<K>) {
        let (store, writer) = reflector::store();
        (
            Feed {
                writer: Some(writer),
                subscribers: Vec::new(),
            },
            store,
        )
    }

    /// A feed that keeps no store: its subscribers only map events to reconciles.
    pub fn unstored() -> Self {
        Feed {
            writer: None,
            subscribers: Vec::new(),
        }
    }

    /// Every event from the first (the initial list) on. Subscribe before [`Feed::run`].
    pub fn subscribe(&mut self) -> mpsc::Receiver<Event<K>> {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.subscribers.push(tx);
        rx
    }

    /// Passes on `events` (a watch, with its own backoff) until every subscriber has gone.
    /// A failed watch is logged here, once, and retried by the watch itself.
    pub async fn run(
        mut self,
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    ) {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying");
                    continue;
                }
            };
            if let Some(writer) = &mut self.writer {
                writer.apply_watcher_event(&event);
            }
            let event = Arc::new(event);
            let mut open = Vec::with_capacity(self.subscribers.len());
            for mut subscriber in self.subscribers.drain(..) {
                if subscriber.send(event.clone()).await.is_ok() {
                    open.push(subscriber);
                }
            }
            self.subscribers = open;
            if self.subscribers.is_empty() {
                return;
            }
        }
    }
}

/// The object an event touched, as kube's `touched_objects` gives them: applied, deleted, or
/// listed (again).
pub fn touched<K>(event: &watcher::Event<K>) -> Option<&K> {
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => {
            Some(o)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// The objects created or changed, as a controller of the kind reconciles them (kube's
/// `applied_objects`: a deletion shows first as the change that set its deletion time).
pub fn applied<K: Clone + Send + Sync + 'static>(
    events: impl Stream<Item = Event<K>> + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    events.filter_map(|event| {
        let applied = match &*event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => Some(Ok(o.clone())),
            _ => None,
        };
        futures::future::ready(applied)
    })
}

/// The reconcile requests `map` makes of every object the feed's events touch.
pub fn triggers<K, R, I>(
    events: mpsc::Receiver<Event<K>>,
    map: impl Fn(&K) -> I + Send + 'static,
) -> impl Stream<Item = R> + Send + 'static
where
    K: Send + Sync + 'static,
    I: IntoIterator<Item = R>,
    R: Send + 'static,
{
    events.flat_map(move |event| {
        let refs: Vec<R> = touched(&event).into_iter().flat_map(&map).collect();
        futures::stream::iter(refs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Tenant;
    use kube::ResourceExt;

    fn tenant(name: &str) -> Tenant {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"displayName": name, "owners": [{"kind": "Group", "name": "g"}]},
        }))
        .expect("a tenant")
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_after_the_store_has_it() {
        let (mut feed, store) = Feed::<Tenant>::new();
        let mut first = feed.subscribe();
        let second = feed.subscribe();
        let events = futures::stream::iter(vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(tenant("a"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(tenant("b"))),
        ]);
        let running = tokio::spawn(feed.run(events));
        // The initial list, then b: the store holds b by the time its event arrives.
        for _ in 0..3 {
            first.next().await.expect("an event of the list");
        }
        let b = first.next().await.expect("b's event");
        assert_eq!(touched(&b).map(|t| t.name_any()).as_deref(), Some("b"));
        assert!(store.get(&reflector::ObjectRef::new("b")).is_some());
        let names: Vec<String> = triggers(second, |t: &Tenant| Some(t.name_any()))
            .take(2)
            .collect()
            .await;
        assert_eq!(names, ["a", "b"], "the second subscriber saw the same");
        drop(first);
        running.await.expect("the feed ends with its events");
    }

    /// A controller on a feed reconciles what was created or changed, as one on its own watch
    /// does: not a deletion (its finalizer acted on the change that set the deletion time).
    #[tokio::test]
    async fn a_controller_on_a_feed_reconciles_what_was_listed_or_changed_not_what_went() {
        let (mut feed, _store) = Feed::<Tenant>::new();
        let events = feed.subscribe();
        let incoming = futures::stream::iter(vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(tenant("a"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Delete(tenant("a"))),
            Ok(watcher::Event::Apply(tenant("b"))),
        ]);
        tokio::spawn(feed.run(incoming));
        let names: Vec<String> = applied(events)
            .map(|t| t.map(|t| t.name_any()).unwrap_or_default())
            .collect()
            .await;
        assert_eq!(names, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_subscriber_that_left_does_not_stop_the_others() {
        let (mut feed, _store) = Feed::<Tenant>::new();
        drop(feed.subscribe());
        let staying = feed.subscribe();
        let events = futures::stream::iter(vec![
            Ok(watcher::Event::Apply(tenant("a"))),
            Ok(watcher::Event::Apply(tenant("b"))),
        ]);
        tokio::spawn(feed.run(events));
        let names: Vec<String> = triggers(staying, |t: &Tenant| Some(t.name_any()))
            .collect()
            .await;
        assert_eq!(names, ["a", "b"]);
    }
}
