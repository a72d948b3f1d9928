//! The JetStream queue backend against a real `nats-server` (built from its pinned Go module by
//! `nats/build-nats-server.sh`, started here on 127.0.0.1 with JetStream, killed at the end of
//! each test; one test runs a 3-node cluster and SIGKILLs a node) and real HTTP targets on
//! 127.0.0.1, through the gateway's public API.
//!
//! Skipped (with a message) only when Go is missing: CI has Go.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rouse_eventgrid::Gateway;

mod support;

use support::{Reply, Seen, target};

// --- nats-server ----------------------------------------------------------------------------

/// The cached `nats-server` binary, built on first use; `None` (and a message) without Go.
fn nats_binary() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let go = Command::new("go")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !go.is_ok_and(|s| s.success()) {
            eprintln!(
                "SKIPPED: Go is not installed, so nats-server cannot be built \
                 (eventgrid-adapter/nats/build-nats-server.sh); the JetStream tests did not run."
            );
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("nats/build-nats-server.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run build-nats-server.sh");
        assert!(out.status.success(), "build-nats-server.sh failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().expect("binary path").trim());
        assert!(path.is_file(), "{} missing", path.display());
        Some(path)
    })
    .clone()
}

/// A free port on 127.0.0.1 (bound, then released for the server).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// A running `nats-server -js` on 127.0.0.1; killed when dropped.
struct Nats {
    bin: PathBuf,
    store: PathBuf,
    port: u16,
    /// A configuration file (`-c`), for settings without a flag.
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl Nats {
    /// Starts a server with its JetStream store in `store`; `None` without Go.
    async fn start(store: &Path) -> Option<Nats> {
        Self::start_with(store, "").await
    }

    /// As [`Nats::start`], with `config` (nats-server's configuration syntax) as its file.
    async fn start_with(store: &Path, config: &str) -> Option<Nats> {
        let bin = nats_binary()?;
        let file = (!config.is_empty()).then(|| store.join("nats.conf"));
        if let Some(file) = &file {
            std::fs::write(file, config).expect("write nats.conf");
        }
        let mut n = Nats {
            bin,
            store: store.to_path_buf(),
            port: free_port(),
            config: file,
            child: None,
        };
        n.restart().await;
        Some(n)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, same port and store) and waits until JetStream answers.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new(&self.bin);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        let child = cmd
            .args(["-js", "-sd"])
            .arg(&self.store)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = tokio::time::timeout(Duration::from_secs(2), async {
                let c = async_nats::connect(self.url()).await.ok()?;
                async_nats::jetstream::new(c).query_account().await.ok()
            })
            .await
            .ok()
            .flatten()
            .is_some();
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `(num_pending + num_ack_pending of the consumer, messages in the stream)`.
    async fn backlog(&self, stream: &str, consumer: &str) -> (u64, u64) {
        let c = async_nats::connect(self.url()).await.expect("connect");
        let js = async_nats::jetstream::new(c);
        let mut s = js.get_stream(stream).await.expect("stream");
        let messages = s.info().await.expect("stream info").state.messages;
        let info = js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                consumer, stream,
            )
            .await
            .expect("consumer")
            .get_info()
            .await
            .expect("consumer info");
        (info.num_pending + info.num_ack_pending as u64, messages)
    }

