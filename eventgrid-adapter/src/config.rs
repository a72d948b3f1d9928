//! The event gateway's configuration: the `event_gateway:` section of Rouse's local YAML (and
//! the standalone binary's file). Every limit is explicit, with its default here.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `event_gateway:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Directory of the durable queue (created if missing). Default `./run/events`.
    #[serde(default = "GatewayConfig::default_data_dir")]
    pub data_dir: PathBuf,
    /// Largest request body accepted; above it: 413 before the body is read. Default 2 MiB
    /// (Event Grid sends at most 1 MB per request and per event).
    #[serde(default = "GatewayConfig::default_max_body")]
    pub max_body_bytes: u64,
    pub subscriptions: Vec<SubscriptionConfig>,
}

impl GatewayConfig {
    fn default_data_dir() -> PathBuf {
        PathBuf::from("run/events")
    }
    fn default_max_body() -> u64 {
        2 * 1024 * 1024
    }
}

/// Which event schema a subscription's webhook accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    /// Event Grid schema (JSON array, `aeg-event-type`).
    #[default]
    Eventgrid,
    /// CloudEvents 1.0: structured, batch or binary.
    Cloudevents,
    /// Either, told apart per request (a CloudEvents content type or `ce-specversion`).
    Both,
}

/// How events reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The Event Grid JSON array, events byte-identical, `aeg-event-type: Notification` (what
    /// an Azure Functions host expects at `/runtime/webhooks/EventGrid`).
    #[default]
    Eventgrid,
    /// One CloudEvent per request, attributes in `ce-*` headers, data as the body.
    CloudeventsBinary,
    /// `application/cloudevents+json` (one event), or `application/cloudevents-batch+json`.
    CloudeventsStructured,
}

/// One event per request, or up to `max_events` per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Batching {
    #[default]
    PerEvent,
    PerBatch,
}

/// `subscriptions[].auth`: every configured method must pass.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared keys; any one is accepted (two at once during rotation).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Header carrying the key (e.g. a static Event Grid delivery property).
    #[serde(default)]
    pub key_header: Option<String>,
    /// Query parameter carrying the key (e.g. `code`, kept in the endpoint URL by Event Grid).
    #[serde(default)]
    pub key_query: Option<String>,
    /// Microsoft Entra ID bearer tokens (Event Grid's `azureActiveDirectory*` settings).
    #[serde(default)]
    pub entra: Option<EntraConfig>,
}

/// Bearer token validation: RS256, issuer/audience/expiry, keys from a JWKS URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    /// `https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys`.
    pub jwks_url: String,
    /// The webhook app's application ID or URI (the token's `aud`).
    pub audience: String,
    /// Accepted issuers (v1 and v2 forms of the tenant).
    pub issuers: Vec<String>,
    /// How long fetched keys are used before refetching. Default 3600 s.
    #[serde(default = "EntraConfig::default_cache")]
    pub cache_secs: u64,
}

impl EntraConfig {
    fn default_cache() -> u64 {
        3600
    }
}

/// Retries of one delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts before dead-lettering. Default 30 (Event Grid's).
    #[serde(default = "RetryConfig::default_attempts")]
    pub max_attempts: u32,
    /// First backoff; doubles per attempt up to `max_backoff_ms`. Default 1000.
    #[serde(default = "RetryConfig::default_initial")]
    pub initial_backoff_ms: u64,
    /// Default 60 000.
    #[serde(default = "RetryConfig::default_max")]
    pub max_backoff_ms: u64,
    /// An event older than this is dead-lettered instead of retried. Default 86 400 (24 h).
    #[serde(default = "RetryConfig::default_ttl")]
    pub ttl_secs: u64,
}

impl RetryConfig {
    fn default_attempts() -> u32 {
        30
    }
    fn default_initial() -> u64 {
        1000
    }
    fn default_max() -> u64 {
        60_000
    }
    fn default_ttl() -> u64 {
        86_400
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: Self::default_attempts(),
            initial_backoff_ms: Self::default_initial(),
            max_backoff_ms: Self::default_max(),
            ttl_secs: Self::default_ttl(),
        }
    }
}

