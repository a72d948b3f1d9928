//! Demand from every proxy replica, summed per target: the controller's scaling input on
//! Kubernetes. Each replica streams NDJSON lines from its admin port (`/demand/stream`, written
//! by the proxy's `demand` module, typed by [`rouse_core::feed`]); this module reads the streams
//! and owns the sums.
//!
//! Rules: a replica that *vanishes* (gone from the proxy Service's EndpointSlices) stops
//! counting at once; one that is merely *unreachable* keeps its last report (a network blip must
//! not zero the total and scale a busy target down), and is reconnected with backoff.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http_body_util::{BodyExt, Empty};
use rouse_core::feed::{DemandReport, EventsReport, FeedLine};
use tokio::sync::Notify;

use rouse_scale::DemandSource;
use rouse_scale::{Metric, Observation};

#[derive(Debug, Clone, Copy)]
struct Report {
    held: u64,
    /// The part of `held` that is queued events (shared by all replicas with JetStream).
    queued: u64,
    in_flight: u64,
    requests_total: u64,
    last_activity: Option<Instant>,
}

#[derive(Debug, Default)]
struct ProxyView {
    name: Option<String>,
    connected: bool,
    reports: HashMap<String, Report>,
    /// The event subscriptions this replica serves, by object key.
    events: HashMap<String, EventsReport>,
}

/// One event subscription as the connected replicas report it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventsObservation {
    /// Connected replicas that serve it.
    pub served_by: usize,
    /// The largest pending count reported (the queue is shared: every replica sees it).
    pub pending: u64,
    /// The largest dead-letter count reported, if any replica could read it.
    pub dead_lettered: Option<u64>,
    /// The latest validation handshake any replica answered (Unix ms).
    pub handshake_ms: Option<u64>,
    /// Problems reported by replicas that do not serve it (`replica: problem`).
    pub problems: Vec<String>,
    /// Key Secret problems reported by serving replicas (deduplicated); empty = keys loaded.
    pub secret_problems: Vec<String>,
}

/// Wake signal of one target: same semantics as [`rouse_core::Demand::woken`].
#[derive(Debug, Default)]
struct Wake {
    at: Mutex<Option<Instant>>,
    /// When the latest wake was held (for `/status`; `at` is consumed by the autoscaler).
    last: Mutex<Option<Instant>>,
    notify: Notify,
}

#[derive(Default)]
struct Inner {
    proxies: HashMap<SocketAddr, ProxyView>,
    /// Requests counted per target from report deltas: monotonic even when a replica goes away.
    counted: HashMap<String, u64>,
    wakes: HashMap<String, Arc<Wake>>,
    /// Each valid object's scaling metric (for KEDA's GetMetricSpec/GetMetrics).
    targets: HashMap<String, Metric>,
}

/// The sums over all proxy replicas. Owned in one place; readers and autoscalers share an `Arc`.
pub struct Aggregate {
    inner: Mutex<Inner>,
    /// Every wake, by target, for listeners besides the autoscaler (KEDA's StreamIsActive).
    wake_feed: tokio::sync::broadcast::Sender<String>,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            inner: Mutex::default(),
            wake_feed: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl Aggregate {
    /// Every wake from now on, by target key.
    pub fn subscribe_wakes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.wake_feed.subscribe()
    }

    /// Records a valid object's scaling metric.
    pub fn set_target(&self, target: &str, metric: Metric) {
        self.lock().targets.insert(target.to_string(), metric);
    }

    /// The scaling metric of `target`, if it is a valid object.
    pub fn target(&self, target: &str) -> Option<Metric> {
        self.lock().targets.get(target).copied()
    }

