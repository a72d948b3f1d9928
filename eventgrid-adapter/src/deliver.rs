//! Delivery: per subscription, `concurrency` workers take events from the queue and POST them
//! to the target — inside Rouse, through the proxy's own listener with the app's `Host`, so a
//! target at zero is woken and the request held until it is ready. A 2xx retires the events; a
//! failure schedules them again with exponential backoff (honouring `Retry-After`); a permanent
//! refusal (400, 410, 413, 415), too many attempts or an event older than the TTL sends them to
//! the dead-letter file, with the reason. Nothing leaves the queue any other way.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::config::{Batching, DeadLetter, Format};
use crate::convert;
use crate::gateway::{Gateway, Subscription, now_ms};
use crate::queue::Item;
use crate::store::Outcome;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Where deliveries go: a base URL (`http://host:port`), the `Host` header to send, and headers
/// added to every delivery (inside Rouse: the proxy's delivery token, which marks a request as
/// the gateway's own). Added headers win over forwarded ones of the same name.
#[derive(Debug, Clone, Default)]
pub struct Destination {
    pub base: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// Why a delivery attempt did not succeed.
#[derive(Debug)]
enum Failure {
    /// Try again (after `retry_after` if the target said so).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The target refused the content itself: retrying cannot help.
    Permanent(String),
}

/// Starts the workers of every subscription. `destination` maps a subscription to its target.
pub fn start(gateway: &Arc<Gateway>, destination: impl Fn(&Subscription) -> Destination) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    for sub in gateway.subscriptions() {
        let dest = destination(sub);
        for _ in 0..sub.config.delivery.concurrency {
            tokio::spawn(worker(
                gateway.clone(),
                sub.clone(),
                dest.clone(),
                client.clone(),
            ));
        }
    }
}

async fn worker(gw: Arc<Gateway>, sub: Arc<Subscription>, dest: Destination, client: HttpClient) {
    let d = &sub.config.delivery;
    let max = match (d.batching, d.format) {
        (Batching::PerBatch, Format::Eventgrid | Format::CloudeventsStructured) => d.max_events,
        _ => 1,
    };
    while !gw.is_closed() {
        let items = gw.take(&sub, max).await;
        if items.is_empty() {
            continue; // closed
        }
        match send(&client, &sub, &dest, &items).await {
            Ok(()) => finish(&gw, &sub, &items, Outcome::Delivered, None).await,
            Err(Failure::Permanent(reason)) => {
                finish(&gw, &sub, &items, Outcome::DeadLettered, Some(reason)).await
            }
            Err(Failure::Retry {
                reason,
                retry_after,
            }) => retry(&gw, &sub, items, reason, retry_after).await,
        }
    }
}

/// Retires `items` (delivered or dead-lettered).
async fn finish(
    gw: &Arc<Gateway>,
    sub: &Arc<Subscription>,
    items: &[Item],
    outcome: Outcome,
    reason: Option<String>,
) {
    let name = &sub.config.name;
    if outcome == Outcome::DeadLettered {
        let reason = reason.unwrap_or_default();
        if let Err(e) = dead_letter(gw, sub, items, &reason).await {
            // The sink is not writable: keep the events queued rather than lose them.
            tracing::error!(subscription = %name, error = %e, "Dead-letter sink not writable; events stay queued.");
            gw.requeue(sub, items.to_vec(), Duration::from_secs(30));
            return;
        }
        gw.metrics
            .dead_lettered
            .with_label_values(&[name])
            .inc_by(items.len() as u64);
        tracing::warn!(subscription = %name, events = items.len(), %reason, "Events dead-lettered.");
    } else {
        let now = now_ms();
        for i in items {
            gw.metrics
                .delivery_latency
                .with_label_values(&[name])
                .observe(now.saturating_sub(i.event.received_ms) as f64 / 1000.0);
        }
        gw.metrics
            .delivered
            .with_label_values(&[name])
            .inc_by(items.len() as u64);
    }
    gw.retire(sub, items, outcome).await;
}

/// Sends `items` to the subscription's dead-letter destination (file or stream).
async fn dead_letter(
    gw: &Gateway,
    sub: &Subscription,
    items: &[Item],
    reason: &str,
) -> Result<(), String> {
    if let Some(DeadLetter::Stream(d)) = &sub.config.dead_letter {
        return gw
            .dead_letter_to_stream(sub, &d.stream, items, reason)
            .await;
    }
    dead_letter_file(gw, sub, items, reason)
        .await
        .map_err(|e| e.to_string())
}

