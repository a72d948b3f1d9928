//! The event gateway's configuration: the `event_gateway:` section of Rouse's local YAML (and
//! the standalone binary's file). Every limit is explicit, with its default here.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `event_gateway:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Directory of the embedded queue's log and of the default dead-letter files (created if
    /// missing). Default `./run/events`.
    #[serde(default = "GatewayConfig::default_data_dir")]
    pub data_dir: PathBuf,
    /// Largest request body accepted; above it: 413 before the body is read. Default 2 MiB
    /// (Event Grid sends at most 1 MB per request and per event).
    #[serde(default = "GatewayConfig::default_max_body")]
    pub max_body_bytes: u64,
    /// Where accepted events are kept until delivered. Default `{backend: embedded}`.
    #[serde(default)]
    pub queue: QueueConfig,
    pub subscriptions: Vec<SubscriptionConfig>,
}

impl GatewayConfig {
    fn default_data_dir() -> PathBuf {
        PathBuf::from("run/events")
    }
    fn default_max_body() -> u64 {
        DEFAULT_MAX_BODY_BYTES
    }
}

/// `event_gateway.queue`: the durable queue behind the acknowledgement.
///
/// ```yaml
/// queue: {backend: embedded}                  # the default
/// queue:
///   backend: jetstream
///   url: nats://127.0.0.1:4222
///   stream: ROUSE_EVENTS                      # default
///   replicas: 3                               # R3 in production; default 1
///   credentials_file: /etc/rouse/nats.creds   # optional
///   publish_timeout_ms: 5000                  # default
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum QueueConfig {
    /// The fsync'd log in `data_dir`, one process (see [`crate::queue::embedded`]).
    #[default]
    Embedded,
    /// A NATS JetStream stream shared by every proxy replica configured with the same `url` and
    /// `stream` (see [`crate::queue::jetstream`]).
    Jetstream(JetstreamConfig),
}

/// `queue: {backend: jetstream, ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetstreamConfig {
    /// The NATS server(s): `nats://host:port`, or several separated by commas (a cluster's
    /// seeds). `tls://` for TLS.
    pub url: String,
    /// The stream's name (letters, digits, `-`, `_`); created if missing, its settings updated
    /// if not. Every replica of one gateway must use the same stream; gateways that share a
    /// stream must not share subscription names. Default `ROUSE_EVENTS`.
    #[serde(default = "JetstreamConfig::default_stream")]
    pub stream: String,
    /// Copies of each event in the NATS cluster: 1 (a single server, tests) or 3 (production:
    /// survives the loss of one server). Default 1.
    #[serde(default = "JetstreamConfig::default_replicas")]
    pub replicas: usize,
    /// A NATS `.creds` file (user JWT and NKey seed); absent: no authentication.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// How long a webhook request waits for JetStream to acknowledge its events (and for a
    /// connection) before it is answered 503 + Retry-After. 1..=60 000 ms; default 5000.
    #[serde(default = "JetstreamConfig::default_publish_timeout")]
    pub publish_timeout_ms: u64,
}

impl JetstreamConfig {
    fn default_stream() -> String {
        "ROUSE_EVENTS".into()
    }
    fn default_replicas() -> usize {
        1
    }
    fn default_publish_timeout() -> u64 {
        5000
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// Every problem, each naming its field (`event_gateway.queue.…`).
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let url_ok = !self.url.is_empty()
            && self.url.split(',').all(|u| {
                let u = u.trim();
                ["nats://", "tls://"]
                    .iter()
                    .any(|s| u.starts_with(s) && u.len() > s.len())
            });
        if !url_ok {
            errors.push(format!(
                "event_gateway.queue.url {:?} must be nats://host:port or tls://host:port \
                 (several: comma-separated)",
                self.url
            ));
        }
        let s = &self.stream;
        if !valid_stream_name(s) {
            errors.push(format!(
                "event_gateway.queue.stream {s:?} must be 1..=64 letters, digits, '-' or '_'"
            ));
        }
        if !matches!(self.replicas, 1 | 3) {
            errors.push(format!(
                "event_gateway.queue.replicas must be 1 or 3 (got {})",
                self.replicas
            ));
        }
        if !(1..=60_000).contains(&self.publish_timeout_ms) {
            errors.push(format!(
                "event_gateway.queue.publish_timeout_ms must be 1..=60000 (got {})",
                self.publish_timeout_ms
            ));
        }
        errors
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
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts before dead-lettering, 1..=1000. Default 30 (Event Grid's).
    pub max_attempts: u32,
    /// First backoff; doubles per attempt up to `max_backoff_ms`. 1..=86 400 000; default 1000.
    pub initial_backoff_ms: u64,
    /// At least `initial_backoff_ms`, at most 86 400 000 (a day). Default 60 000.
    pub max_backoff_ms: u64,
    /// An event older than this is dead-lettered instead of retried. 1..=604 800 (a week);
    /// default 86 400 (24 h).
    pub ttl_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 30,
            initial_backoff_ms: 1000,
            max_backoff_ms: 60_000,
            ttl_secs: 86_400,
        }
    }
}

