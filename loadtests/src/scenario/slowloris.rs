//! Scenario 8 — slowloris: normal clients' latency while thousands of connections sit idle or
//! trickle their request heads a byte a second, reopened as soon as Rouse closes them (as an
//! attacker would). Normal requests must not fail, and their p99 must stay within 2× of quiet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rouse_e2e::{App, Launch, Rouse};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{LOAD_CPU, SUT_CPU};
use crate::Ctx;
use crate::oha::{self, Load};
use crate::report::{Report, verdict};

/// What the attacking connections saw.
#[derive(Default)]
struct Attack {
    /// Connections opened (reopened ones included).
    opened: AtomicU64,
    /// Connections Rouse closed without answering (idle past the header timeout).
    closed: AtomicU64,
    /// Trickled heads Rouse answered `408` before closing.
    answered_408: AtomicU64,
}

/// Holds a connection that sends nothing; reopens it when Rouse closes it.
async fn idle(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, attack: Arc<Attack>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        attack.opened.fetch_add(1, Ordering::Relaxed);
        let mut b = [0u8; 256];
        if matches!(s.read(&mut b).await, Ok(0) | Err(_)) {
            attack.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends a request head one byte a second; reopens when Rouse answers or closes.
async fn trickle(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, attack: Arc<Attack>) {
    let head = b"GET / HTTP/1.1\r\nHost: slowloris.localhost\r\nX-Slow: ";
    while !stop.load(Ordering::Relaxed) {
        let Ok(s) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        attack.opened.fetch_add(1, Ordering::Relaxed);
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            for b in head.iter().chain(std::iter::repeat(&b'a')) {
                if w.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let mut got = Vec::new();
        let _ = r.read_to_end(&mut got).await;
        writer.abort();
        if got.starts_with(b"HTTP/1.1 408") {
            attack.answered_408.fetch_add(1, Ordering::Relaxed);
        } else {
            attack.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let (idle_n, trickle_n, secs, rate) =
        ctx.pick((10_000usize, 1_000usize, 20u64, 1000u32), (200, 20, 2, 200));
    let app = App::hello("slowloris")
        .env("LOG_REQUESTS", "0")
        .with("replicas: {min: 1, max: 1}")
        .with("scaledown_period_secs: 86400");
    let rouse = Rouse::launch(Launch {
        apps: std::slice::from_ref(&app),
        proxy_extra: "  connections: {max: 20000}\n",
        log: "warn",
        threads: 1,
        cpus: Some(SUT_CPU),
        ..Launch::default()
    })
    .await;
    let mut load = Load::new(rouse.proxy, "slowloris.localhost");
    (load.rate, load.duration, load.cpus) =
        (Some(rate), Some(Duration::from_secs(secs)), Some(LOAD_CPU));
    let quiet = oha::run(&ctx.tools.oha, &load).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let attack = Arc::new(Attack::default());
    let mut tasks = Vec::new();
    for i in 0..idle_n + trickle_n {
        let (stop, attack) = (stop.clone(), attack.clone());
        tasks.push(if i < idle_n {
            tokio::spawn(idle(rouse.proxy, stop, attack))
        } else {
            tokio::spawn(trickle(rouse.proxy, stop, attack))
        });
    }
    // The attack is established when Rouse holds (nearly) all of its connections.
    let want = ((idle_n + trickle_n) as f64 * 0.95) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut open = 0.0;
    while Instant::now() < deadline {
        open = rouse.metric("rouse_proxy_connections").await.unwrap_or(0.0);
        if open as u64 >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let attacked = oha::run(&ctx.tools.oha, &load).await;
    let open_after = rouse.metric("rouse_proxy_connections").await.unwrap_or(0.0);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let attacked = attacked?;
    anyhow::ensure!(
        open as u64 >= want,
        "the attack never got {want} connections open in Rouse (had {open})"
    );

    let (q99, a99) = (quiet.p99 * 1e3, attacked.p99 * 1e3);
    let ratio = if q99 > 0.0 { a99 / q99 } else { 0.0 };
    let failed = attacked.failed();
    let (opened, closed, answered) = (
        attack.opened.load(Ordering::Relaxed),
        attack.closed.load(Ordering::Relaxed),
        attack.answered_408.load(Ordering::Relaxed),
    );
    let mut r = Report::new(
        "slowloris",
        "Slowloris: normal clients beside idle and trickling connections",
    );
    r.para(&format!(
        "Method: a warm app behind Rouse (one worker; Rouse and the app on CPU {SUT_CPU}, oha on CPU \
         {LOAD_CPU}) with its default connection limits except `connections.max: 20000`. First {rate} \
         rps of normal HTTP/1.1 requests for {secs} s (32 connections, latency-corrected), quiet. Then \
         {idle_n} connections that send nothing and {trickle_n} that send a request head one byte a \
         second, each reopened as soon as Rouse closes it; once Rouse holds ≥ 95 % of them, the same \
         {rate} rps for {secs} s again. Rouse closes the idle ones and answers the trickling ones 408 \
         at the 10 s header timeout, so the attack churns ~{} connections a second.",
        (idle_n + trickle_n) / 10
    ));
    r.table(
        &[
            "phase",
            "requests",
            "failed",
            "p50 ms",
            "p99 ms",
            "attacker connections open in Rouse",
        ],
        &[
            vec![
                "quiet".into(),
                quiet.requests.to_string(),
                quiet.failed().to_string(),
                format!("{:.3}", quiet.p50 * 1e3),
                format!("{q99:.3}"),
                "0".into(),
            ],
            vec![
                "under attack".into(),
                attacked.requests.to_string(),
                failed.to_string(),
                format!("{:.3}", attacked.p50 * 1e3),
                format!("{a99:.3}"),
                format!("{open:.0} at the start, {open_after:.0} at the end"),
            ],
        ],
    );
    r.para(&format!(
        "Attacker connections opened {opened}; closed by Rouse unanswered (idle past the header \
         timeout) {closed}; trickled heads answered 408 {answered}."
    ));
    r.para("## Targets");
    r.table(
        &["target", "measured", "verdict"],
        &[
            vec![
                "p99 under attack ≤ 2× quiet".into(),
                format!("{a99:.3} ms vs {q99:.3} ms ({ratio:.2}×)"),
                verdict(ratio <= 2.0).into(),
            ],
            vec![
                "no normal request fails".into(),
                format!("{failed} of {}", attacked.requests),
                verdict(failed == 0).into(),
            ],
        ],
    );
    r.summary = format!(
        "slowloris: {idle_n} idle + {trickle_n} trickling connections; normal p99 {q99:.2} → {a99:.2} ms ({ratio:.2}×), {failed} failed"
    );
    r.data = json!({
        "idle": idle_n, "trickling": trickle_n, "rate": rate, "secs": secs,
        "quiet": quiet.json(), "attacked": attacked.json(),
        "attacker": {"opened": opened, "closed_unanswered": closed, "answered_408": answered,
                     "open_in_rouse_at_start": open, "open_in_rouse_at_end": open_after},
    });
    drop(rouse);
    Ok(r)
}