/// Appends `items` to the subscription's dead-letter file (one JSON line each), fsync'd.
async fn dead_letter_file(
    gw: &Gateway,
    sub: &Subscription,
    items: &[Item],
    reason: &str,
) -> std::io::Result<()> {
    let path = dead_letter_path(gw, sub);
    let lines: Vec<String> = items
        .iter()
        .map(|i| {
            json!({
                "subscription": sub.config.name,
                "seq": i.event.seq,
                "received_ms": i.event.received_ms,
                "dead_lettered_ms": now_ms(),
                "attempts": i.attempts + 1,
                "reason": reason,
                "event": serde_json::from_str::<serde_json::Value>(&i.event.json).unwrap_or_default(),
            })
            .to_string()
        })
        .collect();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        for l in lines {
            writeln!(f, "{l}")?;
        }
        f.sync_data()
    })
    .await
    .map_err(std::io::Error::other)?
}

fn dead_letter_path(gw: &Gateway, sub: &Subscription) -> PathBuf {
    match &sub.config.dead_letter {
        Some(DeadLetter::File(path)) => path.clone(),
        _ => gw
            .data_dir()
            .join("dead-letter")
            .join(format!("{}.jsonl", sub.config.name)),
    }
}

async fn retry(
    gw: &Arc<Gateway>,
    sub: &Arc<Subscription>,
    items: Vec<Item>,
    reason: String,
    retry_after: Option<Duration>,
) {
    let r = &sub.config.delivery.retry;
    let attempts = items.iter().map(|i| i.attempts).max().unwrap_or(0) + 1;
    let oldest = items.iter().map(|i| i.event.received_ms).min().unwrap_or(0);
    let too_old = now_ms().saturating_sub(oldest) > r.ttl_secs.saturating_mul(1000);
    if attempts >= r.max_attempts || too_old {
        let why = if too_old {
            format!("older than {} s; last failure: {reason}", r.ttl_secs)
        } else {
            format!("{attempts} attempts; last failure: {reason}")
        };
        finish(gw, sub, &items, Outcome::DeadLettered, Some(why)).await;
        return;
    }
    gw.metrics
        .retried
        .with_label_values(&[&sub.config.name])
        .inc_by(items.len() as u64);
    let shift = attempts.saturating_sub(1).min(20);
    let backoff = Duration::from_millis(
        r.initial_backoff_ms
            .saturating_mul(1u64 << shift)
            .min(r.max_backoff_ms),
    );
    let wait = retry_after.map_or(backoff, |ra| ra.max(backoff).min(Duration::from_secs(3600)));
    tracing::info!(subscription = %sub.config.name, events = items.len(), attempts, wait_ms = wait.as_millis() as u64, %reason, "Delivery failed; will retry.");
    let items = items
        .into_iter()
        .map(|mut i| {
            i.attempts = attempts;
            i
        })
        .collect();
    gw.requeue(sub, items, wait);
}

/// One delivery request for `items`.
async fn send(
    client: &HttpClient,
    sub: &Subscription,
    dest: &Destination,
    items: &[Item],
) -> Result<(), Failure> {
    let cfg = &sub.config;
    let (mut headers, body) =
        convert::request(cfg.delivery.format, items).map_err(Failure::Permanent)?;
    headers.extend(dest.headers.iter().cloned());
    if let Some(first) = items.first() {
        for (k, v) in &first.event.headers {
            if !headers.iter().any(|(h, _)| h == k) {
                headers.push((k.clone(), v.clone()));
            }
        }
    }
    let uri = format!("{}{}", dest.base.trim_end_matches('/'), cfg.target.path);
    let mut req = http::Request::post(&uri);
    if let Some(host) = &dest.host {
        req = req.header(http::header::HOST, host);
    }
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Failure::Permanent(format!("request: {e}")))?;
    let resp = match tokio::time::timeout(cfg.delivery.timeout(), client.request(req)).await {
        Err(_) => {
            return Err(Failure::Retry {
                reason: format!("no answer within {} ms", cfg.delivery.timeout_ms),
                retry_after: None,
            });
        }
        Ok(Err(e)) => {
            return Err(Failure::Retry {
                reason: format!("transport: {e}"),
                retry_after: None,
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read the body so the connection can be reused (bounded: answers are small).
    let limited = http_body_util::Limited::new(resp.into_body(), 64 * 1024);
    let body = tokio::time::timeout(Duration::from_secs(5), limited.collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    match status {
        200..=299 => Ok(()),
        400 | 410 | 413 | 415 => Err(Failure::Permanent(format!(
            "target answered {status}: {snippet}"
        ))),
        _ => Err(Failure::Retry {
            reason: format!("target answered {status}: {snippet}"),
            retry_after,
        }),
    }
}
