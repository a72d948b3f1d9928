//! `InterceptorRoute` (`rouse.dev/v1alpha1`): KEDA HTTP Add-on's current routing object
//! (`http.keda.sh/v1beta1`, v0.14+), field for field, so a KEDA manifest works by changing its
//! `apiVersion`; Rouse's own knobs live under `spec.rouse`, where a future KEDA field cannot
//! collide with them. KEDA's own objects are read as they are by [`KedaInterceptorRoute`].
//!
//! Field names, shapes and validation follow http-add-on v0.15.0
//! (`operator/apis/http/v1beta1/interceptorroute_types.go`) plus v0.16's `staticRoutes`. What
//! Rouse cannot serve yet is refused by [`routes_of`] with an error naming the field, which the
//! controller writes into the object's conditions: a field is served or refused, never ignored.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ColdStartCaps, HTTPScaledObjectStatus, HeaderSpec, PlaceholderAudience, ReplicaStruct,
};

mod convert;
mod objects;
#[cfg(test)]
mod tests;

pub use convert::{MAX_HOLD, route_owner, routes_of};
pub use objects::{RouteObject, ServicePort, claim_all};

/// Routes requests to a Service and says how its workload scales (KEDA's InterceptorRoute).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rouse.dev",
    version = "v1alpha1",
    kind = "InterceptorRoute",
    namespaced,
    shortname = "ir",
    status = "InterceptorRouteStatus",
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".spec.target.service"}"#,
    printcolumn = r#"{"name":"TargetWorkload","type":"string","jsonPath":".status.targetWorkload"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Current","type":"integer","jsonPath":".status.currentReplicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteSpec {
    /// The Service (and port) requests are forwarded to.
    pub target: TargetRef,
    /// What a request gets while the target has no ready endpoint: a placeholder, a fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<ColdStartSpec>,
    /// Per-route timeouts (Go durations, e.g. `10s`; `0s` disables one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<InterceptorRouteTimeouts>,
    /// Which requests go to the target: any rule matches (OR); within a rule everything must
    /// (AND). No rules: every host, every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RoutingRule>>,
    /// What drives 1→N scaling.
    pub scaling_metric: InterceptorScalingMetric,
    /// Requests answered with a fixed response that never wake the target (health probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_routes: Option<Vec<StaticRoute>>,
    /// Rouse extensions; absent in KEDA manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rouse: Option<InterceptorRouteExtensions>,
}

/// The Service requests go to; exactly one of `port` and `portName`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.port) != has(self.portName)")
    .message("exactly one of 'port' or 'portName' must be set"))]
pub struct TargetRef {
    /// The Service's name, in the object's namespace.
    #[schemars(length(min = 1))]
    pub service: String,
    /// The Service port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// The Service port's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// A Service by name and port (the fallback); exactly one of `port` and `portName`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.port) != has(self.portName)")
    .message("exactly one of 'port' or 'portName' must be set"))]
pub struct ServiceRef {
    /// The Service's name, in the object's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The Service port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// The Service port's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub port_name: Option<String>,
}

/// One routing rule: hosts, path prefixes and headers, all of which must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct RoutingRule {
    /// Exact or wildcard (`*.example.com`) hosts; `*` or none: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hosts: Option<Vec<String>>,
    /// Path prefixes (segment-wise; the longest wins); none: `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<PathMatch>>,
    /// Headers that must all match; no value means "present".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub headers: Option<Vec<HeaderSpec>>,
}

/// A path prefix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PathMatch {
    /// The prefix, e.g. `/api`.
    #[schemars(length(min = 1))]
    pub value: String,
}

/// The scaling metric: at least one (KEDA allows both; Rouse scales on one and refuses both).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.concurrency) || has(self.requestRate)")
    .message("at least one of 'concurrency' or 'requestRate' must be set"))]
pub struct InterceptorScalingMetric {
    /// Scale on requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyTarget>,
    /// Scale on requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<RequestRateTarget>,
}

/// Requests in flight per replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyTarget {
    /// Requests in flight per replica.
    #[schemars(range(min = 1))]
    pub target_value: i32,
}

/// Requests per second per replica over `window` (KEDA's defaults: `1m`, granularity `1s`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRateTarget {
    /// Requests per second per replica.
    #[schemars(range(min = 1))]
    pub target_value: i32,
    /// The averaging window (Go duration; default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The bucket size (Go duration; Rouse serves only `1s`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<String>,
}

/// Cold-start behaviour: at least one of `fallback` and `placeholder`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new("has(self.fallback) || has(self.placeholder)")
    .message("at least one of 'fallback' or 'placeholder' must be set"))]
pub struct ColdStartSpec {
    /// Where requests go when the target is not ready by the readiness timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<ColdStartFallback>,
    /// What requests get at once while the target has no ready endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<ColdStartPlaceholder>,
}

/// The fallback Service (KEDA: none given means no fallback).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ColdStartFallback {
    /// The always-on Service (Rouse never scales it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
}

/// The placeholder response.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ColdStartPlaceholder {
    /// The response (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<StaticResponse>,
}

/// A fixed HTTP response: at most one of `body` and `bodyFromConfigMap`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.body) && has(self.bodyFromConfigMap))")
    .message("at most one of 'body' or 'bodyFromConfigMap' may be set"))]
