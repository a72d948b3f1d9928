//! Request headers on the way upstream: hop-by-hop headers removed, forwarding headers kept.

use std::net::IpAddr;

use http::header::{CONNECTION, HeaderName, UPGRADE};
use pingora_http::RequestHeader;

/// Hop-by-hop headers (RFC 9110 §7.6.1) that never cross a proxy. `te: trailers` is kept because
/// gRPC needs it; `transfer-encoding` is left to pingora, which re-frames bodies itself.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
];

/// A request's headers as route matching reads them. Values compare as bytes: any that are not
/// UTF-8 cannot equal a configured (string) value and are skipped.
pub struct Routing<'a>(pub &'a http::HeaderMap);

impl rouse_core::RequestHeaders for Routing<'_> {
    fn values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .get_all(name)
            .iter()
            .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
    }
}

/// What the proxy knows about the inbound connection.
pub struct Inbound<'a> {
    pub client: Option<IpAddr>,
    pub proto: &'static str,
    pub host: &'a str,
    /// The request asks for a protocol upgrade (WebSocket): keep `Connection`/`Upgrade`.
    pub upgrade: bool,
}

/// Header names listed in `Connection`: hop-by-hop by declaration (RFC 9110 §7.6.1).
fn connection_listed(headers: &http::HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Rewrites `req` in place for forwarding.
pub fn prepare_upstream(
    req: &mut RequestHeader,
    inbound: &Inbound<'_>,
) -> pingora_core::Result<()> {
    for name in connection_listed(&req.headers) {
        if !(inbound.upgrade && name == UPGRADE) {
            req.remove_header(&name);
        }
    }
    for name in HOP_BY_HOP {
        req.remove_header(*name);
    }
    if let Some(te) = req.headers.get("te")
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        req.remove_header("te");
    }
    if inbound.upgrade {
        req.insert_header(CONNECTION, "upgrade")?;
    } else {
        req.remove_header(&CONNECTION);
        req.remove_header(&UPGRADE);
    }

    if let Some(ip) = inbound.client {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        req.insert_header("x-forwarded-for", xff)?;
    }
    // Rouse is the edge: what the client claims about scheme and host is not trusted.
    req.insert_header("x-forwarded-proto", inbound.proto)?;
    if inbound.host.is_empty() {
        req.remove_header("x-forwarded-host");
    } else {
        req.insert_header("x-forwarded-host", inbound.host)?;
    }
    let node = match inbound.client {
        Some(IpAddr::V6(ip)) => format!("\"[{ip}]\""),
        Some(ip) => ip.to_string(),
        None => "unknown".to_string(),
    };
    let host = inbound.host.replace(['"', '\\'], "");
    let element = format!("for={node};proto={};host=\"{host}\"", inbound.proto);
    let forwarded = match req.headers.get("forwarded").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {element}"),
        _ => element,
    };
    req.insert_header("forwarded", forwarded)?;
    Ok(())
}

/// Removes hop-by-hop headers from an upstream response (pingora manages the downstream
/// connection's own `Connection` header). A 101 keeps `Upgrade`/`Connection` for WebSockets.
pub fn strip_response_hop_by_hop(resp: &mut pingora_http::ResponseHeader) {
    if resp.status.as_u16() == 101 {
        return;
    }
    for name in connection_listed(&resp.headers) {
        resp.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        resp.remove_header(*name);
    }
    resp.remove_header(&CONNECTION);
    resp.remove_header(&UPGRADE);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    fn inbound(upgrade: bool) -> Inbound<'static> {
        Inbound {
            client: Some(IpAddr::from([10, 0, 0, 1])),
            proto: "http",
            host: "app.test",
            upgrade,
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut r = req(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic x"),
            ("te", "gzip"),
            ("x-kept", "1"),
        ]);
        prepare_upstream(&mut r, &inbound(false)).expect("prepare");
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "proxy-authorization",
            "te",
        ] {
            assert!(!r.headers.contains_key(gone), "{gone}");
        }
        assert!(r.headers.contains_key("x-kept"));
    }

    #[test]
    fn response_hop_by_hop_headers_are_removed() {
        let mut r = pingora_http::ResponseHeader::build(200, None).expect("response");
        for (k, v) in [
            ("connection", "x-internal"),
            ("x-internal", "1"),
            ("keep-alive", "5"),
            ("x-kept", "1"),
        ] {
            r.append_header(k.to_string(), v).expect("header");
        }
        strip_response_hop_by_hop(&mut r);
        for gone in ["connection", "x-internal", "keep-alive"] {
            assert!(!r.headers.contains_key(gone), "{gone}");
        }
        assert!(r.headers.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_and_grpc_trailers_survive() {
        let mut r = req(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
        ]);
        prepare_upstream(&mut r, &inbound(true)).expect("prepare");
        assert_eq!(
            r.headers.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            r.headers.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert_eq!(
            r.headers.get("te").map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
    }

    #[test]
    fn forwarding_headers_append() {
        let mut r = req(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed.example"),
        ]);
        prepare_upstream(&mut r, &inbound(false)).expect("prepare");
        let get = |n: &str| {
            r.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(get("x-forwarded-for"), "1.2.3.4, 10.0.0.1");
        assert_eq!(get("x-forwarded-proto"), "http");
        assert_eq!(get("x-forwarded-host"), "app.test");
        assert_eq!(
            get("forwarded"),
            "for=1.2.3.4, for=10.0.0.1;proto=http;host=\"app.test\""
        );
    }
}
