//! What the gateway's integration tests share: a gateway opened from YAML, and an HTTP target
//! that records every delivery and answers as the test says.

#![allow(dead_code)] // each test binary uses its own subset

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rouse_eventgrid::{Gateway, GatewayConfig};

/// A gateway opened from a standalone gateway file's text, with its own metrics registry.
pub fn gateway(yaml: &str) -> Arc<Gateway> {
    let config: GatewayConfig = rouse_eventgrid::config::parse(yaml, "test").expect("config");
    Gateway::open(
        &config,
        rouse_eventgrid::metrics::Metrics::new(&prometheus::Registry::new()),
        Default::default(),
    )
    .expect("gateway")
}

/// Posts an Event Grid notification with `body` to the subscription at `/events`, plus `extra`
/// headers, straight into the gateway (no socket).
pub async fn post(
    gw: &Arc<Gateway>,
    body: String,
    extra: &[(&str, &str)],
) -> rouse_eventgrid::Response {
    let sub = gw.subscription_for("/events").expect("sub").clone();
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("aeg-event-type".to_string(), "Notification".to_string()),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    gw.handle(
        &sub,
        rouse_eventgrid::Request {
            method: http::Method::POST,
            query: String::new(),
            headers: rouse_eventgrid::protocol::Headers::new(headers),
            body: Bytes::from(body),
        },
    )
    .await
}

/// What a target answers to its n-th request (0-based).
#[derive(Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// 503 with `Retry-After: <secs>`.
    RetryAfter(u64),
    /// Never answers (a delivery in flight).
    Hang,
}

/// One request a target received.
#[derive(Clone)]
pub struct Hit {
    pub at: Instant,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

pub type Seen = Arc<Mutex<Vec<Hit>>>;

/// A target on a loopback port answering `reply(n)` to its n-th request and recording each.
pub async fn target(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let reply = Arc::new(reply);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (s, reply) = (s.clone(), reply.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let (s, reply) = (s.clone(), reply.clone());
                    async move {
                        let n = record(&s, req).await;
                        let r = match reply(n) {
                            Reply::Status(code) => http::Response::builder().status(code),
                            Reply::RetryAfter(secs) => http::Response::builder()
                                .status(503)
                                .header("retry-after", secs.to_string()),
                            Reply::Hang => std::future::pending().await,
                        };
                        Ok::<_, Infallible>(
                            r.body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap_or_default(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Records `req` in `seen`; returns its index.
async fn record(seen: &Seen, req: http::Request<Incoming>) -> usize {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.push(Hit {
        at: Instant::now(),
        path,
        headers,
        body,
    });
    seen.len() - 1
}