pub struct StaticResponse {
    /// Default 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub status_code: Option<i32>,
    /// The body, inline (at most 32768 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub body: Option<String>,
    /// Not served by Rouse yet: refused with a condition naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_from_config_map: Option<ConfigMapKeyRef>,
    /// Response headers (framing and hop-by-hop ones are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// A key of a ConfigMap in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ConfigMapKeyRef {
    /// The ConfigMap's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key holding the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// KEDA's per-route timeouts (Go durations).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteTimeouts {
    /// How long a request waits for a ready endpoint (Rouse's hold timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<String>,
    /// The whole request's deadline (not served by Rouse yet: refused unless `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// How long to wait for the response head once forwarded (not served by Rouse yet:
    /// refused unless `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header: Option<String>,
}

/// Requests answered with a fixed response, never counted as demand nor waking the target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticRoute {
    /// Which requests (any rule); a rule without hosts uses the object's own hosts.
    #[schemars(length(min = 1))]
    pub rules: Vec<RoutingRule>,
    /// The fixed response.
    pub response: StaticResponse,
    /// When it answers (default `WhenUnavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mode: Option<StaticResponseMode>,
}

/// When a static route answers by itself.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StaticResponseMode {
    /// Only while the target has no ready endpoint (the default); otherwise forwarded.
    WhenUnavailable,
    /// Always.
    Always,
}

/// What Rouse adds to KEDA's object. With `scaleTargetRef`, Rouse's controller scales the
/// workload itself (KEDA keeps that in the user's ScaledObject); without it, scaling is left to
/// a KEDA ScaledObject whose `external-push` trigger points at Rouse's external scaler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorRouteExtensions {
    /// The workload Rouse scales (any kind with a `/scale` subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_ref: Option<WorkloadTargetRef>,
    /// Replica bounds when Rouse scales (defaults 0 and 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaStruct>,
    /// Seconds without traffic before Rouse scales to zero (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledown_period: Option<i32>,
    /// Seconds after creation before Rouse's first scale-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_cooldown_period: Option<i32>,
    /// Bounds on requests held while the target is cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<ColdStartCaps>,
    /// Who gets `spec.coldStart.placeholder`: `all` (KEDA's semantics, the default) or
    /// `browsers` (only requests whose `Accept` prefers HTML; API clients are held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder_audience: Option<PlaceholderAudience>,
    /// `Refresh: N` on the placeholder (default 2 with `browsers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub placeholder_refresh_seconds: Option<i32>,
    /// Replaces the matched path prefix before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_prefix: Option<String>,
    /// Most requests in flight per endpoint; the rest stay held until a slot frees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub endpoint_concurrency: Option<i32>,
}

/// The workload to scale: `apiVersion` (default `apps/v1`), `kind` (default `Deployment`), name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadTargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The workload's name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// The same status as an `HTTPScaledObject`'s (conditions, target, replicas), so both kinds
/// are reported by one piece of code and read the same way with `kubectl`.
pub type InterceptorRouteStatus = HTTPScaledObjectStatus;

/// An `http.keda.sh/v1beta1` InterceptorRoute, read as KEDA wrote it.
///
/// Why a second type with a raw spec rather than a `DynamicObject` or the typed spec: it is a
/// typed `kube::Resource` (so it is watched, cached and status-patched by the same generic code
/// as Rouse's kinds), but its `spec` stays JSON until [`KedaInterceptorRoute::spec`] reads it,
/// which refuses by name any field a newer KEDA CRD may carry that Rouse does not know
/// (serde would drop it silently). Rouse never generates or installs KEDA's CRD from it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct KedaInterceptorRoute {
    pub metadata: ObjectMeta,
    /// KEDA's spec as stored; read it with [`KedaInterceptorRoute::spec`].
    #[serde(default)]
    pub spec: serde_json::Value,
    /// KEDA's status (conditions), as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl kube::Resource for KedaInterceptorRoute {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "InterceptorRoute".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        KEDA_GROUP.into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1beta1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "interceptorroutes".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// KEDA HTTP Add-on's API group.
pub const KEDA_GROUP: &str = "http.keda.sh";

impl KedaInterceptorRoute {
    /// The spec, read like a `rouse.dev` one; every field Rouse does not know is refused by
    /// its path (`spec.coldStart.maxPendingRequests: not served by Rouse`).
    pub fn spec(&self) -> Result<InterceptorRouteSpec, Vec<String>> {
        let spec: InterceptorRouteSpec = serde_path_to_error::deserialize(&self.spec)
            .map_err(|e| vec![format!("spec.{}: {}", e.path(), e.inner())])?;
        let known = serde_json::to_value(&spec).map_err(|e| vec![format!("spec: {e}")])?;
        let mut unknown = Vec::new();
        unknown_fields("spec", &self.spec, &known, &mut unknown);
        if unknown.is_empty() {
            Ok(spec)
        } else {
            Err(unknown
                .into_iter()
                .map(|f| format!("{f}: not served by Rouse (unknown field)"))
                .collect())
        }
    }
}

/// Paths of the object keys in `given` that `known` (the same value read into Rouse's types
/// and written back) lacks. Null and empty values carry nothing and are not reported.
fn unknown_fields(
    path: &str,
    given: &serde_json::Value,
    known: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (name, value) in g {
                let field = format!("{path}.{name}");
                match k.get(name) {
                    Some(kv) => unknown_fields(&field, value, kv, out),
                    None if empty(value) => {}
                    None => out.push(field),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                unknown_fields(&format!("{path}[{i}]"), gv, kv, out);
            }
        }
        _ => {}
    }
}
