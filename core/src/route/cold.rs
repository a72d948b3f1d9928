//! What a route does for a request while its target is cold, besides holding it: answer at once
//! with a placeholder page ([`Placeholder`]), or, when the hold times out, forward to a failover
//! target ([`Failover`]). Both platforms build these from their own configuration (the local
//! YAML's `cold_start:`, an `HTTPScaledObject`), so the checks live here and both refuse the
//! same values; each check returns the problem without the field name, which the caller knows
//! in its own spelling (`statusCode` on Kubernetes, `status` locally).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most characters of a placeholder body: the CRD's bound (`spec.rouse.placeholder.body`), and
/// the local file's, so a page moves between the two unchanged.
pub const MAX_PLACEHOLDER_BODY_CHARS: usize = 32_768;
/// Most headers of a placeholder response.
pub const MAX_PLACEHOLDER_HEADERS: usize = 32;

/// Headers the proxy owns on a response it writes itself: framing and hop-by-hop headers.
/// A placeholder that set them could desynchronise the client's connection.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Who gets a route's placeholder while its target is cold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Every request (KEDA's semantics, the default for objects written for KEDA).
    #[default]
    All,
    /// Only requests whose `Accept` prefers HTML ([`prefers_html`]): a person at a browser
    /// sees a waiting page, while API clients are held and answered by the app as usual.
    Browsers,
}

/// Longest `Refresh` interval of a waiting page.
pub const MAX_REFRESH_SECS: u32 = 3600;
/// The `Refresh` interval of a placeholder for browsers that gives none (both platforms).
pub const DEFAULT_BROWSER_REFRESH_SECS: u32 = 2;

