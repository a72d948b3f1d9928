//! Where status conditions are written: one merge patch of `status` when it changed, then a
//! Warning Event for each condition that turned bad. What to write is decided in
//! [`super::conditions`]; reasons live in [`rouse_core::crd::conditions`].

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use rouse_core::crd::conditions::action;
use rouse_core::crd::{HTTPScaledObject, HTTPScaledObjectStatus, object_key};
use serde_json::json;

use super::Reconciler;
use super::assess::Assessment;
use super::conditions::{same_status, status_of, warnings};
use crate::error::{Error, Result};

/// Event notes are cut to this many characters (the API server's limit is 1 KiB).
const NOTE_CHARS: usize = 1000;

impl Reconciler {
    /// Writes each assessed object's status where it changed. Failures are logged here and
    /// retried by the next pass.
    pub(super) async fn report_all(
        &self,
        objects: &[Arc<HTTPScaledObject>],
        assessments: &HashMap<String, Assessment>,
        reported: &mut HashMap<String, HTTPScaledObjectStatus>,
    ) {
        for o in objects {
            let Some(a) = assessments.get(&object_key(o)) else {
                continue;
            };
            if let Err(e) = self.report(o, a, reported).await {
                let kind = e.metric_label();
                tracing::warn!(object = %a.key, error = %e, kind, "Status update failed.");
            }
        }
    }

    /// Writes `o`'s status when it differs from the last one reported (or, at first, the one
    /// it carries), and a Warning Event when a condition turns bad.
    async fn report(
        &self,
        o: &HTTPScaledObject,
        a: &Assessment,
        reported: &mut HashMap<String, HTTPScaledObjectStatus>,
    ) -> Result<()> {
        let observed = self.scaler.observed(&a.key);
        let previous = reported
            .get(&a.key)
            .cloned()
            .or_else(|| o.status.clone())
            .unwrap_or_default();
        let desired = self.scaler.desired(&a.key);
        let now = Time(jiff::Timestamp::now());
        let status = status_of(o, a, observed.as_ref(), desired, &previous, &now);
        if same_status(&status, &previous) && o.status.is_some() {
            reported.insert(a.key.clone(), previous);
            return Ok(());
        }
        self.patch_status(o, &a.key, &status).await?;
        for c in warnings(&previous, &status) {
            if let Err(e) = self.warn(o, &a.key, &c.reason, &c.message).await {
                tracing::debug!(error = %e, kind = e.metric_label(), "Event not recorded.");
            }
        }
        reported.insert(a.key.clone(), status);
        Ok(())
    }

    async fn patch_status(
        &self,
        o: &HTTPScaledObject,
        key: &str,
        status: &HTTPScaledObjectStatus,
    ) -> Result<()> {
        let namespace = o.namespace().ok_or_else(|| Error::MissingObjectKey {
            object: key.to_string(),
            key: ".metadata.namespace",
        })?;
        let api: Api<HTTPScaledObject> = Api::namespaced(self.client.clone(), &namespace);
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
    async fn warn(&self, o: &HTTPScaledObject, key: &str, reason: &str, note: &str) -> Result<()> {
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
