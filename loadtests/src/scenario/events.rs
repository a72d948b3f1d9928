//! Scenario 7 — events: batched Event Grid deliveries through the gateway to a warm target,
//! on each queue backend.
//!
//! Senders POST Event Grid batches (unique event ids, so dedupe does not drop them) to the
//! gateway mounted on Rouse's listener; the gateway makes each batch durable, acknowledges it,
//! and delivers it through the proxy to a warm `hello-fn` event sink. In one run, with the same
//! senders and batches: straight to the sink (baseline), then the gateway on the embedded log
//! (one fsync per request), on NATS JetStream R1 (one local `nats-server`) and on JetStream R3
//! (a 3-node cluster on 127.0.0.1). Each backend gets a fresh Rouse; the NATS servers are
//! built by `eventgrid-adapter/nats/build-nats-server.sh` (cached) and started here.
//!
//! The load is generated in-process (hyper, `concurrency` loops) rather than with oha, because
//! every request needs a fresh body (unique ids) and oha replays one body.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rouse_e2e::{App, Launch, Rouse};
use serde_json::json;

use super::{field, quantile, unix_us};
use crate::Ctx;
use crate::report::Report;

fn batch(sender: usize, seq: u64, size: usize) -> String {
    let events: Vec<String> = (0..size)
        .map(|i| {
            format!(
                r#"{{"id":"s{sender}-{seq}-{i}","topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/bench","subject":"/blobServices/default/containers/c/blobs/{i}","eventType":"Microsoft.Storage.BlobCreated","eventTime":"2026-11-28T18:41:00.9584103Z","data":{{"api":"PutBlob","contentLength":{i}}},"dataVersion":"","metadataVersion":"1"}}"#
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

/// What one sender loop run measured.
struct Blast {
    /// Requests answered 2xx, and their events.
    requests: u64,
    events: u64,
    /// Requests answered otherwise (503 + Retry-After when the queue is full or unavailable).
    refused: u64,
    took: Duration,
}

/// Posts batches from `senders` loops for `duration` or until `budget` events were
/// acknowledged; a refused request is followed by a 20 ms pause (a sender backing off), not
/// retried.
async fn blast(
    addr: SocketAddr,
    path: &str,
    host: &str,
    senders: usize,
    size: usize,
    (duration, budget): (Duration, u64),
) -> Blast {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (client, ok, refused, path, host) = (
            client.clone(),
            ok.clone(),
            refused.clone(),
            path.to_string(),
            host.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while start.elapsed() < duration && ok.load(Ordering::Relaxed) * (size as u64) < budget
            {
                seq += 1;
                let req = http::Request::post(format!("http://{addr}{path}"))
                    .header("host", &host)
                    .header("content-type", "application/json")
                    .header("aeg-event-type", "Notification")
                    .body(Full::new(Bytes::from(batch(s, seq, size))))
                    .expect("request");
                if let Ok(resp) = client.request(req).await {
                    let good = resp.status().is_success();
                    let _ = resp.into_body().collect().await;
                    if good {
                        ok.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let requests = ok.load(Ordering::Relaxed);
    Blast {
        requests,
        events: requests * size as u64,
        refused: refused.load(Ordering::Relaxed),
        took: start.elapsed(),
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A free port on 127.0.0.1 (bound, then released for the server).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// The cached `nats-server` binary (built from its pinned Go module on first use).
fn nats_binary() -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../eventgrid-adapter/nats/build-nats-server.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "{} failed", script.display());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    anyhow::ensure!(path.is_file(), "nats-server missing at {}", path.display());
    Ok(path)
}

/// `nats-server -js` processes on 127.0.0.1, killed on drop.
struct Nats {
    children: Vec<Child>,
    /// The client URLs, comma-separated (the gateway's `queue.url`).
    url: String,
}

impl Nats {
    /// One server (`nodes` = 1) or a cluster of `nodes` on 127.0.0.1, each with its own client
    /// port, cluster port and store under `store`. Returns at once: the gateway's warm-up
    /// request waits until JetStream (and a cluster's meta leader) is there.
    fn start(bin: &Path, store: &Path, nodes: usize) -> anyhow::Result<Nats> {
        let ports: Vec<(u16, u16)> = (0..nodes).map(|_| (free_port(), free_port())).collect();
        let mut children = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let dir = store.join(&name);
            std::fs::create_dir_all(&dir)?;
            let mut cmd = Command::new(bin);
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(&dir)
                .args(["-server_name", &name]);
            if nodes > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, (_, p))| format!("nats://127.0.0.1:{p}"))
                    .collect();
                cmd.args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
                    .args(["--routes", &routes.join(",")])
                    .args(["--cluster_name", "rouse-bench"]);
            }
            children.push(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?);
        }
        let url = ports
            .iter()
            .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Nats { children, url })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes the scenario's data (logs, NATS stores) however it ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One queue backend's run through the gateway.
struct Run {
    name: &'static str,
    /// Acknowledgement of a one-event request → the scale-up of its target at zero, ms.
    wake_ms: Vec<f64>,
    /// Refused webhook requests by `reason` (from `rouse_event_requests_rejected_total`).
    refusals: Vec<(String, u64)>,
    ack: Blast,
    delivered: f64,
    /// From the start of the load until every acknowledged event was delivered.
    total: Duration,
    mean_latency_ms: f64,
}

/// Posts one event through the gateway until it is acknowledged (the queue is ready: the
/// stream exists, a cluster has its leaders).
async fn warm_up(rouse: &Rouse, name: &str) -> anyhow::Result<()> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = http::Request::post(format!("http://{}/webhooks/bench", rouse.proxy))
            .header("host", "events.bench")
            .header("content-type", "application/json")
            .header("aeg-event-type", "Notification")
            .body(Full::new(Bytes::from(
                batch(usize::MAX, 0, 1), // an id no sender uses
            )))
            .expect("request");
        if let Ok(resp) = client.request(req).await
            && resp.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{name}: the gateway did not acknowledge a warm-up event within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Now, in microseconds since the epoch (the clock of Rouse's log lines).
fn now_unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `wakes` times: waits until the `cold` app is at zero, posts a one-event batch to its
/// subscription and notes when the 200 arrived; then waits for the delivery and pairs the ack
/// with the `Scaled.` line (0 → 1) that Rouse logged for `cold`. Both clocks are this machine's
/// wall clock. Returns ack → scale-up in ms (negative: the wake began before the sender had read
/// its 200).
async fn wake_after_ack(rouse: &Rouse, wakes: usize) -> anyhow::Result<Vec<f64>> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut acked_at = Vec::new();
    for i in 0..wakes {
        rouse
            .wait_for("cold at zero", Duration::from_secs(20), || async {
                rouse.ready_replicas("cold").await == 0
            })
            .await;
        let req = http::Request::post(format!("http://{}/webhooks/wake", rouse.proxy))
            .header("host", "events.bench")
            .header("content-type", "application/json")
            .header("aeg-event-type", "Notification")
            .body(Full::new(Bytes::from(batch(usize::MAX - 1, i as u64, 1))))
            .expect("request");
        let resp = client.request(req).await?;
        let at = now_unix_us();
        anyhow::ensure!(
            resp.status().is_success(),
            "wake {i}: the gateway answered {}",
            resp.status()
        );
        acked_at.push(at);
        let want = (i + 1) as f64;
        rouse
            .wait_for(
                "the wake event delivered",
                Duration::from_secs(30),
                || async {
                    metric(
                        &rouse.metrics().await,
                        "rouse_events_delivered_total{subscription=\"wake\"}",
                    ) >= want
                },
            )
            .await;
    }
    rouse.settle().await;
    let scaled: Vec<u64> = rouse
        .output()
        .iter()
        .filter(|l| {
            l.contains("Scaled.")
                && field(l, "target") == Some("cold")
                && field(l, "from") == Some("0")
        })
        .filter_map(|l| unix_us(l))
        .collect();
    anyhow::ensure!(
        scaled.len() == wakes,
        "expected {wakes} scale-ups of the cold app, found {}",
        scaled.len()
    );
    Ok(acked_at
        .iter()
        .zip(&scaled)
        .map(|(ack, up)| (*up as f64 - *ack as f64) / 1e3)
        .collect())
}

/// Refused webhook requests of subscription `bench`, by reason.
fn refusals(metrics: &str) -> Vec<(String, u64)> {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("rouse_event_requests_rejected_total{")
                && l.contains("subscription=\"bench\"")
        })
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?;
            let n = l.split_whitespace().last()?.parse::<f64>().ok()?;
            Some((reason.to_string(), n as u64))
        })
        .collect()
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    // Time, or events (the embedded log takes ~330 bytes of disk per event until compacted;
    // this machine has ~2 GB free), whichever runs out first.
    let limit = ctx.pick(
        (Duration::from_secs(20), 1_000_000),
        (Duration::from_secs(1), 100_000),
    );
    let duration = limit.0;
    let (senders, size) = (ctx.pick(8, 2), ctx.pick(1000, 10));
    let data = std::env::temp_dir().join(format!("rouse-bench-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let _cleanup = Cleanup(data.clone());
    let bin = nats_binary()?;
    let r1 = Nats::start(&bin, &data.join("nats-r1"), 1)?;
    let r3 = Nats::start(&bin, &data.join("nats-r3"), 3)?;
    let sink = App::hello("sink")
        .env("LOG_REQUESTS", "0")
        .with("replicas: {min: 1, max: 1}");
    // At zero between wakes: idle 0.2 s, then scaled down (as in the `wake` scenario).
    let cold = App::hello("cold")
        .env("LOG_REQUESTS", "0")
        .with("scaledown_period_secs: 0.2")
        .with("scaling: {stable_window_secs: 0.5, panic_window_secs: 0.1, tick_secs: 0.05}");
    let apps = [sink, cold];
    let wakes = ctx.pick(10, 2);
    let backends = [
        ("embedded log", String::new()),
        (
            "JetStream R1",
            format!(
                "  queue: {{backend: jetstream, url: \"{}\", replicas: 1}}\n",
                r1.url
            ),
        ),
        (
            "JetStream R3",
            format!(
                "  queue: {{backend: jetstream, url: \"{}\", replicas: 3}}\n",
                r3.url
            ),
        ),
    ];
    let mut direct = None;
    let mut runs = Vec::new();
    for (i, (name, queue)) in backends.into_iter().enumerate() {
        let extra = format!(
            "event_gateway:\n  data_dir: {}\n{queue}  subscriptions:\n    - name: bench\n      path: /webhooks/bench\n      target: {{app: sink, path: /events}}\n      delivery: {{batching: per-batch, max_events: {size}, concurrency: 4}}\n    - name: wake\n      path: /webhooks/wake\n      target: {{app: cold, path: /events}}\n",
            data.join(format!("gateway-{i}")).display()
        );
        let rouse = Rouse::launch(Launch {
            apps: &apps,
            extra: &extra,
            ..Launch::default()
        })
        .await;
        rouse
            .wait_for("the sink warm", Duration::from_secs(20), || async {
                rouse.ready_replicas("sink").await == 1
            })
            .await;
        if direct.is_none() {
            // Baseline: straight to the sink.
            let sink_addr = rouse
                .admin_get("/queues")
                .await
                .and_then(|r| {
                    // The sink is the route with an endpoint (`cold` is at zero).
                    r.json()["routes"].as_array()?.iter().find_map(|route| {
                        route["endpoints"][0]["addr"]
                            .as_str()
                            .and_then(|a| a.parse::<SocketAddr>().ok())
                    })
                })
                .ok_or_else(|| anyhow::anyhow!("sink endpoint not found in /queues"))?;
            direct = Some(blast(sink_addr, "/events", "sink", senders, size, limit).await);
        }
        warm_up(&rouse, name).await?;
        // Before the load: a wake is measured on an otherwise idle gateway.
        let wake_ms = wake_after_ack(&rouse, wakes).await?;
        // Acknowledged once durable (fsync'd / JetStream publish acks); delivered by the workers.
        let ack = blast(
            rouse.proxy,
            "/webhooks/bench",
            "events.bench",
            senders,
            size,
            limit,
        )
        .await;
        let drain_start = Instant::now();
        // The warm-up event is delivered too.
        let want = ack.events as f64 + 1.0;
        let mut delivered = 0.0;
        while drain_start.elapsed() < Duration::from_secs(120) {
            delivered = metric(
                &rouse.metrics().await,
                "rouse_events_delivered_total{subscription=\"bench\"}",
            );
            if delivered >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let total = ack.took + drain_start.elapsed();
        let m = rouse.metrics().await;
        let refused_by = refusals(&m);
        let lat_sum = metric(
            &m,
            "rouse_event_delivery_seconds_sum{subscription=\"bench\"}",
        );
        let lat_count = metric(
            &m,
            "rouse_event_delivery_seconds_count{subscription=\"bench\"}",
        )
        .max(1.0);
        drop(rouse);
        let _ = std::fs::remove_dir_all(data.join(format!("gateway-{i}")));
        anyhow::ensure!(
            delivered >= want,
            "{name}: only {} of {} acknowledged events were delivered",
            delivered - 1.0,
            ack.events
        );
        runs.push(Run {
            name,
            wake_ms,
            refusals: refused_by,
            ack,
            delivered: delivered - 1.0,
            total,
            mean_latency_ms: lat_sum / lat_count * 1e3,
        });
    }
    drop((r1, r3));
    let direct = direct.expect("baseline ran");

    let rate = |n: f64, t: Duration| n / t.as_secs_f64();
    let direct_eps = rate(direct.events as f64, direct.took);
    let ratio = |eps: f64| format!("{:.3}", eps / direct_eps.max(1.0));
    let mut r = Report::new(
        "events",
        "Events: batched Event Grid deliveries to a warm target, per queue backend",
    );
    r.para(&format!(
        "Method: {senders} senders post Event Grid batches of {size} events (unique ids, ~{} KB \
         each) for {} s or {} events acknowledged, whichever comes first, first straight to a warm `hello-fn` event sink (baseline), then to the \
         gateway on Rouse's listener, once per queue backend (a fresh Rouse each): the embedded \
         log (one fsync per request), NATS JetStream R1 (one local `nats-server` v2.15.2, file \
         storage) and JetStream R3 (a 3-node cluster on 127.0.0.1, file storage). The gateway \
         answers 200 once the batch is durable and delivers batches of up to {size} events \
         through the proxy to the same sink (4 delivery workers). A refused request (503) is \
         counted and followed by a 20 ms pause. Delivered = `rouse_events_delivered_total` \
         until every acknowledged event arrived, over the time from the start of the load. \
         Everything shares the machine's 2 cores (the NATS servers too); the disk is the \
         sandbox's.",
        batch(0, 0, size).len() / 1024,
        duration.as_secs(),
        limit.1
    ));
    let mut rows = vec![vec![
        "direct to the sink".into(),
        direct.requests.to_string(),
        direct.refused.to_string(),
        direct.events.to_string(),
        format!("{direct_eps:.0}"),
        "1.000".into(),
        "-".into(),
        "-".into(),
        "-".into(),
    ]];
    let mut summary = Vec::new();
    let mut data_runs = Vec::new();
    let mut wake_rows = Vec::new();
    for run in &runs {
        let mut wake = run.wake_ms.clone();
        wake.sort_by(f64::total_cmp);
        let refusals = if run.refusals.is_empty() {
            "none".to_string()
        } else {
            run.refusals
                .iter()
                .map(|(reason, n)| format!("{reason}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        wake_rows.push(vec![
            run.name.into(),
            wake.len().to_string(),
            format!("{:.1}", quantile(&wake, 0.5)),
            format!("{:.1}", wake.last().copied().unwrap_or(0.0)),
            if wake.last().copied().unwrap_or(f64::MAX) <= 50.0 {
                "yes".into()
            } else {
                "no".into()
            },
            refusals,
        ]);
        let ack_eps = rate(run.ack.events as f64, run.ack.took);
        let deliver_eps = rate(run.delivered, run.total);
        rows.push(vec![
            run.name.into(),
            run.ack.requests.to_string(),
            run.ack.refused.to_string(),
            run.ack.events.to_string(),
            format!("{ack_eps:.0}"),
            ratio(ack_eps),
            format!("{deliver_eps:.0}"),
            ratio(deliver_eps),
            format!("{:.0}", run.mean_latency_ms),
        ]);
        summary.push(format!(
            "{} {ack_eps:.0} acked / {deliver_eps:.0} delivered ({} / {} of direct)",
            run.name,
            ratio(ack_eps),
            ratio(deliver_eps)
        ));
        data_runs.push(json!({
            "backend": run.name,
            "requests": run.ack.requests, "refused": run.ack.refused, "events": run.ack.events,
            "ack_events_per_s": ack_eps, "delivered_events": run.delivered,
            "delivered_events_per_s": deliver_eps, "mean_delivery_latency_ms": run.mean_latency_ms,
            "wake_after_ack_ms": run.wake_ms,
            "refusals": run.refusals.iter().map(|(r, n)| json!({"reason": r, "requests": n})).collect::<Vec<_>>(),
        }));
    }
    r.table(
        &[
            "path",
            "requests acked",
            "refused",
            "events acked",
            "acked events/s",
            "÷ direct",
            "delivered events/s",
            "÷ direct",
            "mean ack → delivery (ms)",
        ],
        &rows,
    );
    r.para(&format!(
        "Wake after acknowledgement (goal ≤ 50 ms): before each backend's load, {wakes} times, \
         an app `cold` at zero (scaled down after 0.2 s idle) gets one event on its own \
         subscription; the time is from the sender reading its 200 to the `Scaled.` line (0 → 1) \
         Rouse logs for `cold` (one wall clock, this machine). Refusals are the load's refused \
         requests by the `reason` of their JSON error (`rouse_event_requests_rejected_total`)."
    ));
    r.table(
        &[
            "path",
            "wakes",
            "median ack → scale-up (ms)",
            "max (ms)",
            "max ≤ 50 ms",
            "refusals by reason",
        ],
        &wake_rows,
    );
    r.summary = format!(
        "events (batches of {size}): direct {direct_eps:.0} events/s; {}",
        summary.join("; ")
    );
    r.data = json!({
        "senders": senders, "batch": size, "duration_s": duration.as_secs(), "budget_events": limit.1,
        "direct": {"requests": direct.requests, "events": direct.events, "events_per_s": direct_eps},
        "backends": data_runs,
    });
    Ok(r)
}
