//! One app of the local platform, as written in YAML, and what it turns into: a route for the
//! proxy, a policy for the autoscaler and a process spec for the supervisor.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rouse_core::route::{
    Audience, Failover, MAX_REFRESH_SECS, Placeholder, failover_target, parse_failover_url,
};
use rouse_core::{HeaderMatch, HostPattern, PathPrefix, Route, RouteLimits, UpstreamProtocol};
use serde::Deserialize;

use rouse_scale::{Metric, Policy};

fn default_readiness_path() -> String {
    "/".to_string()
}

/// Longest duration any field of an app may hold (a week): far beyond any useful idle period,
/// window or grace, and small enough that every instant computed from it is representable.
pub const MAX_DURATION_SECS: f64 = 7.0 * 24.0 * 3600.0;
/// Most replicas of one local app: each is a process on its own loopback port.
pub const MAX_LOCAL_REPLICAS: u32 = 1024;

/// `replicas: {min, max}`. Default `{min: 0, max: 1}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicasConfig {
    pub min: u32,
    /// At most [`MAX_LOCAL_REPLICAS`].
    pub max: u32,
}

impl Default for ReplicasConfig {
    fn default() -> Self {
        ReplicasConfig { min: 0, max: 1 }
    }
}

/// Which signal drives 1→N.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricName {
    /// Held + in-flight requests per replica.
    #[default]
    Concurrency,
    /// Requests per second per replica.
    RequestRate,
}

/// `scaling:` — the autoscaler's knobs (Knative KPA names, in seconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingConfig {
    /// Default `concurrency`.
    pub metric: MetricName,
    /// Per replica: concurrent requests, or requests per second. Default 100.
    pub target: f64,
    /// Default 60 s.
    pub stable_window_secs: f64,
    /// Default 6 s.
    pub panic_window_secs: f64,
    /// Default 2.0 (200 %).
    pub panic_threshold: f64,
    /// Default 2.0.
    pub max_scale_down_rate: f64,
    /// How often the autoscaler samples demand when nothing wakes it. Default 1 s.
    pub tick_secs: f64,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            metric: MetricName::default(),
            target: 100.0,
            stable_window_secs: 60.0,
            panic_window_secs: 6.0,
            panic_threshold: 2.0,
            max_scale_down_rate: 2.0,
            tick_secs: 1.0,
        }
    }
}

/// `cold_start:` — what happens to requests while the app has no ready replica with room.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColdStartConfig {
    /// How long a request may be held, 1 ms up to [`MAX_DURATION_SECS`]. Default 20 000 ms.
    pub hold_timeout_ms: u64,
    /// Held requests at once for this app, at least 1. Default 1 000.
    pub max_held_requests: usize,
    /// Held bytes (head + declared body) at once for this app. Default 64 MiB.
    pub max_held_bytes: u64,
    /// `Retry-After` on overflow (and on a 503 placeholder without one), at most a day.
    /// Default 1 s.
    pub retry_after_secs: u32,
    /// Answer every request with this page at once while the app has no ready replica, instead
    /// of holding it; the request still starts the app. Not with `failover`.
    pub placeholder: Option<PlaceholderConfig>,
    /// Send requests still held when `hold_timeout_ms` runs out here instead of answering 504.
    pub failover: Option<FailoverConfig>,
}

/// `cold_start.placeholder:` — a static response for requests that arrive while the app is
/// cold (a "starting…" page). The proxy adds `content-type` (guessed from the body: HTML, JSON
/// or text), `cache-control: no-store`, `retry-after` for a 503 (`retry_after_secs`) and
/// `x-rouse-placeholder: true` unless given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceholderConfig {
    /// 200..=599. Default 503.
    #[serde(default = "PlaceholderConfig::default_status")]
    pub status: u16,
    /// At most 32 768 characters (as the CRD's `spec.rouse.placeholder.body`). Default empty.
    #[serde(default)]
    pub body: String,
    /// Response headers, at most 32; not the framing or hop-by-hop ones (`content-length`,
    /// `connection`, `transfer-encoding`…), which the proxy sets.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `all` (default: every request, as KEDA's placeholder) or `browsers`: only requests whose
    /// `Accept` prefers HTML get the page; API clients are held as usual. With `browsers` an
    /// empty `body` is Rouse's waiting page (the app's name and the time since the wake, in
    /// `{{app}}` and `{{elapsed_secs}}`, which any body may use).
    #[serde(default)]
    pub audience: Audience,
    /// `Refresh: N` on the page, 1..=3600: the browser reloads by itself and lands on the app
    /// once it is up. Default 2 with `audience: browsers`, none otherwise.
    pub refresh_secs: Option<u32>,
}

impl PlaceholderConfig {
    fn default_status() -> u16 {
        Placeholder::DEFAULT_STATUS
    }
}

/// `cold_start.failover:` — an always-on service that answers requests the app could not take
/// in time (KEDA's `coldStartTimeoutFailoverRef`). Rouse neither starts nor scales it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// `http://IP:PORT` (or `http://localhost:PORT`): where the requests go, path kept.
    pub url: String,
}