/// Upper bounds of the delivery settings (and the dedupe window): every instant computed from
/// them stays representable, and no retry sleeps for years.
const MAX_BACKOFF_MS: u64 = 86_400_000;
const MAX_TTL_SECS: u64 = 604_800;
const MAX_TIMEOUT_MS: u64 = 3_600_000;
const MAX_CONCURRENCY: usize = 1024;
const MAX_ATTEMPTS: u32 = 1000;
const MAX_PENDING: usize = 10_000_000;

/// `subscriptions[].delivery`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Default `eventgrid`.
    pub format: Format,
    /// Default `per-event`.
    pub batching: Batching,
    /// Events per request with `per-batch`, 1..=5000. Default 100.
    pub max_events: usize,
    /// Requests in flight to the target at once, 1..=1024. Default 4.
    pub concurrency: usize,
    /// Per delivery request, including a cold start behind the proxy, 1..=3 600 000 ms.
    /// Default 60 000 ms.
    pub timeout_ms: u64,
    pub retry: RetryConfig,
}

impl DeliveryConfig {
    /// Every problem with the delivery settings, each naming its field.
    fn validate(&self) -> Vec<String> {
        let r = &self.retry;
        let checks = [
            (
                (1..=MAX_CONCURRENCY).contains(&self.concurrency),
                "delivery.concurrency",
                format!("1..={MAX_CONCURRENCY}"),
                self.concurrency.to_string(),
            ),
            (
                (1..=5000).contains(&self.max_events),
                "delivery.max_events",
                "1..=5000".to_string(),
                self.max_events.to_string(),
            ),
            (
                (1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms),
                "delivery.timeout_ms",
                format!("1..={MAX_TIMEOUT_MS}"),
                self.timeout_ms.to_string(),
            ),
            (
                (1..=MAX_ATTEMPTS).contains(&r.max_attempts),
                "delivery.retry.max_attempts",
                format!("1..={MAX_ATTEMPTS}"),
                r.max_attempts.to_string(),
            ),
            (
                (1..=MAX_BACKOFF_MS).contains(&r.initial_backoff_ms),
                "delivery.retry.initial_backoff_ms",
                format!("1..={MAX_BACKOFF_MS}"),
                r.initial_backoff_ms.to_string(),
            ),
            (
                (r.initial_backoff_ms..=MAX_BACKOFF_MS).contains(&r.max_backoff_ms),
                "delivery.retry.max_backoff_ms",
                format!("initial_backoff_ms..={MAX_BACKOFF_MS}"),
                r.max_backoff_ms.to_string(),
            ),
            (
                (1..=MAX_TTL_SECS).contains(&r.ttl_secs),
                "delivery.retry.ttl_secs",
                format!("1..={MAX_TTL_SECS}"),
                r.ttl_secs.to_string(),
            ),
        ];
        checks
            .into_iter()
            .filter(|(ok, ..)| !ok)
            .map(|(_, field, range, got)| format!("{field} must be {range} (got {got})"))
            .collect()
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
            max_events: 100,
            concurrency: 4,
            timeout_ms: 60_000,
            retry: RetryConfig::default(),
        }
    }
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// `subscriptions[].dead_letter`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DeadLetter {
    /// A JSON-lines file, fsync'd after each write.
    File(PathBuf),
    /// `{stream: NAME}`: a JetStream stream on the queue's NATS, created if missing; one
    /// message per event on `rouse-dead.<NAME>.<subscription>`, the reason and attempts in
    /// headers. Survives the loss of a pod, unlike a file.
    Stream(DeadLetterStream),
}

