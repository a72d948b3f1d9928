//! `EventSubscription` (`rouse.dev/v1alpha1`): one Event Grid / CloudEvents webhook served by
//! every proxy replica, and the `HTTPScaledObject` its events are delivered to (counted in that
//! object's demand, so a target at zero wakes for them).
//!
//! The fields mirror the gateway's `subscriptions[]` section of the local YAML (see
//! `rouse_eventgrid::config`), in the API's camelCase, with two differences that belong to
//! Kubernetes: shared keys come from a Secret (never inline), and the target is an
//! `HTTPScaledObject` in the same namespace rather than a local app. Bounds are in the schema,
//! so `kubectl apply` refuses an out-of-range number; what the schema cannot say (pairs of
//! fields) is [`EventSubscriptionSpec::validate`], reported as the `Validated` condition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A webhook endpoint on every proxy replica, and where its events go.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rouse.dev",
    version = "v1alpha1",
    kind = "EventSubscription",
    namespaced,
    shortname = "evsub",
    status = "EventSubscriptionStatus",
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.path"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.httpScaledObject"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pending"}"#,
    printcolumn = r#"{"name":"DeadLettered","type":"integer","jsonPath":".status.deadLettered"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EventSubscriptionSpec {
    /// The webhook path, on every proxy replica and any host (exact match; a trailing `/` is
    /// ignored). Two objects with the same path: the older one keeps it.
    #[schemars(regex(pattern = r"^/[^?#]*$"), length(max = 1024))]
    pub path: String,
    /// Which events the webhook accepts: `eventgrid` (default), `cloudevents` or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<EventSchema>,
    /// How a sender proves it may post. Every configured method must pass; none = open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<EventAuth>,
    /// `aeg-subscription-name` values accepted in an Event Grid validation handshake
    /// (case-insensitive); empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscription_names: Vec<String>,
    /// Origins granted in the CloudEvents `OPTIONS` handshake; empty = Event Grid's own
    /// origins; `*` = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// `WebHook-Allowed-Rate` in the CloudEvents handshake (requests per minute); absent = `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub allowed_rate: Option<i32>,
    /// Where events are delivered.
    pub target: EventTarget,
    /// How events are delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<EventDelivery>,
    /// An event whose `(topic, id)` / `(source, id)` was seen within this window is
    /// acknowledged and dropped. Default 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub dedupe_window_seconds: Option<i64>,
    /// Events accepted and not yet delivered above which the webhook answers 503 +
    /// Retry-After. Default 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub max_pending: Option<i64>,
    /// Request headers stored with each event and sent on with its delivery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_headers: Vec<String>,
    /// Refuse CloudEvents extension names outside `[a-z0-9]` (the spec's MUST). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_extension_names: Option<bool>,
    /// Where events that cannot be delivered go (with the reason in headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,
}

/// The event schema a webhook accepts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventSchema {
    Eventgrid,
    Cloudevents,
    Both,
}

/// Webhook authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.keySecretRef) || has(self.keyHeader) || has(self.keyQuery)")
    .message("keySecretRef needs keyHeader or keyQuery (where the sender puts the key)"))]
#[x_kube(validation = kube::core::Rule::new("has(self.keySecretRef) || !(has(self.keyHeader) || has(self.keyQuery))")
    .message("keyHeader/keyQuery need keySecretRef (the accepted keys)"))]
pub struct EventAuth {
    /// A Secret in the same namespace whose every data entry is an accepted key (rotation:
    /// add the new key, move the sender over, remove the old one; no restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretRef>,
    /// The request header carrying the key (e.g. an Event Grid delivery attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub key_header: Option<String>,
    /// The query parameter carrying the key (e.g. `code` in the endpoint URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub key_query: Option<String>,
    /// Microsoft Entra ID bearer tokens (Event Grid's `azureActiveDirectory*` settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra: Option<EntraAuth>,
}

/// A Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Bearer token validation: RS256, issuer, audience, expiry; keys from a JWKS URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntraAuth {
    /// `https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys`.
    #[schemars(length(min = 1))]
    pub jwks_url: String,
    /// The webhook app's application ID or URI (the token's `aud`).
    #[schemars(length(min = 1))]
    pub audience: String,
    /// Accepted issuers (the v1 and v2 forms of the tenant).
    #[schemars(length(min = 1))]
    pub issuers: Vec<String>,
    /// How long fetched keys are used before refetching. Default 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub cache_seconds: Option<i64>,
}

/// The `HTTPScaledObject` (same namespace) whose route receives the events.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTarget {
    /// The object's name; its target Service receives the events and its demand counts them.
    #[schemars(length(min = 1))]
    pub http_scaled_object: String,
    /// Path and query on the target, e.g. `/runtime/webhooks/EventGrid?functionName=F`.
    /// Reserved for the gateway: a client request to it is refused (403). Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// `Host` to send; default: the object's first host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// How events reach the target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.format) && self.format == 'cloudevents-binary' && has(self.batching) && self.batching == 'per-batch')")
    .message("batching per-batch cannot be used with format cloudevents-binary (one event per request)"))]
