//! The event gateway inside `rouse local`: Event Grid deliveries to an app at zero through the
//! proxy, with the real binaries on loopback. The app (`hello-fn`'s event sink) appends every
//! delivery to a file; the tests count events there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use rouse_e2e::{App, Launch, Rouse};

fn event(i: usize) -> String {
    format!(
        r#"{{"id":"ev-{i}","topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a","subject":"/blobServices/default/containers/c/blobs/{i}","eventType":"Microsoft.Storage.BlobCreated","eventTime":"2026-11-28T18:41:00.9584103Z","data":{{"contentLength":{i}}},"dataVersion":"","metadataVersion":"1"}}"#
    )
}

fn batch(range: std::ops::Range<usize>) -> String {
    let events: Vec<String> = range.map(event).collect();
    format!("[{}]", events.join(","))
}

fn gateway_yaml(data: &Path, delivery: &str) -> String {
    format!(
        "event_gateway:\n  data_dir: {}\n  subscriptions:\n    - name: blobs\n      path: /webhooks/blobs\n      auth: {{keys: [k1], key_query: code}}\n      target: {{app: sink, path: /events}}\n      delivery: {delivery}\n",
        data.display()
    )
}

async fn post(rouse: &Rouse, body: String) -> u16 {
    let req = http::Request::post(format!("http://{}/webhooks/blobs?code=k1", rouse.proxy))
        .header("host", "events.example.com")
        .header("content-type", "application/json")
        .header("aeg-event-type", "Notification")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    rouse.request(req).await.expect("answered").status
}

