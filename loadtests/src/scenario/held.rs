//! Scenario 4 — held capacity: many bodyless requests held for a cold app at once; the proxy's
//! memory per held request; then the app starts and every one must complete.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rouse_e2e::{App, Launch, Rouse};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::Ctx;
use crate::party::{self, TempDir};
use crate::plot::{self, Panel};
use crate::report::{Report, verdict};

/// Streams per HTTP/2 connection: pingora's default `SETTINGS_MAX_CONCURRENT_STREAMS`.
const STREAMS_PER_CONN: usize = 100;

struct Variant {
    name: &'static str,
    held: usize,
    idle_kib: u64,
    full_kib: u64,
    /// (held requests, RSS KiB) as the queue filled.
    curve: Vec<(f64, f64)>,
    ok: usize,
    starts: usize,
    drain_secs: f64,
}

impl Variant {
    fn kib_per_held(&self) -> f64 {
        self.full_kib.saturating_sub(self.idle_kib) as f64 / self.held.max(1) as f64
    }
}

/// This process's open-file limit: one HTTP/1.1 held request is one socket here and one in Rouse.
fn nofile_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

async fn start(gate: &std::path::Path) -> Rouse {
    let app = App::hello("held")
        .env("LOG_REQUESTS", "0")
        .env("START_GATE_FILE", &gate.display().to_string())
        .with("replicas: {min: 0, max: 1}")
        // Release at most 1 000 at a time to the fresh replica: unbounded, every held request
        // would open its own upstream connection at once (and run into the open-file limit).
        .with("endpoint_concurrency: 1000")
        .with("cold_start: {max_held_requests: 60000, max_held_bytes: 1073741824, hold_timeout_ms: 600000}");
    Rouse::launch(Launch {
        apps: std::slice::from_ref(&app),
        proxy_extra:
            "  max_held_requests: 60000\n  max_held_bytes: 1073741824\n  connections: {max: 70000}\n",
        log: "info",
        ..Launch::default()
    })
    .await
}

async fn held_now(rouse: &Rouse) -> usize {
    rouse
        .metric("rouse_proxy_held_requests{route=\"held\"}")
        .await
        .unwrap_or(0.0) as usize
}

/// Waits until `n` requests are held; the RSS then.
async fn until_held(rouse: &Rouse, n: usize) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while held_now(rouse).await < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} requests held after 120 s",
            held_now(rouse).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(party::rss_kib(rouse.pid()).0)
}

fn h1_client(proxy: std::net::SocketAddr, i: usize) -> JoinHandle<bool> {
    tokio::spawn(async move {
        let Ok(mut s) = tokio::net::TcpStream::connect(proxy).await else {
            return false;
        };
        let req =
            format!("GET /?i={i} HTTP/1.1\r\nHost: held.localhost\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return false;
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out.starts_with(b"HTTP/1.1 200")
    })
}

/// One h2c connection carrying `streams` concurrent requests.
async fn h2_connection(
    proxy: std::net::SocketAddr,
    streams: usize,
) -> anyhow::Result<Vec<JoinHandle<bool>>> {
    let tcp = tokio::net::TcpStream::connect(proxy).await?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok((0..streams)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let Ok(req) = http::Request::get(format!("http://held.localhost/?s={i}"))
                    .body(Empty::<Bytes>::new())
                else {
                    return false;
                };
                if sender.ready().await.is_err() {
                    return false;
                }
                sender
                    .send_request(req)
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
        })
        .collect())
}

