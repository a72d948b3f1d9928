//! A hostile sender against the standalone server (`server::serve_with`), over raw TCP where
//! the bytes matter (issue #12 item 6): `ce-*` values that are not UTF-8, malformed, abandoned
//! and stalled bodies, and `Expect: 100-continue`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rouse_eventgrid::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

const SUB: &str = "orders";

struct Server {
    gw: Arc<Gateway>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// A CloudEvents subscription (key `k1` in `?code=`) served with `body_timeout`.
async fn server(body_timeout: Duration) -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let yaml = format!(
        "data_dir: {}\nsubscriptions:\n  - name: {SUB}\n    path: /events\n    schema: cloudevents\n    auth: {{keys: [k1], key_query: code}}\n    target: {{url: \"http://127.0.0.1:9\"}}\n    delivery: {{format: cloudevents-binary}}\n",
        dir.path().display()
    );
    let gw = support::gateway(&yaml);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(rouse_eventgrid::server::serve_with(
        listener,
        gw.clone(),
        body_timeout,
    ));
    Server {
        gw,
        addr,
        _dir: dir,
    }
}

impl Server {
    fn pending(&self) -> usize {
        self.gw.subscription_for("/events").expect("sub").pending()
    }

    /// Refusals with `status`, for the reason each status has in these tests.
    fn rejected(&self, status: &str) -> u64 {
        let reason = match status {
            "400" => "bad_header",
            "408" => "body_timeout",
            "499" => "client_closed",
            _ => "unknown",
        };
        self.rejected_for(status, reason)
    }

    fn rejected_for(&self, status: &str, reason: &str) -> u64 {
        self.gw
            .metrics
            .rejected
            .with_label_values(&[SUB, status, reason])
            .get()
    }
}

/// Sends `bytes` on a fresh connection and reads until the server closes or `wait` passes.
async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_for(&mut s, wait).await
}

