//! The local YAML file: a `proxy:` section (listeners, global caps, TLS, drain) and the `apps:`
//! of the local platform. Parsing reports `file:line:column: field.path: problem` for every error.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rouse_core::Route;
use rouse_local::AppConfig;
use rouse_local::config::ProcessSpec;
use rouse_scale::Policy;
use serde::Deserialize;

use crate::tls::CertConfig;
use rouse_eventgrid::GatewayConfig;

/// `proxy.tls`: an HTTPS listener (h2 and HTTP/1.1 by ALPN).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    pub listen: SocketAddr,
    /// First entry is the default certificate when no SNI name matches.
    pub certificates: Vec<CertConfig>,
    /// How often certificate files are checked for changes, 1..=86 400. Default 5 s.
    #[serde(default = "TlsListenerConfig::default_reload")]
    pub reload_interval_secs: u64,
}

impl TlsListenerConfig {
    fn default_reload() -> u64 {
        5
    }
}

/// Longest `drain.grace_secs`: a day is far beyond any orchestrator's termination grace, and
/// bounding it keeps every deadline computed from it representable.
pub const MAX_GRACE_SECS: u64 = 86_400;
/// Longest `drain.readiness_delay_ms` (one hour).
pub const MAX_READINESS_DELAY_MS: u64 = 3_600_000;
/// Most worker threads: far above any useful count, low enough that the runtime can start them.
pub const MAX_THREADS: usize = 1024;

/// `proxy.drain`: graceful shutdown on SIGTERM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// In-flight and held requests get this long to finish after SIGTERM, at most
    /// [`MAX_GRACE_SECS`]. Default 30 s.
    pub grace_secs: u64,
    /// Readiness fails this long before listeners close, so load balancers stop sending, at
    /// most [`MAX_READINESS_DELAY_MS`]. Default 0 locally; set it to a few seconds behind a load
    /// balancer.
    pub readiness_delay_ms: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            grace_secs: 30,
            readiness_delay_ms: 0,
        }
    }
}

/// Longest `connections.header_timeout_ms` (one hour).
pub const MAX_HEADER_TIMEOUT_MS: u64 = 3_600_000;
/// Longest `connections.keepalive_timeout_secs` and `connections.send_timeout_secs` (one hour).
pub const MAX_CONNECTION_TIMEOUT_SECS: u64 = 3_600;

/// `proxy.connections`: what one client connection may cost. Every one of these is a way a
/// hostile or broken client pins resources otherwise (silent or trickling connections, idle
/// keep-alives exhausting file descriptors, responses never read holding an endpoint slot).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionConfig {
    /// Open connections on the plaintext listener; beyond it a new connection is answered
    /// `503 connection_limit` and closed. Keep it under half the file-descriptor limit (each
    /// forwarded request also opens one upstream). Default 10 000.
    pub max: usize,
    /// A request head must be complete this long after the connection opened (first request)
    /// or after its first byte (later requests); else `408 header_timeout`. Default 10 000 ms.
    pub header_timeout_ms: u64,
    /// A keep-alive connection idle this long between requests is closed. Default 60 s.
    pub keepalive_timeout_secs: u64,
    /// A write to a client that does not read for this long ends its request (and frees its
    /// endpoint slot). Default 60 s.
    pub send_timeout_secs: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max: 10_000,
            header_timeout_ms: 10_000,
            keepalive_timeout_secs: 60,
            send_timeout_secs: 60,
        }
    }
}

/// `proxy:`. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Public HTTP listener (HTTP/1.1 and h2c). Default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Admin listener: /metrics, /livez, /readyz, /routes, /explain, /queues. Default 127.0.0.1:9090.
    pub admin_listen: SocketAddr,
    pub tls: Option<TlsListenerConfig>,
    /// Worker threads of the proxy runtime, 1..=[`MAX_THREADS`]. Default: the number of CPUs.
    pub threads: Option<usize>,
    /// Held requests at once, all routes together, at least 1. Default 10 000.
    pub max_held_requests: u64,
    /// Held bytes (heads + declared bodies) at once, all routes together. Default 256 MiB.
    pub max_held_bytes: u64,
    pub drain: DrainConfig,
    /// Limits on the plaintext listener's connections (the TLS listener keeps pingora's).
    pub connections: ConnectionConfig,
    /// One line per finished request on stdout, in the log format (see
    /// [`crate::access_log`]). Default off.
    pub access_log: bool,
}

