//! Prometheus metrics of the autoscaling loop (local and Kubernetes alike).

use prometheus::{HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use rouse_core::metrics::{counter_vec, gauge, gauge_vec, histogram_vec};

/// What the autoscaling loops export, labelled by target.
#[derive(Clone)]
pub struct ScaleMetrics {
    pub decisions: IntCounterVec,
    pub desired_replicas: IntGaugeVec,
    pub wake_to_scale: HistogramVec,
    /// 1 while this process makes the scaling decisions: the Lease holder on Kubernetes (a
    /// standby reads 0), always 1 under `rouse local`.
    pub leader: IntGauge,
}

impl ScaleMetrics {
    /// Registers the metrics in `r` (once per registry).
    pub fn new(r: &Registry) -> Self {
        ScaleMetrics {
            decisions: counter_vec(
                r,
                "rouse_controller_scale_decisions_total",
                "Replica changes decided, by reason.",
                &["target", "reason"],
            ),
            desired_replicas: gauge_vec(
                r,
                "rouse_controller_desired_replicas",
                "Replicas the controller last asked for.",
                &["target"],
            ),
            wake_to_scale: histogram_vec(
                r,
                "rouse_controller_wake_to_scale_seconds",
                "From a wake signal to the scale request reaching the platform.",
                &["target"],
                &[
                    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ],
            ),
            leader: gauge(
                r,
                "rouse_controller_leader",
                "1 while this process makes the scaling decisions (the Lease holder on Kubernetes; always 1 under rouse local).",
            ),
        }
    }
}
