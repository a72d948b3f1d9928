//! Where status conditions are written: one merge patch of `status` when it changed, then a
//! Warning Event for each condition that turned bad. What to write is decided in
//! [`super::conditions`]; reasons live in [`rouse_core::crd::conditions`]. The three route kinds
//! share one status shape (KEDA's InterceptorRoute schema keeps only its `conditions`).

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::core::NamespaceResourceScope;
use rouse_core::crd::{HTTPScaledObjectStatus, RouteObject};
use serde::de::DeserializeOwned;

use super::Reconciler;
use super::assess::{Assessment, World, assessment_key};
use super::conditions::{same_status, status_of, warnings};
use crate::error::Result;
use crate::status_writer::{patch_status, warn};

/// The status an object carries now, as Rouse reads it.
fn carried(o: RouteObject<'_>) -> Option<HTTPScaledObjectStatus> {
    match o {
        RouteObject::Scaled(s) => s.status.clone(),
        RouteObject::Route(r) => r.status.clone(),
        // Written by KEDA's operator or by Rouse; unreadable means "nothing useful yet".
        RouteObject::Keda(k) => k
            .status
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
    }
}

impl Reconciler {
    /// Writes each assessed object's status where it changed. Failures are logged here and
    /// retried by the next pass.
    pub(super) async fn report_all(
        &self,
        world: &World,
        assessments: &HashMap<String, Assessment>,
        reported: &mut HashMap<String, HTTPScaledObjectStatus>,
    ) {
        for o in world.route_objects() {
            let key = o.key();
            let (a, winner) = match assessments.get(&key) {
                Some(a) if a.kind == o.kind() => (a, true),
                _ => match assessments.get(&assessment_key(&key, o.kind(), false)) {
                    Some(a) => (a, false),
                    None => continue,
                },
            };
            let result = match o {
                RouteObject::Scaled(s) => self.report(s, o, a, winner, reported).await,
                RouteObject::Route(r) => self.report(r, o, a, winner, reported).await,
                RouteObject::Keda(k) => self.report(k, o, a, winner, reported).await,
            };
            if let Err(e) = result {
                let kind = e.metric_label();
                tracing::warn!(object = %a.key, error = %e, kind, "Status update failed.");
            }
        }
    }

    /// Writes `o`'s status when it differs from the last one reported (or, at first, the one
    /// it carries), and a Warning Event when a condition turns bad. `winner`: `o` holds its key
    /// (the scaler's replica counts under that key are its own, not another kind's).
    async fn report<K>(
        &self,
        resource: &K,
        o: RouteObject<'_>,
        a: &Assessment,
        winner: bool,
        reported: &mut HashMap<String, HTTPScaledObjectStatus>,
    ) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        // One entry per object: two kinds may share a key (see `assessment_key`).
        let slot = format!("{}#{}", a.key, a.kind);
        let own = winner && a.workload.is_some();
        let observed = own.then(|| self.scaler.observed(&a.key)).flatten();
        let now_carried = carried(o);
        let previous = reported
            .get(&slot)
            .cloned()
            .or_else(|| now_carried.clone())
            .unwrap_or_default();
        let desired = own.then(|| self.scaler.desired(&a.key)).flatten();
        let now = Time(jiff::Timestamp::now());
        let status = status_of(a, observed.as_ref(), desired, &previous, &now);
        if same_status(&status, &previous) && now_carried.is_some() {
            reported.insert(slot, previous);
            return Ok(());
        }
        patch_status(&self.client, resource, &a.key, &status).await?;
        for c in warnings(&previous, &status) {
            if let Err(e) = warn(&self.recorder, resource, &a.key, &c.reason, &c.message).await {
                tracing::debug!(error = %e, kind = e.metric_label(), "Event not recorded.");
            }
        }
        reported.insert(slot, status);
        Ok(())
    }
}
