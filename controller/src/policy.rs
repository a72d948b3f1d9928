//! From an `HTTPScaledObject` spec to the scaling [`Policy`] (pure; KEDA's defaults).

use std::time::Duration;

use rouse_core::crd::{HTTPScaledObjectSpec, parse_go_duration};

use rouse_scale::{Metric, Policy};

/// The only request-rate granularity Rouse serves: the controller counts requests per second
/// (KEDA's interceptor counts them in buckets of this width; Rouse's rate is the admitted count
/// over the window's covered span, sampled every tick).
pub const SERVED_GRANULARITY: &str = "1s";

/// The policy an object asks for, or every problem with it.
pub fn policy_of(spec: &HTTPScaledObjectSpec) -> Result<Policy, Vec<String>> {
    let mut errors = Vec::new();
    let (min, max) = spec.replica_bounds();
    let mut policy = Policy {
        min_replicas: u32::try_from(min).unwrap_or_else(|_| {
            errors.push(format!("spec.replicas.min ({min}) must not be negative"));
            0
        }),
        max_replicas: u32::try_from(max).unwrap_or_else(|_| {
            errors.push(format!("spec.replicas.max ({max}) must not be negative"));
            0
        }),
        ..Policy::default()
    };
    let metric = spec.scaling_metric.as_ref();
    if let Some(rate) = metric.and_then(|m| m.request_rate.as_ref()) {
        policy.metric = Metric::RequestRate {
            target: rate.target_value as f64,
        };
        match parse_go_duration(&rate.window) {
            Ok(w) if w >= Duration::from_secs(1) => {
                policy.stable_window = w;
                policy.panic_window = policy.panic_window.min(w);
            }
            Ok(_) => {
                errors.push("spec.scalingMetric.requestRate.window must be at least 1s".into())
            }
            Err(e) => errors.push(format!("spec.scalingMetric.requestRate.window: {e}")),
        }
        let g = &rate.granularity;
        match parse_go_duration(g) {
            Ok(d) if d == Duration::from_secs(1) => {}
            Ok(_) => errors.push(format!(
                "spec.scalingMetric.requestRate.granularity: not served by Rouse except \
                 {SERVED_GRANULARITY:?} (it measures requests per second; got {g:?})"
            )),
            Err(e) => errors.push(format!("spec.scalingMetric.requestRate.granularity: {e}")),
        }
    } else if let Some(c) = metric.and_then(|m| m.concurrency.as_ref()) {
        policy.metric = Metric::Concurrency {
            target: c.target_value as f64,
        };
    } else if let Some(pending) = spec.target_pending_requests {
        policy.metric = Metric::Concurrency {
            target: f64::from(pending),
        };
    }
    let secs = |v: i32, field: &str, errors: &mut Vec<String>| {
        u64::try_from(v)
            .map(Duration::from_secs)
            .unwrap_or_else(|_| {
                errors.push(format!("{field} ({v}) must not be negative"));
                Duration::ZERO
            })
    };
    policy.scaledown_period = secs(
        spec.scaledown_period_secs(),
        "spec.scaledownPeriod",
        &mut errors,
    );
    if let Some(c) = spec.initial_cooldown_period {
        policy.initial_cooldown = secs(c, "spec.initialCooldownPeriod", &mut errors);
    }
    if let Err(mut e) = policy.validate() {
        errors.append(&mut e);
    }
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> HTTPScaledObjectSpec {
        serde_yaml::from_str(yaml).expect("spec parses")
    }

    #[test]
    fn keda_defaults() {
        let p = policy_of(&spec("{scaleTargetRef: {service: a, port: 80}}")).expect("valid");
        assert_eq!((p.min_replicas, p.max_replicas), (0, 100));
        assert_eq!(p.metric, Metric::Concurrency { target: 100.0 });
        assert_eq!(p.scaledown_period, Duration::from_secs(300));
    }

    #[test]
    fn request_rate_sets_the_window() {
        let p = policy_of(&spec(
            "{scaleTargetRef: {service: a, port: 80}, replicas: {min: 1, max: 4}, \
             scaledownPeriod: 30, scalingMetric: {requestRate: {targetValue: 50, window: 3s}}}",
        ))
        .expect("valid");
        assert_eq!(p.metric, Metric::RequestRate { target: 50.0 });
        assert_eq!(p.stable_window, Duration::from_secs(3));
        assert_eq!(p.panic_window, Duration::from_secs(3));
        assert_eq!((p.min_replicas, p.max_replicas), (1, 4));
        assert_eq!(p.scaledown_period, Duration::from_secs(30));
    }

    /// Accepted and not served would be a silent lie: only the granularity Rouse measures at
    /// is taken (KEDA's default, also given as `1000ms`), any other is refused by name.
    #[test]
    fn a_rate_granularity_other_than_one_second_is_refused_by_name() {
        let with = |g: &str| {
            policy_of(&spec(&format!(
                "{{scaleTargetRef: {{service: a, port: 80}}, \
                 scalingMetric: {{requestRate: {{targetValue: 5, granularity: {g}}}}}}}"
            )))
        };
        assert!(with("1s").is_ok());
        assert!(with("1000ms").is_ok());
        for bad in ["10s", "500ms", "soon"] {
            let errors = with(bad).expect_err(bad);
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("spec.scalingMetric.requestRate.granularity: ")),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn impossible_bounds_are_reported() {
        let errors = policy_of(&spec(
            "{scaleTargetRef: {service: a, port: 80}, replicas: {min: 5, max: 2}, \
             scaledownPeriod: -1}",
        ))
        .expect_err("invalid");
        assert!(
            errors.iter().any(|e| e.contains("replicas.min")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("scaledownPeriod")),
            "{errors:?}"
        );
    }
}