impl Default for ColdStartConfig {
    fn default() -> Self {
        ColdStartConfig {
            hold_timeout_ms: 20_000,
            max_held_requests: 1_000,
            max_held_bytes: 64 * 1024 * 1024,
            retry_after_secs: 1,
            placeholder: None,
            failover: None,
        }
    }
}

/// One app under `apps:` in the local YAML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Unique; names the route, the target, metric labels and log prefixes.
    pub name: String,
    /// Hosts the app answers for (`*.example.com`, `*` allowed).
    pub hosts: Vec<HostPattern>,
    /// Path prefixes (segment-wise). Default `/`.
    #[serde(default)]
    pub paths: Vec<PathPrefix>,
    /// Headers that must all match: `{name: x-tenant, value: blue}`, or `{name: x-canary}` for
    /// "present with any value". A route with more (then more exact) header matches wins.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Replaces the matched prefix before forwarding.
    #[serde(default)]
    pub rewrite_prefix: Option<PathPrefix>,
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// Program to run; relative paths resolve against the working directory of Rouse.
    pub command: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment; `PORT` is set by Rouse.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// GET path that answers 2xx when a replica is ready. Default `/`.
    #[serde(default = "default_readiness_path")]
    pub readiness_path: String,
    #[serde(default)]
    pub replicas: ReplicasConfig,
    #[serde(default)]
    pub scaling: ScalingConfig,
    /// Idle time (no request, no open stream) before scaling to `replicas.min`. Default 300 s.
    #[serde(default = "AppConfig::default_scaledown")]
    pub scaledown_period_secs: f64,
    /// After a wake, the app is not scaled back to zero before this. Default 0.
    #[serde(default)]
    pub initial_cooldown_secs: f64,
    #[serde(default)]
    pub cold_start: ColdStartConfig,
    /// Most requests in flight per replica; unset = unbounded.
    #[serde(default)]
    pub endpoint_concurrency: Option<u32>,
    /// A replica not ready within this is killed and restarted. Default 60 s.
    #[serde(default = "AppConfig::default_startup")]
    pub startup_timeout_secs: f64,
    /// Between SIGTERM and SIGKILL when stopping a replica. Default 10 s.
    #[serde(default = "AppConfig::default_stop_grace")]
    pub stop_grace_secs: f64,
}

/// What the supervisor needs to run an app's replicas.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub command: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    pub readiness_path: String,
    pub startup_timeout: Duration,
    pub stop_grace: Duration,
}

/// `v` seconds as a duration, or an error naming `field` unless `0 ≤ v ≤` [`MAX_DURATION_SECS`].
fn secs(field: &str, v: f64, errors: &mut Vec<String>) -> Duration {
    match Duration::try_from_secs_f64(v) {
        Ok(d) if v <= MAX_DURATION_SECS => d,
        _ => {
            errors.push(format!(
                "{field}: must be 0..={MAX_DURATION_SECS} seconds (got {v})"
            ));
            Duration::ZERO
        }
    }
}

impl AppConfig {
    fn default_scaledown() -> f64 {
        300.0
    }
    fn default_startup() -> f64 {
        60.0
    }
    fn default_stop_grace() -> f64 {
        10.0
    }