/// What arrives on `s` within `wait` (or until EOF / one complete JSON answer).
async fn read_for(s: &mut TcpStream, wait: Duration) -> String {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                // A final answer with its (small) body is complete once the JSON closes.
                if text.contains("\r\n\r\n") && (text.ends_with('}') || text.ends_with("\r\n\r\n"))
                {
                    let final_answer = text.split("\r\n\r\n").any(|part| {
                        part.starts_with("HTTP/1.1 2")
                            || part.starts_with("HTTP/1.1 4")
                            || part.starts_with("HTTP/1.1 5")
                    });
                    if final_answer {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn binary_head(id: &[u8], extra: &str, body_len: usize) -> Vec<u8> {
    let mut head = b"POST /events?code=k1 HTTP/1.1\r\nhost: x\r\nce-specversion: 1.0\r\nce-type: com.example.t\r\nce-source: /hostile\r\nce-id: ".to_vec();
    head.extend_from_slice(id);
    head.extend_from_slice(
        format!(
            "\r\n{extra}content-type: application/json\r\ncontent-length: {body_len}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    head
}

fn json_body(answer: &str) -> serde_json::Value {
    let body = answer.split("\r\n\r\n").last().unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"))
}

/// Item 6.1: three distinct events whose `ce-id` carries different invalid bytes used to read
/// as the same U+FFFD id, get 202 each and dedupe into one: two acknowledged events lost.
/// Now each is a 400 naming the subscription and the header, and nothing is stored; a raw
/// (unencoded) but valid UTF-8 value is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ce_header_values_that_are_not_utf8_are_refused_with_400_and_never_acknowledged() {
    let srv = server(Duration::from_secs(5)).await;
    let body = br#"{"n":1}"#;
    for id in [&b"\xff"[..], b"\xfe", b"a\xc0\x80"] {
        let mut req = binary_head(id, "", body.len());
        req.extend_from_slice(body);
        let answer = exchange(srv.addr, &req, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let json = json_body(&answer);
        assert_eq!(json["subscription"], SUB, "{answer}");
        assert_eq!(json["reason"], "bad_header", "{answer}");
        assert!(
            json["message"].as_str().unwrap_or("").contains("ce-id"),
            "names the header: {answer}"
        );
    }
    assert_eq!(srv.pending(), 0, "nothing stored");
    assert_eq!(
        srv.gw.metrics.acknowledged.with_label_values(&[SUB]).get(),
        0,
        "nothing acknowledged"
    );
    assert_eq!(srv.rejected("400"), 3);
    // Raw UTF-8 (sdk-go does not percent-encode) is kept, not refused.
    let mut req = binary_head(b"ok-1", "ce-subject: Euro €\r\n", body.len());
    req.extend_from_slice(body);
    let answer = exchange(srv.addr, &req, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let queued = srv.gw.queued(SUB);
    assert_eq!(queued.len(), 1);
    assert!(queued[0].json.contains("Euro €"), "{}", queued[0].json);
}

/// Item 6.2 (standalone server): a malformed chunked body is `400 bad_body`, a body that stalls
/// is `408 body_timeout` once the body timeout passes (it used to wait forever), a sender that
/// hangs up mid-body is counted (status 499) and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stalled_and_abandoned_bodies_are_400_408_and_counted_on_the_standalone_server() {
    let srv = server(Duration::from_secs(1)).await;
    let head = "POST /events?code=k1 HTTP/1.1\r\nhost: x\r\nce-specversion: 1.0\r\nce-type: t\r\nce-source: /s\r\nce-id: 1\r\ncontent-type: application/json\r\n";
    // Bad chunk size.
    let req = format!("{head}transfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n");
    let answer = exchange(srv.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let json = json_body(&answer);
    assert_eq!(json["subscription"], SUB);
    assert_eq!(json["reason"], "bad_body", "{answer}");
    // Stalled: 10 of 100 bytes, then nothing.
    let started = Instant::now();
    let req = format!("{head}content-length: 100\r\n\r\n{{\"n\":12345");
    let answer = exchange(srv.addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8));
    let json = json_body(&answer);
    assert_eq!(json["subscription"], SUB);
    assert_eq!(json["reason"], "body_timeout", "{answer}");
    // Hang-up mid-body.
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    let req = format!("{head}content-length: 100\r\n\r\n{{\"n\":1");
    s.write_all(req.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.rejected("499") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        srv.rejected("499"),
        1,
        "the hang-up is counted (400: {})",
        srv.rejected_for("400", "bad_body")
    );
    assert_eq!(srv.rejected_for("400", "bad_body"), 1);
    assert_eq!(srv.rejected("408"), 1);
    assert_eq!(srv.pending(), 0);
}

/// Item 6.4 (standalone server): hyper sends `100 Continue` when the body is first read, so the
/// head is checked before that: a wrong key gets its 401 at once, with no `100 Continue` and
/// without the body ever being sent; a good request gets the 100, then its 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_only_after_the_head_passed_its_checks() {
    let srv = server(Duration::from_secs(5)).await;
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048));
    let head = |key: &str| {
        format!(
            "POST /events?code={key} HTTP/1.1\r\nhost: x\r\nce-specversion: 1.0\r\nce-type: t\r\nce-source: /s\r\nce-id: e-{key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
            body.len()
        )
    };
    // Wrong key: the final answer, no 100, and the body is never needed.
    let answer = exchange(srv.addr, head("wrong").as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    // Right key: 100 first, then (after the body) 202.
    let mut s = TcpStream::connect(srv.addr).await.expect("connect");
    s.write_all(head("k1").as_bytes()).await.expect("write");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("100 Continue before the body")
        .expect("read");
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(body.as_bytes()).await.expect("body");
    let rest = read_for(&mut s, Duration::from_secs(5)).await;
    let answer = format!("{interim}{rest}");
    assert!(answer.contains("HTTP/1.1 202"), "{answer}");
    assert_eq!(srv.pending(), 1);
}
