//! Routes: which hosts, paths and headers select a target, and the limits that apply while a
//! request to it is held. Matching lives in [`table`].

mod cold;
mod table;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cold::{
    Audience, DEFAULT_BROWSER_REFRESH_SECS, FAILOVER_SUFFIX, Failover, MAX_PLACEHOLDER_BODY_CHARS,
    MAX_PLACEHOLDER_HEADERS, MAX_REFRESH_SECS, Placeholder, StaticAnswer, StaticMode, WAITING_PAGE,
    failover_target, parse_failover_url, prefers_html,
};
pub use table::{Conflict, Match, NoHeaders, RequestHeaders, RouteTable, normalize_path};

/// A single-value check that failed; names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("host {0:?} is not a valid host name or wildcard (`*.example.com`)")]
    InvalidHost(String),
    #[error("path prefix {0:?} must start with `/` and contain no `?`, `#`, `.` or `..` segments")]
    InvalidPathPrefix(String),
    #[error("header name {0:?} is not a valid HTTP header name")]
    InvalidHeaderName(String),
}

/// A host a route answers for. Matching is case-insensitive and ignores the port.
///
/// Precedence, most specific first: exact, then the wildcard with the longest suffix, then `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HostPattern {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com` stored as its suffix `.example.com`; matches one or more labels.
    Wildcard(String),
    /// `*`: any host. Useful for a single-app setup or a catch-all.
    Any,
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<Self, RouteError> {
        let trimmed = raw.trim();
        if trimmed == "*" {
            return Ok(HostPattern::Any);
        }
        let s = trimmed
            .strip_suffix('.')
            .unwrap_or(trimmed)
            .to_ascii_lowercase();
        if s == "*" {
            return Err(RouteError::InvalidHost(raw.to_string()));
        }

        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(RouteError::InvalidHost(raw.to_string()));
        }
        Ok(if wild {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_string())
        })
    }
}

impl TryFrom<String> for HostPattern {
    type Error = RouteError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        HostPattern::parse(&s)
    }
}

