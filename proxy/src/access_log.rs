//! The access log (`proxy.access_log`, `--access-log`): one line per finished request on stdout,
//! in the process's log format (`--log-format`: JSON objects or `key=value` text), with the
//! route, method, path, status, duration, time held, whether it was a cold start, the
//! endpoint it went to and, for an error, Rouse's reason.
//!
//! Off the hot path: a request only moves a small [`Entry`] into a bounded channel; a thread of
//! its own formats and writes the lines (one write per burst, not per line). When that thread
//! falls [`QUEUE`] entries behind, further entries are dropped and counted
//! (`rouse_proxy_access_log_dropped_total`) rather than slowing requests down.
//!
//! The path is logged without its query: keys travel there (`?code=…`).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use rouse_core::logging::LogFormat;
use serde_json::json;

use crate::reason::Reason;
use crate::state::RouteState;

/// Entries waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 65_536;

/// One finished request.
pub struct Entry {
    pub at: SystemTime,
    /// `None` when no route matched (400, 404, the webhook of a gateway).
    pub route: Option<Arc<RouteState>>,
    pub method: http::Method,
    /// Without the query.
    pub path: String,
    /// `None` when nothing was written (the client left first).
    pub status: Option<http::StatusCode>,
    /// From the head's arrival to the end of the response.
    pub duration: Duration,
    /// Time held waiting for an endpoint (a cold start or a full target); `cold_start` in the line
    /// is whether there was any, as in the `x-rouse-cold-start` header.
    pub held: Option<Duration>,
    pub upstream: Option<SocketAddr>,
    /// The route's failover answered.
    pub failover: bool,
    pub reason: Option<Reason>,
}

/// Where finished requests are sent (it exists only while the access log is on); cheap to
/// clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Entry>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Starts the writer thread: lines go to `out` (stdout in the binary) in `format`.
    pub fn start(
        format: LogFormat,
        dropped: IntCounter,
        out: impl Write + Send + 'static,
    ) -> std::io::Result<AccessLog> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("rouse-access-log".into())
            .spawn(move || write_lines(&rx, format, out))?;
        Ok(AccessLog { tx, dropped })
    }

    /// Queues `entry` for the writer, or counts it dropped if the writer is [`QUEUE`] behind.
    pub fn record(&self, entry: Entry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// The writer thread: formats entries as they come, writes a burst at once, ends when every
/// sender is gone.
fn write_lines(rx: &Receiver<Entry>, format: LogFormat, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(entry) = rx.recv() {
        let mut next = Some(entry);
        while let Some(e) = next {
            let _ = out.write_all(line(&e, format).as_bytes());
            next = rx.try_recv().ok();
        }
        // Nothing more queued: the burst goes out now, not when the buffer fills.
        let _ = out.flush();
    }
    let _ = out.flush();
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One line, newline included. Field names are stable.
pub fn line(e: &Entry, format: LogFormat) -> String {
    let timestamp = jiff::Timestamp::try_from(e.at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let route = e.route.as_ref().map(|r| r.route.name.as_str());
    let status = e.status.map(|s| s.as_u16());
    let held_ms = e.held.map(millis);
    let upstream = e.upstream.map(|a| a.to_string());
    let reason = e.reason.map(Reason::as_str);
    match format {
        LogFormat::Json => {
            let mut s = json!({
                "timestamp": timestamp,
                "route": route,
                "method": e.method.as_str(),
                "path": e.path,
                "status": status,
                "duration_ms": millis(e.duration),
                "held_ms": held_ms,
                "cold_start": e.held.is_some(),
                "upstream": upstream,
                "failover": e.failover,
                "reason": reason,
            })
            .to_string();
            s.push('\n');
            s
        }
        LogFormat::Text => {
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            format!(
                "{timestamp} ACCESS route={} method={} path={:?} status={} duration_ms={} \
                 held_ms={} cold_start={} upstream={} failover={} reason={}\n",
                route.unwrap_or("-"),
                e.method,
                e.path,
                or_dash(status.map(|s| s.to_string())),
                millis(e.duration),
                or_dash(held_ms.map(|h| h.to_string())),
                e.held.is_some(),
                or_dash(upstream),
                e.failover,
                reason.unwrap_or("-"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_650_000_123),
            route: None,
            method: http::Method::POST,
            path: "/api/orders".into(),
            status: Some(http::StatusCode::CREATED),
            duration: Duration::from_micros(1_234_567),
            held: Some(Duration::from_millis(812)),
            upstream: Some("127.0.0.1:4242".parse().expect("addr")),
            failover: false,
            reason: None,
        }
    }

    #[test]
    fn a_json_line_has_every_field_under_its_stable_name() {
        let l = line(&entry(), LogFormat::Json);
        assert!(l.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&l).expect("one JSON object");
        assert_eq!(v["timestamp"], "2025-12-02T04:33:20.123Z");
        assert_eq!(v["route"], serde_json::Value::Null);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/api/orders");
        assert_eq!(v["status"], 201);
        assert_eq!(v["duration_ms"], 1234.567);
        assert_eq!(v["held_ms"], 812.0);
        assert_eq!(v["cold_start"], true);
        assert_eq!(v["upstream"], "127.0.0.1:4242");
        assert_eq!(v["failover"], false);
        assert_eq!(v["reason"], serde_json::Value::Null);
    }

    #[test]
    fn a_text_line_is_key_value_with_dashes_for_what_is_missing() {
        let mut e = entry();
        e.status = None;
        e.held = None;
        e.upstream = None;
        e.reason = Some(Reason::ClientClosed);
        let l = line(&e, LogFormat::Text);
        assert_eq!(
            l,
            "2025-12-02T04:33:20.123Z ACCESS route=- method=POST path=\"/api/orders\" status=- \
             duration_ms=1234.567 held_ms=- cold_start=false upstream=- failover=false \
             reason=client_closed\n"
        );
    }

    /// The writer thread writes what is queued; a full queue drops and counts instead of
    /// blocking the caller.
    #[test]
    fn entries_reach_the_writer_and_overflow_is_counted_not_waited_for() {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let dropped = IntCounter::new("dropped", "test").expect("counter");
        let log = AccessLog::start(LogFormat::Json, dropped.clone(), out.clone()).expect("start");
        log.record(entry());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().expect("lock").is_empty() {
            assert!(std::time::Instant::now() < deadline, "nothing written");
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(dropped.get(), 0);

        // A writer that never drains: the queue fills, then entries are dropped and counted.
        let (tx, _rx) = sync_channel(2);
        let stuck = AccessLog {
            tx,
            dropped: dropped.clone(),
        };
        for _ in 0..5 {
            stuck.record(entry());
        }
        assert_eq!(dropped.get(), 3);
    }
}
