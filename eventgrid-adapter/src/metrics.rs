//! Prometheus metrics of the gateway, labelled by subscription.

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec, Registry};
use rouse_core::metrics::{counter_vec, gauge_vec, histogram_vec};

#[derive(Clone)]
pub struct Metrics {
    /// Events in requests that passed auth and parsing.
    pub received: IntCounterVec,
    /// Events acknowledged to the sender (stored durably first).
    pub acknowledged: IntCounterVec,
    pub delivered: IntCounterVec,
    /// Delivery attempts that failed and were scheduled again.
    pub retried: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    /// Events acknowledged but dropped as duplicates.
    pub deduplicated: IntCounterVec,
    /// Requests refused, by status and reason (the `reason` of the JSON error body).
    pub rejected: IntCounterVec,
    /// `ce-*` header values kept raw (not well-formed percent-encoding).
    pub raw_header_values: IntCounterVec,
    /// Accepted → delivered, seconds.
    pub delivery_latency: HistogramVec,
    /// Accepted and not yet delivered or dead-lettered.
    pub pending: IntGaugeVec,
}

impl Metrics {
    /// Registers the gateway's metrics in `r` (once per registry).
    pub fn new(r: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| counter_vec(r, name, help, labels);
        Metrics {
            received: counter(
                "rouse_events_received_total",
                "Events received (auth and parsing passed).",
                &["subscription"],
            ),
            acknowledged: counter(
                "rouse_events_acknowledged_total",
                "Events acknowledged after a durable write.",
                &["subscription"],
            ),
            delivered: counter(
                "rouse_events_delivered_total",
                "Events the target answered 2xx for.",
                &["subscription"],
            ),
            retried: counter(
                "rouse_events_retried_total",
                "Failed delivery attempts scheduled again (per event).",
                &["subscription"],
            ),
            dead_lettered: counter(
                "rouse_events_dead_lettered_total",
                "Events given up on and written to the dead-letter sink.",
                &["subscription"],
            ),
            deduplicated: counter(
                "rouse_events_deduplicated_total",
                "Events acknowledged and dropped as duplicates.",
                &["subscription"],
            ),
            rejected: counter(
                "rouse_event_requests_rejected_total",
                "Webhook requests refused, by status and reason.",
                &["subscription", "status", "reason"],
            ),
            raw_header_values: counter(
                "rouse_events_raw_header_values_total",
                "ce-* header values kept raw (not percent-encoded).",
                &["subscription"],
            ),
            delivery_latency: histogram_vec(
                r,
                "rouse_event_delivery_seconds",
                "From acknowledgement to a 2xx from the target.",
                &["subscription"],
                &[
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ],
            ),
            pending: gauge_vec(
                r,
                "rouse_events_pending",
                "Events accepted and not yet delivered or dead-lettered.",
                &["subscription"],
            ),
        }
    }
}
