//! Where an `EventSubscription`'s status is written: one merge patch of `status` when
//! [`should_write`] says so, an info log line per changed condition, then a Warning Event for
//! each condition that turned bad. What to write is decided in [`super::conditions`]; reasons
//! live in [`rouse_core::crd::conditions`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use rouse_core::crd::conditions::action;
use rouse_core::crd::{EventSubscription, EventSubscriptionStatus, subscription_key};
use serde_json::json;
use tokio::sync::watch;

use super::assess::Assessment;
use super::conditions::{changes, should_write, status_of, warnings};
use super::{Reconciler, State};
use crate::error::{Error, Result};

/// Event notes are cut to this many characters (the API server's limit is 1 KiB).
const NOTE_CHARS: usize = 1000;

impl Reconciler {
    /// Writes each assessed subscription's status where it changed, while still `leader`.
    /// Failures are logged here and retried by the next pass.
    pub(super) async fn report_all(
        &self,
        subscriptions: &[Arc<EventSubscription>],
        assessments: &HashMap<String, Assessment>,
        leader: &watch::Receiver<bool>,
        state: &mut State,
    ) {
        for o in subscriptions {
            // Leadership may go while a pass writes: not one write after that.
            if !*leader.borrow() {
                return;
            }
            let Some(a) = assessments.get(&subscription_key(o)) else {
                continue;
            };
            if let Err(e) = self.report(o, a, state).await {
                let kind = e.metric_label();
                tracing::warn!(subscription = %a.key, error = %e, kind, "Status update failed.");
            }
        }
    }

    /// Writes `o`'s status when it differs from the last one reported (or, at first, the one
    /// it carries): conditions at once, counts at a bounded rate.
    async fn report(&self, o: &EventSubscription, a: &Assessment, state: &mut State) -> Result<()> {
        let previous = state
            .reported
            .get(&a.key)
            .cloned()
            .or_else(|| o.status.clone())
            .unwrap_or_default();
        let has_status = o.status.is_some() || state.reported.contains_key(&a.key);
        let now = Time(jiff::Timestamp::now());
        let status = status_of(o, a, &previous, &now);
        let at = Instant::now();
        let written = state.counts_written.get(&a.key).copied();
        if !should_write(&previous, &status, has_status, written, at) {
            state.reported.insert(a.key.clone(), previous);
            return Ok(());
        }
        self.patch_status(o, &a.key, &status).await?;
        state.counts_written.insert(a.key.clone(), at);
        for c in changes(&previous, &status) {
            tracing::info!(
                subscription = %a.key,
                condition = %c.type_,
                status = %c.status,
                reason = %c.reason,
                message = %c.message,
                "EventSubscription condition changed."
            );
        }
        for c in warnings(&previous, &status) {
            if let Err(e) = self.warn(o, &a.key, &c.reason, &c.message).await {
                tracing::debug!(error = %e, kind = e.metric_label(), "Event not recorded.");
            }
        }
        state.reported.insert(a.key.clone(), status);
        Ok(())
    }

    async fn patch_status(
        &self,
        o: &EventSubscription,
        key: &str,
        status: &EventSubscriptionStatus,
    ) -> Result<()> {
        let namespace = o.namespace().ok_or_else(|| Error::MissingObjectKey {
            object: key.to_string(),
            key: ".metadata.namespace",
        })?;
        let api: Api<EventSubscription> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({ "status": status });
        api.patch_status(
            &o.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::StatusPatch {
            object: key.to_string(),
            source,
        })?;
        Ok(())
    }

    /// A Warning Event on `o`.
    async fn warn(&self, o: &EventSubscription, key: &str, reason: &str, note: &str) -> Result<()> {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(note.chars().take(NOTE_CHARS).collect()),
            action: action::RECONCILE.into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &o.object_ref(&()))
            .await
            .map_err(|source| Error::PublishEvent {
                object: key.to_string(),
                reason: reason.to_string(),
                source,
            })
    }
}
