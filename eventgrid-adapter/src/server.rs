//! A hyper front end for the gateway (the standalone binary, and tests). The head is checked
//! first ([`Gateway::check_head`]: method, declared `Content-Length` against the cap, auth,
//! header encoding): a refusal is answered before the body is read, and hyper sends
//! `100 Continue` to an `Expect: 100-continue` only once the body is polled, i.e. after the head
//! passed. Bodies are read with the gateway's cap (a chunked body is refused as soon as it
//! passes it) and within [`BODY_TIMEOUT`] (then 408).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::gateway::{BODY_TIMEOUT, BodyError, Gateway, Request, Response, Subscription};
use crate::protocol::Headers;

fn to_hyper(r: Response) -> http::Response<Full<Bytes>> {
    let mut b = http::Response::builder().status(r.status);
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(r.body))).unwrap_or_default()
}

/// Reads `req` into a gateway [`Request`], or the refusal to send instead; the body within
/// `body_timeout`.
pub async fn read(
    gw: &Gateway,
    sub: &Subscription,
    req: http::Request<Incoming>,
    body_timeout: Duration,
) -> Result<Request, Response> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let headers = Headers::from_bytes(
        parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
    );
    let query = parts.uri.query().unwrap_or("").to_string();
    if let Some(refusal) = gw
        .check_head(sub, &parts.method, &query, &headers, declared)
        .await
    {
        return Err(refusal);
    }
    let limit = usize::try_from(gw.max_body()).unwrap_or(usize::MAX);
    let read = tokio::time::timeout(body_timeout, Limited::new(body, limit).collect()).await;
    let failure = match read {
        Ok(Ok(b)) => {
            return Ok(Request {
                method: parts.method,
                query,
                headers,
                body: b.to_bytes(),
            });
        }
        Err(_) => BodyError::TimedOut,
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => BodyError::TooLarge,
        Ok(Err(e)) if hung_up(&*e) => BodyError::ClientGone(e.to_string()),
        Ok(Err(e)) => BodyError::Malformed(e.to_string()),
    };
    // A sender that hung up gets nothing (there is no one to write to).
    Err(gw.body_failed(sub, failure).unwrap_or_else(|| {
        Response::error(400, &sub.config.name, "client_closed", "the sender hung up")
    }))
}

/// Whether a body error means the sender went away (hyper reports an early EOF as a body error
/// caused by an `UnexpectedEof`), rather than a malformed body.
fn hung_up(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Serves webhooks on `listener` until the process exits; unknown paths get 404 JSON.
pub async fn serve(listener: tokio::net::TcpListener, gw: Arc<Gateway>) {
    serve_with(listener, gw, BODY_TIMEOUT).await;
}

/// [`serve`] with another body timeout (tests).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    body_timeout: Duration,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let gw = gw.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let gw = gw.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let Some(sub) = gw.subscription_for(&path).cloned() else {
                        let body = serde_json::json!({"reason": "no_subscription", "path": path});
                        return Ok::<_, Infallible>(to_hyper(Response {
                            status: 404,
                            headers: vec![("content-type".into(), "application/json".into())],
                            body: body.to_string().into_bytes(),
                        }));
                    };
                    let resp = match read(&gw, &sub, req, body_timeout).await {
                        Ok(r) => gw.handle(&sub, r).await,
                        Err(refusal) => refusal,
                    };
                    Ok(to_hyper(resp))
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// `/metrics` and `/livez` for the standalone binary.
pub async fn serve_admin(listener: tokio::net::TcpListener, registry: prometheus::Registry) {
    use prometheus::Encoder;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let registry = registry.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => {
                            let mut out = Vec::new();
                            let _ =
                                prometheus::TextEncoder::new().encode(&registry.gather(), &mut out);
                            (200, out)
                        }
                        "/livez" | "/readyz" => (200, b"ok\n".to_vec()),
                        _ => (404, b"not found\n".to_vec()),
                    };
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap_or_default(),
                    )
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