    /// Forgets every target `keep` refuses (objects deleted).
    pub fn retain_targets(&self, keep: impl Fn(&str) -> bool) {
        let mut inner = self.lock();
        inner.targets.retain(|k, _| keep(k));
        inner.counted.retain(|k, _| keep(k));
        inner.wakes.retain(|k, _| keep(k));
        for view in inner.proxies.values_mut() {
            view.reports.retain(|k, _| keep(k));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_of(inner: &mut Inner, target: &str) -> Arc<Wake> {
        inner.wakes.entry(target.to_string()).or_default().clone()
    }

    /// The replicas that exist now; the others' reports are dropped.
    pub fn retain_proxies(&self, present: &HashSet<SocketAddr>) {
        let mut inner = self.lock();
        inner.proxies.retain(|addr, _| present.contains(addr));
        for addr in present {
            inner.proxies.entry(*addr).or_default();
        }
    }

    /// Records one line from `proxy`, received at `now`.
    pub fn record(&self, proxy: SocketAddr, line: &FeedLine, now: Instant) {
        let mut inner = self.lock();
        let Some(view) = inner.proxies.get_mut(&proxy) else {
            return; // vanished while its stream was still open
        };
        view.connected = true;
        match line {
            FeedLine::Hello { proxy } => view.name = Some(proxy.clone()),
            FeedLine::Demand(d) if !d.target.is_empty() => {
                let report = Report {
                    held: d.held,
                    queued: d.queued.min(d.held),
                    in_flight: d.in_flight,
                    requests_total: d.requests_total,
                    last_activity: d
                        .idle_ms
                        .and_then(|ms| now.checked_sub(Duration::from_millis(ms))),
                };
                // A replica's counter only grows; a smaller one means it restarted (count from 0).
                let delta = match view.reports.get(&d.target) {
                    Some(prev) if report.requests_total >= prev.requests_total => {
                        report.requests_total - prev.requests_total
                    }
                    _ => report.requests_total,
                };
                view.reports.insert(d.target.clone(), report);
                *inner.counted.entry(d.target.clone()).or_default() += delta;
                if d.wake {
                    let wake = Self::wake_of(&mut inner, &d.target);
                    drop(inner);
                    self.woken(&wake, d, now);
                }
            }
            FeedLine::Events(e) => {
                view.events.insert(e.subscription.clone(), e.clone());
            }
            // A new snapshot starts: subscriptions it no longer reports are dropped.
            FeedLine::Tick => view.events.clear(),
            FeedLine::Demand(_) | FeedLine::Unknown => {}
        }
    }

    /// Signals `d`'s wake to its autoscaler and to KEDA's StreamIsActive listeners, with the
    /// instant the request was held (on this clock: `now` minus the line's age).
    fn woken(&self, wake: &Wake, d: &DemandReport, now: Instant) {
        let _ = self.wake_feed.send(d.target.clone());
        let held_at = d
            .wake_age_us
            .and_then(|us| now.checked_sub(Duration::from_micros(us)))
            .unwrap_or(now);
        let mut at = wake.at.lock().unwrap_or_else(|p| p.into_inner());
        at.get_or_insert(held_at);
        drop(at);
        *wake.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(held_at);
        wake.notify.notify_one();
    }

    /// The stream of `proxy` broke: its last reports keep counting until it vanishes.
    pub fn disconnected(&self, proxy: SocketAddr) {
        if let Some(view) = self.lock().proxies.get_mut(&proxy) {
            view.connected = false;
        }
    }

    /// Summed demand of `target`.
    pub fn observe(&self, target: &str) -> Observation {
        let inner = self.lock();
        let mut obs = Observation {
            requests_total: inner.counted.get(target).copied().unwrap_or(0),
            ..Observation::default()
        };
        let mut queued = 0;
        for view in inner.proxies.values() {
            if let Some(r) = view.reports.get(target) {
                obs.held += r.held - r.queued;
                queued = queued.max(r.queued);
                obs.in_flight += r.in_flight;
                obs.last_activity = obs.last_activity.max(r.last_activity);
            }
        }
        obs.held += queued;
        obs
    }

    /// Every valid object's target key, sorted.
    pub fn target_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().targets.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Queued events of `target` (the shared queue's count: the largest any replica reports).
    pub fn queued(&self, target: &str) -> u64 {
        let inner = self.lock();
        inner
            .proxies
            .values()
            .filter_map(|v| v.reports.get(target))
            .map(|r| r.queued)
            .max()
            .unwrap_or(0)
    }

    /// When a request for `target` was last held with a wake, as far as this controller saw.
    pub fn last_wake(&self, target: &str) -> Option<Instant> {
        let wake = self.lock().wakes.get(target).cloned()?;
        *wake.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Event subscription `key` (`namespace/name`) as the connected replicas report it.
    pub fn events(&self, key: &str) -> EventsObservation {
        let inner = self.lock();
        let mut obs = EventsObservation::default();
        let mut names: Vec<_> = inner.proxies.iter().collect();
        names.sort_by_key(|(addr, _)| **addr);
        for (addr, view) in names {
            let Some(r) = view.events.get(key).filter(|_| view.connected) else {
                continue;
            };
            if let Some(problem) = &r.problem {
                let who = view.name.clone().unwrap_or_else(|| addr.to_string());
                obs.problems.push(format!("{who}: {problem}"));
                continue;
            }
            obs.served_by += 1;
            obs.pending = obs.pending.max(r.pending);
            obs.dead_lettered = obs.dead_lettered.max(r.dead_lettered);
            obs.handshake_ms = obs.handshake_ms.max(r.handshake_ms);
            if let Some(p) = &r.secret_problem
                && !obs.secret_problems.contains(p)
            {
                obs.secret_problems.push(p.clone());
            }
        }
        obs
    }

    /// `(address, name, connected)` of every known replica, for `/proxies` and logs.
    pub fn proxies(&self) -> Vec<(SocketAddr, Option<String>, bool)> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .proxies
            .iter()
            .map(|(a, v)| (*a, v.name.clone(), v.connected))
            .collect();
        out.sort();
        out
    }

    /// A [`DemandSource`] for one target, for [`rouse_scale::autoscale::run`].
    pub fn source(self: &Arc<Self>, target: &str) -> Arc<TargetDemand> {
        let wake = Self::wake_of(&mut self.lock(), target);
        Arc::new(TargetDemand {
            aggregate: self.clone(),
            name: target.to_string(),
            wake,
        })
    }
}

/// One target's view of the [`Aggregate`].
pub struct TargetDemand {
    aggregate: Arc<Aggregate>,
    name: String,
    wake: Arc<Wake>,
}

impl DemandSource for TargetDemand {
    fn name(&self) -> &str {
        &self.name
    }

    async fn woken(&self) -> Instant {
        self.wake.notify.notified().await;
        self.wake
            .at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(Instant::now)
    }

    fn observe(&self) -> Observation {
        self.aggregate.observe(&self.name)
    }
}

/// Reads one replica's feed into `aggregate` until aborted, reconnecting with backoff.
pub async fn follow(aggregate: Arc<Aggregate>, proxy: SocketAddr, interval: Duration) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match read_stream(&aggregate, proxy, interval).await {
            Ok(()) => tracing::info!(%proxy, "Demand stream ended; reconnecting."),
            Err(e) => tracing::warn!(%proxy, error = %e, "Demand stream failed; reconnecting."),
        }
        aggregate.disconnected(proxy);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn read_stream(
    aggregate: &Aggregate,
    proxy: SocketAddr,
    interval: Duration,
) -> anyhow::Result<()> {
    let stream = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(proxy),
    )
    .await??;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(format!(
        "/demand/stream?interval_ms={}",
        interval.as_millis()
    ))
    .header(http::header::HOST, proxy.to_string())
    .body(Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    tracing::info!(%proxy, "Demand stream connected.");
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    // Silence longer than a few intervals means the replica is wedged: reconnect.
    let stall = interval * 5 + Duration::from_secs(2);
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => anyhow::bail!("no data for {stall:?}"),
            Ok(None) => return Ok(()),
            Ok(Some(frame)) => frame?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        let now = Instant::now();
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let raw = buf.split_to(end + 1);
            match serde_json::from_slice::<FeedLine>(&raw[..end]) {
                Ok(line) => aggregate.record(proxy, &line, now),
                Err(e) => tracing::warn!(%proxy, error = %e, "Bad demand line skipped."),
            }
        }
        if buf.remaining() > 1 << 20 {
            anyhow::bail!("line longer than 1 MiB");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(target: &str, held: u64, in_flight: u64, total: u64, wake: bool) -> FeedLine {
        FeedLine::Demand(DemandReport {
            target: target.into(),
            held,
            queued: 0,
            in_flight,
            requests_total: total,
            idle_ms: Some(0),
            wake,
            wake_age_us: None,
        })
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn replicas_sum_and_a_vanished_one_stops_counting() {
        let a = Aggregate::default();
        a.retain_proxies(&[addr(1), addr(2)].into());
        let now = Instant::now();
        a.record(addr(1), &line("ns/web", 2, 3, 10, false), now);
        a.record(addr(2), &line("ns/web", 1, 4, 5, false), now);
        let o = a.observe("ns/web");
        assert_eq!((o.held, o.in_flight, o.requests_total), (3, 7, 15));

        // Unreachable: keeps counting.
        a.disconnected(addr(2));
        assert_eq!(a.observe("ns/web").in_flight, 7);
        // Vanished: gone from the sums, but requests already counted stay counted.
        a.retain_proxies(&[addr(1)].into());
        let o = a.observe("ns/web");
        assert_eq!((o.held, o.in_flight, o.requests_total), (2, 3, 15));
    }

    #[test]
    fn queued_events_of_a_shared_queue_count_once_held_requests_per_replica() {
        let a = Aggregate::default();
        a.retain_proxies(&[addr(1), addr(2)].into());
        let now = Instant::now();
        let with_queued = |held, queued| {
            let mut l = line("ns/fn", held, 0, 0, false);
            if let FeedLine::Demand(d) = &mut l {
                d.queued = queued;
            }
            l
        };
        // Both replicas see the same 100 queued events; each holds its own requests.
        a.record(addr(1), &with_queued(102, 100), now);
        a.record(addr(2), &with_queued(103, 100), now);
        assert_eq!(a.observe("ns/fn").held, 2 + 3 + 100);
    }

    #[test]
    fn event_subscriptions_take_the_largest_report_and_name_problems() {
        let a = Aggregate::default();
        a.retain_proxies(&[addr(1), addr(2), addr(3)].into());
        let now = Instant::now();
        let report = |pending, handshake_ms, problem: Option<&str>| {
            FeedLine::Events(EventsReport {
                subscription: "ns/orders".into(),
                pending,
                dead_lettered: Some(pending / 10),
                handshake_ms,
                secret_problem: None,
                problem: problem.map(str::to_string),
            })
        };
        a.record(addr(1), &FeedLine::Hello { proxy: "p1".into() }, now);
        a.record(addr(1), &report(40, Some(5), None), now);
        a.record(addr(2), &report(50, None, None), now);
        a.record(addr(3), &FeedLine::Hello { proxy: "p3".into() }, now);
        a.record(addr(3), &report(0, None, Some("no queue")), now);
        let o = a.events("ns/orders");
        assert_eq!(
            (o.served_by, o.pending, o.dead_lettered, o.handshake_ms),
            (2, 50, Some(5), Some(5))
        );
        assert_eq!(o.problems, ["p3: no queue"]);
        // The next snapshot of replica 2 no longer has it; a disconnected one does not count.
        a.record(addr(2), &FeedLine::Tick, now);
        a.disconnected(addr(1));
        assert_eq!(a.events("ns/orders").served_by, 0);
        assert_eq!(a.events("ns/other"), EventsObservation::default());
    }

    #[test]
    fn request_totals_count_deltas_and_survive_restarts() {
        let a = Aggregate::default();
        a.retain_proxies(&[addr(1)].into());
        let now = Instant::now();
        a.record(addr(1), &line("t", 0, 0, 10, false), now);
        a.record(addr(1), &line("t", 0, 0, 12, false), now);
        assert_eq!(a.observe("t").requests_total, 12);
        a.record(addr(1), &line("t", 0, 0, 3, false), now); // replica restarted
        assert_eq!(a.observe("t").requests_total, 15);
    }

    #[tokio::test]
    async fn a_wake_line_wakes_the_target_with_the_instant_it_was_held() {
        let a = Arc::new(Aggregate::default());
        a.retain_proxies(&[addr(1)].into());
        let source = a.source("t");
        let at = Instant::now();
        let mut wake = line("t", 1, 0, 1, true);
        if let FeedLine::Demand(d) = &mut wake {
            d.wake_age_us = Some(1500);
        }
        a.record(addr(1), &wake, at);
        let woken = tokio::time::timeout(Duration::from_secs(1), source.woken())
            .await
            .expect("woken");
        assert_eq!(
            woken,
            at - Duration::from_micros(1500),
            "held instant, not arrival"
        );
        assert_eq!(source.observe().held, 1);
    }

    #[test]
    fn lines_from_unknown_replicas_are_ignored() {
        let a = Aggregate::default();
        a.record(addr(9), &line("t", 5, 0, 0, false), Instant::now());
        assert_eq!(a.observe("t").held, 0);
    }
}
