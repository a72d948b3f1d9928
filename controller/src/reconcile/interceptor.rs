//! What an InterceptorRoute means for scaling (pure): its [`Policy`], and the workload Rouse
//! scales when `spec.rouse.scaleTargetRef` names one.
//!
//! The policy is built by the HTTPScaledObject's [`policy_of`] from the equivalent fields, so
//! both kinds default and refuse alike; only the field names in its messages are translated.
//! Without a workload, a KEDA ScaledObject scales the target through Rouse's external scaler
//! (`external-push`, metadata `interceptorRoute: <name>`), which serves concurrency: such an
//! object scaling on request rate is refused here rather than left without metrics.

use k8s_openapi::api::core::v1::ObjectReference;
use rouse_core::crd::{
    ConcurrencyMetric, HTTPScaledObjectSpec, InterceptorRouteSpec, RequestRateMetric,
    ScaleTargetRef, ScalingMetricSpec,
};
use rouse_scale::Policy;

use super::assess::{DEFAULT_API_VERSION, DEFAULT_KIND};
use crate::policy::{SERVED_GRANULARITY, policy_of};
use crate::scaler::WorkloadRef;

/// KEDA's request-rate window when none is given.
const DEFAULT_WINDOW: &str = "1m";

/// The scaling policy an InterceptorRoute asks for, or every problem with it.
pub(super) fn interceptor_policy(spec: &InterceptorRouteSpec) -> Result<Policy, Vec<String>> {
    let mut errors = Vec::new();
    let m = &spec.scaling_metric;
    let ext = spec.rouse.clone().unwrap_or_default();
    let by_rouse = ext.scale_target_ref.is_some();
    let metric = match (&m.concurrency, &m.request_rate) {
        (Some(_), Some(_)) => {
            errors.push(
                "spec.scalingMetric: not served by Rouse with both concurrency and requestRate \
                 (KEDA scales on the larger); keep one"
                    .to_string(),
            );
            None
        }
        (None, None) => {
            errors.push("spec.scalingMetric: set concurrency or requestRate".to_string());
            None
        }
        (Some(c), None) => Some(ScalingMetricSpec {
            concurrency: Some(ConcurrencyMetric {
                target_value: i64::from(c.target_value),
            }),
            request_rate: None,
        }),
        (None, Some(r)) => {
            if !by_rouse {
                errors.push(
                    "spec.scalingMetric.requestRate: not served through Rouse's external scaler \
                     (it serves concurrency); use concurrency, or name the workload in \
                     spec.rouse.scaleTargetRef so Rouse scales on request rate itself"
                        .to_string(),
                );
            }
            Some(ScalingMetricSpec {
                concurrency: None,
                request_rate: Some(RequestRateMetric {
                    target_value: i64::from(r.target_value),
                    window: r.window.clone().unwrap_or_else(|| DEFAULT_WINDOW.into()),
                    // Checked by `policy_of`, for both kinds.
                    granularity: r
                        .granularity
                        .clone()
                        .unwrap_or_else(|| SERVED_GRANULARITY.into()),
                }),
            })
        }
    };
    for (field, value) in [
        (
            "spec.scalingMetric.concurrency.targetValue",
            m.concurrency.as_ref().map(|c| c.target_value),
        ),
        (
            "spec.scalingMetric.requestRate.targetValue",
            m.request_rate.as_ref().map(|r| r.target_value),
        ),
    ] {
        if let Some(v) = value.filter(|v| *v < 1) {
            errors.push(format!("{field}: must be at least 1 (got {v})"));
        }
    }
    // The HTTPScaledObject's policy from the equivalent fields (its target is not read).
    let equivalent = HTTPScaledObjectSpec {
        hosts: None,
        path_prefixes: None,
        headers: None,
        scale_target_ref: ScaleTargetRef {
            name: None,
            kind: None,
            api_version: None,
            service: spec.target.service.clone(),
            port: spec.target.port,
            port_name: spec.target.port_name.clone(),
        },
        cold_start_timeout_failover_ref: None,
        replicas: ext.replicas.clone(),
        target_pending_requests: None,
        scaledown_period: ext.scaledown_period,
        initial_cooldown_period: ext.initial_cooldown_period,
        scaling_metric: metric,
        timeouts: None,
        rouse: None,
    };
    let policy = policy_of(&equivalent).map_err(|es| {
        es.into_iter()
            .map(|e| {
                e.replace("spec.replicas", "spec.rouse.replicas")
                    .replace("spec.scaledownPeriod", "spec.rouse.scaledownPeriod")
                    .replace(
                        "spec.initialCooldownPeriod",
                        "spec.rouse.initialCooldownPeriod",
                    )
            })
            .collect::<Vec<_>>()
    });
    match policy {
        Ok(p) if errors.is_empty() => Ok(p),
        Ok(_) => Err(errors),
        Err(mut e) => {
            errors.append(&mut e);
            Err(errors)
        }
    }
}

