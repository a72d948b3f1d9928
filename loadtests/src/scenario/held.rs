//! Scenario 4 — held capacity: many bodyless requests held for a cold app at once; the proxy's
//! memory per held request; then the app starts and every one must complete. The KEDA HTTP
//! Add-on interceptor holds the same requests the same way (its backend's only endpoint
//! unready), measured by the same method.

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
use crate::party::{self, Keda, TempDir};
use crate::report::{Report, verdict};
use rouse_e2e::plot::{self, Panel};

/// Streams per HTTP/2 connection: pingora's default `SETTINGS_MAX_CONCURRENT_STREAMS`.
const STREAMS_PER_CONN: usize = 100;

struct Variant {
    name: &'static str,
    /// "Rouse" or "KEDA interceptor".
    party: &'static str,
    held: usize,
    idle_kib: u64,
    full_kib: u64,
    /// (held requests, RSS KiB) as the queue filled.
    curve: Vec<(f64, f64)>,
    ok: usize,
    /// App starts (Rouse starts the app once; the interceptor does not start anything).
    starts: Option<usize>,
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

/// Who holds the requests: Rouse with its app behind a gate file, or the KEDA interceptor with
/// its backend's endpoint unready (the backend a Rouse-run `hello-fn` replica).
enum Holder {
    Rouse {
        rouse: Rouse,
        gate: PathBuf,
        _dir: TempDir,
    },
    Keda {
        keda: Box<Keda>,
        _backend: Rouse,
    },
}

impl Holder {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Holder::Rouse { rouse, .. } => rouse.proxy,
            Holder::Keda { keda, .. } => keda.party.addr,
        }
    }

    fn rss_kib(&self) -> u64 {
        match self {
            Holder::Rouse { rouse, .. } => party::rss_kib(rouse.pid()).0,
            Holder::Keda { keda, .. } => keda.party.rss_kib(),
        }
    }

    /// Requests held now: Rouse's `rouse_proxy_held_requests` gauge, the interceptor's
    /// pending count.
    async fn held(&self) -> usize {
        match self {
            Holder::Rouse { rouse, .. } => rouse
                .metric("rouse_proxy_held_requests{route=\"held\"}")
                .await
                .unwrap_or(0.0) as usize,
            Holder::Keda { keda, .. } => keda.pending().await.unwrap_or(0) as usize,
        }
    }

    async fn release(&self) -> anyhow::Result<()> {
        match self {
            Holder::Rouse { gate, .. } => Ok(std::fs::write(gate, b"go")?),
            Holder::Keda { keda, .. } => keda.set_ready(true).await,
        }
    }

    async fn starts(&self) -> Option<usize> {
        match self {
            Holder::Rouse { rouse, .. } => {
                rouse.settle().await;
                Some(rouse.count_output("hello-fn started"))
            }
            Holder::Keda { .. } => None,
        }
    }
}

/// Waits until `n` requests are held; the RSS then.
async fn until_held(holder: &Holder, n: usize) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while holder.held().await < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} requests held after 120 s",
            holder.held().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(holder.rss_kib())
}

