//! Prometheus metrics of the local platform's replica processes, labelled by app.

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec, Registry};
use rouse_core::metrics::{counter_vec, gauge_vec, histogram_vec};

/// What the local platform exports.
#[derive(Clone)]
pub struct LocalMetrics {
    pub replica_starts: IntCounterVec,
    pub replica_crashes: IntCounterVec,
    pub ready_replicas: IntGaugeVec,
    pub replica_startup: HistogramVec,
}

impl LocalMetrics {
    /// Registers the metrics in `r` (once per registry).
    pub fn new(r: &Registry) -> Self {
        LocalMetrics {
            replica_starts: counter_vec(
                r,
                "rouse_local_replica_starts_total",
                "Replica processes started.",
                &["target"],
            ),
            replica_crashes: counter_vec(
                r,
                "rouse_local_replica_crashes_total",
                "Replica processes that exited without being asked to.",
                &["target"],
            ),
            ready_replicas: gauge_vec(
                r,
                "rouse_local_ready_replicas",
                "Replicas ready to serve.",
                &["target"],
            ),
            replica_startup: histogram_vec(
                r,
                "rouse_local_replica_startup_seconds",
                "From spawning a replica to its readiness probe passing.",
                &["target"],
                &[
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
            ),
        }
    }
}