/// Event ids in the sink's log → how many times each was delivered.
fn delivered(log: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let events: Vec<serde_json::Value> = serde_json::from_str(line).unwrap_or_default();
        for e in events {
            if let Some(id) = e["id"].as_str() {
                *counts.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

async fn wait_delivered(
    rouse: &Rouse,
    log: &Path,
    n: usize,
    timeout: Duration,
) -> BTreeMap<String, usize> {
    let start = Instant::now();
    loop {
        let d = delivered(log);
        if d.len() >= n {
            // Let in-flight duplicates, if any, show up before counting.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return delivered(log);
        }
        assert!(
            start.elapsed() < timeout,
            "{} of {n} events delivered after {timeout:?}\n{}",
            d.len(),
            rouse.output().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scratch directory, removed when the test ends.
struct Dir(PathBuf);

impl std::ops::Deref for Dir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("rouse-events-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    Dir(d)
}

fn sink(log: &Path) -> App {
    App::hello("sink")
        .with("replicas: {min: 0, max: 1}")
        .with("scaledown_period_secs: 60")
        .env("EVENT_LOG", &log.display().to_string())
        .env("LOG_REQUESTS", "0")
}

/// Rouse with the event sink app `sink` at zero and the event gateway `gateway(queue dir)`
/// feeding it; the scratch directory (kept alive by the caller) and the sink's event log.
async fn launch_with_sink(name: &str, gateway: impl Fn(&Path) -> String) -> (Dir, PathBuf, Rouse) {
    let d = dir(name);
    let log = d.join("events.log");
    let apps = [sink(&log)];
    let extra = gateway(&d.join("queue"));
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;
    (d, log, rouse)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_at_zero_receives_every_event_of_a_5000_event_batch_exactly_once() {
    let d = dir("5000");
    let log = d.join("events.log");
    let apps = [sink(&log)];
    let extra = gateway_yaml(
        &d.join("queue"),
        "{batching: per-batch, max_events: 100, concurrency: 4}",
    );
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;
    assert_eq!(rouse.ready_replicas("sink").await, 0, "starts at zero");
    let started = Instant::now();
    assert_eq!(
        post(&rouse, batch(0..5000)).await,
        200,
        "acknowledged after the durable write"
    );
    let acked = started.elapsed();
    // The sender retries part of it (a late ack): absorbed by dedupe.
    assert_eq!(post(&rouse, batch(0..100)).await, 200);
    let counts = wait_delivered(&rouse, &log, 5000, Duration::from_secs(60)).await;
    println!(
        "5000 events acknowledged in {acked:?}, all delivered after {:?}",
        started.elapsed()
    );
    assert_eq!(counts.len(), 5000, "every event");
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "exactly once: {dups:?}");
    let metrics = rouse.metrics().await;
    assert!(
        metrics.contains("rouse_events_deduplicated_total{subscription=\"blobs\"} 100"),
        "{metrics}"
    );
    assert!(metrics.contains("rouse_events_delivered_total{subscription=\"blobs\"} 5000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_crashes_mid_delivery_loses_nothing() {
    let d = dir("crash");
    let log = d.join("events.log");
    let apps = [sink(&log)
        .env("CRASH_AFTER_EVENTS", "5")
        .env("CRASH_ONCE_FILE", &d.join("crashed").display().to_string())];
    let extra = gateway_yaml(
        &d.join("queue"),
        "{concurrency: 1, retry: {initial_backoff_ms: 100, max_backoff_ms: 1000}}",
    );
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;
    assert_eq!(post(&rouse, batch(0..20)).await, 200);
    let counts = wait_delivered(&rouse, &log, 20, Duration::from_secs(60)).await;
    assert!(
        d.join("crashed").exists(),
        "the target did crash mid-delivery"
    );
    assert_eq!(counts.len(), 20, "nothing lost");
    assert!(
        counts.values().all(|n| *n == 1),
        "the delivery it died on was redelivered once: {counts:?}"
    );
    let metrics = rouse.metrics().await;
    assert!(
        metrics.contains("rouse_events_retried_total{subscription=\"blobs\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_and_are_delivered_after_a_restart() {
    let d = dir("kill9");
    let log = d.join("events.log");
    let gate = d.join("gate");
    // The app cannot start while the gate file is missing: events are acknowledged and wait.
    let apps = [sink(&log).env("START_GATE_FILE", &gate.display().to_string())];
    let extra = gateway_yaml(
        &d.join("queue"),
        "{concurrency: 2, retry: {initial_backoff_ms: 100, max_backoff_ms: 500}}",
    );
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;
    assert_eq!(post(&rouse, batch(0..50)).await, 200);
    assert_eq!(post(&rouse, batch(50..100)).await, 200);
    rouse.signal("KILL");
    drop(rouse);

    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;
    std::fs::write(&gate, b"open").expect("gate");
    let counts = wait_delivered(&rouse, &log, 100, Duration::from_secs(60)).await;
    assert_eq!(
        counts.len(),
        100,
        "every acknowledged event delivered after the restart"
    );
    assert!(
        rouse
            .output()
            .iter()
            .any(|l| l.contains("Recovered pending events.")),
        "{}",
        rouse.output().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_and_auth_are_answered_by_rouse_while_the_target_is_at_zero() {
    let (_dir, _log, rouse) = launch_with_sink("handshake", |q| gateway_yaml(q, "{}")).await;
    let validation = r#"[{"id":"v","topic":"t","subject":"","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","eventTime":"2026-01-01T00:00:00Z","data":{"validationCode":"CODE-1"}}]"#;
    let req = http::Request::post(format!("http://{}/webhooks/blobs?code=k1", rouse.proxy))
        .header("content-type", "application/json")
        .header("aeg-event-type", "SubscriptionValidation")
        .body(Full::new(Bytes::from_static(validation.as_bytes())))
        .expect("request");
    let r = rouse.request(req).await.expect("answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"validationResponse":"CODE-1"}"#);
    assert_eq!(r.header("content-length"), Some("31"), "not chunked");
    let req = http::Request::post(format!("http://{}/webhooks/blobs?code=wrong", rouse.proxy))
        .header("aeg-event-type", "Notification")
        .body(Full::new(Bytes::from(batch(0..1))))
        .expect("request");
    let r = rouse.request(req).await.expect("answered");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["subscription"], "blobs");
    // Longer than the app would take to start had anything woken it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rouse.count_output("hello-fn started"),
        0,
        "nothing woke the app"
    );
    assert_eq!(rouse.ready_replicas("sink").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_delivery_gets_413_from_the_proxy_before_its_body_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, _log, rouse) = launch_with_sink("413", |q| gateway_yaml(q, "{}")).await;
    // Declares 3 MiB (the cap is 2 MiB) and sends only the head.
    let mut s = tokio::net::TcpStream::connect(rouse.proxy)
        .await
        .expect("connect");
    let head = format!(
        "POST /webhooks/blobs?code=k1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\naeg-event-type: Notification\r\ncontent-length: {}\r\n\r\n",
        3 * 1024 * 1024
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered before the body")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("body_too_large"), "{text}");
}

// --- A hostile sender (issue #12 item 6): the proxy-mounted webhook over raw TCP and curl. ---

/// The key of [`hostile_yaml`]'s subscriptions: it must never show in Rouse's output.
const SECRET: &str = "SECRET-KEY-XYZ";

/// `blobs` (Event Grid, `/webhooks/blobs`) and `ce` (CloudEvents, `/webhooks/ce`), key
/// [`SECRET`] in `?code=`.
fn hostile_yaml(data: &Path) -> String {
    format!(
        "event_gateway:\n  data_dir: {}\n  subscriptions:\n    - name: blobs\n      path: /webhooks/blobs\n      auth: {{keys: [{SECRET}], key_query: code}}\n      target: {{app: sink, path: /events}}\n    - name: ce\n      path: /webhooks/ce\n      schema: cloudevents\n      auth: {{keys: [{SECRET}], key_query: code}}\n      target: {{app: sink, path: /events}}\n      delivery: {{format: cloudevents-binary}}\n",
        data.display()
    )
}

/// What arrives on `s` within `wait`: until EOF, or a final (non-1xx) answer whose JSON body
/// (or empty body) is complete.
async fn read_answer(s: &mut tokio::net::TcpStream, wait: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                let final_answer = text
                    .split("\r\n\r\n")
                    .any(|p| p.starts_with("HTTP/1.1 ") && !p.starts_with("HTTP/1.1 1"));
                if final_answer && (text.ends_with('}') || text.ends_with("\r\n\r\n")) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `bytes` on a fresh connection to the proxy and reads the answer.
async fn exchange(rouse: &Rouse, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(rouse.proxy)
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    read_answer(&mut s, wait).await
}

fn answer_json(answer: &str) -> serde_json::Value {
    let body = answer.split("\r\n\r\n").last().unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"))
}

/// Connects, sends `bytes` (a head and part of a body) and hangs up.
async fn hang_up_after(rouse: &Rouse, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(rouse.proxy)
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
}

fn eg_head(query: &str, framing: &str) -> String {
    format!(
        "POST /webhooks/blobs?{query} HTTP/1.1\r\nhost: events.example.com\r\ncontent-type: application/json\r\naeg-event-type: Notification\r\n{framing}\r\n"
    )
}

/// Item 6.1 end to end: `ce-id` bytes that are not UTF-8 used to be read lossily (three
/// distinct events → one U+FFFD id → 202 each, deduped into one). Through the proxy each is now
/// a 400 naming the subscription and the header, nothing is acknowledged, and a raw valid
/// UTF-8 `ce-subject` is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ce_ids_that_are_not_utf8_are_refused_with_400_through_the_proxy() {
    let (_dir, _log, rouse) = launch_with_sink("not-utf8", hostile_yaml).await;
    let body = br#"{"n":1}"#;
    let request = |id: &[u8], extra_header: &str| {
        let mut r = format!("POST /webhooks/ce?code={SECRET} HTTP/1.1\r\nhost: events.example.com\r\nce-specversion: 1.0\r\nce-type: com.example.t\r\nce-source: /hostile\r\n{extra_header}ce-id: ").into_bytes();
        r.extend_from_slice(id);
        r.extend_from_slice(
            format!(
                "\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        r.extend_from_slice(body);
        r
    };
    for id in [&b"\xff"[..], b"\xfe", b"x\xc3"] {
        let answer = exchange(&rouse, &request(id, ""), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let json = answer_json(&answer);
        assert_eq!(json["subscription"], "ce", "{answer}");
        assert_eq!(json["reason"], "bad_header", "{answer}");
        assert!(
            json["message"].as_str().unwrap_or("").contains("ce-id"),
            "{answer}"
        );
    }
    let metrics = rouse.metrics().await;
    assert!(
        !metrics.contains("rouse_events_acknowledged_total{subscription=\"ce\"}"),
        "nothing acknowledged: {metrics}"
    );
    assert!(
        metrics
            .contains("rouse_event_requests_rejected_total{reason=\"bad_header\",status=\"400\",subscription=\"ce\"} 3"),
        "{metrics}"
    );
    // Raw (not percent-encoded) but valid UTF-8: kept.
    let answer = exchange(
        &rouse,
        &request(b"fine-1", "ce-subject: Euro €\r\n"),
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
}

/// Item 6.2 end to end: body errors on the proxy-mounted webhook used to be
/// `502 {"route":null,"reason":"upstream_error"}` (pingora's fail_to_proxy). A bad chunk is now
/// `400 bad_body`, a stalled body `408 body_timeout` after the 30 s body timeout, both naming
/// the subscription; a hang-up gets nothing and is counted as 499; none is logged as a proxy
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_body_errors_are_400_or_408_naming_the_subscription_not_502() {
    let (_dir, _log, rouse) = launch_with_sink("body-errors", hostile_yaml).await;
    let query = format!("code={SECRET}");
    // Bad chunk size.
    let req = format!(
        "{}zz\r\n[]\r\n0\r\n\r\n",
        eg_head(&query, "transfer-encoding: chunked\r\n")
    );
    let answer = exchange(&rouse, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let json = answer_json(&answer);
    assert_eq!(json["subscription"], "blobs", "{answer}");
    assert_eq!(json["reason"], "bad_body", "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // Hang-up mid-body.
    hang_up_after(
        &rouse,
        format!("{}[{{\"id\"", eg_head(&query, "content-length: 500\r\n")).as_bytes(),
    )
    .await;
    // Stalled: 5 of 500 bytes, then nothing until the body timeout.
    let started = Instant::now();
    let req = format!("{}[{{\"id\"", eg_head(&query, "content-length: 500\r\n"));
    let answer = exchange(&rouse, req.as_bytes(), Duration::from_secs(45)).await;
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let json = answer_json(&answer);
    assert_eq!(json["subscription"], "blobs", "{answer}");
    assert_eq!(json["reason"], "body_timeout", "{answer}");
    assert!(
        waited >= Duration::from_secs(29) && waited < Duration::from_secs(40),
        "{waited:?}"
    );
    let metrics = rouse.metrics().await;
    for (status, reason) in [
        ("400", "bad_body"),
        ("408", "body_timeout"),
        ("499", "client_closed"),
    ] {
        let line = format!(
            "rouse_event_requests_rejected_total{{reason=\"{reason}\",status=\"{status}\",subscription=\"blobs\"}} 1"
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    rouse.settle().await;
    let output = rouse.output().join("\n");
    assert!(!output.contains("upstream_error"), "{output}");
    assert!(
        !output.contains("Fail to"),
        "no proxy failure logged: {output}"
    );
}

/// Item 6.3: keys never appear in Rouse's output (at `trace`, the most verbose level) nor in
/// `/metrics`, whatever way a webhook request with the key in its query fails: bad chunk,
/// hang-up mid-body, wrong key, oversized body, refused header; nor for an app request with a
/// `?code=` whose client hangs up while it is held (pingora logs that one as an error, naming
/// the request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_the_query_never_appear_in_rouse_output_or_metrics() {
    let d = dir("no-keys");
    let gate = d.join("gate");
    // The app never starts: an app request is held until its client hangs up.
    let apps = [sink(&d.join("events.log")).env("START_GATE_FILE", &gate.display().to_string())];
    let extra = hostile_yaml(&d.join("queue"));
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        log: "trace",
        ..Launch::default()
    })
    .await;
    let query = format!("code={SECRET}");
    // Bad chunk.
    let req = format!(
        "{}zz\r\n[]\r\n0\r\n\r\n",
        eg_head(&query, "transfer-encoding: chunked\r\n")
    );
    let answer = exchange(&rouse, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Hang-up mid-body.
    hang_up_after(
        &rouse,
        format!("{}[{{\"id\"", eg_head(&query, "content-length: 500\r\n")).as_bytes(),
    )
    .await;
    // Wrong key (it contains the real one).
    let body = batch(0..1);
    let req = format!(
        "{}{body}",
        eg_head(
            &format!("code={SECRET}-WRONG&other={SECRET}"),
            &format!("content-length: {}\r\n", body.len())
        )
    );
    let answer = exchange(&rouse, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Oversized (declared).
    let req = eg_head(&query, &format!("content-length: {}\r\n", 3 * 1024 * 1024));
    let answer = exchange(&rouse, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Oversized (chunked, past the cap while reading).
    let chunk = "x".repeat(64 * 1024);
    let mut req = eg_head(&query, "transfer-encoding: chunked\r\n");
    for _ in 0..40 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    let answer = exchange(&rouse, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // An app request held while the app is cold, abandoned by its client.
    hang_up_after(
        &rouse,
        format!("GET /held?{query} HTTP/1.1\r\nhost: sink.localhost\r\n\r\n").as_bytes(),
    )
    .await;
    rouse.settle().await;
    let output = rouse.output();
    assert!(
        output.iter().any(|l| l.contains("GET /held")),
        "pingora logged the abandoned request (by path): {}",
        output.join("\n")
    );
    let leaks: Vec<&String> = output.iter().filter(|l| l.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "the key is in Rouse's output: {leaks:#?}");
    let metrics = rouse.metrics().await;
    assert!(!metrics.is_empty());
    assert!(!metrics.contains(SECRET), "{metrics}");
}

/// Runs curl with `args`; (exit status, stdout, stderr).
async fn curl(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(&args)
            .output()
            .expect("run curl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("curl task")
}

/// Item 6.4: `Expect: 100-continue` got no `100 Continue` from the proxy-mounted webhook, so
/// curl-like senders waited out their expect timeout before sending the body. With
/// `--expect100-timeout 30`, a 3 KiB batch is now acknowledged (the body arrived: 200 and 10
/// events acknowledged) well within 10 s, after a `100 Continue`; a wrong key gets its 401 at
/// once, without a 100 and without the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_100_continue_before_the_body_through_the_proxy() {
    let d = dir("expect");
    let apps = [sink(&d.join("events.log"))];
    let extra = hostile_yaml(&d.join("queue"));
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;
    let body_file = d.join("batch.json");
    let body = batch(0..10);
    assert!(body.len() > 1024);
    std::fs::write(&body_file, &body).expect("body");
    let args = |key: &str| -> Vec<String> {
        [
            "-sS",
            "-v",
            "--max-time",
            "60",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "30",
            "-H",
            "content-type: application/json",
            "-H",
            "aeg-event-type: Notification",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--data-binary",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("@{}", body_file.display()),
            format!("http://{}/webhooks/blobs?code={key}", rouse.proxy),
        ])
        .collect()
    };
    let started = Instant::now();
    let (ok, code, log) = curl(args(SECRET)).await;
    let took = started.elapsed();
    assert!(ok, "{log}");
    assert_eq!(code, "200", "{log}");
    assert!(log.contains("< HTTP/1.1 100 Continue"), "{log}");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: no 100 Continue?\n{log}"
    );
    assert_eq!(
        rouse
            .metric("rouse_events_acknowledged_total{subscription=\"blobs\"}")
            .await,
        Some(10.0),
        "the body arrived"
    );
    let started = Instant::now();
    let (_, code, log) = curl(args("wrong")).await;
    assert_eq!(code, "401", "{log}");
    assert!(!log.contains("100 Continue"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(10), "{log}");
}
