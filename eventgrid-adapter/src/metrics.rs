//! Prometheus metrics of the gateway, labelled by subscription.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

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
    /// Requests refused, by status.
    pub rejected: IntCounterVec,
    /// `ce-*` header values kept raw (not well-formed percent-encoding).
    pub raw_header_values: IntCounterVec,
    /// Accepted → delivered, seconds.
    pub delivery_latency: HistogramVec,
    /// Accepted and not yet delivered or dead-lettered.
    pub pending: IntGaugeVec,
}

impl Metrics {
    pub fn new(r: &Registry) -> Self {
        fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
            // Names are fixed; a clash means the gateway was registered twice in one registry.
            let _ = r.register(Box::new(m.clone()));
            m
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                r,
                IntCounterVec::new(Opts::new(name, help), labels)
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        };
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
                "Webhook requests refused, by status.",
                &["subscription", "status"],
            ),
            raw_header_values: counter(
                "rouse_events_raw_header_values_total",
                "ce-* header values kept raw (not percent-encoded).",
                &["subscription"],
            ),
            delivery_latency: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "rouse_event_delivery_seconds",
                        "From acknowledgement to a 2xx from the target.",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        300.0,
                    ]),
                    &["subscription"],
                )
                .unwrap_or_else(|e| panic!("delivery histogram: {e}")),
            ),
            pending: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "rouse_events_pending",
                        "Events accepted and not yet delivered or dead-lettered.",
                    ),
                    &["subscription"],
                )
                .unwrap_or_else(|e| panic!("pending gauge: {e}")),
            ),
        }
    }
}
