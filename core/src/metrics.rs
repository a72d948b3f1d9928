//! The one way Rouse's components define Prometheus metrics.
//!
//! Names, help texts and label sets are constants in each component's telemetry module, so
//! creating or registering one can only fail on a programming error (an invalid name, or the
//! same component registered twice in one registry). Every component panics on it, at start-up,
//! with the metric's name: silently dropping a metric would leave a dashboard empty for no
//! visible reason.

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Registers `metric` in `registry` and returns it.
pub fn register<M: Collector + Clone + 'static>(registry: &Registry, name: &str, metric: M) -> M {
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        panic!("metric {name}: {e}");
    }
    metric
}

/// A counter family with `labels`.
pub fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, name, c)
}

/// A gauge family with `labels`.
pub fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, name, g)
}

/// A counter without labels.
pub fn counter(r: &Registry, name: &str, help: &str) -> prometheus::IntCounter {
    let c =
        prometheus::IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, name, c)
}

/// A gauge without labels.
pub fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, name, g)
}

/// A histogram family with `labels` and `buckets` (upper bounds, in the metric's unit).
pub fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(r, name, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_are_exported() {
        let r = Registry::new();
        counter_vec(&r, "rouse_test_total", "Test.", &["route"])
            .with_label_values(&["a"])
            .inc();
        gauge(&r, "rouse_test_gauge", "Test.").set(3);
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, ["rouse_test_gauge", "rouse_test_total"]);
    }

    #[test]
    #[should_panic(expected = "metric rouse_twice_total")]
    fn registering_a_name_twice_is_a_loud_programming_error() {
        let r = Registry::new();
        counter_vec(&r, "rouse_twice_total", "Test.", &[]);
        counter_vec(&r, "rouse_twice_total", "Test.", &[]);
    }
}