/// `dead_letter: {stream: NAME}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterStream {
    pub stream: String,
}

/// A JetStream stream name: 1..=64 letters, digits, `-` or `_`.
pub fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `dedupe_window_secs` when not set.
pub const DEFAULT_DEDUPE_WINDOW_SECS: u64 = 3600;
/// `max_pending` when not set.
pub const DEFAULT_MAX_PENDING: usize = 100_000;
/// `max_body_bytes` when not set: Event Grid sends at most 1 MB per request.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 2 * 1024 * 1024;

/// One webhook endpoint and where its events go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Where dead-lettered events go: a file path (one JSON line each, with the reason) or
    /// `{stream: NAME}` (a JetStream stream; `jetstream` queue only). Default
    /// `<data_dir>/dead-letter/<name>.jsonl`.
    #[serde(default)]
    pub dead_letter: Option<DeadLetter>,
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
        DEFAULT_DEDUPE_WINDOW_SECS
    }
    fn default_pending() -> usize {
        DEFAULT_MAX_PENDING
    }

    /// Every problem with this subscription, each naming its field.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
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
        errors.extend(self.validate_shape());
        errors
    }

    /// Every problem except the shared keys themselves, which on Kubernetes come from a Secret
    /// at run time ([`crate::auth::Authenticator::set_keys`]), not from the configuration.
    pub fn validate_shape(&self) -> Vec<String> {
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
        errors.extend(self.delivery.validate());
        if let Some(entra) = &a.entra
            && !(1..=86_400).contains(&entra.cache_secs)
        {
            errors.push(format!(
                "auth.entra.cache_secs must be 1..=86400 (got {})",
                entra.cache_secs
            ));
        }
        if self.dedupe_window_secs > MAX_TTL_SECS {
            errors.push(format!(
                "dedupe_window_secs must be at most {MAX_TTL_SECS} (got {})",
                self.dedupe_window_secs
            ));
        }
        if self.schema != Schema::Eventgrid && self.delivery.format == Format::Eventgrid {
            errors.push(
                "delivery.format eventgrid needs schema eventgrid (CloudEvents cannot be turned \
                 into Event Grid events, as in Event Grid itself): use cloudevents-binary or \
                 cloudevents-structured"
                    .into(),
            );
        }
        if !(1..=MAX_PENDING).contains(&self.max_pending) {
            errors.push(format!(
                "max_pending must be 1..={MAX_PENDING} (got {})",
                self.max_pending
            ));
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
        if let QueueConfig::Jetstream(js) = &self.queue {
            errors.extend(js.validate());
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
            if let Some(DeadLetter::Stream(d)) = &s.dead_letter {
                if !matches!(self.queue, QueueConfig::Jetstream(_)) {
                    errors.push(format!(
                        "event_gateway.subscriptions[{i}] ({}): dead_letter.stream needs \
                         queue.backend jetstream",
                        s.name
                    ));
                }
                if !valid_stream_name(&d.stream) {
                    errors.push(format!(
                        "event_gateway.subscriptions[{i}] ({}): dead_letter.stream {:?} must be \
                         1..=64 letters, digits, '-' or '_'",
                        s.name, d.stream
                    ));
                }
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
    let config: GatewayConfig = rouse_core::yaml::from_str(text, origin).map_err(|e| vec![e])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "subscriptions:\n  - name: s\n    path: /hook\n    target: {url: \"http://127.0.0.1:1\"}\n";

    #[test]
    fn defaults_come_from_one_place() {
        let c = parse(GOOD, "gw.yaml").expect("valid");
        let d = &c.subscriptions[0].delivery;
        assert_eq!(
            (d.max_events, d.concurrency, d.timeout_ms),
            (100, 4, 60_000)
        );
        assert_eq!(d.retry.max_attempts, 30);
        assert_eq!(c.max_body_bytes, 2 * 1024 * 1024);
        assert_eq!(c.queue, QueueConfig::Embedded);
    }

    #[test]
    fn the_queue_section_selects_a_backend_with_defaults_and_bounds() {
        let embedded = parse(&format!("queue: {{backend: embedded}}\n{GOOD}"), "gw.yaml");
        assert_eq!(embedded.expect("valid").queue, QueueConfig::Embedded);
        let js = parse(
            &format!("queue: {{backend: jetstream, url: \"nats://127.0.0.1:4222\"}}\n{GOOD}"),
            "gw.yaml",
        )
        .expect("valid");
        let QueueConfig::Jetstream(js) = js.queue else {
            panic!("jetstream expected");
        };
        assert_eq!(
            (js.stream.as_str(), js.replicas, js.publish_timeout_ms),
            ("ROUSE_EVENTS", 1, 5000)
        );
        assert_eq!(js.credentials_file, None);
        let bad = format!(
            "queue: {{backend: jetstream, url: \"http://x\", stream: \"a.b\", replicas: 2, \
             publish_timeout_ms: 0}}\n{GOOD}"
        );
        let e = parse(&bad, "gw.yaml").expect_err("invalid").join("\n");
        for field in [
            "queue.url \"http://x\" must be nats://",
            "queue.stream \"a.b\" must be",
            "queue.replicas must be 1 or 3 (got 2)",
            "queue.publish_timeout_ms must be 1..=60000 (got 0)",
        ] {
            assert!(e.contains(field), "{field:?} missing in:\n{e}");
        }
        for unknown in [
            "queue: {backend: kafka}",
            "queue: {backend: jetstream}",
            "queue: {backend: jetstream, url: \"nats://x:1\", replica: 3}",
        ] {
            assert!(
                parse(&format!("{unknown}\n{GOOD}"), "gw.yaml").is_err(),
                "{unknown} accepted"
            );
        }
    }

    #[test]
    fn dead_letters_go_to_a_file_or_a_jetstream_stream() {
        let file = parse(
            &format!("{GOOD}    dead_letter: /var/dead.jsonl\n"),
            "gw.yaml",
        );
        assert_eq!(
            file.expect("valid").subscriptions[0].dead_letter,
            Some(DeadLetter::File("/var/dead.jsonl".into()))
        );
        let js = "queue: {backend: jetstream, url: \"nats://127.0.0.1:4222\"}\n";
        let stream = parse(
            &format!("{js}{GOOD}    dead_letter: {{stream: DEAD}}\n"),
            "gw.yaml",
        );
        assert_eq!(
            stream.expect("valid").subscriptions[0].dead_letter,
            Some(DeadLetter::Stream(DeadLetterStream {
                stream: "DEAD".into()
            }))
        );
        let embedded = parse(
            &format!("{GOOD}    dead_letter: {{stream: DEAD}}\n"),
            "gw.yaml",
        );
        let e = embedded.expect_err("stream without jetstream").join("\n");
        assert!(
            e.contains("dead_letter.stream needs queue.backend jetstream"),
            "{e}"
        );
        let bad = parse(
            &format!("{js}{GOOD}    dead_letter: {{stream: a.b}}\n"),
            "gw.yaml",
        );
        assert!(
            bad.expect_err("bad name")
                .join("\n")
                .contains("\"a.b\" must be")
        );
    }

    #[test]
    fn absurd_numbers_are_refused_with_their_bound() {
        let bad = format!(
            "{GOOD}    delivery:\n      concurrency: 100000\n      timeout_ms: 18446744073709551615\n      \
             retry: {{max_attempts: 4000000000, initial_backoff_ms: 5000, max_backoff_ms: 10, \
             ttl_secs: 18446744073709551615}}\n    dedupe_window_secs: 18446744073709551615\n"
        );
        let e = parse(&bad, "gw.yaml").expect_err("invalid").join("\n");
        for field in [
            "delivery.concurrency must be 1..=1024 (got 100000)",
            "delivery.timeout_ms must be 1..=3600000",
            "delivery.retry.max_attempts must be 1..=1000",
            "delivery.retry.max_backoff_ms must be initial_backoff_ms..=86400000 (got 10)",
            "delivery.retry.ttl_secs must be 1..=604800",
            "dedupe_window_secs must be at most 604800",
        ] {
            assert!(e.contains(field), "{field:?} missing in:\n{e}");
        }
    }
}