fn h1_client(proxy: std::net::SocketAddr, i: usize) -> JoinHandle<bool> {
    tokio::spawn(async move {
        let Ok(mut s) = tokio::net::TcpStream::connect(proxy).await else {
            return false;
        };
        let req = format!("GET /?i={i} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
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
                let Ok(req) =
                    http::Request::get(format!("http://{HOST}/?s={i}")).body(Empty::<Bytes>::new())
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

async fn rouse_holder(http2: bool) -> anyhow::Result<Holder> {
    let dir = TempDir::new(&format!("held-{}", if http2 { "h2" } else { "h1" }))?;
    let gate: PathBuf = dir.0.join("start");
    let rouse = start(&gate).await;
    Ok(Holder::Rouse {
        rouse,
        gate,
        _dir: dir,
    })
}

async fn keda_holder(ctx: &Ctx) -> anyhow::Result<Holder> {
    let (interceptor, crds) = ctx.tools.keda.clone().map_err(anyhow::Error::msg)?;
    let (backend_rouse, backend) = super::warm_rouse("held-backend").await?;
    let keda = party::keda(&interceptor, &crds, backend, HOST, "0-1", "0-1").await?;
    keda.set_ready(false).await?;
    keda.until_holding(Duration::from_secs(30)).await?;
    Ok(Holder::Keda {
        keda: Box::new(keda),
        _backend: backend_rouse,
    })
}

/// The host every client names (the route's, and the interceptor's HTTPScaledObject's).
const HOST: &str = "held.localhost";

async fn variant(
    holder: Holder,
    name: &'static str,
    party: &'static str,
    n: usize,
    http2: bool,
) -> anyhow::Result<Variant> {
    let proxy = holder.addr();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = holder.rss_kib();
    let mut curve = vec![(0.0, idle_kib as f64 / 1024.0)];
    let mut clients = Vec::with_capacity(n);
    let step = (n / 20).max(STREAMS_PER_CONN);
    while clients.len() < n {
        let batch = step.min(n - clients.len());
        if http2 {
            let mut left = batch;
            while left > 0 {
                let s = left.min(STREAMS_PER_CONN);
                clients.extend(h2_connection(proxy, s).await?);
                left -= s;
            }
        } else {
            let base = clients.len();
            clients.extend((0..batch).map(|i| h1_client(proxy, base + i)));
        }
        let rss = until_held(&holder, clients.len()).await?;
        curve.push((clients.len() as f64, rss as f64 / 1024.0));
    }
    // Let allocator and kernel settle before the reading that counts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let full_kib = holder.rss_kib();
    let released = Instant::now();
    holder.release().await?;
    // Every request gets its answer within this, or counts as not answered.
    let answer_by = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut ok = 0;
    for c in clients {
        if tokio::time::timeout_at(answer_by, c)
            .await
            .is_ok_and(|r| r.unwrap_or(false))
        {
            ok += 1;
        }
    }
    let drain_secs = released.elapsed().as_secs_f64();
    let starts = holder.starts().await;
    eprintln!(
        "held {party} {name}: {n} held, RSS {idle_kib} → {full_kib} KiB, {ok} answered 200 in {drain_secs:.1} s, starts {starts:?}"
    );
    Ok(Variant {
        name,
        party,
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
    // Each HTTP/1.1 held request is a socket in this process and one in the proxy.
    let limit = nofile_limit();
    let n1 = ctx.pick(50_000usize.min(limit.saturating_sub(2_000)), 500);
    anyhow::ensure!(
        ctx.smoke || n1 >= 1_000,
        "the open-file limit ({limit}) leaves room for only {n1} HTTP/1.1 held requests; raise it (ulimit -n)"
    );
    const H2: &str = "h2c, 100 streams per connection";
    const H1: &str = "HTTP/1.1, one connection each";
    const ROUSE: &str = "Rouse";
    const KEDA: &str = "KEDA interceptor";
    let h2 = variant(rouse_holder(true).await?, H2, ROUSE, n2, true).await?;
    let h1 = variant(rouse_holder(false).await?, H1, ROUSE, n1, false).await?;
    let k2 = variant(keda_holder(ctx).await?, H2, KEDA, n2, true).await?;
    let k1 = variant(keda_holder(ctx).await?, H1, KEDA, n1, false).await?;
    let vs = [&h2, &h1, &k2, &k1];

    let mut r = Report::new("held", "Held capacity: memory per held request");
    r.para(&format!(
        "Method: a fresh proxy per variant, one route whose backend cannot serve yet, so requests stay \
         held as long as the measurement needs. Rouse (2 worker threads): its app waits for a gate file \
         before listening. The KEDA HTTP Add-on interceptor (GOMAXPROCS=1, on the real control plane): its \
         HTTPScaledObject's Service has one endpoint, marked not ready in its EndpointSlice, so it holds \
         requests in its readiness wait (unbounded by default). Bodyless GETs are opened in 20 steps; after \
         each step the run waits until the proxy counts them all (Rouse's `rouse_proxy_held_requests` \
         gauge; the interceptor's pending count from its admin `/queue`, what KEDA's scaler reads) and reads \
         the proxy's RSS. Then the gate opens (Rouse: the app starts once) or the endpoint turns ready \
         (KEDA), and every request must answer 200 within 120 s; Rouse releases them 1 000 at a time \
         (`endpoint_concurrency: 1000`), the interceptor all at once. Per held request = (RSS with all held \
         − idle RSS) / held. The HTTP/1.1 variants are capped at {n1} requests: each is a socket in the \
         client and in the proxy, and the open-file limit here is {limit} per process (the runner raises \
         its soft limit to the hard one; going beyond needs CAP_SYS_RESOURCE, which this sandbox does not \
         grant); the h2c variants carry {n2} over {} connections.",
        n2.div_ceil(STREAMS_PER_CONN)
    ));
    r.table(
        &[
            "proxy",
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
                    v.party.to_string(),
                    v.name.to_string(),
                    v.held.to_string(),
                    format!("{:.1}", v.idle_kib as f64 / 1024.0),
                    format!("{:.1}", v.full_kib as f64 / 1024.0),
                    format!("{:.2}", v.kib_per_held()),
                    v.ok.to_string(),
                    v.starts.map_or("-".to_string(), |s| s.to_string()),
                    format!("{:.2}", v.drain_secs),
                ]
            })
            .collect::<Vec<_>>(),
    );
    r.para("## Targets");
    let mut targets = Vec::new();
    for (v, peer) in [(&h2, &k2), (&h1, &k1)] {
        targets.push(vec![
            format!("≤ 4 KiB per held request ({})", v.name),
            format!("{:.2} KiB", v.kib_per_held()),
            verdict(v.kib_per_held() <= 4.0).into(),
        ]);
        targets.push(vec![
            format!("all {} complete after release, one start", v.held),
            format!("{} answered 200, {} start(s)", v.ok, v.starts.unwrap_or(0)),
            verdict(v.ok == v.held && v.starts == Some(1)).into(),
        ]);
        targets.push(vec![
            format!(
                "less memory per held request than the KEDA interceptor ({})",
                v.name
            ),
            format!(
                "{:.2} vs {:.2} KiB (Rouse's is {:.2}× the interceptor's)",
                v.kib_per_held(),
                peer.kib_per_held(),
                v.kib_per_held() / peer.kib_per_held().max(0.01)
            ),
            verdict(v.kib_per_held() < peer.kib_per_held()).into(),
        ]);
    }
    r.table(&["target", "measured", "verdict"], &targets);
    r.summary = format!(
        "held: Rouse {:.2} KiB per held request over h2c ({} held), {:.2} KiB over HTTP/1.1 ({} held); KEDA interceptor {:.2} and {:.2} KiB; Rouse answered {}/{} and {}/{} after release",
        h2.kib_per_held(),
        h2.held,
        h1.kib_per_held(),
        h1.held,
        k2.kib_per_held(),
        k1.kib_per_held(),
        h2.ok,
        h2.held,
        h1.ok,
        h1.held
    );
    let png = "held-rss.png";
    let labels: Vec<String> = vs
        .iter()
        .map(|v| format!("{}, {}", v.party, v.name))
        .collect();
    plot::lines(
        &ctx.out.join(png),
        "Proxy RSS as held requests accumulate",
        "held requests",
        &[Panel {
            y_label: "RSS MiB",
            series: vs
                .iter()
                .zip(&labels)
                .map(|(v, l)| (l.as_str(), v.curve.clone()))
                .collect(),
        }],
        false,
    )?;
    r.plots.push(png.into());
    r.data = json!({
        "nofile_limit": limit,
        "variants": vs.iter().map(|v| json!({
            "proxy": v.party, "name": v.name, "held": v.held, "rss_idle_kib": v.idle_kib,
            "rss_full_kib": v.full_kib, "kib_per_held": v.kib_per_held(), "ok": v.ok,
            "starts": v.starts, "drain_secs": v.drain_secs, "curve_held_vs_rss_mib": v.curve,
        })).collect::<Vec<_>>(),
    });
    Ok(r)
}
