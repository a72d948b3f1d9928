//! Event gateway webhooks served on the proxy's own listener (no extra network hop): the body
//! is read here with the gateway's cap, the gateway answers (handshake, acknowledgement or
//! refusal) and its deliveries come back through this proxy like any request, so a cold
//! target is held for and woken.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use rouse_eventgrid::gateway::{Gateway, Response, Subscription};
use rouse_eventgrid::protocol::Headers;

/// Reads the request, lets the gateway answer it and writes the answer.
pub async fn serve(
    session: &mut Session,
    gw: &Arc<Gateway>,
    sub: &Arc<Subscription>,
) -> pingora_core::Result<u16> {
    let name = &sub.config.name;
    let cap = gw.max_body();
    let req = session.req_header();
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Response::error(
            413,
            name,
            "body_too_large",
            &format!("the body exceeds {cap} bytes"),
        )
    };
    let method = req.method.clone();
    let query = req.uri.query().unwrap_or("").to_string();
    // Raw UTF-8 (e.g. an unencoded ce-subject from sdk-go) is kept, not dropped.
    let headers = Headers::new(req.headers.iter().map(|(k, v)| {
        (
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )
    }));
    let response = if declared.is_some_and(|n| n > cap) {
        too_large()
    } else {
        let mut body = BytesMut::new();
        let mut over = false;
        while let Some(chunk) = session.read_request_body().await? {
            if (body.len() + chunk.len()) as u64 > cap {
                over = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if over {
            too_large()
        } else {
            gw.handle(
                sub,
                rouse_eventgrid::Request {
                    method,
                    query,
                    headers,
                    body: body.freeze(),
                },
            )
            .await
        }
    };
    let status = response.status;
    let mut head = ResponseHeader::build(status, Some(response.headers.len() + 2))?;
    for (k, v) in &response.headers {
        head.insert_header(k.clone(), v.as_str())?;
    }
    head.insert_header("content-length", response.body.len().to_string())?;
    if status == 413 || !session.is_body_empty() && status >= 400 {
        // The rest of an unread body would desync a kept-alive connection.
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(head), false).await?;
    session
        .write_response_body(Some(Bytes::from(response.body)), true)
        .await?;
    Ok(status)
}