impl ProxySettings {
    /// What serde cannot check, each error naming its field under `proxy.`. Shared by the local
    /// file and `rouse kubernetes`' flags, so both refuse the same values.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.listen == self.admin_listen {
            errors.push(format!(
                "proxy.admin_listen: must differ from proxy.listen ({})",
                self.listen
            ));
        }
        if let Some(n) = self.threads
            && !(1..=MAX_THREADS).contains(&n)
        {
            errors.push(format!(
                "proxy.threads: must be 1..={MAX_THREADS} (got {n}; omit it for one per CPU)"
            ));
        }
        if self.max_held_requests == 0 {
            errors.push("proxy.max_held_requests: must be at least 1".to_string());
        }
        if self.drain.grace_secs > MAX_GRACE_SECS {
            errors.push(format!(
                "proxy.drain.grace_secs: must be at most {MAX_GRACE_SECS} (got {})",
                self.drain.grace_secs
            ));
        }
        if self.drain.readiness_delay_ms > MAX_READINESS_DELAY_MS {
            errors.push(format!(
                "proxy.drain.readiness_delay_ms: must be at most {MAX_READINESS_DELAY_MS} (got {})",
                self.drain.readiness_delay_ms
            ));
        }
        let c = &self.connections;
        if c.max == 0 {
            errors.push("proxy.connections.max: must be at least 1".to_string());
        }
        if !(1..=MAX_HEADER_TIMEOUT_MS).contains(&c.header_timeout_ms) {
            errors.push(format!(
                "proxy.connections.header_timeout_ms: must be 1..={MAX_HEADER_TIMEOUT_MS} (got {})",
                c.header_timeout_ms
            ));
        }
        for (field, v) in [
            ("keepalive_timeout_secs", c.keepalive_timeout_secs),
            ("send_timeout_secs", c.send_timeout_secs),
        ] {
            if !(1..=MAX_CONNECTION_TIMEOUT_SECS).contains(&v) {
                errors.push(format!(
                    "proxy.connections.{field}: must be 1..={MAX_CONNECTION_TIMEOUT_SECS} (got {v})"
                ));
            }
        }
        if let Some(tls) = &self.tls {
            if tls.listen == self.listen || tls.listen == self.admin_listen {
                errors.push(format!(
                    "proxy.tls.listen: {} is already used by another listener",
                    tls.listen
                ));
            }
            if tls.certificates.is_empty() {
                errors.push(
                    "proxy.tls.certificates: at least one certificate is required".to_string(),
                );
            }
            if !(1..=86_400).contains(&tls.reload_interval_secs) {
                errors.push(format!(
                    "proxy.tls.reload_interval_secs: must be 1..=86400 (got {})",
                    tls.reload_interval_secs
                ));
            }
        }
        errors
    }

    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.drain.grace_secs)
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            tls: None,
            threads: None,
            max_held_requests: 10_000,
            max_held_bytes: 256 * 1024 * 1024,
            drain: DrainConfig::default(),
            connections: ConnectionConfig::default(),
            access_log: false,
        }
    }
}

/// The whole local file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFile {
    #[serde(default)]
    pub proxy: ProxySettings,
    pub apps: Vec<AppConfig>,
    /// Event Grid / CloudEvents webhooks on the proxy's listener (see eventgrid-adapter).
    #[serde(default)]
    pub event_gateway: Option<GatewayConfig>,
}

/// One app, converted.
#[derive(Debug, Clone)]
pub struct LocalApp {
    pub route: Route,
    pub policy: Policy,
    pub process: ProcessSpec,
    pub tick: Duration,
}

/// The validated local configuration.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub proxy: ProxySettings,
    pub apps: Vec<LocalApp>,
    pub event_gateway: Option<GatewayConfig>,
}

/// The 1-based line of the `nth` (0-based) `name: <name>` entry in `text` (bare or quoted), for
/// pointing at cross-field errors that serde could not place.
fn line_of_app(text: &str, name: &str, nth: usize) -> Option<usize> {
    let forms = [name.to_string(), format!("\"{name}\""), format!("'{name}'")];
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start().trim_start_matches("- ").trim();
            l.strip_prefix("name:")
                .map(str::trim)
                .is_some_and(|v| forms.iter().any(|f| f == v))
        })
        .nth(nth)
        .map(|(i, _)| i + 1)
}

