//! Delivery against real HTTP servers on 127.0.0.1: an Azure Functions–shaped host (vector 50),
//! retries with Retry-After, dead-lettering, recovery after a restart, and the socket-level
//! body cap (vector 18).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rouse_eventgrid::Gateway;

mod support;

use support::{Reply, Seen};

/// A host answering `status(n)` to its n-th request (0-based; a 503 with `Retry-After: 1`) and
/// recording everything.
async fn host(status: impl Fn(usize) -> u16 + Send + Sync + 'static) -> (SocketAddr, Seen) {
    support::target(move |n| match status(n) {
        503 => Reply::RetryAfter(1),
        code => Reply::Status(code),
    })
    .await
}

fn open(dir: &std::path::Path, target: SocketAddr, extra: &str) -> Arc<Gateway> {
    let gw = open_idle(dir, target, extra);
    start(&gw);
    gw
}

/// Opens the gateway (replaying its log) without starting delivery, so what it recovered can be
/// counted before workers change it.
fn open_idle(dir: &std::path::Path, target: SocketAddr, extra: &str) -> Arc<Gateway> {
    let yaml = format!(
        "data_dir: {}\nsubscriptions:\n  - name: fn\n    path: /events\n    target: {{url: \"http://{target}\", path: \"/runtime/webhooks/EventGrid?functionName=OnBlob&code=sys-key\"}}\n{extra}",
        dir.display()
    );
    support::gateway(&yaml)
}

fn start(gw: &Arc<Gateway>) {
    rouse_eventgrid::deliver::start(gw, |s| rouse_eventgrid::deliver::Destination {
        base: s.config.target.url.clone().unwrap_or_default(),
        host: None,
        ..Default::default()
    });
    tokio::spawn(gw.clone().maintain());
}

const EVENT: &str = r#"{"id":"ID","topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a","subject":"/blobServices/default/containers/c/blobs/b","eventType":"Microsoft.Storage.BlobCreated","eventTime":"2017-06-26T18:41:00.9584103Z","data":{"contentLength":5},"dataVersion":"","metadataVersion":"1"}"#;

fn event(i: usize) -> String {
    EVENT.replace("\"ID\"", &format!("\"ev-{i}\""))
}

async fn post(gw: &Arc<Gateway>, body: String, extra: &[(&str, &str)]) -> u16 {
    support::post(gw, body, extra).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v50_replay_to_an_azure_functions_host_is_unchanged_and_retried_on_5xx() {
    // The Functions host checks what a real one checks: path, functionName, code, the aeg
    // header and the content type; the first attempt fails with a 503.
    let (addr, seen) = host(|n| if n == 0 { 503 } else { 200 }).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(
        dir.path(),
        addr,
        "    forward_headers: [x-tenant]\n    delivery: {retry: {initial_backoff_ms: 50}}\n",
    );
    assert_eq!(
        post(&gw, format!("[{}]", event(1)), &[("x-tenant", "a")]).await,
        200
    );
    assert!(gw.wait_idle(Duration::from_secs(10)).await, "delivered");
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2, "one 503, then the retry");
    // The 503 said `Retry-After: 1`: the retry waits that second, not the 50 ms backoff.
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After honoured: the retry came {gap:?} after the 503"
    );
    for support::Hit {
        path: pq,
        headers,
        body,
        ..
    } in &seen
    {
        assert_eq!(
            pq,
            "/runtime/webhooks/EventGrid?functionName=OnBlob&code=sys-key"
        );
        let h = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("aeg-event-type"), Some("Notification"));
        assert!(h("content-type").is_some_and(|c| c.starts_with("application/json")));
        assert_eq!(h("x-tenant"), Some("a"), "configured header forwarded");
        assert_eq!(
            body.as_ref(),
            format!("[{}]", event(1)).as_bytes(),
            "body byte-identical"
        );
    }
    let m = &gw.metrics;
    assert_eq!(m.delivered.with_label_values(&["fn"]).get(), 1);
    assert_eq!(m.retried.with_label_values(&["fn"]).get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_and_exhausted_retries_go_to_the_dead_letter_file() {
    let (addr, _) = host(|_| 400).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(dir.path(), addr, "");
    assert_eq!(post(&gw, format!("[{}]", event(1)), &[]).await, 200);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let dl = std::fs::read_to_string(dir.path().join("dead-letter/fn.jsonl")).expect("dead letter");
    let line: serde_json::Value = serde_json::from_str(dl.trim()).expect("json line");
    assert!(
        line["reason"].as_str().is_some_and(|r| r.contains("400")),
        "{line}"
    );
    assert_eq!(line["event"]["id"], "ev-1");

    let (addr, seen) = host(|_| 500).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(
        dir.path(),
        addr,
        "    delivery: {retry: {max_attempts: 3, initial_backoff_ms: 20}}\n",
    );
    assert_eq!(post(&gw, format!("[{}]", event(2)), &[]).await, 200);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(seen.lock().expect("seen").len(), 3, "three attempts");
    let dl = std::fs::read_to_string(dir.path().join("dead-letter/fn.jsonl")).expect("dead letter");
    assert!(dl.contains("3 attempts"), "{dl}");
    assert_eq!(gw.metrics.dead_lettered.with_label_values(&["fn"]).get(), 1);
}

/// The dead letter's reason, from the subscription's dead-letter file.
fn dead_letter_reason(dir: &std::path::Path) -> String {
    let dl = std::fs::read_to_string(dir.join("dead-letter/fn.jsonl")).expect("dead letter");
    let line: serde_json::Value = serde_json::from_str(dl.trim()).expect("json line");
    line["reason"].as_str().unwrap_or_default().to_string()
}

/// 400, 410, 413 and 415 are the target saying "never": one attempt, then the dead letter
/// naming the status (retrying them would only repeat the refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_permanent_refusal_is_dead_lettered_after_one_attempt() {
    for code in [400u16, 410, 413, 415] {
        let (addr, seen) = host(move |_| code).await;
        let dir = tempfile::tempdir().expect("tmp");
        let gw = open(
            dir.path(),
            addr,
            "    delivery: {retry: {max_attempts: 5, initial_backoff_ms: 20}}\n",
        );
        assert_eq!(post(&gw, format!("[{}]", event(1)), &[]).await, 200);
        assert!(gw.wait_idle(Duration::from_secs(10)).await, "{code}");
        assert_eq!(seen.lock().expect("seen").len(), 1, "{code}: one attempt");
        let reason = dead_letter_reason(dir.path());
        assert!(reason.contains(&code.to_string()), "{code}: {reason}");
        assert_eq!(gw.metrics.dead_lettered.with_label_values(&["fn"]).get(), 1);
    }
}

