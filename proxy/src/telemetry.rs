//! Prometheus metrics of the proxy, registered once per process.
//!
//! Labels are bounded: `route` comes from configuration, `code` from the status, `reason` from
//! [`crate::reason::Reason`]. Hosts, paths and client data never become labels.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use rouse_core::metrics::{counter, counter_vec, gauge, gauge_vec, histogram_vec};

use crate::reason::Reason;

/// Latency buckets in seconds, from 100 µs (warm forward) to 60 s (slow cold start).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Every metric the proxy exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub in_flight: IntGaugeVec,
    pub held: IntGaugeVec,
    pub held_bytes: IntGaugeVec,
    pub held_admitted: IntCounterVec,
    pub held_released: IntCounterVec,
    pub cold_starts: IntCounterVec,
    pub cold_start_wait: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub ready_to_forward: HistogramVec,
    pub rejections: IntCounterVec,
    pub draining: IntGauge,
    pub connections: IntGauge,
    pub connections_refused: IntCounter,
    pub parked: IntGauge,
    pub access_log_dropped: IntCounter,
}

impl Metrics {
    /// Registers the proxy's metrics in `registry` (names are fixed, so this cannot fail at
    /// runtime unless called twice on one registry: a programming error).
    pub fn new(registry: Registry) -> Self {
        let r = &registry;
        let draining = gauge(
            r,
            "rouse_proxy_draining",
            "1 while the proxy drains for shutdown.",
        );
        Metrics {
            requests: counter_vec(
                r,
                "rouse_proxy_requests_total",
                "Requests answered, by route and status code.",
                &["route", "code"],
            ),
            in_flight: gauge_vec(
                r,
                "rouse_proxy_requests_in_flight",
                "Requests forwarded and not finished (open WebSockets included).",
                &["route"],
            ),
            held: gauge_vec(
                r,
                "rouse_proxy_held_requests",
                "Requests waiting for a ready endpoint with capacity.",
                &["route"],
            ),
            held_bytes: gauge_vec(
                r,
                "rouse_proxy_held_bytes",
                "Bytes (head + declared body) of held requests.",
                &["route"],
            ),
            held_admitted: counter_vec(
                r,
                "rouse_proxy_held_admitted_total",
                "Requests that entered the hold queue.",
                &["route"],
            ),
            held_released: counter_vec(
                r,
                "rouse_proxy_held_released_total",
                "Requests that left the hold queue, forwarded or rejected.",
                &["route"],
            ),
            cold_starts: counter_vec(
                r,
                "rouse_proxy_cold_starts_total",
                "Requests that were forwarded after waiting for an endpoint.",
                &["route"],
            ),
            cold_start_wait: histogram_vec(
                r,
                "rouse_proxy_cold_start_wait_seconds",
                "Time held requests waited before forwarding.",
                &["route"],
                BUCKETS,
            ),
            upstream_duration: histogram_vec(
                r,
                "rouse_proxy_upstream_duration_seconds",
                "Time from forwarding to the end of the response (queue wait excluded).",
                &["route"],
                BUCKETS,
            ),
            ready_to_forward: histogram_vec(
                r,
                "rouse_proxy_ready_to_forward_seconds",
                "For held requests: time from the endpoint becoming ready to the request being released to it.",
                &["route"],
                BUCKETS,
            ),
            rejections: counter_vec(
                r,
                "rouse_proxy_rejections_total",
                "Requests answered by the proxy itself, by reason.",
                &["route", "reason"],
            ),
            draining,
            connections: gauge(
                r,
                "rouse_proxy_connections",
                "Open connections on the public plaintext listener.",
            ),
            connections_refused: counter(
                r,
                "rouse_proxy_connections_refused_total",
                "Connections answered 503 and closed at the connection limit.",
            ),
            parked: gauge(
                r,
                "rouse_proxy_parked_requests",
                "Held HTTP/1 requests waiting before the engine, as their socket and head (the cheap way to hold); also counted in rouse_proxy_held_requests.",
            ),
            access_log_dropped: counter(
                r,
                "rouse_proxy_access_log_dropped_total",
                "Access-log lines dropped because the writer fell behind (requests are never slowed for it).",
            ),
            registry,
        }
    }

    /// Counts a finished request under `route` (`-` for none): its status (`000` when nothing
    /// was written) and, for an error, Rouse's reason. The one place a routed request's end is
    /// counted, whether it ended in the engine or parked before it (what the front refuses
    /// before a head is whole is counted where it refuses: `front::conn`).
    pub fn request_finished(&self, route: &str, code: &str, reason: Option<Reason>) {
        self.requests.with_label_values(&[route, code]).inc();
        if let Some(reason) = reason {
            self.rejections
                .with_label_values(&[route, reason.as_str()])
                .inc();
        }
    }

    /// Text exposition of every metric in the registry.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::warn!(error = %e, "Metrics encoding failed.");
        }
        out
    }
}