async fn variant(name: &'static str, n: usize, http2: bool) -> anyhow::Result<Variant> {
    let dir = TempDir::new(&format!("held-{}", if http2 { "h2" } else { "h1" }))?;
    let gate: PathBuf = dir.0.join("start");
    let rouse = start(&gate).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = party::rss_kib(rouse.pid()).0;
    let mut curve = vec![(0.0, idle_kib as f64 / 1024.0)];
    let mut clients = Vec::with_capacity(n);
    let step = (n / 20).max(STREAMS_PER_CONN);
    while clients.len() < n {
        let batch = step.min(n - clients.len());
        if http2 {
            let mut left = batch;
            while left > 0 {
                let s = left.min(STREAMS_PER_CONN);
                clients.extend(h2_connection(rouse.proxy, s).await?);
                left -= s;
            }
        } else {
            let base = clients.len();
            clients.extend((0..batch).map(|i| h1_client(rouse.proxy, base + i)));
        }
        let rss = until_held(&rouse, clients.len()).await?;
        curve.push((clients.len() as f64, rss as f64 / 1024.0));
    }
    // Let allocator and kernel settle before the reading that counts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let full_kib = party::rss_kib(rouse.pid()).0;
    let released = Instant::now();
    std::fs::write(&gate, b"go")?;
    let mut ok = 0;
    for c in clients {
        if c.await.unwrap_or(false) {
            ok += 1;
        }
    }
    let drain_secs = released.elapsed().as_secs_f64();
    rouse.settle().await;
    let starts = rouse.count_output("hello-fn started");
    eprintln!(
        "held {name}: {n} held, RSS {idle_kib} → {full_kib} KiB, {ok} answered 200 in {drain_secs:.1} s, {starts} start(s)"
    );
    Ok(Variant {
        name,
        held: n,
        idle_kib,
        full_kib,
        curve,
        ok,
        starts,
        drain_secs,
    })
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let n2 = ctx.pick(50_000, 500);
    // Each HTTP/1.1 held request is a socket in this process and one in Rouse.
    let limit = nofile_limit();
    let n1 = ctx.pick(50_000usize.min(limit.saturating_sub(2_000)), 500);
    anyhow::ensure!(
        ctx.smoke || n1 >= 1_000,
        "the open-file limit ({limit}) leaves room for only {n1} HTTP/1.1 held requests; raise it (ulimit -n)"
    );
    let h2 = variant("h2c, 100 streams per connection", n2, true).await?;
    let h1 = variant("HTTP/1.1, one connection each", n1, false).await?;
    let vs = [&h2, &h1];

    let mut r = Report::new("held", "Held capacity: memory per held request");
    r.para(&format!(
        "Method: a fresh Rouse per variant (2 worker threads), one route whose app waits for a gate file \
         before listening, so requests stay held as long as the measurement needs. Bodyless GETs are opened \
         in 20 steps; after each step the run waits until Rouse's `rouse_proxy_held_requests` gauge counts \
         them all and reads Rouse's RSS. Then the gate opens, the app starts once, and every request must \
         answer 200; Rouse releases them 1 000 at a time (`endpoint_concurrency: 1000`). Per held request = (RSS with all held − idle RSS) / held. The HTTP/1.1 variant is capped \
         at {n1} requests: each is a socket in the client and in Rouse, and the open-file limit here is \
         {limit} per process (the runner raises its soft limit to the hard one; going beyond needs \
         CAP_SYS_RESOURCE, which this sandbox does not grant); the h2c variant carries {n2} over {} connections.",
        n2.div_ceil(STREAMS_PER_CONN)
    ));
    r.table(
        &[
            "variant",
            "held",
            "RSS idle MiB",
            "RSS all held MiB",
            "KiB per held",
            "answered 200",
            "app starts",
            "release → all answered s",
        ],
        &vs.iter()
            .map(|v| {
                vec![
                    v.name.to_string(),
                    v.held.to_string(),
                    format!("{:.1}", v.idle_kib as f64 / 1024.0),
                    format!("{:.1}", v.full_kib as f64 / 1024.0),
                    format!("{:.2}", v.kib_per_held()),
                    v.ok.to_string(),
                    v.starts.to_string(),
                    format!("{:.2}", v.drain_secs),
                ]
            })
            .collect::<Vec<_>>(),
    );
    r.para("## Targets");
    r.table(
        &["target", "measured", "verdict"],
        &vs.iter()
            .flat_map(|v| {
                [
                    vec![
                        format!("≤ 4 KiB per held request ({})", v.name),
                        format!("{:.2} KiB", v.kib_per_held()),
                        verdict(v.kib_per_held() <= 4.0).into(),
                    ],
                    vec![
                        format!("all {} complete after release, one start", v.held),
                        format!("{} answered 200, {} start(s)", v.ok, v.starts),
                        verdict(v.ok == v.held && v.starts == 1).into(),
                    ],
                ]
            })
            .collect::<Vec<_>>(),
    );
    r.summary = format!(
        "held: {:.2} KiB per held request over h2c ({} held), {:.2} KiB over HTTP/1.1 ({} held); {}/{} and {}/{} answered after release",
        h2.kib_per_held(),
        h2.held,
        h1.kib_per_held(),
        h1.held,
        h2.ok,
        h2.held,
        h1.ok,
        h1.held
    );
    let png = "held-rss.png";
    plot::lines(
        &ctx.out.join(png),
        "Rouse RSS as held requests accumulate",
        "held requests",
        &[Panel {
            y_label: "RSS MiB",
            series: vs.iter().map(|v| (v.name, v.curve.clone())).collect(),
        }],
        false,
    )?;
    r.plots.push(png.into());
    r.data = json!({
        "nofile_limit": limit,
        "variants": vs.iter().map(|v| json!({
            "name": v.name, "held": v.held, "rss_idle_kib": v.idle_kib, "rss_full_kib": v.full_kib,
            "kib_per_held": v.kib_per_held(), "ok": v.ok, "starts": v.starts, "drain_secs": v.drain_secs,
            "curve_held_vs_rss_mib": v.curve,
        })).collect::<Vec<_>>(),
    });
    Ok(r)
}
