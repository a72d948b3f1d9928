//! Event gateway webhooks served on the proxy's own listener (no extra network hop): the body
//! is read here with the gateway's cap, the gateway answers (handshake, acknowledgement or
//! refusal) and its deliveries come back through this proxy like any request, so a cold
//! target is held for and woken.
//!
//! The head is checked before the body is read ([`Gateway::check_head`]: method, declared
//! size, auth, header encoding); only then does an `Expect: 100-continue` get its
//! `100 Continue`. The body must arrive within [`BODY_TIMEOUT`] (then 408); a malformed one is
//! a 400 and a sender that hangs up mid-body gets nothing. None of these reach pingora's error
//! path (whose `502 upstream_error` would tell the sender to retry a request that cannot
//! succeed) and nothing here logs the request's query, where keys travel.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora_core::ErrorType;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use rouse_eventgrid::gateway::{BODY_TIMEOUT, BodyError, Gateway, Response, Subscription};
use rouse_eventgrid::protocol::Headers;

/// Reads the request, lets the gateway answer it and writes the answer. Returns the status
/// written (499: the sender hung up, nothing written).
pub async fn serve(
    session: &mut Session,
    gw: &Arc<Gateway>,
    sub: &Arc<Subscription>,
) -> pingora_core::Result<u16> {
    let req = session.req_header();
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = req
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let method = req.method.clone();
    let query = req.uri.query().unwrap_or("").to_string();
    let headers = Headers::from_bytes(req.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    let mut body_complete = session.is_body_empty();
    let response = match gw
        .check_head(sub, &method, &query, &headers, declared)
        .await
    {
        Some(refusal) => {
            // Answered before the body is read. A sender that waits for `100 Continue`, or
            // declared more than the cap, gets the connection closed after the answer; any
            // other body is drained by pingora after the answer (bounded in time), so a
            // kept-alive connection stays in step and the answer is not lost to a reset.
            if expects_continue || refusal.status == 413 {
                session.set_keepalive(None);
            } else {
                session.set_total_drain_timeout(Some(BODY_TIMEOUT));
            }
            body_complete = true;
            Some(refusal)
        }
        None => {
            let continued = if expects_continue && !session.is_body_empty() {
                session
                    .write_continue_response()
                    .await
                    .map_err(|e| BodyError::ClientGone(e.to_string()))
            } else {
                Ok(())
            };
            let body = match continued {
                Ok(()) => read_body(session, gw.max_body()).await,
                Err(e) => Err(e),
            };
            match body {
                Ok(body) => {
                    body_complete = true;
                    Some(
                        gw.handle(
                            sub,
                            rouse_eventgrid::Request {
                                method,
                                query,
                                headers,
                                body,
                            },
                        )
                        .await,
                    )
                }
                Err(e) => gw.body_failed(sub, e),
            }
        }
    };
    if !body_complete {
        // The rest of an unread body would desync a kept-alive connection.
        session.set_keepalive(None);
    }
    let Some(response) = response else {
        return Ok(499);
    };
    let status = response.status;
    if let Err(e) = write(session, response).await {
        // The sender went away before the answer: nothing to do.
        tracing::debug!(subscription = %sub.config.name, status, error = %e, "Webhook answer not delivered.");
    }
    Ok(status)
}

/// The body, up to `cap` bytes and within [`BODY_TIMEOUT`].
async fn read_body(session: &mut Session, cap: u64) -> Result<Bytes, BodyError> {
    let read = async {
        let mut body = BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > cap {
                        return Err(BodyError::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => {
                    return Err(match e.etype() {
                        ErrorType::ReadTimedout => BodyError::TimedOut,
                        ErrorType::ConnectionClosed | ErrorType::ReadError => {
                            BodyError::ClientGone(e.to_string())
                        }
                        // Bad chunked encoding, an h2 stream error: the body is not well-formed.
                        _ => BodyError::Malformed(e.to_string()),
                    });
                }
            }
        }
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

async fn write(session: &mut Session, response: Response) -> pingora_core::Result<()> {
    let mut head = ResponseHeader::build(response.status, Some(response.headers.len() + 2))?;
    for (k, v) in &response.headers {
        head.insert_header(k.clone(), v.as_str())?;
    }
    head.insert_header("content-length", response.body.len().to_string())?;
    session.write_response_header(Box::new(head), false).await?;
    session
        .write_response_body(Some(Bytes::from(response.body)), true)
        .await
}
