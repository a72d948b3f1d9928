//! The embedded log on a disk that fills up, with the real `rouse-eventgrid` binary: the
//! process runs under `prlimit --fsize` (`RLIMIT_FSIZE`), so a write of the log stops in the
//! middle of a record, either failing (`EFBIG`, `SIGXFSZ` ignored) or killing the process
//! (`SIGXFSZ`, its default action). After a restart without the limit, every acknowledged event
//! is delivered once, and nothing of a request that was not acknowledged is.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Reply, Seen, target};

/// The log's size limit: a few dozen 10-event requests.
const FSIZE: u64 = 48 * 1024;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// Events `first..first + 10`, as an Event Grid batch.
fn batch(first: usize) -> String {
    let events: Vec<String> = (first..first + 10)
        .map(|i| {
            format!(
                r#"{{"id":"ev-{i}","topic":"/subscriptions/s","subject":"/blobs/{i}","eventType":"Microsoft.Storage.BlobCreated","eventTime":"2026-12-01T08:00:00Z","data":{{"n":{i},"pad":"{}"}},"dataVersion":"","metadataVersion":"1"}}"#,
                "x".repeat(200)
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

/// A gateway process, killed when dropped (a failing test leaves none behind).
///
/// Its stderr is a pipe copied into the test's output, never the test's own stderr: under CI
/// that is a regular file already past [`FSIZE`], and `RLIMIT_FSIZE` applies to every file the
/// process writes, so the first log line would be the write that hits the limit.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The standalone gateway on `listen`, its log in `data`, delivering to `target`; run through
/// `wrap` (e.g. `prlimit`) when given.
fn gateway(data: &Path, listen: SocketAddr, target: SocketAddr, wrap: &[&str]) -> Gateway {
    let config = data.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: {}\nsubscriptions:\n  - name: fn\n    path: /events\n    target: {{url: \"http://{target}\", path: /hook}}\n    delivery: {{retry: {{initial_backoff_ms: 50, max_backoff_ms: 200}}}}\n",
            data.join("log").display()
        ),
    )
    .expect("config");
    let bin = env!("CARGO_BIN_EXE_rouse-eventgrid");
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", &listen.to_string()])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start rouse-eventgrid");
    if let Some(mut err) = child.stderr.take() {
        // The thread inherits the test's output capture; it ends when the process does.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                eprint!("{}", String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    Gateway(child)
}

/// POSTs `body` to `/events` on a fresh connection; the status, or `None` when the connection
/// ended without an answer (the gateway died).
fn post(listen: SocketAddr, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(listen).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "POST /events HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\naeg-event-type: Notification\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Waits until the gateway answers (a GET on the webhook is refused 405: it is up).
fn wait_up(listen: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Event ids the target received, with how often.
fn delivered(seen: &Seen) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for hit in seen.lock().expect("seen").iter() {
        let events: Vec<serde_json::Value> = serde_json::from_slice(&hit.body).unwrap_or_default();
        for e in events {
            if let Some(id) = e["id"].as_str() {
                *m.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    m
}

/// Posts 10-event batches until the log's limit stops one: returns the acknowledged ids and
/// the ids of the first request that was not acknowledged, and whether it was answered.
fn fill(listen: SocketAddr) -> (Vec<String>, Vec<String>, Option<u16>) {
    let mut acked = Vec::new();
    for n in 0..1000 {
        let first = n * 10;
        let ids: Vec<String> = (first..first + 10).map(|i| format!("ev-{i}")).collect();
        match post(listen, &batch(first)) {
            Some(200) => acked.extend(ids),
            other => return (acked, ids, other),
        }
    }
    panic!("{FSIZE} bytes of log never filled up");
}

/// After the restart (no limit, a target answering 200): the acknowledged events, each once,
/// and none other.
async fn restart_delivers_exactly(data: &Path, acked: &[String]) {
    let (addr, seen) = target(|_| Reply::Status(200)).await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gw = gateway(data, listen, addr, &[]);
    wait_up(listen);
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered(&seen).len() < acked.len() {
        assert!(
            Instant::now() < deadline,
            "delivered {} of {} acknowledged events",
            delivered(&seen).len(),
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Settled: a late or repeated delivery would show within this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = delivered(&seen);
    drop(gw);
    let want: BTreeMap<String, usize> = acked.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(got, want, "every acknowledged event once, nothing else");
}

/// `EFBIG`: the write that reaches the limit stores part of a record and fails. The request is
/// refused 503 (`store_unavailable`), the partial record is cut off, later requests are refused
/// too, and a restart replays exactly the acknowledged events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_mid_record_acknowledges_nothing_and_loses_nothing() {
    let data = tempfile::tempdir().expect("tmp");
    // At phase one the target refuses (503): events stay pending, so every acknowledged one
    // is still in the log when the process is killed.
    let (refusing, _) = target(|_| Reply::Status(503)).await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let fsize = format!("--fsize={FSIZE}");
    let gw = gateway(
        data.path(),
        listen,
        refusing,
        &[
            "sh",
            "-c",
            "trap '' XFSZ; exec \"$@\"",
            "sh",
            "prlimit",
            &fsize,
            "--",
        ],
    );
    wait_up(listen);
    let (acked, refused, answer) = fill(listen);
    assert!(!acked.is_empty(), "some requests were acknowledged first");
    assert_eq!(answer, Some(503), "the failed write is answered 503");
    // The precondition: the log really is at its limit (the write stopped mid-record).
    let log = data.path().join("log").join("events.log");
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(
        size <= FSIZE && size + 4096 > FSIZE,
        "the log ({size} bytes) is at the {FSIZE}-byte limit"
    );
    assert_eq!(
        post(listen, &batch(90_000)),
        Some(503),
        "a full disk keeps refusing"
    );
    drop(gw);
    assert!(!refused.is_empty());
    restart_delivers_exactly(data.path(), &acked).await;
}

/// `SIGXFSZ`: the process is killed by the write that reaches the limit, leaving a torn record
/// at the end of the log. Its request was never answered; a restart cuts the torn tail off and
/// delivers exactly the acknowledged events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_record_by_the_size_limit_loses_nothing() {
    let data = tempfile::tempdir().expect("tmp");
    let (refusing, _) = target(|_| Reply::Status(503)).await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let fsize = format!("--fsize={FSIZE}");
    let mut gw = gateway(data.path(), listen, refusing, &["prlimit", &fsize, "--"]);
    wait_up(listen);
    let (acked, _, answer) = fill(listen);
    assert!(!acked.is_empty(), "some requests were acknowledged first");
    assert_eq!(answer, None, "the request being written was never answered");
    let status = gw.0.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(libc_sigxfsz()),
        "killed by SIGXFSZ: {status:?}"
    );
    let log = data.path().join("log").join("events.log");
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert_eq!(size, FSIZE, "the log ends at the limit, inside a record");
    restart_delivers_exactly(data.path(), &acked).await;
}

/// `SIGXFSZ` on Linux.
fn libc_sigxfsz() -> i32 {
    25
}