/// Rouse's waiting page: shown to browsers when a placeholder for browsers gives no body.
/// `{{app}}`, `{{elapsed_secs}}` and `{{refresh_secs}}` are filled in per answer
/// ([`Placeholder::render`]); the meta refresh repeats the `Refresh` header for browsers that
/// ignore it, so the same tab lands on the app once it is up.
pub const WAITING_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{refresh_secs}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Starting {{app}}…</title>
<style>
body{font-family:system-ui,sans-serif;display:flex;align-items:center;justify-content:center;min-height:90vh;margin:0;background:#f6f7f9;color:#1f2933}
main{text-align:center;padding:2rem 3rem;background:#fff;border-radius:12px;box-shadow:0 2px 12px #0002}
h1{font-size:1.4rem;margin:0 0 .5rem}
p{margin:.3rem 0;color:#52606d}
</style>
</head>
<body>
<main>
<h1>Starting {{app}}…</h1>
<p>It was asleep and is waking up ({{elapsed_secs}} s so far).</p>
<p>This page reloads by itself every {{refresh_secs}} s.</p>
</main>
</body>
</html>
"#;

/// A response the proxy answers itself, at once, to requests that arrive while the route's
/// target has no ready endpoint (a "starting…" page): to every request, or with
/// [`Audience::Browsers`] only to people at a browser. The request still wakes the target,
/// exactly like a held one: a placeholder never keeps an app asleep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placeholder {
    /// 200..=599 (a placeholder is a final response).
    pub status: u16,
    /// At most [`MAX_PLACEHOLDER_BODY_CHARS`] characters; empty for 204 and 304.
    pub body: String,
    /// Lower-case names in the order given, checked by [`Placeholder::check_header`]. The proxy
    /// adds `content-type` (sniffed from the body), `cache-control: no-store` and, for 503,
    /// `retry-after` when they are not given.
    pub headers: Vec<(String, String)>,
    /// Who gets it (default: every request).
    pub audience: Audience,
    /// Sent as `Refresh: N` (1..=[`MAX_REFRESH_SECS`]) unless `headers` has one: the browser
    /// reloads by itself and lands on the app once it is up.
    pub refresh_secs: Option<u32>,
}

impl Placeholder {
    /// Default status, as KEDA's placeholder: 503, which tells clients and crawlers the page is
    /// temporary.
    pub const DEFAULT_STATUS: u16 = 503;

    /// The status must be a final response code.
    pub fn check_status(status: i64) -> Result<u16, String> {
        u16::try_from(status)
            .ok()
            .filter(|s| (200..=599).contains(s))
            .ok_or_else(|| format!("must be 200..=599 (got {status})"))
    }

    /// The body must fit the bound, and be empty where HTTP forbids a body.
    pub fn check_body(status: u16, body: &str) -> Result<(), String> {
        let chars = body.chars().count();
        if chars > MAX_PLACEHOLDER_BODY_CHARS {
            return Err(format!(
                "must be at most {MAX_PLACEHOLDER_BODY_CHARS} characters (got {chars})"
            ));
        }
        if matches!(status, 204 | 304) && !body.is_empty() {
            return Err(format!("must be empty with status {status}"));
        }
        Ok(())
    }

    /// A header must be a valid HTTP field (token name, value without control characters) that
    /// the proxy does not own ([`RESERVED_HEADERS`]). Returns the lower-case name.
    pub fn check_header(name: &str, value: &str) -> Result<String, String> {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(format!("{name:?} is not a valid HTTP header name"));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "{name:?} is set by the proxy (framing and hop-by-hop headers cannot be given)"
            ));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(format!(
                "the value of {name:?} contains a control character (CR, LF, NUL…)"
            ));
        }
        Ok(lower)
    }

    /// Builds a placeholder, reporting every problem as `(field, problem)` where field is
    /// `status`, `body`, `headers` or `headers.<name>`: the caller renames and prefixes them.
    pub fn build(
        status: i64,
        body: Option<String>,
        headers: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Placeholder, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let status = match Placeholder::check_status(status) {
            Ok(s) => s,
            Err(e) => {
                errors.push(("status".to_string(), e));
                Placeholder::DEFAULT_STATUS
            }
        };
        let body = body.unwrap_or_default();
        if let Err(e) = Placeholder::check_body(status, &body) {
            errors.push(("body".to_string(), e));
        }
        let mut checked: Vec<(String, String)> = Vec::new();
        for (name, value) in headers {
            match Placeholder::check_header(&name, &value) {
                Ok(lower) if checked.iter().any(|(n, _)| *n == lower) => errors.push((
                    format!("headers.{name}"),
                    "is given twice (names are case-insensitive)".to_string(),
                )),
                Ok(lower) => checked.push((lower, value)),
                Err(e) => errors.push((format!("headers.{name}"), e)),
            }
        }
        if checked.len() > MAX_PLACEHOLDER_HEADERS {
            errors.push((
                "headers".to_string(),
                format!(
                    "at most {MAX_PLACEHOLDER_HEADERS} headers (got {})",
                    checked.len()
                ),
            ));
        }
        if errors.is_empty() {
            Ok(Placeholder {
                status,
                body,
                headers: checked,
                audience: Audience::All,
                refresh_secs: None,
            })
        } else {
            Err(errors)
        }
    }

    /// Only for browsers, reloading every `refresh_secs` (1..=[`MAX_REFRESH_SECS`], default
    /// [`DEFAULT_BROWSER_REFRESH_SECS`]); an empty body becomes Rouse's [`WAITING_PAGE`].
    pub fn for_browsers(mut self, refresh_secs: Option<u32>) -> Result<Placeholder, String> {
        let refresh_secs = refresh_secs.unwrap_or(DEFAULT_BROWSER_REFRESH_SECS);
        if !(1..=MAX_REFRESH_SECS).contains(&refresh_secs) {
            return Err(format!(
                "must be 1..={MAX_REFRESH_SECS} (got {refresh_secs})"
            ));
        }
        self.audience = Audience::Browsers;
        self.refresh_secs = Some(refresh_secs);
        if self.body.is_empty() && !matches!(self.status, 204 | 304) {
            self.body = WAITING_PAGE.to_string();
        }
        Ok(self)
    }

    /// The body for one answer: `{{app}}`, `{{elapsed_secs}}` (since the wake began) and
    /// `{{refresh_secs}}` filled in, the app name HTML-escaped. Borrowed when there is nothing
    /// to fill.
    pub fn render(&self, app: &str, elapsed: Duration) -> Cow<'_, str> {
        if !self.body.contains("{{") {
            return Cow::Borrowed(&self.body);
        }
        let refresh = self.refresh_secs.unwrap_or(0).to_string();
        Cow::Owned(
            self.body
                .replace("{{app}}", &html_escape(app))
                .replace("{{elapsed_secs}}", &elapsed.as_secs().to_string())
                .replace("{{refresh_secs}}", &refresh),
        )
    }

    /// The value given for header `name` (lower-case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A fixed answer for the requests of a static route (KEDA's `staticRoutes`: health probes,
