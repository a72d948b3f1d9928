//! The local YAML file: a `proxy:` section (listeners, global caps, TLS, drain) and the `apps:`
//! of the local platform. Parsing reports `file:line:column: field.path: problem` for every error.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rouse_controller::local::AppConfig;
use rouse_controller::local::config::ProcessSpec;
use rouse_controller::scale::Policy;
use rouse_core::Route;
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
    /// How often certificate files are checked for changes. Default 5 s.
    #[serde(default = "TlsListenerConfig::default_reload")]
    pub reload_interval_secs: u64,
}

impl TlsListenerConfig {
    fn default_reload() -> u64 {
        5
    }
}

/// `proxy.drain`: graceful shutdown on SIGTERM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainConfig {
    /// In-flight and held requests get this long to finish after SIGTERM. Default 30 s.
    #[serde(default = "DrainConfig::default_grace")]
    pub grace_secs: u64,
    /// Readiness fails this long before listeners close, so load balancers stop sending.
    /// Default 0 locally; set it to a few seconds behind a load balancer.
    #[serde(default)]
    pub readiness_delay_ms: u64,
}

impl DrainConfig {
    fn default_grace() -> u64 {
        30
    }
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            grace_secs: Self::default_grace(),
            readiness_delay_ms: 0,
        }
    }
}

/// `proxy:`. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// Public HTTP listener (HTTP/1.1 and h2c). Default 127.0.0.1:8080.
    #[serde(default = "ProxySettings::default_listen")]
    pub listen: SocketAddr,
    /// Admin listener: /metrics, /livez, /readyz, /routes, /explain, /queues. Default 127.0.0.1:9090.
    #[serde(default = "ProxySettings::default_admin")]
    pub admin_listen: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsListenerConfig>,
    /// Worker threads of the proxy runtime. Default: the number of CPUs.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Held requests at once, all routes together. Default 10 000.
    #[serde(default = "ProxySettings::default_held")]
    pub max_held_requests: u64,
    /// Held bytes (heads + declared bodies) at once, all routes together. Default 256 MiB.
    #[serde(default = "ProxySettings::default_held_bytes")]
    pub max_held_bytes: u64,
    #[serde(default)]
    pub drain: DrainConfig,
}

impl ProxySettings {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    fn default_admin() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9090))
    }
    fn default_held() -> u64 {
        10_000
    }
    fn default_held_bytes() -> u64 {
        256 * 1024 * 1024
    }

    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.drain.grace_secs)
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: Self::default_listen(),
            admin_listen: Self::default_admin(),
            tls: None,
            threads: None,
            max_held_requests: Self::default_held(),
            max_held_bytes: Self::default_held_bytes(),
            drain: DrainConfig::default(),
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
    let de = serde_yaml::Deserializer::from_str(text);
    let file: LocalFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = inner
            .location()
            .map(|l| format!("{}:{}", l.line(), l.column()))
            .unwrap_or_else(|| "?".to_string());
        // serde_yaml appends " at line L column C"; the prefix already says where.
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        vec![format!("{origin}:{at}: {path}: {msg}")]
    })?;

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
    let p = &file.proxy;
    if p.listen == p.admin_listen {
        errors.push(format!(
            "{origin}: proxy.admin_listen: must differ from proxy.listen ({})",
            p.listen
        ));
    }
    if p.threads == Some(0) {
        errors.push(format!(
            "{origin}: proxy.threads: must be at least 1 (omit it for one per CPU)"
        ));
    }
    if let Some(tls) = &p.tls
        && (tls.listen == p.listen || tls.listen == p.admin_listen)
    {
        errors.push(format!(
            "{origin}: proxy.tls.listen: {} is already used by another listener",
            tls.listen
        ));
    }
    if p.max_held_requests == 0 {
        errors.push(format!(
            "{origin}: proxy.max_held_requests: must be at least 1"
        ));
    }
    if let Some(tls) = &p.tls
        && tls.certificates.is_empty()
    {
        errors.push(format!(
            "{origin}: proxy.tls.certificates: at least one certificate is required"
        ));
    }
    if let Some(gw) = &file.event_gateway {
        errors.extend(gw.validate().into_iter().map(|e| format!("{origin}: {e}")));
        for (i, s) in gw.subscriptions.iter().enumerate() {
            let Some(app) = &s.target.app else { continue };
            let Some(a) = apps.iter().find(|a| &a.route.name == app) else {
                errors.push(format!(
                    "{origin}: event_gateway.subscriptions[{i}].target.app: no app named {app:?}"
                ));
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
}
