//! `HTTPScaledObject` (`rouse.dev/v1alpha1`): KEDA HTTP Add-on's object, field for field, so a
//! KEDA manifest works by changing its `apiVersion`; Rouse's own knobs live under `spec.rouse`,
//! where a future KEDA field cannot collide with them.
//!
//! Field names, defaults and validation follow `http.keda.sh/v1alpha1` as shipped in
//! http-add-on v0.15.0 (`config/crd/bases/http.keda.sh_httpscaledobjects.yaml`); where KEDA's
//! operator applies a default in code (replicas 0..100, scaledownPeriod 300 s), the accessor
//! methods here apply the same one.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What requests to route, where, and how to scale the workload behind it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rouse.dev",
    version = "v1alpha1",
    kind = "HTTPScaledObject",
    namespaced,
    shortname = "httpso",
    status = "HTTPScaledObjectStatus",
    printcolumn = r#"{"name":"TargetWorkload","type":"string","jsonPath":".status.targetWorkload"}"#,
    printcolumn = r#"{"name":"TargetService","type":"string","jsonPath":".status.targetService"}"#,
    printcolumn = r#"{"name":"MinReplicas","type":"integer","jsonPath":".spec.replicas.min"}"#,
    printcolumn = r#"{"name":"MaxReplicas","type":"integer","jsonPath":".spec.replicas.max"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Current","type":"integer","jsonPath":".status.currentReplicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectSpec {
    /// Hosts to route (matched against `Host` without its port; `*.example.com` wildcards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Path prefixes to route (segment-wise; the longest wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefixes: Option<Vec<String>>,
    /// Headers that must all match; no value means "present".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub headers: Option<Vec<HeaderSpec>>,
    /// The workload to scale and the Service whose endpoints receive the requests.
    pub scale_target_ref: ScaleTargetRef,
    /// A Service to send requests to when the target does not become ready in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start_timeout_failover_ref: Option<ColdStartTimeoutFailoverRef>,
    /// Replica bounds (KEDA's defaults: min 0, max 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaStruct>,
    /// Deprecated by KEDA in favour of `scalingMetric`; honoured as a concurrency target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pending_requests: Option<i32>,
    /// Seconds without traffic before scaling to zero (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledown_period: Option<i32>,
    /// Seconds after creation before the first scale-down may happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_cooldown_period: Option<i32>,
    /// What drives 1→N: concurrency or request rate (one of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_metric: Option<ScalingMetricSpec>,
    /// Per-object timeouts (Go durations, e.g. `20s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HTTPScaledObjectTimeoutsConfig>,
    /// Rouse extensions; absent in KEDA manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rouse: Option<RouseExtensions>,
}

/// One header match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct HeaderSpec {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The scaled workload (any kind with a `/scale` subresource) and its Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.portName) != has(self.port)")
    .message("must define either the 'portName' or the 'port'"))]
pub struct ScaleTargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
}

/// Where requests go when the target is not ready within `timeoutSeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.portName) != has(self.port)")
    .message("must define either the 'portName' or the 'port'"))]
pub struct ColdStartTimeoutFailoverRef {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(default = "default_failover_timeout")]
    pub timeout_seconds: i32,
}

fn default_failover_timeout() -> i32 {
    30
}

/// Replica bounds (no schema minimum, as in KEDA; the controller reports impossible bounds).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ReplicaStruct {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

/// The scaling metric. KEDA's operator refuses both at reconcile time; Rouse refuses them at
/// admission, so the mistake shows at `kubectl apply`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.concurrency) && has(self.requestRate))")
    .message("set one scaling metric: concurrency or requestRate"))]
pub struct ScalingMetricSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<RequestRateMetric>,
}

/// Requests in flight per replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyMetric {
    #[serde(default = "default_target_value")]
    pub target_value: i64,
}

/// Requests per second per replica, averaged over `window`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRateMetric {
    #[serde(default = "default_target_value")]
    pub target_value: i64,
    #[serde(default = "default_window")]
    pub window: String,
    #[serde(default = "default_granularity")]
    pub granularity: String,
}

fn default_target_value() -> i64 {
    100
}
fn default_window() -> String {
    "1m".into()
}
fn default_granularity() -> String {
    "1s".into()
}

/// KEDA's per-object timeouts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectTimeoutsConfig {
    /// How long a request waits for a ready endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_wait: Option<String>,
    /// How long to wait for the response head once forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header: Option<String>,
}

/// What Rouse adds to KEDA's object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouseExtensions {
    /// Bounds on requests held while the target is cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<ColdStartCaps>,
    /// Answer held requests with this page instead of waiting (e.g. a "starting…" page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<Placeholder>,
    /// Replaces the matched path prefix before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_prefix: Option<String>,
    /// Most requests in flight per endpoint; the rest stay held until a slot frees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub endpoint_concurrency: Option<i32>,
}

/// Per-route caps on held requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColdStartCaps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_held_requests: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_held_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub hold_timeout_ms: Option<i64>,
}

/// A static response served while the target starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placeholder {
    #[serde(default = "default_placeholder_status")]
    #[schemars(range(min = 100, max = 599))]
    pub status_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Who gets it: `all` (default, KEDA's semantics) or `browsers` (only requests whose
    /// `Accept` prefers HTML; API clients are held). With `browsers` and no `body`, Rouse's
    /// waiting page (the app's name and the time since the wake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<PlaceholderAudience>,
    /// `Refresh: N` on the answer (default 2 with `browsers`): the browser reloads by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub refresh_seconds: Option<i32>,
}

/// Who gets a placeholder (Rouse's extension; see `rouse_core::route::Audience`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlaceholderAudience {
    All,
    Browsers,
}

fn default_placeholder_status() -> i32 {
    503
}

/// What Rouse observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPScaledObjectStatus {
    /// `apiVersion/kind/name` of the scaled workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_workload: Option<String>,
    /// `service:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_service: Option<String>,
    /// Ready, TargetFound, RouteConflict, ScalingActive (see [`crate::crd::conditions`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
}

impl HTTPScaledObjectSpec {
    /// KEDA's defaults: 0 and 100.
    pub fn replica_bounds(&self) -> (i32, i32) {
        let r = self.replicas.as_ref();
        (
            r.and_then(|r| r.min).unwrap_or(0),
            r.and_then(|r| r.max).unwrap_or(100),
        )
    }

    /// KEDA's default: 300 s.
    pub fn scaledown_period_secs(&self) -> i32 {
        self.scaledown_period.unwrap_or(300)
    }
}
