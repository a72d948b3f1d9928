//! `rouse status`: what a person at a shell wants to see of a running Rouse — every target with
//! its hosts, replicas (ready and desired), held and in-flight requests, queued events, cold
//! starts and when it was last woken — as a table (`--watch` redraws it in place) or as JSON
//! for scripts (`-o json`).
//!
//! The data is the admin API's `/status` ([`document`], built from the proxy's own state and,
//! on the local platform, the desired replicas of each app), or on Kubernetes the controller's
//! (`rouse-controller`'s `/status`: replicas desired and asked of `/scale`, demand summed over
//! every proxy). The model and its rendering are [`rouse_core::status`].

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

pub use rouse_core::status::{Status, TargetStatus, table};

use crate::state::ProxyState;

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
            ready: Some(t.endpoints().endpoints.len()),
            desired: state.desired_replicas(&t.name),
            held: t.demand.held(),
            in_flight: t.demand.in_flight(),
            queued_events: t.demand.queued(),
            cold_starts: Some(0),
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
        entry.cold_starts = Some(entry.cold_starts.unwrap_or(0) + rs.metrics.cold_starts.get());
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
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .map_err(|_| anyhow::anyhow!("{admin}/status: body not read in 5 s"))??
        .to_bytes();
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
            // Watching: say what is wrong (on stderr: stdout stays one document per line for
            // scripts) and keep trying (Rouse may be restarting).
            (Err(e), _) if watch.is_some() => {
                eprintln!("rouse status: {e:#}");
                if let Some(every) = watch {
                    std::thread::sleep(every);
                }
                continue;
            }
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
