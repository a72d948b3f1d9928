//! [`Scaler`] for Kubernetes: reads and patches the `/scale` subresource of whatever the object's
//! `scaleTargetRef` names (Deployment by default, StatefulSet, or any kind with a scale
//! subresource: the kind is resolved through API discovery, once per group/version/kind).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder};
use serde_json::json;

use rouse_scale::{ScaleError, Scaler};

/// The workload behind one target.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRef {
    pub namespace: String,
    /// `group/version`, e.g. `apps/v1`.
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The HTTPScaledObject Events are attached to.
    pub object: ObjectReference,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.api_version, self.kind, self.name)
    }
}

/// What the last `/scale` read of a target found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Replicas(u32),
    NotFound(String),
}

/// How long a `/scale` read is trusted. Decisions happen every tick (1 s by default) for every
/// object; reading `/scale` that often would cost the API server one GET per object per second.
/// A value this controller wrote is exact until someone else scales the workload, which is seen
/// within this interval.
const READ_TTL: Duration = Duration::from_secs(10);

/// Bound on one `/scale` call: a hung connection must not stall a target's scaling loop.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn timed_out(target: &str, w: &WorkloadRef) -> ScaleError {
    ScaleError::Platform {
        target: target.to_string(),
        message: format!("{w}: /scale call timed out after {CALL_TIMEOUT:?}"),
    }
}

/// Scales targets by their `namespace/name` key.
pub struct KubeScaler {
    client: Client,
    recorder: Recorder,
    workloads: Mutex<HashMap<String, WorkloadRef>>,
    resources: Mutex<HashMap<GroupVersionKind, ApiResource>>,
    observed: Mutex<HashMap<String, (Observed, Instant)>>,
    desired: Mutex<HashMap<String, u32>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KubeScaler {
    pub fn new(client: Client, recorder: Recorder) -> Self {
        KubeScaler {
            client,
            recorder,
            workloads: Mutex::default(),
            resources: Mutex::default(),
            observed: Mutex::default(),
            desired: Mutex::default(),
        }
    }

    /// Registers (or updates) the workload of `target`.
    pub fn set_workload(&self, target: &str, workload: WorkloadRef) {
        lock(&self.workloads).insert(target.to_string(), workload);
    }

    pub fn remove(&self, target: &str) {
        lock(&self.workloads).remove(target);
        lock(&self.observed).remove(target);
        lock(&self.desired).remove(target);
    }

    /// The last `/scale` read of `target` (None = not read yet).
    pub fn observed(&self, target: &str) -> Option<Observed> {
        lock(&self.observed).get(target).map(|(o, _)| o.clone())
    }

    /// The replicas last asked for.
    pub fn desired(&self, target: &str) -> Option<u32> {
        lock(&self.desired).get(target).copied()
    }

    fn workload(&self, target: &str) -> Result<WorkloadRef, ScaleError> {
        lock(&self.workloads)
            .get(target)
            .cloned()
            .ok_or_else(|| ScaleError::UnknownTarget(target.to_string()))
    }

    async fn api(&self, target: &str, w: &WorkloadRef) -> Result<Api<DynamicObject>, ScaleError> {
        let (group, version) = match w.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), w.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &w.kind);
        let cached = lock(&self.resources).get(&gvk).cloned();
        let ar = match cached {
            Some(ar) => ar,
            None => {
                let (ar, _caps) = kube::discovery::pinned_kind(&self.client, &gvk)
                    .await
                    .map_err(|e| ScaleError::Platform {
                        target: target.to_string(),
                        message: format!("kind {}/{}: {e}", w.api_version, w.kind),
                    })?;
                lock(&self.resources).insert(gvk, ar.clone());
                ar
            }
        };
        Ok(Api::namespaced_with(self.client.clone(), &w.namespace, &ar))
    }

    fn record(&self, target: &str, observed: Observed) {
        lock(&self.observed).insert(target.to_string(), (observed, Instant::now()));
    }

    /// A replica count read or written less than [`READ_TTL`] ago.
    fn fresh(&self, target: &str) -> Option<u32> {
        match lock(&self.observed).get(target) {
            Some((Observed::Replicas(n), at)) if at.elapsed() < READ_TTL => Some(*n),
            _ => None,
        }
    }
}

fn platform_error(target: &str, w: &WorkloadRef, e: kube::Error) -> ScaleError {
    ScaleError::Platform {
        target: target.to_string(),
        message: format!("{w}: {e}"),
    }
}

impl Scaler for KubeScaler {
    async fn replicas(&self, target: &str) -> Result<u32, ScaleError> {
        if let Some(n) = self.fresh(target) {
            return Ok(n);
        }
        let w = self.workload(target)?;
        let api = self.api(target, &w).await?;
        let read = tokio::time::timeout(CALL_TIMEOUT, api.get_scale(&w.name))
            .await
            .map_err(|_| timed_out(target, &w))?;
        match read {
            Ok(scale) => {
                let n = scale
                    .spec
                    .and_then(|s| s.replicas)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0);
                self.record(target, Observed::Replicas(n));
                Ok(n)
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.record(target, Observed::NotFound(format!("{w} not found")));
                Err(ScaleError::Platform {
                    target: target.to_string(),
                    message: format!("{w} not found"),
                })
            }
            Err(e) => Err(platform_error(target, &w, e)),
        }
    }

    async fn scale(&self, target: &str, replicas: u32) -> Result<(), ScaleError> {
        let w = self.workload(target)?;
        let api = self.api(target, &w).await?;
        let patch = json!({"spec": {"replicas": replicas}});
        let before = self.observed(target);
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let patched = api.patch_scale(&w.name, &params, &patch);
        tokio::time::timeout(CALL_TIMEOUT, patched)
            .await
            .map_err(|_| timed_out(target, &w))?
            .map_err(|e| platform_error(target, &w, e))?;
        self.record(target, Observed::Replicas(replicas));
        lock(&self.desired).insert(target.to_string(), replicas);
        let from = match before {
            Some(Observed::Replicas(n)) => n.to_string(),
            _ => "?".into(),
        };
        let event = Event {
            type_: EventType::Normal,
            reason: "Scaled".into(),
            note: Some(format!("Scaled {w} from {from} to {replicas}")),
            action: "Scale".into(),
            secondary: None,
        };
        // Off the scaling path: the next decision must not wait for the Event write.
        let (recorder, object, key) = (self.recorder.clone(), w.object.clone(), target.to_string());
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &object).await {
                tracing::debug!(target = %key, error = %e, "Event not recorded.");
            }
        });
        Ok(())
    }
}
