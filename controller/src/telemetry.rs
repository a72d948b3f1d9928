//! Prometheus metrics of the controller and the local platform.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct ControllerMetrics {
    pub decisions: IntCounterVec,
    pub desired_replicas: IntGaugeVec,
    pub wake_to_scale: HistogramVec,
    pub replica_starts: IntCounterVec,
    pub replica_crashes: IntCounterVec,
    pub ready_replicas: IntGaugeVec,
    pub replica_startup: HistogramVec,
}

impl ControllerMetrics {
    /// Registers the controller metrics (fixed names: a failure is a programming error).
    pub fn new(r: &Registry) -> Self {
        fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
            r.register(Box::new(m.clone()))
                .unwrap_or_else(|e| panic!("metric: {e}"));
            m
        }
        let counter = |n: &str, h: &str, l: &[&str]| {
            reg(
                r,
                IntCounterVec::new(Opts::new(n, h), l).unwrap_or_else(|e| panic!("{n}: {e}")),
            )
        };
        let gauge = |n: &str, h: &str, l: &[&str]| {
            reg(
                r,
                IntGaugeVec::new(Opts::new(n, h), l).unwrap_or_else(|e| panic!("{n}: {e}")),
            )
        };
        let hist = |n: &str, h: &str, b: Vec<f64>| {
            reg(
                r,
                HistogramVec::new(HistogramOpts::new(n, h).buckets(b), &["target"])
                    .unwrap_or_else(|e| panic!("{n}: {e}")),
            )
        };
        ControllerMetrics {
            decisions: counter(
                "rouse_controller_scale_decisions_total",
                "Replica changes decided, by reason.",
                &["target", "reason"],
            ),
            desired_replicas: gauge(
                "rouse_controller_desired_replicas",
                "Replicas the controller last asked for.",
                &["target"],
            ),
            wake_to_scale: hist(
                "rouse_controller_wake_to_scale_seconds",
                "From a wake signal to the scale request reaching the platform.",
                vec![
                    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ],
            ),
            replica_starts: counter(
                "rouse_local_replica_starts_total",
                "Replica processes started.",
                &["target"],
            ),
            replica_crashes: counter(
                "rouse_local_replica_crashes_total",
                "Replica processes that exited without being asked to.",
                &["target"],
            ),
            ready_replicas: gauge(
                "rouse_local_ready_replicas",
                "Replicas ready to serve.",
                &["target"],
            ),
            replica_startup: hist(
                "rouse_local_replica_startup_seconds",
                "From spawning a replica to its readiness probe passing.",
                vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
            ),
        }
    }
}
