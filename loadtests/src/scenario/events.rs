//! Scenario 7 — events: batched Event Grid deliveries through the gateway to a warm target.
//!
//! Senders POST Event Grid batches (unique event ids, so dedupe does not drop them) to the
//! gateway mounted on Rouse's listener; the gateway stores each batch (one fsync per request),
//! acknowledges it, and delivers it through the proxy to a warm `hello-fn` event sink. Baseline
//! in the same run: the same senders posting the same batches straight to the sink.
//!
//! The load is generated in-process (hyper, `concurrency` loops) rather than with oha, because
//! every request needs a fresh body (unique ids) and oha replays one body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rouse_e2e::{App, Launch, Rouse};
use serde_json::json;

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

/// Posts batches from `senders` loops for `duration`; returns (requests, events) acknowledged.
async fn blast(
    addr: SocketAddr,
    path: &str,
    host: &str,
    senders: usize,
    size: usize,
    duration: Duration,
) -> (u64, u64, Duration) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let ok = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (client, ok, path, host) = (
            client.clone(),
            ok.clone(),
            path.to_string(),
            host.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while start.elapsed() < duration {
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
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let requests = ok.load(Ordering::Relaxed);
    (requests, requests * size as u64, start.elapsed())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let duration = ctx.pick(Duration::from_secs(20), Duration::from_secs(1));
    let (senders, size) = (ctx.pick(8, 2), ctx.pick(100, 10));
    let data = std::env::temp_dir().join(format!("rouse-bench-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let sink = App::hello("sink")
        .env("LOG_REQUESTS", "0")
        .with("replicas: {min: 1, max: 1}");
    let extra = format!(
        "event_gateway:\n  data_dir: {}\n  subscriptions:\n    - name: bench\n      path: /webhooks/bench\n      target: {{app: sink, path: /events}}\n      delivery: {{batching: per-batch, max_events: {size}, concurrency: 4}}\n",
        data.display()
    );
    let rouse = Rouse::launch(Launch {
        apps: std::slice::from_ref(&sink),
        extra: &extra,
        ..Launch::default()
    })
    .await;
    rouse
        .wait_for("the sink warm", Duration::from_secs(20), || async {
            rouse.ready_replicas("sink").await == 1
        })
        .await;
    let sink_addr = rouse
        .admin_get("/queues")
        .await
        .and_then(|r| {
            r.json()["routes"][0]["endpoints"][0]["addr"]
                .as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok())
        })
        .ok_or_else(|| anyhow::anyhow!("sink endpoint not found in /queues"))?;

    // Baseline: straight to the sink.
    let (d_req, d_events, d_took) =
        blast(sink_addr, "/events", "sink", senders, size, duration).await;
    // Through the gateway: acknowledged after the fsync'd append; delivered by the workers.
    let (g_req, g_events, g_took) = blast(
        rouse.proxy,
        "/webhooks/bench",
        "events.bench",
        senders,
        size,
        duration,
    )
    .await;
    let drain_start = Instant::now();
    let mut delivered = 0.0;
    while drain_start.elapsed() < Duration::from_secs(120) {
        delivered = metric(
            &rouse.metrics().await,
            "rouse_events_delivered_total{subscription=\"bench\"}",
        );
        if delivered >= g_events as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = g_took + drain_start.elapsed();
    let m = rouse.metrics().await;
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
    let _ = std::fs::remove_dir_all(&data);

    let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64();
    let (direct_eps, ack_eps, deliver_eps) = (
        rate(d_events, d_took),
        rate(g_events, g_took),
        delivered / total.as_secs_f64(),
    );
    let mut r = Report::new(
        "events",
        "Events: batched Event Grid deliveries to a warm target",
    );
    r.para(&format!(
        "Method: {senders} senders post Event Grid batches of {size} events (unique ids, ~{} KB \
         each) for {} s, first straight to a warm `hello-fn` event sink (baseline), then to the \
         gateway on Rouse's listener, which appends each batch to its log with one fsync, \
         answers 200, and delivers batches of up to {size} events through the proxy to the same \
         sink (4 delivery workers). Delivered = `rouse_events_delivered_total` until every \
         acknowledged event arrived. The disk is the sandbox's; fsync cost dominates the ack path.",
        batch(0, 0, size).len() / 1024,
        duration.as_secs()
    ));
    r.table(
        &["path", "requests", "events", "events/s", "ratio to direct"],
        &[
            vec![
                "direct to the sink".into(),
                d_req.to_string(),
                d_events.to_string(),
                format!("{direct_eps:.0}"),
                "1.00".into(),
            ],
            vec![
                "acknowledged by the gateway".into(),
                g_req.to_string(),
                g_events.to_string(),
                format!("{ack_eps:.0}"),
                format!("{:.2}", ack_eps / direct_eps.max(1.0)),
            ],
            vec![
                "delivered to the sink (end to end)".into(),
                "-".into(),
                format!("{delivered:.0}"),
                format!("{deliver_eps:.0}"),
                format!("{:.2}", deliver_eps / direct_eps.max(1.0)),
            ],
        ],
    );
    r.para(&format!(
        "Mean acknowledgement → delivery latency: {:.1} ms over {lat_count:.0} events.",
        lat_sum / lat_count * 1e3
    ));
    r.summary = format!(
        "events: {ack_eps:.0} events/s acknowledged (fsync'd), {deliver_eps:.0} events/s delivered end to end, direct baseline {direct_eps:.0} events/s (batches of {size})"
    );
    anyhow::ensure!(
        delivered >= g_events as f64,
        "only {delivered} of {g_events} acknowledged events were delivered"
    );
    r.data = json!({
        "senders": senders, "batch": size, "duration_s": duration.as_secs(),
        "direct": {"requests": d_req, "events": d_events, "events_per_s": direct_eps},
        "gateway_ack": {"requests": g_req, "events": g_events, "events_per_s": ack_eps},
        "delivered": {"events": delivered, "events_per_s": deliver_eps},
        "mean_delivery_latency_ms": lat_sum / lat_count * 1e3,
    });
    Ok(r)
}
