//! Kubernetes Events: what the operator tells an object's users (`kubectl describe`,
//! `kubectl get events`), and how. Events are advisory: failing to publish one is logged,
//! never an error.
//!
//! A reconcile's [`Journal`] gathers what it created, updated or removed and publishes one
//! Event per kind of change; [`Context::publish`] publishes any other Event.
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use crate::api::Tenant;
use crate::apply::Outcome;
use crate::context::Context;

/// The objects a reconcile created, updated or removed, told to the tenant's users as one
/// Event per kind of change (not one per object: a new tenant is some twenty objects).
#[derive(Clone, Debug, Default)]
pub struct Journal {
    created: Vec<String>,
    updated: Vec<String>,
    removed: Vec<String>,
}

/// An Event's note may hold 1 kB; longer lists end with "and N more".
const NOTE_BUDGET: usize = 900;

impl Journal {
    /// Adds what another part of the reconcile did.
    pub fn absorb(&mut self, other: Journal) {
        self.created.extend(other.created);
        self.updated.extend(other.updated);
        self.removed.extend(other.removed);
    }

    /// A journal of objects created (for tests of what is told when).
    #[cfg(test)]
    pub fn of_created(created: &[&str]) -> Journal {
        Journal {
            created: created.iter().map(|c| c.to_string()).collect(),
            ..Journal::default()
        }
    }

    /// How many objects the reconcile wrote (created, updated or removed).
    pub fn writes(&self) -> usize {
        self.created.len() + self.updated.len() + self.removed.len()
    }

    /// Notes one object's outcome (and counts a write).
    pub fn record<K: Resource<DynamicType = ()>>(
        &mut self,
        ctx: &Context,
        obj: &K,
        outcome: Outcome,
    ) {
        let list = match outcome {
            Outcome::Unchanged => return,
            Outcome::Created => &mut self.created,
            Outcome::Updated => &mut self.updated,
        };
        list.push(describe(obj));
        count_write(ctx);
    }

    /// Notes one object removed (and counts a write).
    pub fn removed<K: Resource<DynamicType = ()>>(&mut self, ctx: &Context, obj: &K) {
        self.removed.push(describe(obj));
        count_write(ctx);
    }

    /// One Event per kind of change, naming the objects.
    /// One Event per kind of change, naming the objects (sent without waiting, see
    /// [`Context::publish_detached`]).
    pub async fn publish(&self, ctx: &Context, tenant: &Tenant) {
        let events = [
            ("Created", "Created", &self.created),
            (
                "Updated",
                "Updated to match the spec (changed spec or repaired drift)",
                &self.updated,
            ),
            ("Removed", "Removed, no longer in the spec", &self.removed),
        ]
        .into_iter()
        .filter(|(_, _, list)| !list.is_empty())
        .map(|(reason, heading, list)| (EventType::Normal, reason, note(heading, list)))
        .collect();
        // Each its own Event: with the shared recorder a second "Updated" on this tenant
        // became a count on the first, showing the first one's note (what changed) only.
        let recorder =
            kube::runtime::events::Recorder::new(ctx.client.clone(), ctx.reporter.clone());
        detached(recorder, tenant, events);
    }
}

fn count_write(ctx: &Context) {
    ctx.shared
        .metrics
        .writes
        .get_or_create(&crate::metrics::ControllerLabel {
            controller: "tenant",
        })
        .inc();
}

/// "Created 3: Namespace a-prod, RoleBinding a-prod/citycloud-owners, …" within 900 bytes
/// (`NOTE_BUDGET`): a list too long ends "and N more".
pub fn note(heading: &str, items: &[String]) -> String {
    let mut out = format!("{heading} {}:", items.len());
    for (i, item) in items.iter().enumerate() {
        if out.len() + item.len() + 2 > NOTE_BUDGET {
            out.push_str(&format!(" and {} more", items.len() - i));
            break;
        }
        out.push_str(if i == 0 { " " } else { ", " });
        out.push_str(item);
    }
    out
}

/// "Kind namespace/name", as events and errors name an object.
pub fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{} {ns}/{name}", K::kind(&())),
        None => format!("{} {name}", K::kind(&())),
    }
}

/// Publishes an Event on `tenant` (see [`Context::publish`]).
pub async fn publish(ctx: &Context, tenant: &Tenant, type_: EventType, reason: &str, note: String) {
    ctx.publish(tenant, type_, reason, note).await;
}

impl Context {
    /// Publishes a Kubernetes Event on `obj` for its users to read (`kubectl describe`).
    /// Failing to publish is logged, never an error: events are advisory.
    pub async fn publish<K: kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        send(&self.recorder, &obj.object_ref(&()), type_, reason, note).await;
    }

    /// Publishes `events` (type, reason, note) on `obj`, in order, without the reconcile
    /// waiting for them: they are advisory, and a round trip each on a reconcile's path.
    pub fn publish_detached<K: kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        events: Vec<(EventType, &'static str, String)>,
    ) {
        detached(self.recorder.clone(), obj, events);
    }
}

/// Publishes `events` on `obj` with `recorder`, in order, in a task of their own.
fn detached<K: kube::Resource<DynamicType = ()>>(
    recorder: kube::runtime::events::Recorder,
    obj: &K,
    events: Vec<(EventType, &'static str, String)>,
) {
    if events.is_empty() {
        return;
    }
    let reference = obj.object_ref(&());
    tokio::spawn(async move {
        for (type_, reason, note) in events {
            send(&recorder, &reference, type_, reason, note).await;
        }
    });
}

/// One Event, its note cut to what the API server accepts; a failure is logged.
async fn send(
    recorder: &kube::runtime::events::Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(within(note, NOTE_MAX)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

/// The API server refuses an Event whose note is longer than 1 kB.
const NOTE_MAX: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, marked with "…" when cut.
pub fn within(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::{note, within};

    #[test]
    fn an_event_note_names_the_objects_and_stays_within_an_events_limit() {
        let few = [
            "Namespace a-prod".to_string(),
            "RoleBinding a-prod/citycloud-owners".into(),
        ];
        assert_eq!(
            note("Created", &few),
            "Created 2: Namespace a-prod, RoleBinding a-prod/citycloud-owners"
        );
        let many: Vec<String> = (0..100)
            .map(|i| format!("NetworkPolicy ward-{i}-prod/citycloud-ingress"))
            .collect();
        let long = note("Created", &many);
        assert!(long.len() <= 1024, "{} bytes", long.len());
        assert!(long.starts_with("Created 100: NetworkPolicy ward-0-prod/"));
        assert!(long.ends_with(" more"), "{long}");
    }

    #[test]
    fn a_long_note_is_cut_on_a_character_boundary_within_the_limit() {
        let long = "Ủy ban nhân dân ".repeat(200);
        let cut = within(long.clone(), 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'), "{}", cut.len());
        assert!(long.starts_with(cut.trim_end_matches('…')));
        assert_eq!(within("short".into(), 1024), "short");
    }
}