pub struct EventDelivery {
    /// `eventgrid` (default; needs schema eventgrid), `cloudevents-binary` or
    /// `cloudevents-structured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DeliveryFormat>,
    /// `per-event` (default) or `per-batch` (up to `maxEvents` per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<DeliveryBatching>,
    /// Events per request with `per-batch`. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5000))]
    pub max_events: Option<i32>,
    /// Delivery requests in flight at once, per proxy replica. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: Option<i32>,
    /// Per delivery request, including a cold start. Default 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub timeout_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<EventRetry>,
}

/// Delivery formats.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryFormat {
    Eventgrid,
    CloudeventsBinary,
    CloudeventsStructured,
}

/// One event per request, or a batch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryBatching {
    PerEvent,
    PerBatch,
}

/// Retries of one delivery, then the dead letter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.initialBackoffMs) || !has(self.maxBackoffMs) || self.initialBackoffMs <= self.maxBackoffMs")
    .message("initialBackoffMs must not exceed maxBackoffMs"))]
pub struct EventRetry {
    /// Attempts before dead-lettering. Default 30 (Event Grid's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_attempts: Option<i32>,
    /// First backoff; doubles per attempt. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400000))]
    pub initial_backoff_ms: Option<i64>,
    /// Default 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400000))]
    pub max_backoff_ms: Option<i64>,
    /// An event older than this is dead-lettered instead of retried. Default 86400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub ttl_seconds: Option<i64>,
}

/// The dead-letter destination: a JetStream stream on the proxies' NATS (created if missing),
/// one message per event, subject `rouse-dead.<stream>.<namespace>_<name>`, the reason and the
/// attempts in headers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct DeadLetterSpec {
    /// Default: the event stream's name + `_DEAD`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub stream: String,
}

/// What Rouse observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSubscriptionStatus {
    /// Ready, Validated, TargetFound, SecretFound, PathConflict (see
    /// [`crate::crd::conditions`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Events accepted and not yet delivered or dead-lettered (written at a bounded rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// Events in the dead-letter stream for this subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<i64>,
    /// When a proxy last answered a validation handshake (Event Grid or CloudEvents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handshake_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl EventSubscriptionSpec {
    /// What the schema cannot check, each naming its field (`spec.…`). Empty = valid.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let schema = self.schema.unwrap_or(EventSchema::Eventgrid);
        let delivery = self.delivery.clone().unwrap_or_default();
        let format = delivery.format.unwrap_or(DeliveryFormat::Eventgrid);
        if schema != EventSchema::Eventgrid && format == DeliveryFormat::Eventgrid {
            errors.push(
                "spec.delivery.format: eventgrid needs spec.schema eventgrid (CloudEvents cannot \
                 be turned into Event Grid events): use cloudevents-binary or \
                 cloudevents-structured"
                    .to_string(),
            );
        }
        if format == DeliveryFormat::CloudeventsBinary
            && delivery.batching == Some(DeliveryBatching::PerBatch)
        {
            errors.push(
                "spec.delivery.batching: per-batch cannot be used with format cloudevents-binary"
                    .to_string(),
            );
        }
        if let Some(r) = &delivery.retry
            && let (Some(a), Some(b)) = (r.initial_backoff_ms, r.max_backoff_ms)
            && a > b
        {
            errors.push(format!(
                "spec.delivery.retry.initialBackoffMs ({a}) must not exceed maxBackoffMs ({b})"
            ));
        }
        if let Some(a) = &self.auth {
            let has_place = a.key_header.is_some() || a.key_query.is_some();
            if a.key_secret_ref.is_some() && !has_place {
                errors.push("spec.auth.keySecretRef needs spec.auth.keyHeader or keyQuery".into());
            }
            if a.key_secret_ref.is_none() && has_place {
                errors.push("spec.auth.keyHeader/keyQuery need spec.auth.keySecretRef".into());
            }
        }
        for (i, h) in self.forward_headers.iter().enumerate() {
            if h.is_empty() || http_token(h).is_none() {
                errors.push(format!(
                    "spec.forwardHeaders[{i}] {h:?} is not a header name"
                ));
            }
        }
        errors
    }

    /// The Secret holding the accepted keys, if any.
    pub fn key_secret(&self) -> Option<&str> {
        self.auth
            .as_ref()
            .and_then(|a| a.key_secret_ref.as_ref())
            .map(|r| r.name.as_str())
    }
}

/// `Some` when `s` is an HTTP token (a valid header name).
fn http_token(s: &str) -> Option<&str> {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        .then_some(s)
}

/// The gateway's name for an object: `<namespace>_<name>`, each `.` of the name written `__`.
/// Kubernetes names have no `_`, so distinct objects get distinct names; the result is also a
/// valid NATS consumer name and metric label value.
pub fn subscription_name(namespace: &str, name: &str) -> String {
    format!("{namespace}_{}", name.replace('.', "__"))
}