/// Parses and validates `text`; `origin` names the file in messages.
pub fn parse(text: &str, origin: &str) -> Result<LocalConfig, Vec<String>> {
    let file: LocalFile = rouse_core::yaml::from_str(text, origin).map_err(|e| vec![e])?;

    let mut errors = Vec::new();
    if file.apps.is_empty() {
        errors.push(format!("{origin}: apps: at least one app is required"));
    }
    let mut apps = Vec::new();
    for (i, app) in file.apps.iter().enumerate() {
        let earlier = file.apps[..i].iter().filter(|a| a.name == app.name).count();
        let line =
            line_of_app(text, &app.name, earlier).map_or_else(|| "?".into(), |l| l.to_string());
        if earlier > 0 {
            errors.push(format!(
                "{origin}:{line}: apps[{i}].name: {:?} is used by an earlier app",
                app.name
            ));
        }
        match app.build() {
            Ok((route, policy, process)) => apps.push(LocalApp {
                route,
                policy,
                process,
                tick: app.tick(),
            }),
            Err(es) => errors.extend(
                es.into_iter()
                    .map(|e| format!("{origin}:{line}: apps[{i}].{e}")),
            ),
        }
    }
    let (_, conflicts) = rouse_core::RouteTable::build(apps.iter().map(|a| a.route.clone()));
    for c in conflicts {
        let line = line_of_app(text, &c.route, 0).map_or("?".into(), |l| l.to_string());
        errors.push(format!("{origin}:{line}: apps: {c}"));
    }
    errors.extend(
        file.proxy
            .validate()
            .into_iter()
            .map(|e| format!("{origin}: {e}")),
    );
    if let Some(gw) = &file.event_gateway {
        errors.extend(gw.validate().into_iter().map(|e| format!("{origin}: {e}")));
        for (i, s) in gw.subscriptions.iter().enumerate() {
            let Some(app) = &s.target.app else { continue };
            if !file.apps.iter().any(|a| &a.name == app) {
                errors.push(format!(
                    "{origin}: event_gateway.subscriptions[{i}].target.app: no app named {app:?}"
                ));
                continue;
            }
            // An app with errors of its own is reported above; nothing more to say here.
            let Some(a) = apps.iter().find(|a| &a.route.name == app) else {
                continue;
            };
            if s.target.host.is_none() && delivery_host(&a.route).is_none() {
                errors.push(format!(
                    "{origin}: event_gateway.subscriptions[{i}].target.host: app {app:?} has no \
                     exact host to deliver to; set target.host"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(LocalConfig {
            proxy: file.proxy,
            apps,
            event_gateway: file.event_gateway,
        })
    } else {
        Err(errors)
    }
}

/// The `Host` deliveries to `route` carry by default: its first exact host.
pub fn delivery_host(route: &Route) -> Option<String> {
    route.hosts.iter().find_map(|h| match h {
        rouse_core::HostPattern::Exact(h) => Some(h.clone()),
        _ => None,
    })
}

/// Reads and parses a file.
pub fn load(path: &Path) -> Result<LocalConfig, Vec<String>> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{origin}: {e}")])?;
    parse(&text, &origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
proxy:
  listen: 127.0.0.1:8080
apps:
  - name: hello
    hosts: [hello.localhost]
    command: ./hello
    replicas: {min: 0, max: 3}
";

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD, "rouse.yaml").expect("valid");
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].route.limits.hold_timeout, Duration::from_secs(20));
        assert_eq!(c.proxy.admin_listen.port(), 9090);
    }

    #[test]
    fn type_errors_name_file_line_and_field() {
        let bad = GOOD.replace("max: 3", "max: lots");
        let e = parse(&bad, "rouse.yaml").expect_err("invalid");
        assert!(e[0].starts_with("rouse.yaml:8:"), "{e:?}");
        assert!(e[0].contains("apps[0].replicas.max"), "{e:?}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let bad = GOOD.replace("command:", "comand: x\n    command:");
        let e = parse(&bad, "rouse.yaml").expect_err("invalid");
        assert!(e[0].contains("comand"), "{e:?}");
    }

    #[test]
    fn bad_host_is_reported_at_its_line() {
        let bad = GOOD.replace("hello.localhost", "\"bad host\"");
        let e = parse(&bad, "f.yaml").expect_err("invalid");
        assert!(e[0].starts_with("f.yaml:6:"), "{e:?}");
        assert!(e[0].contains("apps[0].hosts"), "{e:?}");
    }

    #[test]
    fn cross_field_errors_are_all_reported() {
        let bad = GOOD.replace("{min: 0, max: 3}", "{min: 4, max: 3}") + "    env: {PORT: \"1\"}\n";
        let e = parse(&bad, "f.yaml").expect_err("invalid");
        let all = e.join("\n");
        assert!(
            all.contains("f.yaml:5: apps[0].replicas.min (4) must not exceed replicas.max (3)"),
            "{all}"
        );
        assert!(all.contains("apps[0].env.PORT"), "{all}");
    }

    #[test]
    fn app_lines_match_whole_names_only() {
        let text = "apps:\n  - name: hello2\n  - name: \"hello\"\n  - name: hello\n";
        assert_eq!(line_of_app(text, "hello", 0), Some(3));
        assert_eq!(line_of_app(text, "hello", 1), Some(4));
        assert_eq!(line_of_app(text, "hello2", 0), Some(2));
        assert_eq!(line_of_app(text, "hell", 0), None);
    }

    #[test]
    fn zero_threads_and_clashing_listeners_are_rejected() {
        let bad = GOOD.replace(
            "listen: 127.0.0.1:8080",
            "listen: 127.0.0.1:8080\n  threads: 0\n  tls: {listen: 127.0.0.1:8080, certificates: []}",
        );
        let e = parse(&bad, "f.yaml").expect_err("invalid").join("\n");
        assert!(e.contains("proxy.threads"), "{e}");
        assert!(e.contains("proxy.tls.listen"), "{e}");
    }

    #[test]
    fn conflicting_apps_are_rejected() {
        let two =
            format!("{GOOD}  - name: other\n    hosts: [hello.localhost]\n    command: ./x\n");
        let e = parse(&two, "f.yaml").expect_err("conflict");
        assert!(
            e.iter().any(|m| m.contains("route \"other\" claims host")),
            "{e:?}"
        );
    }

    #[test]
    fn absurd_numbers_are_refused_with_their_bound() {
        let bad = GOOD
            .replace(
                "listen: 127.0.0.1:8080",
                "listen: 127.0.0.1:8080\n  threads: 100000\n  drain: {grace_secs: 18446744073709551615, readiness_delay_ms: 18446744073709551615}",
            )
            .replace(
                "replicas: {min: 0, max: 3}",
                "replicas: {min: 0, max: 4000000000}\n    scaledown_period_secs: 1e300\n    \
                 cold_start: {hold_timeout_ms: 18446744073709551615, retry_after_secs: 4000000000}",
            );
        let e = parse(&bad, "f.yaml").expect_err("invalid").join("\n");
        for field in [
            "proxy.threads: must be 1..=1024 (got 100000",
            "proxy.drain.grace_secs: must be at most 86400",
            "proxy.drain.readiness_delay_ms: must be at most 3600000",
            "apps[0].replicas.max: must be at most 1024",
            "apps[0].scaledown_period_secs: must be 0..=604800 seconds",
            "apps[0].cold_start.hold_timeout_ms: must be 1..=604800000",
            "apps[0].cold_start.retry_after_secs: must be at most 86400",
        ] {
            assert!(e.contains(field), "{field:?} missing in:\n{e}");
        }
    }

    #[test]
    fn an_error_in_an_app_does_not_cascade_into_its_event_subscriptions() {
        let with_events = format!(
            "{GOOD}event_gateway:\n  data_dir: /tmp/x\n  subscriptions:\n    - name: s\n      \
             path: /hook\n      schema: eventgrid\n      target: {{app: hello, path: /events}}\n"
        );
        parse(&with_events, "f.yaml").expect("valid as written");
        let bad = with_events.replace("{min: 0, max: 3}", "{min: 4, max: 3}");
        let e = parse(&bad, "f.yaml").expect_err("invalid");
        assert_eq!(e.len(), 1, "only the app's own error: {e:?}");
        assert!(e[0].contains("apps[0].replicas.min"), "{e:?}");
        let missing = with_events.replace("app: hello, path", "app: nope, path");
        let e = parse(&missing, "f.yaml").expect_err("invalid").join("\n");
        assert!(
            e.contains("event_gateway.subscriptions[0].target.app: no app named \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn a_placeholder_and_a_failover_parse_into_the_route() {
        let with =
            |cold: &str| GOOD.replace("max: 3}", &format!("max: 3}}\n    cold_start: {cold}"));
        let c = parse(
            &with(
                "{placeholder: {body: '<p>starting</p>', headers: {Refresh: '2'}}, \
                 retry_after_secs: 5}",
            ),
            "f.yaml",
        )
        .expect("valid");
        let limits = &c.apps[0].route.limits;
        let p = limits.placeholder.as_ref().expect("placeholder");
        assert_eq!((p.status, p.body.as_str()), (503, "<p>starting</p>"));
        assert_eq!(p.header("refresh"), Some("2"));
        assert_eq!(limits.retry_after_secs, 5);
        assert_eq!(limits.failover, None);

        let c = parse(
            &with("{hold_timeout_ms: 800, failover: {url: 'http://127.0.0.1:9000/'}}"),
            "f.yaml",
        )
        .expect("valid");
        let limits = &c.apps[0].route.limits;
        let f = limits.failover.as_ref().expect("failover");
        assert_eq!(f.target, "hello#failover");
        assert_eq!(f.addr, Some(SocketAddr::from(([127, 0, 0, 1], 9000))));
        assert_eq!(
            limits.hold_timeout,
            Duration::from_millis(800),
            "the failover takes over at the hold timeout"
        );
        assert_eq!(limits.placeholder, None);
    }

    #[test]
    fn bad_placeholders_and_failovers_are_refused_with_their_bound() {
        let with =
            |cold: &str| GOOD.replace("max: 3}", &format!("max: 3}}\n    cold_start: {cold}"));
        let long = "x".repeat(rouse_core::route::MAX_PLACEHOLDER_BODY_CHARS + 1);
        let e = parse(
            &with(&format!(
                "{{placeholder: {{status: 99, body: {long}, headers: {{Transfer-Encoding: chunked}}}}}}"
            )),
            "f.yaml",
        )
        .expect_err("invalid")
        .join("\n");
        for field in [
            "f.yaml:5: apps[0].cold_start.placeholder.status: must be 200..=599 (got 99)",
            "apps[0].cold_start.placeholder.body: must be at most 32768 characters (got 32769)",
            "apps[0].cold_start.placeholder.headers.Transfer-Encoding: \"Transfer-Encoding\" is set by the proxy",
        ] {
            assert!(e.contains(field), "{field:?} missing in:\n{e}");
        }
        let e = parse(&with("{failover: {url: 'https://example.com'}}"), "f.yaml")
            .expect_err("invalid")
            .join("\n");
        assert!(
            e.contains(
                "apps[0].cold_start.failover.url: \"https://example.com\" is not an http:// URL"
            ),
            "{e}"
        );
        let e = parse(&with("{failover: {}}"), "f.yaml")
            .expect_err("no url")
            .join("\n");
        assert!(
            e.contains("apps[0].cold_start.failover: missing field `url`"),
            "{e}"
        );
        let e = parse(
            &with("{placeholder: {}, failover: {url: 'http://127.0.0.1:9'}}"),
            "f.yaml",
        )
        .expect_err("both")
        .join("\n");
        assert!(
            e.contains(
                "apps[0].cold_start.placeholder: cannot be combined with cold_start.failover"
            ),
            "{e}"
        );
        let e = parse(&with("{placeholder: {stauts: 200}}"), "f.yaml")
            .expect_err("typo")
            .join("\n");
        assert!(
            e.contains("apps[0].cold_start.placeholder.stauts: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn a_type_error_names_its_field_path_once() {
        let bad = GOOD.replace(
            "max: 3}",
            "max: 3}\n    cold_start: {hold_timeout_ms: soon}",
        );
        let e = parse(&bad, "f.yaml").expect_err("invalid");
        assert_eq!(
            e[0].matches("apps[0].cold_start.hold_timeout_ms").count(),
            1,
            "{e:?}"
        );
    }
}