    /// Checks what serde cannot and converts. Every problem is reported, each naming its field
    /// relative to the app (`replicas.max: …`).
    pub fn build(&self) -> Result<(Route, Policy, ProcessSpec), Vec<String>> {
        let mut errors = Vec::new();
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            errors.push(format!(
                "name: {:?} must be 1-63 letters, digits, `-` or `_`",
                self.name
            ));
        }
        if self.hosts.is_empty() {
            errors.push("hosts: at least one host is required (use \"*\" for any)".to_string());
        }
        if self.command.as_os_str().is_empty() {
            errors.push("command: must not be empty".to_string());
        }
        if !self.readiness_path.starts_with('/') {
            errors.push(format!(
                "readiness_path: {:?} must start with `/`",
                self.readiness_path
            ));
        }
        if self.env.contains_key("PORT") {
            errors.push("env.PORT: is set by Rouse for each replica; remove it".to_string());
        }
        if self.cold_start.max_held_requests == 0 {
            errors.push("cold_start.max_held_requests: must be at least 1".to_string());
        }
        let hold_ms = self.cold_start.hold_timeout_ms;
        if hold_ms == 0 || hold_ms as f64 > MAX_DURATION_SECS * 1000.0 {
            errors.push(format!(
                "cold_start.hold_timeout_ms: must be 1..={} (got {hold_ms})",
                MAX_DURATION_SECS as u64 * 1000
            ));
        }
        if self.cold_start.retry_after_secs > 86_400 {
            errors.push(format!(
                "cold_start.retry_after_secs: must be at most 86400 (got {})",
                self.cold_start.retry_after_secs
            ));
        }
        let placeholder = self.cold_start.placeholder.as_ref().and_then(|p| {
            let headers = p.headers.iter().map(|(k, v)| (k.clone(), v.clone()));
            let built = Placeholder::build(i64::from(p.status), Some(p.body.clone()), headers)
                .map_err(|es| {
                    errors.extend(
                        es.into_iter()
                            .map(|(field, e)| format!("cold_start.placeholder.{field}: {e}")),
                    );
                })
                .ok()?;
            let refresh_error = |e: String| format!("cold_start.placeholder.refresh_secs: {e}");
            match (p.audience, p.refresh_secs) {
                (Audience::Browsers, refresh) => built
                    .for_browsers(refresh)
                    .map_err(|e| errors.push(refresh_error(e)))
                    .ok(),
                (Audience::All, Some(r)) if !(1..=MAX_REFRESH_SECS).contains(&r) => {
                    errors.push(refresh_error(format!(
                        "must be 1..={MAX_REFRESH_SECS} (got {r})"
                    )));
                    None
                }
                (Audience::All, refresh) => Some(Placeholder {
                    refresh_secs: refresh,
                    ..built
                }),
            }
        });
        let failover = self.cold_start.failover.as_ref().and_then(|f| {
            parse_failover_url(&f.url)
                .map(|addr| Failover {
                    target: failover_target(&self.name),
                    addr: Some(addr),
                })
                .map_err(|e| errors.push(format!("cold_start.failover.url: {e}")))
                .ok()
        });
        if self.cold_start.placeholder.is_some() && self.cold_start.failover.is_some() {
            errors.push(
                "cold_start.placeholder: cannot be combined with cold_start.failover: the \
                 placeholder answers every request while the app is cold, so none would wait \
                 for the failover; set one of them"
                    .to_string(),
            );
        }
        if self.replicas.max > MAX_LOCAL_REPLICAS {
            errors.push(format!(
                "replicas.max: must be at most {MAX_LOCAL_REPLICAS} local processes (got {})",
                self.replicas.max
            ));
        }
        if self.endpoint_concurrency == Some(0) {
            errors
                .push("endpoint_concurrency: must be at least 1 (omit it for no cap)".to_string());
        }
        let s = &self.scaling;
        let metric = match s.metric {
            MetricName::Concurrency => Metric::Concurrency { target: s.target },
            MetricName::RequestRate => Metric::RequestRate { target: s.target },
        };
        let tick = secs("scaling.tick_secs", s.tick_secs, &mut errors);
        if tick.is_zero() {
            errors.push("scaling.tick_secs: must be above 0".to_string());
        }
        let policy = Policy {
            min_replicas: self.replicas.min,
            max_replicas: self.replicas.max,
            metric,
            stable_window: secs(
                "scaling.stable_window_secs",
                s.stable_window_secs,
                &mut errors,
            ),
            panic_window: secs(
                "scaling.panic_window_secs",
                s.panic_window_secs,
                &mut errors,
            ),
            panic_threshold: s.panic_threshold,
            scaledown_period: secs(
                "scaledown_period_secs",
                self.scaledown_period_secs,
                &mut errors,
            ),
            initial_cooldown: secs(
                "initial_cooldown_secs",
                self.initial_cooldown_secs,
                &mut errors,
            ),
            max_scale_down_rate: s.max_scale_down_rate,
        };
        if let Err(policy_errors) = policy.validate() {
            // The policy names fields as `replicas.min`, `metric.target`…; map to YAML names.
            errors.extend(policy_errors.into_iter().map(|e| {
                e.replacen("metric.target", "scaling.target", 1)
                    .replacen("panic_window", "scaling.panic_window_secs", 1)
                    .replacen("panic_threshold", "scaling.panic_threshold", 1)
                    .replacen("max_scale_down_rate", "scaling.max_scale_down_rate", 1)
            }));
        }
        let spec = ProcessSpec {
            name: self.name.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            readiness_path: self.readiness_path.clone(),
            startup_timeout: secs(
                "startup_timeout_secs",
                self.startup_timeout_secs,
                &mut errors,
            ),
            stop_grace: secs("stop_grace_secs", self.stop_grace_secs, &mut errors),
        };
        let route = Route {
            name: self.name.clone(),
            target: self.name.clone(),
            hosts: self.hosts.clone(),
            path_prefixes: self.paths.clone(),
            headers: self.headers.clone(),
            rewrite_prefix: self.rewrite_prefix.clone(),
            upstream_protocol: self.upstream_protocol,
            limits: RouteLimits {
                max_held_requests: self.cold_start.max_held_requests,
                max_held_bytes: self.cold_start.max_held_bytes,
                hold_timeout: Duration::from_millis(self.cold_start.hold_timeout_ms),
                endpoint_concurrency: self.endpoint_concurrency,
                retry_after_secs: self.cold_start.retry_after_secs,
                placeholder,
                failover,
                static_answer: None,
            },
        };
        if errors.is_empty() {
            Ok((route, policy, spec))
        } else {
            Err(errors)
        }
    }

    /// The autoscaler's sampling period.
    pub fn tick(&self) -> Duration {
        Duration::try_from_secs_f64(self.scaling.tick_secs).unwrap_or(Duration::from_secs(1))
    }
}