/// The workload `spec.rouse.scaleTargetRef` names (KEDA's defaults: `apps/v1` Deployment), or
/// `None` when a KEDA ScaledObject scales it. `object` is what Events are attached to.
pub(super) fn interceptor_workload(
    spec: &InterceptorRouteSpec,
    key: &str,
    object: ObjectReference,
) -> Option<WorkloadRef> {
    let r = spec.rouse.as_ref()?.scale_target_ref.as_ref()?;
    Some(WorkloadRef {
        namespace: key
            .split_once('/')
            .map(|(ns, _)| ns.to_string())
            .unwrap_or_default(),
        api_version: r
            .api_version
            .clone()
            .unwrap_or_else(|| DEFAULT_API_VERSION.into()),
        kind: r.kind.clone().unwrap_or_else(|| DEFAULT_KIND.into()),
        name: r.name.clone(),
        object,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rouse_scale::Metric;

    use super::*;

    fn spec(yaml: &str) -> InterceptorRouteSpec {
        serde_yaml::from_str(yaml).expect("spec parses")
    }

    #[test]
    fn rouse_scales_with_the_extensions_and_kedas_metric() {
        let s = spec(
            "{target: {service: a, port: 80}, scalingMetric: {requestRate: {targetValue: 5, window: 10s}}, \
             rouse: {scaleTargetRef: {name: web}, replicas: {min: 1, max: 4}, scaledownPeriod: 30}}",
        );
        let p = interceptor_policy(&s).expect("valid");
        assert_eq!(p.metric, Metric::RequestRate { target: 5.0 });
        assert_eq!(p.stable_window, Duration::from_secs(10));
        assert_eq!((p.min_replicas, p.max_replicas), (1, 4));
        assert_eq!(p.scaledown_period, Duration::from_secs(30));
        let w = interceptor_workload(&s, "team/r", ObjectReference::default()).expect("workload");
        assert_eq!(w.to_string(), "apps/v1/Deployment/web");
    }

    #[test]
    fn what_rouse_cannot_scale_on_is_refused_by_name() {
        let both = spec(
            "{target: {service: a, port: 80}, scalingMetric: {concurrency: {targetValue: 1}, \
             requestRate: {targetValue: 1}}}",
        );
        let e = interceptor_policy(&both).expect_err("both");
        assert!(e[0].starts_with("spec.scalingMetric: not served"), "{e:?}");
        let rate_via_keda = spec(
            "{target: {service: a, port: 80}, scalingMetric: {requestRate: {targetValue: 1, granularity: 2s}}, \
             rouse: {replicas: {min: 3, max: 1}}}",
        );
        let e = interceptor_policy(&rate_via_keda).expect_err("refused");
        for field in [
            "spec.scalingMetric.requestRate.granularity: not served",
            "spec.scalingMetric.requestRate: not served through Rouse's external scaler",
        ] {
            assert!(e.iter().any(|m| m.starts_with(field)), "{field}: {e:?}");
        }
        assert!(e.iter().any(|m| m.contains("replicas")), "{e:?}");
        let keda_scaled = spec(
            "{target: {service: a, port: 80}, scalingMetric: {concurrency: {targetValue: 7}}}",
        );
        let p = interceptor_policy(&keda_scaled).expect("valid");
        assert_eq!(p.metric, Metric::Concurrency { target: 7.0 });
        assert!(interceptor_workload(&keda_scaled, "team/r", ObjectReference::default()).is_none());
    }
}
