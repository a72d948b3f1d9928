//! The CloudEvents webhook "abuse protection" handshake (http-webhook.md §4): an `OPTIONS` with
//! `WebHook-Request-Origin` is answered by Rouse itself, whatever state the target is in.

use super::Headers;

/// What to answer to an `OPTIONS` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Always 200 (consent is carried by the headers, not the status).
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

/// `allowed_origins`: origins granted (`*` grants any); empty = Event Grid's public-cloud
/// origins only. `rate`: per-minute rate to grant, `None` = unlimited (`*`).
pub fn options(headers: &Headers, allowed_origins: &[String], rate: Option<u32>) -> Answer {
    let mut out = vec![("allow", "POST, OPTIONS".to_string())];
    let origin = headers
        .get("webhook-request-origin")
        .filter(|o| !o.is_empty());
    if let Some(origin) = origin {
        let granted = if allowed_origins.is_empty() {
            DEFAULT_ORIGINS
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
        } else {
            allowed_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        };
        if granted {
            out.push(("webhook-allowed-origin", origin.to_string()));
            out.push((
                "webhook-allowed-rate",
                rate.map_or_else(|| "*".to_string(), |r| r.to_string()),
            ));
        }
    }
    Answer {
        status: 200,
        headers: out,
    }
}

/// Event Grid's origins in the Azure clouds (reference §2.2).
pub const DEFAULT_ORIGINS: &[&str] = &[
    "eventgrid.azure.net",
    "eventgrid.azure.us",
    "eventgrid.azure.cn",
    "eventgrid.azure.eaglex.ic.gov",
    "eventgrid.azure.microsoft.scloud",
];
