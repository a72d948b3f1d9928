//! `rouse status`: what a person at a shell wants to see of a running Rouse — every target with
//! its hosts, replicas (ready and desired), held and in-flight requests, queued events, cold
//! starts and when it was last woken — as a table (`--watch` redraws it in place) or as JSON
//! for scripts (`-o json`).
//!
//! The data is the admin API's `/status` ([`document`], built from the proxy's own state and,
//! on the local platform, the desired replicas of each app). The rendering ([`table`]) is pure.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::ProxyState;

/// One target as `/status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target: String,
    /// Routes (names) that send requests to this target.
    pub routes: Vec<String>,
    /// Host patterns of those routes.
    pub hosts: Vec<String>,
    /// Endpoints ready now.
    pub ready: usize,
    /// Replicas the autoscaler asks for, where this process knows it (the local platform; on
    /// Kubernetes the controller does).
    pub desired: Option<u32>,
    pub held: u64,
    pub in_flight: u64,
    /// Events accepted by the event gateway and not yet delivered to it.
    pub queued_events: u64,
    /// Requests that waited for an endpoint, since this process started.
    pub cold_starts: u64,
    /// Milliseconds since a wake was last signalled for it; `None` if never.
    pub last_wake_ms_ago: Option<u64>,
    /// Why it cannot get endpoints at all, if it cannot.
    pub unavailable: Option<String>,
}

/// The whole `/status` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub draining: bool,
    /// Held requests, all targets together.
    pub held: u64,
    pub targets: Vec<TargetStatus>,
}

/// `/status` of `state`, targets sorted by name.
pub fn document(state: &ProxyState) -> Status {
    let snap = state.snapshot();
    let mut targets: BTreeMap<&str, TargetStatus> = BTreeMap::new();
    for rs in snap.routes.values() {
        let t = &rs.target;
        let entry = targets.entry(&t.name).or_insert_with(|| TargetStatus {
            target: t.name.clone(),
            routes: Vec::new(),
            hosts: Vec::new(),
            ready: t.endpoints().endpoints.len(),
            desired: state.desired_replicas(&t.name),
            held: t.demand.held(),
            in_flight: t.demand.in_flight(),
            queued_events: t.demand.queued(),
            cold_starts: 0,
            last_wake_ms_ago: t
                .demand
                .last_wake()
                .map(|w| u64::try_from(w.elapsed().as_millis()).unwrap_or(u64::MAX)),
            unavailable: t.unavailable().map(|u| u.to_string()),
        });
        entry.routes.push(rs.route.name.clone());
        entry
            .hosts
            .extend(rs.route.hosts.iter().map(ToString::to_string));
        entry.cold_starts += rs.metrics.cold_starts.get();
    }
    let mut targets: Vec<TargetStatus> = targets.into_values().collect();
    for t in &mut targets {
        t.routes.sort();
        t.hosts.sort();
        t.hosts.dedup();
    }
    Status {
        draining: state.is_draining(),
        held: state.budget.global().requests(),
        targets,
    }
}

/// `12s ago`, `3m ago`, `2h ago`, `never`.
fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 1_000 => "just now".into(),
        Some(ms) if ms < 60_000 => format!("{}s ago", ms / 1_000),
        Some(ms) if ms < 3_600_000 => format!("{}m ago", ms / 60_000),
        Some(ms) => format!("{}h ago", ms / 3_600_000),
    }
}

