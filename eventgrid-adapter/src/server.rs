//! A hyper front end for the gateway (the standalone binary, and tests). Bodies are read with
//! the gateway's cap: a declared `Content-Length` above it is refused before reading, a chunked
//! body as soon as it passes it.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::gateway::{Gateway, Request, Response};
use crate::protocol::Headers;

fn to_hyper(r: Response) -> http::Response<Full<Bytes>> {
    let mut b = http::Response::builder().status(r.status);
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(r.body))).unwrap_or_default()
}

/// Reads `req` into a gateway [`Request`], or the refusal to send instead.
pub async fn read(
    gw: &Gateway,
    subscription: &str,
    req: http::Request<Incoming>,
) -> Result<Request, Response> {
    let cap = gw.max_body();
    let too_large = || {
        Response::error(
            413,
            subscription,
            "body_too_large",
            &format!("the body exceeds {cap} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let limit = usize::try_from(cap).unwrap_or(usize::MAX);
    let body = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(Response::error(
                400,
                subscription,
                "bad_request",
                &format!("reading the body: {e}"),
            ));
        }
    };
    // Raw UTF-8 (e.g. an unencoded ce-subject from sdk-go) is kept, not dropped.
    let headers = Headers::new(parts.headers.iter().map(|(k, v)| {
        (
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )
    }));
    Ok(Request {
        method: parts.method,
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body,
    })
}

/// Serves webhooks on `listener` until the process exits; unknown paths get 404 JSON.
pub async fn serve(listener: tokio::net::TcpListener, gw: Arc<Gateway>) {
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
                    let resp = match read(&gw, &sub.config.name, req).await {
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
