//! `hello-fn`: a tiny HTTP "function" for the demo and the tests.
//!
//! Environment: `PORT` (required), `HOST` (default 127.0.0.1), `STARTUP_DELAY_MS` (time to
//! "boot" before listening, modelling a cold start), `START_GATE_FILE` (listen only once this
//! file exists: lets a benchmark hold requests as long as it needs), `ROUSE_REPLICA` (name in answers),
//! `LOG_REQUESTS=1` (one log line per request). Speaks HTTP/1.1 and h2c.
//!
//! Paths: `/` greeting · `/healthz` · `/sleep?ms=N` · `/echo` (streams the body back) ·
//! `/bytes?n=N` (streams N bytes) · `/count` (reads the body, answers its length) · `/ws`
//! (WebSocket echo) · `/crash` (exits with status 3) · `/headers` (request headers as text) ·
//! `/stats` (most requests this replica ever had in flight at once) · `/events` and
//! `/runtime/webhooks/EventGrid` (event sink: `EVENT_LOG`, `CRASH_AFTER_EVENTS`).
//!
//! `IGNORE_SIGTERM=1` makes it ignore SIGTERM (to exercise the supervisor's SIGKILL).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt, stream};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, hyper::Error>;

/// Requests in flight now, and the most ever at once (for concurrency-cap tests).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
        MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(text.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// Event deliveries handled so far by this process (for `CRASH_AFTER_EVENTS`).
static EVENT_REQUESTS: AtomicUsize = AtomicUsize::new(0);

/// An event sink for the gateway tests: appends each request body as one line to `EVENT_LOG`
/// (append + fsync, so a crash right after does not lose it), then answers 200.
/// `CRASH_AFTER_EVENTS=N` exits (status 3) on the N+1-th delivery *before* recording it, like a
/// target dying mid-delivery (once per `CRASH_ONCE_FILE`, if set).
async fn record_event(req: Request<Incoming>) -> Response<Body> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return full(StatusCode::BAD_REQUEST, format!("body error: {e}\n")),
    };
    let n = EVENT_REQUESTS.fetch_add(1, Ordering::SeqCst);
    if let Some(limit) = std::env::var("CRASH_AFTER_EVENTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        && n >= limit
    {
        // `CRASH_ONCE_FILE`: crash only if this file does not exist yet (and create it), so the
        // restarted replica carries on.
        let once = std::env::var("CRASH_ONCE_FILE").ok();
        let first = once.as_ref().is_none_or(|f| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(f)
                .is_ok()
        });
        if first {
            println!("crashing on event delivery {n}");
            std::process::exit(3);
        }
    }
    if let Ok(path) = std::env::var("EVENT_LOG") {
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            let mut line = body.to_vec();
            line.retain(|b| *b != b'\n');
            line.push(b'\n');
            f.write_all(&line)?;
            f.sync_data()
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            return full(
                StatusCode::INTERNAL_SERVER_ERROR,
                "event log not writable\n",
            );
        }
    }
    full(StatusCode::OK, "recorded\n")
}

async fn handle(req: Request<Incoming>, name: String) -> Result<Response<Body>, Infallible> {
    if std::env::var("LOG_REQUESTS").is_ok_and(|v| v == "1") {
        println!(
            "request {} {} {:?}",
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
            req.version()
        );
    }
    let path = req.uri().path().to_string();
    let _in_flight = (path != "/healthz" && path != "/stats").then(InFlight::enter);
    let resp = match path.as_str() {
        "/healthz" => full(StatusCode::OK, "ok\n"),
        "/stats" => full(
            StatusCode::OK,
            format!("max_in_flight={}\n", MAX_IN_FLIGHT.load(Ordering::SeqCst)),
        ),
        "/" => full(StatusCode::OK, format!("hello from {name}\n")),
        "/headers" => {
            let mut s = String::new();
            for (k, v) in req.headers() {
                s.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            s.push_str(&format!("uri: {}\n", req.uri()));
            full(StatusCode::OK, s)
        }
        "/sleep" => {
            let ms = query_u64(&req, "ms").unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            full(StatusCode::OK, format!("slept {ms} ms on {name}\n"))
        }
        "/echo" => {
            let body = req.into_body().map_err(|e| e).boxed();
            Response::new(body)
        }
        "/count" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => {
                        return Ok(full(StatusCode::BAD_REQUEST, format!("body error: {e}\n")));
                    }
                }
            }
            full(StatusCode::OK, format!("{n}\n"))
        }
        "/bytes" => {
            let n = query_u64(&req, "n").unwrap_or(1024);
            const CHUNK: u64 = 64 * 1024;
            let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
            let chunks = stream::iter((0..n.div_ceil(CHUNK)).map(move |i| {
                let len = CHUNK.min(n - i * CHUNK) as usize;
                Ok::<_, hyper::Error>(Frame::data(chunk.slice(..len)))
            }));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
            r.headers_mut().insert("content-length", n.into());
            r
        }
        "/crash" => {
            println!("crashing on request");
            std::process::exit(3);
        }
        "/ws" => return Ok(websocket(req)),
        "/events" | "/runtime/webhooks/EventGrid" => return Ok(record_event(req).await),
        _ => full(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return full(StatusCode::BAD_REQUEST, "not a websocket request\n");
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.insert("connection", "upgrade".parse().expect("static header"));
    h.insert("upgrade", "websocket".parse().expect("static header"));
    if let Ok(v) = derive_accept_key(key.as_bytes()).parse() {
        h.insert("sec-websocket-accept", v);
    }
    r
}

#[tokio::main]
async fn main() {
    let port: u16 = match std::env::var("PORT").ok().and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => {
            eprintln!("hello-fn: set PORT to the port to listen on");
            std::process::exit(2);
        }
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let name = std::env::var("ROUSE_REPLICA").unwrap_or_else(|_| "hello-fn".into());
    let delay = std::env::var("STARTUP_DELAY_MS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    // Benchmarks hold requests until they have measured the proxy, then let the app start.
    if let Ok(gate) = std::env::var("START_GATE_FILE") {
        while !std::path::Path::new(&gate).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let addr: SocketAddr = match format!("{host}:{port}").parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hello-fn: bad HOST/PORT: {e}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello-fn: bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    let ready_unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    println!(
        "hello-fn started name={name} pid={} addr={addr} startup_delay_ms={delay} ready_unix_us={ready_unix_us}",
        std::process::id()
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hello-fn: signal handler: {e}");
            std::process::exit(1);
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // Small h2 frames must not wait for the peer's delayed ACK (Nagle).
                let _ = stream.set_nodelay(true);
                let name = name.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, name.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = term.recv() => {
                if std::env::var("IGNORE_SIGTERM").is_ok_and(|v| v == "1") {
                    println!("hello-fn ignoring SIGTERM name={name}");
                    continue;
                }
                println!("hello-fn stopping name={name} (SIGTERM)");
                return;
            }
        }
    }
}
