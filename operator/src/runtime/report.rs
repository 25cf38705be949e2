//! The one way a reconcile tells the world what happened: a status and some
//! Events, computed by the controller's pure status stage and written here,
//! once, at the end of the reconcile.
//!
//! Events are published first (best effort: a failed Event never fails a
//! reconcile), then the status is written — only when it differs from the
//! stored one in more than condition timestamps, so a steady-state reconcile,
//! or an operator restart, writes nothing.

use std::fmt::Debug;

use ferrotel_api::conditions::{WithConditions, same_status};
use k8s_openapi::NamespaceResourceScope;
use kube::{
    Resource,
    core::object::HasStatus,
    runtime::events::{self, EventType, Recorder},
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::warn;

use super::apply::apply_status;

/// The API server refuses Event notes longer than 1 KiB.
const MAX_NOTE_CHARS: usize = 1000;

/// What one reconcile has to say about its object.
#[derive(Debug, Clone)]
pub struct Report<S> {
    /// The whole status, as it should be stored.
    pub status: S,
    /// Events to publish on the object, in order.
    pub events: Vec<Event>,
}

/// One Event to publish on the reconciled object (kube's own type is
/// neither `Debug` nor comparable, which pure stages and their tests need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    /// CamelCase, from a bounded set (see `ferrotel_api::conditions::reasons`).
    pub reason: String,
    /// What the operator was doing, e.g. `Apply`.
    pub action: &'static str,
    /// For humans; cut to what the API server accepts.
    pub note: String,
}

/// A Normal Event.
pub fn normal(reason: &str, action: &'static str, note: impl Into<String>) -> Event {
    event(EventType::Normal, reason, action, note.into())
}

/// A Warning Event.
pub fn warning(reason: &str, action: &'static str, note: impl Into<String>) -> Event {
    event(EventType::Warning, reason, action, note.into())
}

fn event(type_: EventType, reason: &str, action: &'static str, note: String) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        action,
        note: note.chars().take(MAX_NOTE_CHARS).collect(),
    }
}

/// Publishes `events` on `obj`; failures are logged, never returned.
pub async fn publish<K>(recorder: &Recorder, obj: &K, events: &[Event])
where
    K: Resource<DynamicType = ()>,
{
    if events.is_empty() {
        return;
    }
    let reference = obj.object_ref(&());
    for event in events {
        let published = events::Event {
            type_: event.type_,
            reason: event.reason.clone(),
            note: Some(event.note.clone()),
            action: event.action.to_owned(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&published, &reference).await {
            warn!(
                kind = %K::kind(&()),
                namespace = reference.namespace.as_deref().unwrap_or_default(),
                name = reference.name.as_deref().unwrap_or_default(),
                reason = %event.reason,
                error = %err,
                "Could not publish Event"
            );
        }
    }
}

/// Publishes the report's Events, then writes its status if it changed.
/// Returns whether the status was written.
pub async fn write<K>(
    client: &kube::Client,
    recorder: &Recorder,
    obj: &K,
    report: &Report<K::Status>,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + HasStatus
        + Clone
        + Debug
        + DeserializeOwned,
    K::Status: WithConditions + Serialize,
{
    publish(recorder, obj, &report.events).await;
    if obj
        .status()
        .is_some_and(|stored| same_status(stored, &report.status))
    {
        return Ok(false);
    }
    apply_status(client, obj, &report.status).await?;
    Ok(true)
}