/// maintenance pages): the proxy writes it itself, and such a request is never counted as demand
/// nor wakes the target, so a load balancer's probe cannot keep an idle app awake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticAnswer {
    /// Status, body and headers, checked like a placeholder's.
    pub response: Placeholder,
    pub mode: StaticMode,
}

/// When a static route answers by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StaticMode {
    /// Only while the target has no ready endpoint; otherwise the request is forwarded
    /// (uncounted). KEDA's default.
    WhenUnavailable,
    /// Always, even when the target runs (e.g. a planned maintenance page).
    Always,
}

impl StaticAnswer {
    /// Whether the proxy answers itself, given whether the target has a ready endpoint.
    pub fn answers(&self, ready: bool) -> bool {
        self.mode == StaticMode::Always || !ready
    }
}

/// Where a request goes instead of a `504` when its target has no ready endpoint with capacity
/// by the end of the route's hold timeout (KEDA's `coldStartTimeoutFailoverRef`): an always-on
/// fallback. Rouse never scales it; the target that timed out keeps starting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failover {
    /// The target whose ready endpoints receive the requests ([`failover_target`] of the
    /// route's target).
    pub target: String,
    /// A fixed address (the local file's `failover.url`): the proxy publishes it as the
    /// target's only endpoint itself. `None`: the platform follows the target like any other
    /// (a Service's EndpointSlices on Kubernetes).
    pub addr: Option<SocketAddr>,
}

/// What [`failover_target`] appends to a target's name.
pub const FAILOVER_SUFFIX: &str = "#failover";

/// The name of the failover target of `target`: one per route target, never a routed name
/// (`#` is not valid in an app name nor in a Kubernetes object key).
pub fn failover_target(target: &str) -> String {
    format!("{target}{FAILOVER_SUFFIX}")
}