    /// Waits until the subscription `sub`'s consumer has nothing pending and the stream is
    /// empty (every event acknowledged or terminated, as the server sees it).
    async fn wait_drained(&self, stream: &str, sub: &str) {
        let consumer = format!("rouse-{sub}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let b = self.backlog(stream, &consumer).await;
            if b == (0, 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still pending on the server: {b:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tests of this file run one at a time: each starts its own nats-server(s), and several
/// servers and a 3-node cluster at once on a 2-core machine turn their time bounds into flakes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// --- targets ----------------------------------------------------------------------------------

/// Event ids in the order a target received them (Event Grid arrays).
fn ids(seen: &Seen) -> Vec<String> {
    seen.lock()
        .expect("seen")
        .iter()
        .flat_map(|h| serde_json::from_slice::<Vec<serde_json::Value>>(&h.body).unwrap_or_default())
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect()
}

/// How often each id was received.
fn counts(seen: &Seen) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in ids(seen) {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- gateways ---------------------------------------------------------------------------------

/// The queue section for `nats` and `stream`.
fn jetstream(nats: &Nats, stream: &str) -> String {
    format!(
        "queue: {{backend: jetstream, url: \"{}\", stream: {stream}, publish_timeout_ms: 2000}}\n",
        nats.url()
    )
}

/// A gateway with one subscription `fn` at `/events`, delivering to `target`.
fn open(dir: &Path, queue: &str, target: SocketAddr, extra: &str) -> Arc<Gateway> {
    let yaml = format!(
        "data_dir: {}\n{queue}subscriptions:\n  - name: fn\n    path: /events\n    \
         target: {{url: \"http://{target}\", path: /hook}}\n    forward_headers: [x-tenant]\n{extra}",
        dir.display()
    );
    let gw = support::gateway(&yaml);
    rouse_eventgrid::deliver::start(&gw, |s| rouse_eventgrid::deliver::Destination {
        base: s.config.target.url.clone().unwrap_or_default(),
        ..Default::default()
    });
    tokio::spawn(gw.clone().maintain());
    gw
}

const EVENT: &str = r#"{"id":"ID","topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a","subject":"/blobServices/default/containers/c/blobs/b","eventType":"Microsoft.Storage.BlobCreated","eventTime":"2017-06-26T18:41:00.9584103Z","data":{"contentLength":5, "note":"spaces  and \u00e9 kept"},"dataVersion":"","metadataVersion":"1"}"#;

fn event(i: usize) -> String {
    EVENT.replace("\"ID\"", &format!("\"ev-{i}\""))
}

fn batch(range: std::ops::Range<usize>) -> String {
    format!("[{}]", range.map(event).collect::<Vec<_>>().join(","))
}

/// Posts an Event Grid body; the response.
async fn post(gw: &Arc<Gateway>, body: String) -> rouse_eventgrid::Response {
    support::post(gw, body, &[("x-tenant", "t1")]).await
}

fn acknowledged(gw: &Gateway) -> u64 {
    gw.metrics.acknowledged.with_label_values(&["fn"]).get()
}

// --- tests ------------------------------------------------------------------------------------

/// (a) Every pushed event reaches a real target once, unchanged (with its forwarded header),
/// and is acknowledged on the server: the consumer's backlog and the stream return to empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_events_are_delivered_once_unchanged_and_acked() {
    let _serial = SERIAL.lock().await;
    let store = tempfile::tempdir().expect("tmp");
    let Some(nats) = Nats::start(store.path()).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let (addr, seen) = target(|_| Reply::Status(200)).await;
    let gw = open(dir.path(), &jetstream(&nats, "A"), addr, "");
    for chunk in 0..4 {
        assert_eq!(
            post(&gw, batch(chunk * 10..chunk * 10 + 10)).await.status,
            200
        );
    }
    assert_eq!(acknowledged(&gw), 40);
    wait_for("40 deliveries", Duration::from_secs(30), || {
        ids(&seen).len() >= 40
    })
    .await;
    nats.wait_drained("A", "fn").await;
    assert!(
        gw.wait_idle(Duration::from_secs(10)).await,
        "pending back to 0"
    );
    let c = counts(&seen);
    assert_eq!(c.len(), 40);
    assert!(c.values().all(|n| *n == 1), "each once: {c:?}");
    for hit in seen.lock().expect("seen").iter() {
        let body = std::str::from_utf8(&hit.body).expect("utf8");
        let id = ids_of(body);
        assert_eq!(
            body,
            format!("[{}]", EVENT.replace("\"ID\"", &format!("\"{id}\""))),
            "byte-exact"
        );
        assert!(
            hit.headers
                .iter()
                .any(|(k, v)| k == "x-tenant" && v == "t1"),
            "forwarded header kept"
        );
    }
}

/// An event above the server's `max_payload` refuses its whole request with 413 naming the
/// subscription, the event and the limit, before anything is published: the events before it
/// in the same batch are not stored either. Requests of ordinary events still go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_above_max_payload_refuses_its_request_413_and_stores_nothing() {
    let _serial = SERIAL.lock().await;
    let store = tempfile::tempdir().expect("tmp");
    let Some(nats) = Nats::start_with(store.path(), "max_payload: 4096\n").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let (addr, seen) = target(|_| Reply::Status(200)).await;
    let gw = open(dir.path(), &jetstream(&nats, "BIG"), addr, "");
    let big = EVENT.replace("\"ID\"", "\"big\"").replace(
        "\"contentLength\":5",
        &format!("\"pad\":\"{}\"", "x".repeat(5000)),
    );
    let body = format!("[{},{big},{}]", event(1), event(2));
    let answer = post(&gw, body).await;
    let text = String::from_utf8_lossy(&answer.body).to_string();
    assert_eq!(answer.status, 413, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json body");
    assert_eq!(json["subscription"], "fn", "{text}");
    assert_eq!(json["reason"], "event_too_large", "{text}");
    assert!(text.contains("event 1 ") && text.contains("4096"), "{text}");
    assert_eq!(acknowledged(&gw), 0);
    assert_eq!(
        nats.backlog("BIG", "rouse-fn").await,
        (0, 0),
        "nothing of the refused request is stored"
    );
    assert_eq!(post(&gw, batch(10..13)).await.status, 200);
    wait_for("3 deliveries", Duration::from_secs(30), || {
        ids(&seen).len() >= 3
    })
    .await;
    nats.wait_drained("BIG", "fn").await;
    let mut delivered = ids(&seen);
    delivered.sort();
    assert_eq!(
        delivered,
        ["ev-10", "ev-11", "ev-12"],
        "only the accepted request's events"
    );
    assert!(
        gw.metrics
            .rejected
            .with_label_values(&["fn", "413", "event_too_large"])
            .get()
            == 1
    );
}

fn ids_of(body: &str) -> String {
    serde_json::from_str::<Vec<serde_json::Value>>(body).expect("array")[0]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// (b) Two gateways on one stream ("two proxy replicas"): the same events pushed through both,
/// before and after delivery, are delivered once (the stream's duplicate window absorbs them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_through_two_replicas_is_delivered_once() {
    let _serial = SERIAL.lock().await;
    let store = tempfile::tempdir().expect("tmp");
    let Some(nats) = Nats::start(store.path()).await else {
        return;
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (addr, seen) = target(|_| Reply::Status(200)).await;
    let a = open(dir_a.path(), &jetstream(&nats, "B"), addr, "");
    let b = open(dir_b.path(), &jetstream(&nats, "B"), addr, "");
    // Concurrently through both.
    let (ra, rb) = tokio::join!(post(&a, batch(0..20)), post(&b, batch(0..20)));
    assert_eq!((ra.status, rb.status), (200, 200));
    wait_for("20 deliveries", Duration::from_secs(30), || {
        ids(&seen).len() >= 20
    })
    .await;
    nats.wait_drained("B", "fn").await;
    // Again through the other replica, after they were delivered and acked.
    assert_eq!(post(&b, batch(0..10)).await.status, 200);
    // And a new one, as a marker: once it is delivered, anything queued before it was too.
    assert_eq!(post(&b, batch(99..100)).await.status, 200);
    wait_for("the marker", Duration::from_secs(30), || {
        counts(&seen).contains_key("ev-99")
    })
    .await;
    nats.wait_drained("B", "fn").await;
    let c = counts(&seen);
    assert_eq!(c.len(), 21);
    assert!(c.values().all(|n| *n == 1), "each once: {c:?}");
    assert!(a.wait_idle(Duration::from_secs(10)).await);
    assert!(b.wait_idle(Duration::from_secs(10)).await);
}

/// (c) With nats-server down a push is refused (503 + Retry-After, nothing acknowledged); once
/// it is back (same store) the gateway recovers by itself, and the earlier events are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_answers_503_and_the_gateway_recovers_when_it_is_back() {
    let _serial = SERIAL.lock().await;
    let store = tempfile::tempdir().expect("tmp");
    let Some(mut nats) = Nats::start(store.path()).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    // The target refuses until told otherwise: events stay queued across the outage.
    let open_for_business = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let o = open_for_business.clone();
    let (addr, seen) = target(move |_| {
        if o.load(std::sync::atomic::Ordering::Relaxed) {
            Reply::Status(200)
        } else {
            Reply::Status(500)
        }
    })
    .await;
    // A Nak sent while the server is down is lost: that event comes back after AckWait
    // (delivery timeout + 5 s), so the timeout is short here to keep the wait below bounded.
    let gw = open(
        dir.path(),
        &jetstream(&nats, "C"),
        addr,
        "    delivery: {timeout_ms: 2000, retry: {initial_backoff_ms: 100, max_backoff_ms: 200}}\n",
    );
    assert_eq!(post(&gw, batch(0..5)).await.status, 200);
    assert_eq!(acknowledged(&gw), 5);

    nats.stop();
    let refused = post(&gw, batch(5..10)).await;
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert!(
        refused
            .headers
            .iter()
            .any(|(k, v)| k == "retry-after" && !v.is_empty()),
        "Retry-After: {:?}",
        refused.headers
    );
    let body: serde_json::Value = serde_json::from_slice(&refused.body).expect("json");
    assert_eq!(body["reason"], "store_unavailable");
    assert_eq!(
        acknowledged(&gw),
        5,
        "nothing acknowledged while NATS is down"
    );

    nats.restart().await;
    // The sender's retry: accepted again without any help.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = post(&gw, batch(5..10)).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503);
        assert!(Instant::now() < deadline, "not recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(acknowledged(&gw), 10);
    open_for_business.store(true, std::sync::atomic::Ordering::Relaxed);
    wait_for("all 10 delivered", Duration::from_secs(30), || {
        gw.metrics.delivered.with_label_values(&["fn"]).get() >= 10
    })
    .await;
    assert_eq!(counts(&seen).len(), 10);
    nats.wait_drained("C", "fn").await;
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(gw.metrics.delivered.with_label_values(&["fn"]).get(), 10);
}

/// (d) A replica killed mid-delivery (its runtime gone, as with a crash): another replica on
/// the same stream delivers every acknowledged event; only the ones in flight come twice.
#[test]
fn another_replica_delivers_what_a_killed_one_had_acknowledged() {
    let _serial = SERIAL.blocking_lock();
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = tempfile::tempdir().expect("tmp");
    let Some(nats) = main.block_on(Nats::start(store.path())) else {
        return;
    };
    // The first two requests hang (the killed replica's deliveries in flight); then 200.
    let (addr, seen) = main.block_on(target(|n| {
        if n < 2 {
            Reply::Hang
        } else {
            Reply::Status(200)
        }
    }));
    let queue = jetstream(&nats, "D");
    let extra = "    delivery: {concurrency: 2, timeout_ms: 3000}\n";

    let dir_a = tempfile::tempdir().expect("tmp");
    let replica_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let seen_a = seen.clone();
    replica_a.block_on(async {
        let a = open(dir_a.path(), &queue, addr, extra);
        assert_eq!(post(&a, batch(0..10)).await.status, 200);
        assert_eq!(acknowledged(&a), 10);
        wait_for("two deliveries in flight", Duration::from_secs(10), || {
            seen_a.lock().expect("seen").len() >= 2
        })
        .await;
    });
    let in_flight: Vec<String> = ids(&seen);
    assert_eq!(in_flight.len(), 2);
    replica_a.shutdown_background(); // the crash: workers, timers and its NATS connection gone

    main.block_on(async {
        let dir_b = tempfile::tempdir().expect("tmp");
        let b = open(dir_b.path(), &queue, addr, extra);
        // The 8 never taken come at once; the 2 in flight after AckWait (timeout + 5 s).
        wait_for("every event delivered", Duration::from_secs(30), || {
            counts(&seen).len() == 10 && ids(&seen).len() >= 12
        })
        .await;
        nats.wait_drained("D", "fn").await;
        assert!(b.wait_idle(Duration::from_secs(10)).await);
        let c = counts(&seen);
        for (id, n) in &c {
            let expected = if in_flight.contains(id) { 2 } else { 1 };
            assert_eq!(*n, expected, "{id}: {c:?}");
        }
    });
}

/// (e) A target answering 503 + Retry-After gets the event again no earlier than that; when
/// the attempts run out, the event goes to the dead-letter file with the reason and leaves the
/// stream (terminated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_exhausted_events_are_dead_lettered() {
    let _serial = SERIAL.lock().await;
    let store = tempfile::tempdir().expect("tmp");
    let Some(nats) = Nats::start(store.path()).await else {
        return;
    };
    // Retry-After on the first attempt, then accepted.
    let dir = tempfile::tempdir().expect("tmp");
    let (addr, seen) = target(|n| {
        if n == 0 {
            Reply::RetryAfter(2)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let gw = open(
        dir.path(),
        &jetstream(&nats, "E"),
        addr,
        "    delivery: {retry: {initial_backoff_ms: 10}}\n",
    );
    assert_eq!(post(&gw, batch(0..1)).await.status, 200);
    wait_for("the first failure", Duration::from_secs(20), || {
        gw.metrics.retried.with_label_values(&["fn"]).get() == 1
    })
    .await;
    // Waiting for its retry, the event still counts: on the server and in the demand.
    assert_eq!(nats.backlog("E", "rouse-fn").await, (1, 1));
    assert_eq!(gw.subscription_for("/events").expect("sub").pending(), 1);
    wait_for("the retry", Duration::from_secs(20), || {
        seen.lock().expect("seen").len() >= 2
    })
    .await;
    nats.wait_drained("E", "fn").await;
    {
        let hits = seen.lock().expect("seen");
        let gap = hits[1].at.duration_since(hits[0].at);
        assert!(
            gap >= Duration::from_millis(1950),
            "Retry-After 2 s honoured, got {gap:?}"
        );
        assert_eq!(hits[0].body, hits[1].body, "the same event again");
    }
    drop(gw);

    // Always 503: three attempts, then the dead-letter file.
    let dir = tempfile::tempdir().expect("tmp");
    let (addr, seen) = target(|_| Reply::Status(503)).await;
    let gw = open(
        dir.path(),
        &jetstream(&nats, "E2"),
        addr,
        "    delivery: {retry: {max_attempts: 3, initial_backoff_ms: 10}}\n",
    );
    assert_eq!(post(&gw, batch(7..8)).await.status, 200);
    let file = dir.path().join("dead-letter").join("fn.jsonl");
    wait_for("the dead letter", Duration::from_secs(20), || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() == 1)
    })
    .await;
    nats.wait_drained("E2", "fn").await;
    assert!(gw.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(seen.lock().expect("seen").len(), 3, "three attempts");
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&file).expect("file").trim()).expect("json");
    assert_eq!(line["event"]["id"], "ev-7");
    assert_eq!(line["attempts"], 3);
    let reason = line["reason"].as_str().expect("reason");
    assert!(
        reason.contains("3 attempts") && reason.contains("503"),
        "reason: {reason}"
    );
    assert_eq!(gw.metrics.dead_lettered.with_label_values(&["fn"]).get(), 1);
    drop(gw);

    // `dead_letter: {stream: …}`: the event goes to that stream instead, with the reason and
    // attempts in headers, and the subscription counts it.
    let dir = tempfile::tempdir().expect("tmp");
    let (addr, _seen) = target(|_| Reply::Status(400)).await;
    let gw = open(
        dir.path(),
        &jetstream(&nats, "E3"),
        addr,
        "    delivery: {retry: {max_attempts: 3, initial_backoff_ms: 10}}\n    dead_letter: {stream: DEAD3}\n",
    );
    assert_eq!(post(&gw, batch(9..10)).await.status, 200);
    nats.wait_drained("E3", "fn").await;
    let c = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(c);
    let stream = js
        .get_stream("DEAD3")
        .await
        .expect("dead-letter stream created");
    let m = stream
        .get_last_raw_message_by_subject("rouse-dead.DEAD3.fn")
        .await
        .expect("a dead letter");
    let body: serde_json::Value = serde_json::from_slice(&m.payload).expect("event json");
    assert_eq!(body["id"], "ev-9");
    let h = &m.headers;
    let reason = h.get("Rouse-Dead-Letter-Reason").expect("reason").as_str();
    assert!(reason.contains("400"), "reason: {reason}");
    assert_eq!(
        h.get("Rouse-Attempts").expect("attempts").as_str(),
        "1",
        "400 is final"
    );
    assert!(!dir.path().join("dead-letter").exists(), "no file");
    let sub = gw.subscription_for("/events").expect("sub").clone();
    wait_for("the dead-letter count", Duration::from_secs(20), || {
        sub.dead_lettered() == Some(1)
    })
    .await;
}

/// Not a benchmark: pushes a 1000-event request and waits for all deliveries, on the embedded
/// log and on JetStream (R1, one local server), in the same run; prints events/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_pushed_and_delivered_embedded_and_jetstream() {
    let _serial = SERIAL.lock().await;
    let store = tempfile::tempdir().expect("tmp");
    let Some(nats) = Nats::start(store.path()).await else {
        return;
    };
    let mut report = Vec::new();
    for (name, queue) in [
        ("embedded", String::new()),
        ("jetstream-r1", jetstream(&nats, "T")),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let (addr, seen) = target(|_| Reply::Status(200)).await;
        let gw = open(dir.path(), &queue, addr, "");
        let start = Instant::now();
        assert_eq!(post(&gw, batch(0..1000)).await.status, 200);
        let pushed = start.elapsed();
        wait_for("1000 deliveries", Duration::from_secs(120), || {
            seen.lock().expect("seen").len() >= 1000
        })
        .await;
        assert!(gw.wait_idle(Duration::from_secs(30)).await);
        let total = start.elapsed();
        assert_eq!(counts(&seen).len(), 1000);
        report.push(format!(
            "{name}: push {:.0} ms, pushed+delivered {:.0} ms = {:.0} events/s (per-event delivery, concurrency 4)",
            pushed.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            1000.0 / total.as_secs_f64()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

// --- a 3-node cluster ---------------------------------------------------------------------------

/// One node of a [`Cluster`].
struct Node {
    name: String,
    port: u16,
    child: Option<Child>,
}

/// Three `nats-server -js` nodes clustered on 127.0.0.1 (each its own client port, cluster port
/// and store); every node still running is killed when dropped.
struct Cluster {
    nodes: Vec<Node>,
    _store: tempfile::TempDir,
}

impl Cluster {
    /// Starts the three nodes and waits until the cluster has a JetStream meta leader (an R3
    /// probe stream can be created); `None` without Go.
    async fn start() -> Option<Cluster> {
        let bin = nats_binary()?;
        let store = tempfile::tempdir().expect("tmp");
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, p))| format!("nats://127.0.0.1:{p}"))
                .collect();
            let dir = store.path().join(&name);
            std::fs::create_dir_all(&dir).expect("store dir");
            let child = Command::new(&bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
                .args(["--routes", &routes.join(",")])
                .args(["--cluster_name", "rouse", "-js", "-sd"])
                .arg(&dir)
                .args(["-server_name", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server");
            nodes.push(Node {
                name,
                port: *port,
                child: Some(child),
            });
        }
        let cluster = Cluster {
            nodes,
            _store: store,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = tokio::time::timeout(Duration::from_secs(5), async {
                let js = cluster.js().await?;
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: "PROBE".into(),
                    subjects: vec!["probe.>".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await
                .ok()?;
                js.delete_stream("PROBE").await.ok()
            })
            .await
            .ok()
            .flatten()
            .is_some();
            if ok {
                return Some(cluster);
            }
            assert!(
                Instant::now() < deadline,
                "the cluster has no JetStream meta leader"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's client URL, comma-separated (the gateway's `url`).
    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A JetStream context on the nodes still running.
    async fn js(&self) -> Option<async_nats::jetstream::Context> {
        let live: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect();
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        let c = async_nats::connect(live).await.ok()?;
        Some(async_nats::jetstream::new(c))
    }

    /// The name of the node leading `stream`'s RAFT group, once it has one.
    async fn stream_leader(&self, stream: &str) -> Option<String> {
        let js = self.js().await?;
        let mut s = js.get_stream(stream).await.ok()?;
        s.info().await.ok()?.cluster.as_ref()?.leader.clone()
    }

    /// `(num_pending + num_ack_pending of the consumer, messages in the stream)`, from the nodes
    /// still running.
    async fn backlog(&self, stream: &str, consumer: &str) -> Option<(u64, u64)> {
        let js = self.js().await?;
        let mut s = js.get_stream(stream).await.ok()?;
        let messages = s.info().await.ok()?.state.messages;
        let info = js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                consumer, stream,
            )
            .await
            .ok()?
            .get_info()
            .await
            .ok()?;
        Some((info.num_pending + info.num_ack_pending as u64, messages))
    }

    /// SIGKILLs node `name` and reaps it; the exit status (to prove it really died).
    fn kill(&mut self, name: &str) -> std::process::ExitStatus {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        let mut child = node.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap")
    }

    fn port_of(&self, name: &str) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("node")
            .port
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// One webhook request of the failover test, as its sender saw it.
struct Sent {
    events: std::ops::Range<usize>,
    /// When the request was sent, and answered.
    sent: Instant,
    at: Instant,
    status: u16,
    retry_after: bool,
}

/// (f) A 3-node cluster, the stream at R3: 4 senders push batches of 100 events while the node
/// leading the stream is SIGKILLed. Every acknowledged (2xx) event is delivered to the sink at
/// least once; refusals during the failover are 503 + Retry-After; duplicates come only from
/// deliveries around the failover (counted and printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_no_acknowledged_event_when_a_node_is_killed() {
    let _serial = SERIAL.lock().await;
    const STREAM: &str = "F";
    const BATCH: usize = 100;
    const SENDERS: usize = 4;
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let (addr, seen) = target(|_| Reply::Status(200)).await;
    let queue = format!(
        "queue: {{backend: jetstream, url: \"{}\", stream: {STREAM}, replicas: 3, \
         publish_timeout_ms: 2000}}\n",
        cluster.urls()
    );
    // Deliveries in batches; AckWait = 2 s + 5 s, so an unacknowledged delivery comes back soon.
    let gw = open(
        dir.path(),
        &queue,
        addr,
        "    delivery: {batching: per-batch, max_events: 100, timeout_ms: 2000, \
         retry: {initial_backoff_ms: 50, max_backoff_ms: 500}}\n",
    );

    // The senders: each posts the next batch of fresh ids; a refused batch is sent again (as
    // Event Grid does) until it is accepted or the load stops.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (gw, next, stop, log) = (gw.clone(), next.clone(), stop.clone(), log.clone());
        senders.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            while !stop.load(Relaxed) {
                let b = next.fetch_add(1, Relaxed);
                let events = b * BATCH..(b + 1) * BATCH;
                loop {
                    let sent = Instant::now();
                    let r = post(&gw, batch(events.clone())).await;
                    let ok = (200..300).contains(&r.status);
                    log.lock().expect("log").push(Sent {
                        events: events.clone(),
                        sent,
                        at: Instant::now(),
                        status: r.status,
                        retry_after: r.headers.iter().any(|(k, v)| {
                            k.eq_ignore_ascii_case("retry-after") && v.parse::<u64>().is_ok()
                        }),
                    });
                    if ok || stop.load(Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let acked_since = |log: &Mutex<Vec<Sent>>, t: Instant| {
        log.lock()
            .expect("log")
            .iter()
            .filter(|s| s.at >= t && (200..300).contains(&s.status))
            .count()
            * BATCH
    };
    let start = Instant::now();
    wait_for("2 000 events acknowledged", Duration::from_secs(60), || {
        acked_since(&log, start) >= 2000
    })
    .await;
    wait_for("deliveries under way", Duration::from_secs(30), || {
        !seen.lock().expect("seen").is_empty()
    })
    .await;

    // Kill the node leading the stream, while the load runs.
    let leader = cluster
        .stream_leader(STREAM)
        .await
        .expect("the stream has a leader");
    let port = cluster.port_of(&leader);
    let killed_at = Instant::now();
    let status = cluster.kill(&leader);
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "{leader} was SIGKILLed: {status:?}"
        );
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "{leader} no longer listens"
    );
    eprintln!(
        "killed {leader} (the stream leader) after {:?}",
        killed_at - start
    );

    // The load goes on; the stream gets a new leader and acknowledgements resume (checked after
    // the losses: a cluster that cannot recover must first show what it lost).
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_since(&log, killed_at) < 2000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.expect("sender");
    }

    let acked_since_kill = acked_since(&log, killed_at);
    let log = std::mem::take(&mut *log.lock().expect("log"));
    let acked: std::collections::BTreeSet<String> = log
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .flat_map(|s| s.events.clone().map(|i| format!("ev-{i}")))
        .collect();
    let refused: Vec<&Sent> = log
        .iter()
        .filter(|s| !(200..300).contains(&s.status))
        .collect();
    // The first acknowledgement of a request sent after the kill: the failover is over.
    let recovered = log
        .iter()
        .filter(|s| s.sent > killed_at && (200..300).contains(&s.status))
        .map(|s| s.at)
        .min();

    // Every acknowledged event reaches the sink (unacknowledged deliveries come back after
    // AckWait); then the server holds nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = counts(&seen);
        let missing: Vec<&String> = acked.iter().filter(|id| !c.contains_key(*id)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events never delivered (lost), e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = cluster.backlog(STREAM, "rouse-fn").await;
        if b == Some((0, 0)) {
            break;
        }
        assert!(Instant::now() < deadline, "still on the server: {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gw.wait_idle(Duration::from_secs(30)).await,
        "pending back to 0"
    );
    let recovered = recovered.expect("a request sent after the kill was acknowledged");
    assert!(
        acked_since_kill >= 2000,
        "only {acked_since_kill} events acknowledged after the kill"
    );
    let new_leader = cluster
        .stream_leader(STREAM)
        .await
        .expect("a new stream leader");
    assert_ne!(new_leader, leader, "leadership moved");

    // Refusals: only 503 + Retry-After.
    for s in &refused {
        assert!(
            s.status == 503 && s.retry_after,
            "a refusal must be 503 + Retry-After: {} (retry-after {})",
            s.status,
            s.retry_after
        );
    }
    // Duplicates: only events first delivered around the failover (in flight when the node
    // died, their acknowledgement lost with it).
    let hits = seen.lock().expect("seen").clone();
    let mut first: BTreeMap<String, (Instant, usize)> = BTreeMap::new();
    for h in &hits {
        for e in serde_json::from_slice::<Vec<serde_json::Value>>(&h.body).unwrap_or_default() {
            if let Some(id) = e["id"].as_str() {
                first.entry(id.to_string()).or_insert((h.at, 0)).1 += 1;
            }
        }
    }
    let window = (
        killed_at - Duration::from_secs(2),
        recovered + Duration::from_secs(5),
    );
    let duplicated: Vec<(&String, &(Instant, usize))> =
        first.iter().filter(|(_, (_, n))| *n > 1).collect();
    let extra: usize = duplicated.iter().map(|(_, (_, n))| n - 1).sum();
    let outside: Vec<&String> = duplicated
        .iter()
        .filter(|(_, (at, _))| *at < window.0 || *at > window.1)
        .map(|(id, _)| *id)
        .collect();
    eprintln!(
        "sent {} requests: {} acknowledged ({} events), {} refused with 503 + Retry-After; \
         failover (kill -> first acknowledgement) {:?}; delivered {} distinct events in {} \
         requests ({} of them never acknowledged: stored before a refusal), {} events twice or \
         more ({} extra deliveries)",
        log.len(),
        log.len() - refused.len(),
        acked.len(),
        refused.len(),
        recovered - killed_at,
        first.len(),
        hits.len(),
        first.keys().filter(|id| !acked.contains(*id)).count(),
        duplicated.len(),
        extra
    );
    assert!(
        outside.is_empty(),
        "duplicates outside the failover: {:?}",
        &outside[..outside.len().min(5)]
    );
}