/// `subscriptions[].delivery`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub batching: Batching,
    /// Events per request with `per-batch`. Default 100.
    #[serde(default = "DeliveryConfig::default_batch")]
    pub max_events: usize,
    /// Requests in flight to the target at once. Default 4.
    #[serde(default = "DeliveryConfig::default_concurrency")]
    pub concurrency: usize,
    /// Per delivery request, including a cold start behind the proxy. Default 60 000 ms.
    #[serde(default = "DeliveryConfig::default_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry: RetryConfig,
}

impl DeliveryConfig {
    fn default_batch() -> usize {
        100
    }
    fn default_concurrency() -> usize {
        4
    }
    fn default_timeout() -> u64 {
        60_000
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            format: Format::default(),
            batching: Batching::default(),
            max_events: Self::default_batch(),
            concurrency: Self::default_concurrency(),
            timeout_ms: Self::default_timeout(),
            retry: RetryConfig::default(),
        }
    }
}

/// Where events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Inside Rouse: the local app whose route receives the events (through the proxy's
    /// hold-and-forward path, so a cold target wakes).
    #[serde(default)]
    pub app: Option<String>,
    /// `Host` to send; default: the app's first exact host.
    #[serde(default)]
    pub host: Option<String>,
    /// Standalone: the base URL to deliver to (e.g. Rouse's proxy listener), `http://` only.
    #[serde(default)]
    pub url: Option<String>,
    /// Path and query on the target, e.g.
    /// `/runtime/webhooks/EventGrid?functionName=F&code=K`. Default `/`.
    #[serde(default = "TargetConfig::default_path")]
    pub path: String,
}

impl TargetConfig {
    fn default_path() -> String {
        "/".into()
    }
}

/// One webhook endpoint and where its events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Unique; metric label and log field.
    pub name: String,
    /// The webhook path (exact match, any host).
    pub path: String,
    #[serde(default)]
    pub schema: Schema,
    #[serde(default)]
    pub auth: AuthConfig,
    /// `aeg-subscription-name` values accepted in a validation handshake (case-insensitive);
    /// empty = any.
    #[serde(default)]
    pub subscription_names: Vec<String>,
    /// Origins granted in the CloudEvents handshake; empty = Event Grid's own origins; `*` = any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// `WebHook-Allowed-Rate` (requests per minute); absent = `*`.
    #[serde(default)]
    pub allowed_rate: Option<u32>,
    pub target: TargetConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Dead-lettered events are appended here (one JSON line each, with the reason). Default
    /// `<data_dir>/dead-letter/<name>.jsonl`.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
    /// Events with a (topic, id) / (source, id) seen within this window are acknowledged and
    /// dropped. Default 3600 s.
    #[serde(default = "SubscriptionConfig::default_window")]
    pub dedupe_window_secs: u64,
    /// Events queued (accepted, not yet delivered) above which new deliveries get 503 +
    /// Retry-After. Default 100 000.
    #[serde(default = "SubscriptionConfig::default_pending")]
    pub max_pending: usize,
    /// Request headers stored with each event and sent on with its delivery (lower-case).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Refuse CloudEvents extension names outside `[a-z0-9]` (the spec's MUST). Default false.
    #[serde(default)]
    pub strict_extension_names: bool,
}

impl SubscriptionConfig {
    fn default_window() -> u64 {
        3600
    }
    fn default_pending() -> usize {
        100_000
    }