impl From<HostPattern> for String {
    fn from(h: HostPattern) -> String {
        h.to_string()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// Normalises a request's host: lower case, port and trailing dot removed, IPv6 brackets kept.
pub fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let without_port = if let Some(rest) = raw.strip_prefix('[') {
        // `[::1]:8080` → `[::1]`
        match rest.find(']') {
            Some(end) => &raw[..end + 2],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// A path prefix matched segment-wise: `/api` matches `/api` and `/api/x`, never `/apix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPrefix(String);

impl PathPrefix {
    pub fn root() -> Self {
        PathPrefix("/".to_string())
    }

    pub fn parse(raw: &str) -> Result<Self, RouteError> {
        let bad = || RouteError::InvalidPathPrefix(raw.to_string());
        if !raw.starts_with('/') || raw.contains(['?', '#']) || raw.chars().any(char::is_whitespace)
        {
            return Err(bad());
        }
        if raw.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(bad());
        }
        // Collapse repeated slashes and drop the trailing one so `/api/` and `/api` are one prefix.
        let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
        Ok(PathPrefix(format!("/{}", segments.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of segments; longer prefixes win.
    pub fn depth(&self) -> usize {
        self.0.split('/').filter(|s| !s.is_empty()).count()
    }

    /// Whether `path` (no query) lies under this prefix, segment-wise.
    pub fn matches(&self, path: &str) -> bool {
        if self.0 == "/" {
            return true;
        }
        match path.strip_prefix(self.0.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// Replaces this prefix of `path` (which it must match) by `replacement`.
    ///
    /// `/api` → `/` turns `/api/users?x=1` into `/users?x=1`; `/api` → `/v2` gives `/v2/users?x=1`.
    pub fn rewrite(&self, path_and_query: &str, replacement: &PathPrefix) -> String {
        let rest = if self.0 == "/" {
            path_and_query
        } else {
            path_and_query
                .strip_prefix(self.0.as_str())
                .unwrap_or(path_and_query)
        };
        let base = replacement.as_str().trim_end_matches('/');
        match rest.chars().next() {
            None => {
                if base.is_empty() {
                    "/".to_string()
                } else {
                    base.to_string()
                }
            }
            Some('/') => format!("{base}{rest}"),
            // `?query` directly after the prefix
            Some(_) => {
                if base.is_empty() {
                    format!("/{rest}")
                } else {
                    format!("{base}{rest}")
                }
            }
        }
    }
}

impl TryFrom<String> for PathPrefix {
    type Error = RouteError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PathPrefix::parse(&s)
    }
}

impl From<PathPrefix> for String {
    fn from(p: PathPrefix) -> String {
        p.0
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request header a route requires: present with exactly `value`, or merely present when
/// `value` is `None` (KEDA's presence match). Names are case-insensitive and kept lower-case;
/// deserialising validates like [`HeaderMatch::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawHeaderMatch")]
pub struct HeaderMatch {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderMatch {
    name: String,
    #[serde(default)]
    value: Option<String>,
}

impl TryFrom<RawHeaderMatch> for HeaderMatch {
    type Error = RouteError;

    fn try_from(raw: RawHeaderMatch) -> Result<Self, RouteError> {
        HeaderMatch::build(&raw.name, raw.value)
    }
}

impl HeaderMatch {
    /// The header must carry exactly `value`.
    pub fn new(name: &str, value: &str) -> Result<Self, RouteError> {
        HeaderMatch::build(name, Some(value.to_string()))
    }

    /// The header must be present, with any value.
    pub fn present(name: &str) -> Result<Self, RouteError> {
        HeaderMatch::build(name, None)
    }

    fn build(name: &str, value: Option<String>) -> Result<Self, RouteError> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            return Err(RouteError::InvalidHeaderName(name.to_string()));
        }
        Ok(HeaderMatch {
            name: name.to_ascii_lowercase(),
            value,
        })
    }
}

/// Bounds on requests held for a cold start and on forwarding, per route, and what a request
/// gets instead of a hold ([`Placeholder`]) or instead of the `504` at its end ([`Failover`]).
///
/// Held requests keep their body on the client's socket (nothing is buffered while waiting), so
/// the byte cap counts the request head plus its declared `Content-Length`: what the proxy has
/// committed to carry once the target wakes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteLimits {
    /// Most requests held at once for this route; beyond it: 503 + `Retry-After`.
    pub max_held_requests: usize,
    /// Most bytes (head + declared body) held at once for this route.
    pub max_held_bytes: u64,
    /// How long a request may wait for a ready endpoint with capacity; beyond it: 504.
    #[serde(with = "duration_ms")]
    pub hold_timeout: Duration,
    /// Most requests in flight per endpoint; `None` means unbounded. Held requests are released
    /// as capacity frees, so a fresh single replica is not flooded.
    pub endpoint_concurrency: Option<u32>,
    /// Seconds suggested in `Retry-After` on overflow (and on a 503 placeholder without one).
    pub retry_after_secs: u32,
    /// Answer every request that arrives while the target has no ready endpoint with this at
    /// once, instead of holding it; the target is woken all the same. `None`: hold.
    pub placeholder: Option<Placeholder>,
    /// Forward requests still held at `hold_timeout` here instead of answering 504. `None`: 504.
    pub failover: Option<Failover>,
    /// A static route: answer with this (never counted, never waking the target) instead of
    /// holding. `None`: an ordinary route.
    pub static_answer: Option<StaticAnswer>,
}

impl Default for RouteLimits {
    fn default() -> Self {
        RouteLimits {
            max_held_requests: 1_000,
            max_held_bytes: 64 * 1024 * 1024,
            hold_timeout: Duration::from_secs(20),
            endpoint_concurrency: None,
            retry_after_secs: 1,
            placeholder: None,
            failover: None,
            static_answer: None,
        }
    }
}

mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// One route: the request side (hosts, paths, headers) and where it goes (a target).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Unique, stable name; used as the metric label and in error bodies.
    pub name: String,
    /// The workload requests are forwarded to (an app locally, a Service on Kubernetes).
    pub target: String,
    pub hosts: Vec<HostPattern>,
    /// Empty means `/`.
    pub path_prefixes: Vec<PathPrefix>,
    /// All must match.
    pub headers: Vec<HeaderMatch>,
    /// Replaces the matched path prefix before forwarding.
    pub rewrite_prefix: Option<PathPrefix>,
    /// How the proxy talks to the target's endpoints.
    pub upstream_protocol: UpstreamProtocol,
    pub limits: RouteLimits,
}

/// The protocol spoken to a target's endpoints; inbound HTTP/1.1, h2 and h2c are translated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (WebSocket upgrades work here).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over cleartext: needed for gRPC backends.
    H2c,
}