/// Reads a failover URL as the local file gives it: `http://HOST:PORT` (a trailing `/` is
/// allowed), HOST an IP address or `localhost` (no DNS lookup on the request path).
pub fn parse_failover_url(raw: &str) -> Result<SocketAddr, String> {
    let bad =
        |why: &str| format!("{raw:?} {why}; expected http://IP:PORT, e.g. http://127.0.0.1:9000");
    let rest = raw
        .strip_prefix("http://")
        .ok_or_else(|| bad("is not an http:// URL"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(bad("has a path, query or user part"));
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| bad("has no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("has no valid port"))?;
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        bare.parse::<IpAddr>()
            .map_err(|_| bad("does not name an IP address or localhost"))?
    };
    Ok(SocketAddr::new(ip, port))
}

/// Whether an `Accept` header prefers HTML: `text/html` or `application/xhtml+xml` has a
/// q-value above 0 and at least as high as any other named type. Wildcards alone (`*/*`, what
/// curl and most API clients send) and a missing header do not: those clients are held, not
/// shown a page. Browsers send `text/html,application/xhtml+xml,…,*/*;q=0.8`.
pub fn prefers_html(accept: &str) -> bool {
    let mut html = 0.0f32;
    let mut other = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim().eq_ignore_ascii_case("q")).then(|| v.trim().parse::<f32>().ok())?
            })
            .next()
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            m if m.ends_with("/*") || m.is_empty() => {}
            _ => other = other.max(q),
        }
    }
    html > 0.0 && html >= other
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_keeps_its_headers_lower_cased_and_in_order() {
        let p = Placeholder::build(
            503,
            Some("<p>starting…</p>".into()),
            [
                ("Refresh".to_string(), "2".to_string()),
                ("X-App".to_string(), "shop".to_string()),
            ],
        )
        .expect("valid");
        assert_eq!(p.status, 503);
        assert_eq!(p.header("refresh"), Some("2"));
        assert_eq!(p.headers[1], ("x-app".to_string(), "shop".to_string()));
    }

    #[test]
    fn every_placeholder_problem_is_named_by_its_field() {
        let long = "x".repeat(MAX_PLACEHOLDER_BODY_CHARS + 1);
        let errors = Placeholder::build(
            99,
            Some(long),
            [
                ("Content-Length".to_string(), "3".to_string()),
                ("bad name".to_string(), "x".to_string()),
                ("x-a".to_string(), "line\r\nbreak".to_string()),
                ("X-B".to_string(), "1".to_string()),
                ("x-b".to_string(), "2".to_string()),
            ],
        )
        .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "status",
                "body",
                "headers.Content-Length",
                "headers.bad name",
                "headers.x-a",
                "headers.x-b"
            ],
            "{errors:?}"
        );
        assert!(errors[0].1.contains("200..=599"), "{errors:?}");
        assert!(errors[1].1.contains("32768"), "{errors:?}");
        let no_body = Placeholder::build(204, Some("x".into()), []).expect_err("204 with a body");
        assert_eq!(no_body[0].0, "body");
        let too_many = (0..=MAX_PLACEHOLDER_HEADERS).map(|i| (format!("x-{i}"), "v".to_string()));
        let e = Placeholder::build(503, None, too_many).expect_err("too many");
        assert_eq!(e[0].0, "headers");
    }

    #[test]
    fn the_body_bound_counts_characters_like_the_crd() {
        let exact = "é".repeat(MAX_PLACEHOLDER_BODY_CHARS);
        assert!(Placeholder::check_body(503, &exact).is_ok());
    }

    #[test]
    fn failover_urls_name_an_address_and_nothing_else() {
        let ok = [
            ("http://127.0.0.1:9000", "127.0.0.1:9000"),
            ("http://127.0.0.1:9000/", "127.0.0.1:9000"),
            ("http://localhost:81", "127.0.0.1:81"),
            ("http://[::1]:8080", "[::1]:8080"),
        ];
        for (raw, want) in ok {
            assert_eq!(
                parse_failover_url(raw).map(|a| a.to_string()).as_deref(),
                Ok(want),
                "{raw}"
            );
        }
        for bad in [
            "https://127.0.0.1:9000",
            "127.0.0.1:9000",
            "http://127.0.0.1",
            "http://127.0.0.1:0",
            "http://127.0.0.1:9000/path",
            "http://example.com:80",
            "http://u@127.0.0.1:80",
        ] {
            let e = parse_failover_url(bad).expect_err(bad);
            assert!(e.contains("http://IP:PORT"), "{e}");
        }
        assert_eq!(failover_target("shop"), "shop#failover");
    }

    #[test]
    fn browsers_prefer_html_and_api_clients_do_not() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(chrome));
        assert!(prefers_html(firefox));
        assert!(prefers_html("TEXT/HTML"));
        for api in [
            "",
            "*/*",
            "application/json",
            "application/json, text/html;q=0.5",
            "text/html;q=0",
            "text/*",
            "application/grpc",
        ] {
            assert!(!prefers_html(api), "{api:?}");
        }
        assert!(prefers_html("application/json;q=0.5, text/html"));
    }

    #[test]
    fn a_waiting_page_for_browsers_fills_in_the_app_and_the_time() {
        let p = Placeholder::build(503, None, [])
            .expect("valid")
            .for_browsers(None)
            .expect("refresh");
        assert_eq!(p.audience, Audience::Browsers);
        let page = p.render("shop<1>", Duration::from_millis(4_700));
        assert!(page.contains("Starting shop&lt;1&gt;…"), "{page}");
        assert!(page.contains("(4 s so far)"), "{page}");
        assert!(page.contains(r#"content="2""#), "{page}");
        assert!(!page.contains("{{"), "{page}");
        let own = Placeholder::build(200, Some("plain".into()), [])
            .expect("valid")
            .for_browsers(Some(5))
            .expect("refresh");
        assert_eq!(
            own.render("a", Duration::ZERO),
            "plain",
            "a given body is kept"
        );
        assert!(
            Placeholder::build(503, None, [])
                .expect("valid")
                .for_browsers(Some(0))
                .is_err()
        );
    }
}