    /// Every problem with this subscription, each naming its field.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let n = &self.name;
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errors.push(format!("name {n:?} must be letters, digits, '-' or '_'"));
        }
        if !self.path.starts_with('/') || self.path.contains(['?', '#']) {
            errors.push(format!(
                "path {:?} must start with / and have no query",
                self.path
            ));
        }
        let a = &self.auth;
        if !a.keys.is_empty() && a.key_header.is_none() && a.key_query.is_none() {
            errors.push("auth.keys needs auth.key_header or auth.key_query".into());
        }
        if a.keys.is_empty() && (a.key_header.is_some() || a.key_query.is_some()) {
            errors.push("auth.key_header/key_query need at least one auth.keys entry".into());
        }
        if a.keys.iter().any(String::is_empty) {
            errors.push("auth.keys must not contain an empty key".into());
        }
        let t = &self.target;
        if t.app.is_some() == t.url.is_some() {
            errors.push("target: set exactly one of app (inside Rouse) or url".into());
        }
        if let Some(url) = &t.url
            && !url.starts_with("http://")
        {
            errors.push(format!("target.url {url:?} must be http://"));
        }
        if !t.path.starts_with('/') {
            errors.push(format!("target.path {:?} must start with /", t.path));
        }
        let d = &self.delivery;
        if d.concurrency == 0 {
            errors.push("delivery.concurrency must be at least 1".into());
        }
        if d.max_events == 0 || d.max_events > 5000 {
            errors.push("delivery.max_events must be 1..=5000".into());
        }
        if d.retry.max_attempts == 0 {
            errors.push("delivery.retry.max_attempts must be at least 1".into());
        }
        if self.schema != Schema::Eventgrid && d.format == Format::Eventgrid {
            errors.push(
                "delivery.format eventgrid needs schema eventgrid (CloudEvents cannot be turned \
                 into Event Grid events, as in Event Grid itself): use cloudevents-binary or \
                 cloudevents-structured"
                    .into(),
            );
        }
        if self.max_pending == 0 {
            errors.push("max_pending must be at least 1".into());
        }
        errors
    }
}

impl GatewayConfig {
    /// Every problem, each prefixed with `event_gateway.subscriptions[i]`.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.max_body_bytes == 0 || self.max_body_bytes > 8 * 1024 * 1024 {
            errors.push(
                "event_gateway.max_body_bytes must be 1..=8388608 (8 MiB; Event Grid sends at most \
                 1 MB)"
                    .into(),
            );
        }
        for (i, s) in self.subscriptions.iter().enumerate() {
            for e in s.validate() {
                errors.push(format!(
                    "event_gateway.subscriptions[{i}] ({}): {e}",
                    s.name
                ));
            }
            let earlier = &self.subscriptions[..i];
            if earlier.iter().any(|o| o.name == s.name) {
                errors.push(format!(
                    "event_gateway.subscriptions[{i}]: name {:?} is used twice",
                    s.name
                ));
            }
            if earlier
                .iter()
                .any(|o| o.path.trim_end_matches('/') == s.path.trim_end_matches('/'))
            {
                errors.push(format!(
                    "event_gateway.subscriptions[{i}]: path {:?} is used twice",
                    s.path
                ));
            }
            if s.delivery.format == Format::CloudeventsBinary
                && s.delivery.batching == Batching::PerBatch
            {
                errors.push(format!(
                    "event_gateway.subscriptions[{i}] ({}): delivery.batching per-batch cannot be \
                     used with cloudevents-binary (one event per request)",
                    s.name
                ));
            }
        }
        errors
    }
}

/// Parses a standalone gateway file (the `event_gateway` section alone) and validates it.
pub fn parse(text: &str, origin: &str) -> Result<GatewayConfig, Vec<String>> {
    let de = serde_yaml::Deserializer::from_str(text);
    let config: GatewayConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = inner
            .location()
            .map(|l| format!("{}:{}", l.line(), l.column()))
            .unwrap_or_else(|| "?".into());
        vec![format!("{origin}:{at}: {path}: {inner}")]
    })?;
    let errors: Vec<String> = config
        .validate()
        .into_iter()
        .map(|e| format!("{origin}: {e}"))
        .collect();
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}
