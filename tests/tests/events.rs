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
    let d = dir("handshake");
    let log = d.join("events.log");
    let apps = [sink(&log)];
    let extra = gateway_yaml(&d.join("queue"), "{}");
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;
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
    let d = dir("413");
    let log = d.join("events.log");
    let apps = [sink(&log)];
    let extra = gateway_yaml(&d.join("queue"), "{}");
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;
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
