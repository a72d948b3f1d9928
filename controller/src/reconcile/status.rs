//! Where status conditions are written: one merge patch of `status` when it changed, then a
//! Warning Event for each condition that turned bad. What to write is decided in
//! [`super::conditions`]; reasons live in [`rouse_core::crd::conditions`].

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rouse_core::crd::{HTTPScaledObject, HTTPScaledObjectStatus, object_key};

use super::Reconciler;
use super::assess::Assessment;
use super::conditions::{same_status, status_of, warnings};
use crate::error::Result;
use crate::status_writer::{patch_status, warn};

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
        patch_status(&self.client, o, &a.key, &status).await?;
        for c in warnings(&previous, &status) {
            if let Err(e) = warn(&self.recorder, o, &a.key, &c.reason, &c.message).await {
                tracing::debug!(error = %e, kind = e.metric_label(), "Event not recorded.");
            }
        }
        reported.insert(a.key.clone(), status);
        Ok(())
    }
}
