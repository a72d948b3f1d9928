//! Clients that try to hang or pin the proxy, over raw sockets as such a client would: a
//! connection that sends nothing or trickles its head, idle keep-alives, more connections than the
//! cap, a client that never reads its response, pipelining, and heads that RFC 9112 forbids.
//! Every limit is set short in the test's config; each test first proves the precondition (the
//! connection really was open, the slot really was taken) before it asserts the outcome.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rouse_e2e::{App, Rouse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An app that is never asked for (Rouse wants at least one).
fn idle() -> App {
    App::hello("idle")
}

/// Short limits so the tests run in seconds.
const LIMITS: &str = "  connections: {header_timeout_ms: 600, keepalive_timeout_secs: 1}\n";

/// Reads until the peer closes (or `within` passes: `None`), returning everything read.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| out)
}

/// True when nothing arrives and the connection stays open for `d`.
async fn still_open(s: &mut TcpStream, d: Duration) -> bool {
    let mut b = [0u8; 1];
    tokio::time::timeout(d, s.read(&mut b)).await.is_err()
}

/// The status code and the JSON body of one raw response.
fn status_and_json(raw: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, json)
}

/// An h2c (prior knowledge) client connection, ready to send, and its PING sender.
async fn h2c(addr: SocketAddr) -> (h2::client::SendRequest<bytes::Bytes>, h2::PingPong) {
    let (client, mut conn) = h2::client::handshake(connect(addr).await)
        .await
        .expect("h2c handshake");
    let ping = conn.ping_pong().expect("ping_pong");
    tokio::spawn(conn);
    (client.ready().await.expect("ready"), ping)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let rouse = Rouse::start_with(&[idle()], LIMITS).await;
    let mut s = connect(rouse.proxy).await;
    let opened = Instant::now();
    assert!(
        still_open(&mut s, Duration::from_millis(300)).await,
        "precondition: the connection is accepted and open"
    );
    let got = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("closed within the header timeout");
    assert!(got.is_empty(), "nothing was asked, nothing is answered");
    let after = opened.elapsed();
    assert!(
        (Duration::from_millis(550)..Duration::from_secs(3)).contains(&after),
        "closed after {after:?}, the header timeout being 600 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_a_byte_at_a_time_gets_408_at_the_header_timeout() {
    let rouse = Rouse::start_with(&[idle()], LIMITS).await;
    let mut s = connect(rouse.proxy).await;
    let head = b"GET / HTTP/1.1\r\nHost: trickle.localhost\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut sent = 0;
    // One byte every 50 ms: the whole head would take ~5 s.
    let mut answer = Vec::new();
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        sent += 1;
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            answer.extend_from_slice(&buf[..n]);
            break;
        }
    }
    assert!(
        sent > 5,
        "precondition: the proxy took bytes of the head ({sent})"
    );
    assert!(sent < head.len(), "answered before the head was complete");
    if let Some(rest) = read_to_close(&mut s, Duration::from_secs(3)).await {
        answer.extend_from_slice(&rest);
    }
    let (status, json) = status_and_json(&answer);
    assert_eq!(status, 408);
    assert_eq!(json["reason"], "header_timeout");
    let after = started.elapsed();
    assert!(
        after < Duration::from_secs(3),
        "the trickle was cut at the header timeout, not let run ({after:?})"
    );
    let refused = rouse
        .metric("rouse_proxy_rejections_total{reason=\"header_timeout\",route=\"-\"}")
        .await;
    assert_eq!(refused, Some(1.0), "counted under its reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_after_the_keepalive_timeout() {
    let rouse = Rouse::start_with(&[idle()], LIMITS).await;
    let mut s = connect(rouse.proxy).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("answer");
    let (status, _) = status_and_json(&buf[..n]);
    assert_eq!(
        status, 404,
        "precondition: a request was answered on the connection"
    );
    let answered = Instant::now();
    assert!(
        still_open(&mut s, Duration::from_millis(500)).await,
        "precondition: the connection is kept alive after its answer"
    );
    read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("the idle connection is closed");
    let idle = answered.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&idle),
        "closed after {idle:?} idle, the keep-alive timeout being 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_get_503_and_service_resumes_when_they_close() {
    let rouse = Rouse::start_with(
        &[idle()],
        "  connections: {max: 4, header_timeout_ms: 60000}\n",
    )
    .await;
    // The harness's own readiness probe connected once: wait until it is gone, so the four
    // below are the only connections counted against the cap.
    rouse
        .wait_for("no open connection", Duration::from_secs(5), || async {
            rouse.metric("rouse_proxy_connections").await == Some(0.0)
        })
        .await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(connect(rouse.proxy).await);
    }
    rouse
        .wait_for("4 open connections", Duration::from_secs(5), || async {
            rouse.metric("rouse_proxy_connections").await == Some(4.0)
        })
        .await;
    let mut over = connect(rouse.proxy).await;
    let raw = read_to_close(&mut over, Duration::from_secs(5))
        .await
        .expect("the fifth connection is answered and closed");
    let (status, json) = status_and_json(&raw);
    assert_eq!(status, 503);
    assert_eq!(json["reason"], "connection_limit");
    assert_eq!(
        rouse.metric("rouse_proxy_connections_refused_total").await,
        Some(1.0)
    );
    assert!(
        rouse.count_output("Connection limit reached") >= 1,
        "a log line says why"
    );
    drop(open);
    rouse
        .wait_for(
            "the idle connections gone",
            Duration::from_secs(5),
            || async { rouse.metric("rouse_proxy_connections").await == Some(0.0) },
        )
        .await;
    let r = rouse.get("nobody.localhost", "/").await;
    assert_eq!(r.status, 404, "a normal client is served again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_response_frees_the_endpoint_slot_at_the_send_timeout() {
    let app = App::hello("pinned")
        .with("replicas: {min: 1, max: 1}")
        .with("endpoint_concurrency: 1")
        .with("cold_start: {hold_timeout_ms: 30000}");
    let rouse = Rouse::start_with(
        std::slice::from_ref(&app),
        "  connections: {send_timeout_secs: 1}\n",
    )
    .await;
    assert_eq!(rouse.get("pinned.localhost", "/").await.status, 200);
    // 256 MiB that this client never reads: the socket buffers fill and the proxy's write
    // blocks, with the app's only slot taken.
    let mut hog = connect(rouse.proxy).await;
    hog.write_all(b"GET /bytes?n=268435456 HTTP/1.1\r\nHost: pinned.localhost\r\n\r\n")
        .await
        .expect("write");
    rouse
        .wait_for(
            "the hog's request in flight",
            Duration::from_secs(10),
            || async {
                rouse
                    .metric("rouse_proxy_requests_in_flight{route=\"pinned\"}")
                    .await
                    == Some(1.0)
            },
        )
        .await;
    let started = Instant::now();
    let r = rouse.get("pinned.localhost", "/").await;
    assert_eq!(
        r.status,
        200,
        "served once the hog's slot is freed: {}",
        r.text()
    );
    assert_eq!(
        r.header("x-rouse-cold-start"),
        Some("true"),
        "precondition: the request waited for the slot"
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "freed by the 1 s send timeout, not the hold timeout ({waited:?})"
    );
    drop(hog);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let app = App::hello("pipe").with("replicas: {min: 1, max: 1}");
    let rouse = Rouse::start(&app).await;
    assert_eq!(rouse.get("pipe.localhost", "/").await.status, 200);
    let mut s = connect(rouse.proxy).await;
    let mut batch = String::new();
    for i in 0..3 {
        batch.push_str(&format!(
            "GET /headers?seq={i} HTTP/1.1\r\nHost: pipe.localhost\r\n\r\n"
        ));
    }
    batch.push_str("POST /echo HTTP/1.1\r\nHost: pipe.localhost\r\nContent-Length: 5\r\n\r\nhello");
    batch.push_str(
        "GET /headers?seq=last HTTP/1.1\r\nHost: pipe.localhost\r\nConnection: close\r\n\r\n",
    );
    s.write_all(batch.as_bytes()).await.expect("one write");
    let raw = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("all answered, then closed");
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        5,
        "five answers: {text}"
    );
    let order: Vec<usize> = ["seq=0", "seq=1", "seq=2", "hello", "seq=last"]
        .iter()
        .map(|m| {
            text.find(m)
                .unwrap_or_else(|| panic!("{m} missing: {text}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {order:?}");
}

/// Heads RFC 9112 forbids, each with what the answer must be.
const FORBIDDEN: &[(&str, &str, u16, &str)] = &[
    (
        "two spaces",
        "GET  /a HTTP/1.1\r\nHost: h.localhost\r\n\r\n",
        400,
        "bad_request",
    ),
    ("HTTP/0.9", "GET /a\r\n\r\n", 400, "bad_request"),
    (
        "Content-Length with Transfer-Encoding",
        "POST /echo HTTP/1.1\r\nHost: h.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "two Content-Lengths",
        "POST /echo HTTP/1.1\r\nHost: h.localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
        "bad_request",
    ),
    (
        "a comma-listed Content-Length",
        "POST /echo HTTP/1.1\r\nHost: h.localhost\r\nContent-Length: 2, 2\r\n\r\nab",
        400,
        "bad_request",
    ),
    (
        "an obsolete line fold",
        "GET /a HTTP/1.1\r\nHost: h.localhost\r\nX-A: 1\r\n folded\r\n\r\n",
        400,
        "bad_request",
    ),
    (
        "a bare CR",
        "GET /a HTTP/1.1\r\nHost: h.localhost\rX-A: 1\r\n\r\n",
        400,
        "bad_request",
    ),
    ("no Host", "GET /a HTTP/1.1\r\n\r\n", 400, "bad_request"),
    (
        "Transfer-Encoding not ending in chunked",
        "POST /echo HTTP/1.1\r\nHost: h.localhost\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
        "bad_request",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_rfc_9112_forbids_are_refused_with_json_and_never_forwarded() {
    let app = App::hello("h").with("replicas: {min: 1, max: 1}");
    let rouse = Rouse::start(&app).await;
    assert_eq!(rouse.get("h.localhost", "/warm").await.status, 404);
    let mut cases: Vec<(String, String, u16, &str)> = FORBIDDEN
        .iter()
        .map(|(n, h, s, r)| (n.to_string(), h.to_string(), *s, *r))
        .collect();
    cases.push((
        "a request line over 16 KiB".into(),
        format!(
            "GET /{} HTTP/1.1\r\nHost: h.localhost\r\n\r\n",
            "a".repeat(17 * 1024)
        ),
        414,
        "uri_too_long",
    ));
    let fields: String = (0..101).map(|i| format!("X-F{i}: v\r\n")).collect();
    cases.push((
        "101 header fields".into(),
        format!("GET /a HTTP/1.1\r\nHost: h.localhost\r\n{fields}\r\n"),
        431,
        "header_too_large",
    ));
    cases.push((
        "a 70 KiB head".into(),
        format!(
            "GET /a HTTP/1.1\r\nHost: h.localhost\r\nX-Big: {}\r\n\r\n",
            "b".repeat(70 * 1024)
        ),
        431,
        "header_too_large",
    ));
    for (name, head, want_status, want_reason) in &cases {
        let mut s = connect(rouse.proxy).await;
        s.write_all(head.as_bytes()).await.expect("write");
        let raw = read_to_close(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{name}: answered and closed"));
        let (status, json) = status_and_json(&raw);
        assert_eq!(status, *want_status, "{name}: {json}");
        assert_eq!(json["reason"], *want_reason, "{name}: {json}");
        if *want_status == 400 {
            assert!(
                json["detail"].is_string(),
                "{name}: the detail names the rule: {json}"
            );
        }
    }
    // A positive control on the same app: a valid request is logged by it.
    assert_eq!(rouse.get("h.localhost", "/a").await.status, 404);
    rouse.settle().await;
    let app_lines = rouse.count_output("request GET /a") + rouse.count_output("request POST /echo");
    assert_eq!(app_lines, 1, "only the valid request reached the app");
}

/// The deterministic form of an h2 "rapid reset": streams held while their app is at zero (so
/// Rouse has surely accepted them) are reset by the client; once the app is up they are dropped,
/// not forwarded. (Streams reset before Rouse accepts them never surface at all: h2 drops them,
/// and answers a connection with more than 20 of those with GOAWAY.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_the_client_resets_are_never_forwarded_to_the_app() {
    let gate = std::env::temp_dir().join(format!("rouse-rr-gate-{}", std::process::id()));
    let _ = std::fs::remove_file(&gate);
    let app = App::hello("rr")
        .with("replicas: {min: 0, max: 1}")
        .env("START_GATE_FILE", &gate.display().to_string());
    let rouse = Rouse::start(&app).await;
    let (mut client, mut ping) = h2c(rouse.proxy).await;
    const RESETS: usize = 10;
    let mut streams = Vec::new();
    for i in 0..RESETS {
        let req = http::Request::get(format!("http://rr.localhost/headers?rr={i}"))
            .body(())
            .expect("request");
        // Without END_STREAM: a request whose body is still open, which the hold cannot watch.
        let (response, stream) = client.send_request(req, false).expect("send");
        streams.push((response, stream));
        client = client.ready().await.expect("ready");
    }
    rouse
        .wait_for("every stream held", Duration::from_secs(10), || async {
            rouse
                .metric("rouse_proxy_held_requests{route=\"rr\"}")
                .await
                == Some(RESETS as f64)
        })
        .await;
    for (_, stream) in &mut streams {
        stream.send_reset(h2::Reason::CANCEL);
    }
    // The server handles a connection's frames in order: its PONG means it has the resets.
    ping.ping(h2::Ping::opaque()).await.expect("pong");
    std::fs::write(&gate, b"").expect("open the gate");
    // A positive control: a request that is not reset reaches the app.
    let r = rouse.get("rr.localhost", "/headers?rr=control").await;
    assert_eq!(r.status, 200, "{}", r.text());
    rouse
        .wait_for(
            "every reset stream dropped",
            Duration::from_secs(10),
            || async {
                rouse
                    .metric("rouse_proxy_rejections_total{reason=\"client_closed\",route=\"rr\"}")
                    .await
                    == Some(RESETS as f64)
            },
        )
        .await;
    rouse.settle().await;
    let _ = std::fs::remove_file(&gate);
    assert_eq!(
        rouse.count_output("request GET /headers?rr="),
        1,
        "only the control request reached the app"
    );
}