/// Retries wait `initial_backoff_ms`, doubling per attempt up to `max_backoff_ms`: with 100 and
/// 150, the gaps are 100, 150, 150, 150 ms (uncapped: 100, 200, 400, 800).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_exponentially_up_to_the_cap() {
    let (addr, seen) = host(|_| 500).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(
        dir.path(),
        addr,
        "    delivery: {retry: {max_attempts: 5, initial_backoff_ms: 100, max_backoff_ms: 150}}\n",
    );
    assert_eq!(post(&gw, format!("[{}]", event(1)), &[]).await, 200);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let at: Vec<_> = seen.lock().expect("seen").iter().map(|h| h.at).collect();
    assert_eq!(at.len(), 5, "five attempts");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let ms = |d: &Duration| d.as_millis();
    assert!(
        ms(&gaps[0]) >= 100,
        "first retry after the initial backoff: {gaps:?}"
    );
    assert!(ms(&gaps[1]) >= 150, "doubled, up to the cap: {gaps:?}");
    for g in &gaps[2..] {
        assert!(ms(g) >= 150, "{gaps:?}");
        assert!(
            ms(g) < 390,
            "capped at 150 ms (uncapped: 400, 800): {gaps:?}"
        );
    }
    assert!(dead_letter_reason(dir.path()).contains("5 attempts"));
}