/// The table a person reads: a header line naming the source, then one row per target.
pub fn table(source: &str, s: &Status) -> String {
    let header = [
        "TARGET",
        "HOSTS",
        "READY",
        "DESIRED",
        "HELD",
        "IN-FLIGHT",
        "EVENTS",
        "COLD-STARTS",
        "LAST-WAKE",
        "NOTE",
    ];
    let rows: Vec<[String; 10]> = s
        .targets
        .iter()
        .map(|t| {
            [
                t.target.clone(),
                t.hosts.join(","),
                t.ready.to_string(),
                t.desired.map_or("-".into(), |d| d.to_string()),
                t.held.to_string(),
                t.in_flight.to_string(),
                t.queued_events.to_string(),
                t.cold_starts.to_string(),
                ago(t.last_wake_ms_ago),
                t.unavailable
                    .as_deref()
                    .map_or(String::new(), |u| format!("unavailable: {u}")),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = format!(
        "Rouse at {source}{}: {} held, {} target{}\n",
        if s.draining { " (draining)" } else { "" },
        s.held,
        s.targets.len(),
        if s.targets.len() == 1 { "" } else { "s" }
    );
    out.push_str(&line(&header.map(String::from)));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// How `rouse status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Fetches `/status` from the admin listener at `admin`.
async fn fetch(admin: SocketAddr) -> anyhow::Result<Status> {
    use http_body_util::BodyExt;
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(admin),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connecting to {admin}: timed out"))?
    .map_err(|e| anyhow::anyhow!("connecting to {admin}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/status")
        .header(http::header::HOST, admin.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .map_err(|_| anyhow::anyhow!("{admin}/status: no answer in 5 s"))??;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status == http::StatusCode::OK,
        "{admin}/status answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("{admin}/status is not a Rouse status document: {e}"))
}

/// Runs `rouse status`: once, or with `watch` every `interval` until interrupted, redrawing
/// the screen in place.
pub fn run(admin: SocketAddr, output: Output, watch: Option<Duration>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut stdout = std::io::stdout();
    loop {
        let status = rt.block_on(fetch(admin));
        let text = match (&status, output) {
            (Ok(s), Output::Table) => table(&admin.to_string(), s),
            (Ok(s), Output::Json) => serde_json::to_string(s)? + "\n",
            // Watching: say what is wrong and keep trying (Rouse may be restarting).
            (Err(e), _) if watch.is_some() => format!("rouse status: {e:#}\n"),
            (Err(_), _) => return status.map(drop),
        };
        match watch {
            None => {
                stdout.write_all(text.as_bytes())?;
                return Ok(());
            }
            Some(every) => {
                if output == Output::Table {
                    // Home, clear: the table redraws in place.
                    stdout.write_all(b"\x1b[H\x1b[2J")?;
                }
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
                std::thread::sleep(every);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> TargetStatus {
        TargetStatus {
            target: name.into(),
            routes: vec![name.into()],
            hosts: vec![format!("{name}.localhost")],
            ready: 1,
            desired: Some(2),
            held: 3,
            in_flight: 4,
            queued_events: 5,
            cold_starts: 6,
            last_wake_ms_ago: Some(12_500),
            unavailable: None,
        }
    }

    #[test]
    fn the_table_has_a_row_per_target_in_aligned_columns() {
        let mut cold = target("hello-world");
        cold.ready = 0;
        cold.desired = None;
        cold.last_wake_ms_ago = None;
        cold.unavailable = Some("service \"ns/x\" not found".into());
        let s = Status {
            draining: false,
            held: 3,
            targets: vec![target("api"), cold],
        };
        let t = table("127.0.0.1:9090", &s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Rouse at 127.0.0.1:9090: 3 held, 2 targets");
        assert!(lines[1].starts_with("TARGET       HOSTS"), "{t}");
        let api: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            api,
            [
                "api",
                "api.localhost",
                "1",
                "2",
                "3",
                "4",
                "5",
                "6",
                "12s",
                "ago"
            ]
        );
        assert!(
            lines[3].starts_with("hello-world  hello-world.localhost  0      -"),
            "{t}"
        );
        assert!(lines[3].contains("never"), "{t}");
        assert!(
            lines[3].ends_with("unavailable: service \"ns/x\" not found"),
            "{t}"
        );
        // Columns line up: every row's HELD value starts where the header's does.
        let col = lines[1].find("HELD").expect("HELD");
        assert_eq!(&lines[2][col..col + 1], "3");
    }

    #[test]
    fn wakes_read_as_people_say_them() {
        assert_eq!(ago(None), "never");
        assert_eq!(ago(Some(400)), "just now");
        assert_eq!(ago(Some(59_999)), "59s ago");
        assert_eq!(ago(Some(61_000)), "1m ago");
        assert_eq!(ago(Some(7_300_000)), "2h ago");
    }
}
