//! Where an `EventSubscription`'s status is written: one merge patch of `status` when
//! [`should_write`] says so, an info log line per changed condition, then a Warning Event for
//! each condition that turned bad. What to write is decided in [`super::conditions`]; reasons
//! live in [`rouse_core::crd::conditions`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rouse_core::crd::{EventSubscription, subscription_key};
use tokio::sync::watch;

use super::assess::Assessment;
use super::conditions::{changes, should_write, status_of, warnings};
use super::{Reconciler, State};
use crate::error::Result;
use crate::status_writer::{patch_status, warn};

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
        patch_status(&self.client, o, &a.key, &status).await?;
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
            if let Err(e) = warn(&self.recorder, o, &a.key, &c.reason, &c.message).await {
                tracing::debug!(error = %e, kind = e.metric_label(), "Event not recorded.");
            }
        }
        state.reported.insert(a.key.clone(), status);
        Ok(())
    }
}