/// `ttl_secs`: an event still undelivered past its age limit is dead-lettered at its next
/// failure, however many attempts remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_past_its_ttl_is_dead_lettered_with_attempts_left() {
    let (addr, seen) = host(|_| 500).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(
        dir.path(),
        addr,
        "    delivery: {retry: {max_attempts: 30, initial_backoff_ms: 1500, ttl_secs: 1}}\n",
    );
    assert_eq!(post(&gw, format!("[{}]", event(1)), &[]).await, 200);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(
        seen.lock().expect("seen").len(),
        2,
        "one retry, after which the event is older than its TTL"
    );
    let reason = dead_letter_reason(dir.path());
    assert!(reason.starts_with("older than 1 s"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_a_restart_and_are_delivered_once_up() {
    let dir = tempfile::tempdir().expect("tmp");
    // First life, on its own runtime (dropped afterwards: workers and timers stop as with a
    // process exit). The target answers 503 meanwhile: deliveries fail and stay queued. (A real
    // listener, not a closed port that a parallel test could be given.)
    let first_dir = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (busy, _) = host(|_| 503).await;
            let gw = open(
                &first_dir,
                busy,
                "    delivery: {retry: {initial_backoff_ms: 50}}\n",
            );
            let batch: Vec<String> = (0..20).map(event).collect();
            assert_eq!(post(&gw, format!("[{}]", batch.join(",")), &[]).await, 200);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(gw.subscription_for("/events").expect("sub").pending(), 20);
        });
        drop(rt);
    })
    .join()
    .expect("first life");
    // "Restart": a new gateway on the same directory, now with a host.
    let (addr, seen) = host(|_| 200).await;
    let gw = open_idle(dir.path(), addr, "");
    assert_eq!(
        gw.subscription_for("/events").expect("sub").pending(),
        20,
        "recovered"
    );
    start(&gw);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let ids: std::collections::BTreeSet<String> = seen
        .lock()
        .expect("seen")
        .iter()
        .flat_map(|h| serde_json::from_slice::<Vec<serde_json::Value>>(&h.body).unwrap_or_default())
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 20);
    // The dedupe window survived too: the same events again are acknowledged, not redelivered.
    let batch: Vec<String> = (0..20).map(event).collect();
    assert_eq!(post(&gw, format!("[{}]", batch.join(",")), &[]).await, 200);
    assert_eq!(gw.subscription_for("/events").expect("sub").pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_batch_delivery_sends_up_to_max_events_per_request() {
    let (addr, seen) = host(|_| 200).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(
        dir.path(),
        addr,
        "    delivery: {batching: per-batch, max_events: 10, concurrency: 1}\n",
    );
    let batch: Vec<String> = (0..25).map(event).collect();
    assert_eq!(post(&gw, format!("[{}]", batch.join(",")), &[]).await, 200);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let sizes: Vec<usize> = seen
        .lock()
        .expect("seen")
        .iter()
        .map(|h| {
            serde_json::from_slice::<Vec<serde_json::Value>>(&h.body)
                .map(|v| v.len())
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(sizes, [10, 10, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_are_delivered_in_binary_mode_with_encoded_headers() {
    let (addr, seen) = host(|_| 200).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(
        dir.path(),
        addr,
        "    delivery: {format: cloudevents-binary}\n",
    );
    assert_eq!(post(&gw, format!("[{}]", event(7)), &[]).await, 200);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let seen = seen.lock().expect("seen").clone();
    let support::Hit { headers, body, .. } = &seen[0];
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(h("ce-id"), Some("ev-7"));
    assert_eq!(h("ce-type"), Some("Microsoft.Storage.BlobCreated"));
    assert_eq!(h("ce-specversion"), Some("1.0"));
    assert_eq!(h("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(body).expect("json")["contentLength"],
        5
    );
}

/// `cloudevents-structured`: one event per request is `application/cloudevents+json` (the
/// whole CloudEvent as the body, Event Grid's fields mapped to its attributes); per-batch
/// delivery sends `application/cloudevents-batch+json` arrays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_are_delivered_structured_one_by_one_or_as_a_batch() {
    let header = |hit: &support::Hit, n: &str| {
        hit.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let (addr, seen) = host(|_| 200).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(
        dir.path(),
        addr,
        "    delivery: {format: cloudevents-structured}\n",
    );
    assert_eq!(post(&gw, format!("[{}]", event(8)), &[]).await, 200);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let hit = seen.lock().expect("seen")[0].clone();
    assert_eq!(
        header(&hit, "content-type").as_deref(),
        Some("application/cloudevents+json; charset=utf-8")
    );
    assert_eq!(header(&hit, "ce-id"), None, "structured: no ce-* headers");
    let ce: serde_json::Value = serde_json::from_slice(&hit.body).expect("one JSON object");
    assert_eq!(ce["specversion"], "1.0", "{ce}");
    assert_eq!(ce["id"], "ev-8");
    assert_eq!(ce["type"], "Microsoft.Storage.BlobCreated");
    assert_eq!(
        ce["source"],
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"
    );
    assert_eq!(ce["subject"], "/blobServices/default/containers/c/blobs/b");
    assert_eq!(ce["data"]["contentLength"], 5);

    let (addr, seen) = host(|_| 200).await;
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(
        dir.path(),
        addr,
        "    delivery: {format: cloudevents-structured, batching: per-batch, max_events: 10}\n",
    );
    let batch: Vec<String> = (0..3).map(event).collect();
    assert_eq!(post(&gw, format!("[{}]", batch.join(",")), &[]).await, 200);
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    let hits = seen.lock().expect("seen").clone();
    assert_eq!(hits.len(), 1, "one request for the batch");
    assert_eq!(
        header(&hits[0], "content-type").as_deref(),
        Some("application/cloudevents-batch+json; charset=utf-8")
    );
    let arr: Vec<serde_json::Value> = serde_json::from_slice(&hits[0].body).expect("JSON array");
    let ids: Vec<&str> = arr.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, ["ev-0", "ev-1", "ev-2"]);
    assert!(arr.iter().all(|e| e["specversion"] == "1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v18_oversized_body_is_refused_with_413_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let gw = open(dir.path(), "127.0.0.1:9".parse().expect("addr"), "");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(rouse_eventgrid::server::serve(listener, gw.clone()));
    // Declares 2 MiB + 1 and sends only the head: the answer comes without the body.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\naeg-event-type: Notification\r\ncontent-length: {}\r\n\r\n",
        2 * 1024 * 1024 + 1
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered before the body")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(gw.subscription_for("/events").expect("sub").pending(), 0);
}
