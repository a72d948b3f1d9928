//! Every response the proxy writes itself: a JSON body naming the route and the reason, plus
//! `Retry-After` where retrying helps, and a route's placeholder page. One place, so all
//! surfaces agree.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use rouse_core::route::Placeholder;
use serde::Serialize;

pub use crate::reason::Reason;

#[derive(Serialize)]
struct ErrorBody<'a> {
    route: Option<&'a str>,
    reason: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// Renders the JSON error body (exposed for tests and the admin explain endpoint).
pub fn error_body(
    route: Option<&str>,
    reason: Reason,
    host: Option<&str>,
    retry_after: Option<u32>,
    detail: Option<&str>,
) -> Bytes {
    let body = ErrorBody {
        route,
        reason: reason.as_str(),
        message: reason.message(),
        host,
        retry_after_secs: retry_after,
        detail,
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()))
}

/// Writes the proxy's own answer. `host` is echoed only for `no_route` (JSON-escaped); `detail`
/// adds what only the platform knows (which Service is missing).
pub async fn write_error(
    session: &mut Session,
    route: Option<&str>,
    reason: Reason,
    host: Option<&str>,
    retry_after_secs: u32,
    detail: Option<&str>,
) -> pingora_core::Result<()> {
    let retry_after = reason.retry_after().then_some(retry_after_secs);
    let body = error_body(
        route,
        reason,
        host.filter(|_| reason == Reason::NoRoute),
        retry_after,
        detail,
    );
    let mut resp = ResponseHeader::build(reason.status(), Some(5))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    if let Some(secs) = retry_after {
        resp.insert_header("retry-after", secs.to_string())?;
    }
    // An unread request body would desync a kept-alive HTTP/1.1 connection.
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Writes a route's placeholder with `body` (its body, rendered: [`Placeholder::render`]; see
/// [`super::cold::placeholder_head`] for the headers it gets).
pub async fn write_placeholder(
    session: &mut Session,
    placeholder: &Placeholder,
    body: &str,
    retry_after_secs: u32,
) -> pingora_core::Result<()> {
    let head = super::cold::placeholder_head(placeholder, retry_after_secs);
    let mut resp = ResponseHeader::build(placeholder.status, Some(head.len() + 1))?;
    for (name, value) in head {
        resp.append_header(name, value)?;
    }
    // RFC 9110 §8.6: no Content-Length on a 204.
    if placeholder.status != 204 {
        resp.insert_header("content-length", body.len().to_string())?;
    }
    // An unread request body would desync a kept-alive HTTP/1.1 connection.
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    let body = Bytes::copy_from_slice(body.as_bytes());
    session.write_response_body(Some(body), true).await
}
