//! One local app as its replica tasks and the supervisor share it: its spec, the proxy target
//! it serves, the replicas asked for and the ready list. Owned here so neither the supervisor
//! nor a replica edits the other's state.

use std::sync::{Arc, Mutex};

use rouse_core::{Endpoint, Target};
use tokio::sync::watch;

use crate::config::ProcessSpec;
use crate::telemetry::LocalMetrics;

/// What a replica task needs from its app.
pub struct AppHandle {
    pub spec: ProcessSpec,
    pub target: Arc<Target>,
    pub metrics: LocalMetrics,
    /// Replicas the autoscaler asked for; the supervisor's reconcile loop follows it.
    pub(crate) desired: watch::Sender<u32>,
    /// Replicas whose readiness probe passed, published into `target` on every change.
    ready: Mutex<Vec<Arc<Endpoint>>>,
    /// Set when Rouse shuts down after its drain grace ran out: a stopping replica no longer
    /// waits for its in-flight requests before SIGTERM (the grace was theirs, and it is over).
    pub(crate) abandon_in_flight: std::sync::atomic::AtomicBool,
}

impl AppHandle {
    pub(crate) fn new(spec: ProcessSpec, target: Arc<Target>, metrics: LocalMetrics) -> Self {
        // Registered at 0 from the start: an app at zero reads 0, not "no such series".
        metrics
            .ready_replicas
            .with_label_values(&[&spec.name])
            .set(0);
        AppHandle {
            spec,
            target,
            metrics,
            desired: watch::Sender::new(0),
            ready: Mutex::new(Vec::new()),
            abandon_in_flight: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn add_endpoint(&self, e: Arc<Endpoint>) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready.push(e);
        self.publish(&ready);
    }

    pub(crate) fn remove_endpoint(&self, e: &Arc<Endpoint>) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready.retain(|x| !Arc::ptr_eq(x, e));
        self.publish(&ready);
    }

    fn publish(&self, ready: &[Arc<Endpoint>]) {
        self.metrics
            .ready_replicas
            .with_label_values(&[&self.spec.name])
            .set(ready.len() as i64);
        self.target.set_endpoints(ready.to_vec());
    }

    pub(crate) fn in_flight_of(&self, id: &str) -> u32 {
        let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.in_flight())
    }
}
