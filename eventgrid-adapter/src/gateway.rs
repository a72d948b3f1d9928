//! Where an event is parsed, checked and made safe: the webhook handler. A request is answered
//! by Rouse itself, whatever state the target is in:
//!
//! 1. method: `OPTIONS` → the CloudEvents handshake; anything but `POST` → 405;
//! 2. auth ([`crate::auth`]): 401, or 503 when the check cannot run;
//! 3. parse ([`crate::protocol`]): Event Grid validation → 200 `{"validationResponse":…}`,
//!    deletion → 200, events → 4;
//! 4. dedupe by `(topic, id)` / `(source, id)` within the window, then one durable append
//!    (fsync'd) for all new events of the request, *then* the acknowledgement (200 for Event
//!    Grid, 202 for CloudEvents). If the queue is full or the disk write fails: 503 +
//!    Retry-After, never 400/401/403/413 for a transient condition.
//!
//! Delivery runs apart ([`crate::deliver`]). State (queues, dedupe window) is owned here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::Notify;

use crate::auth::{Authenticator, Denied};
use crate::config::{GatewayConfig, Schema, SubscriptionConfig};
use crate::metrics::Metrics;
use crate::protocol::cloudevents::{self, Strictness};
use crate::protocol::eventgrid::{self, Delivery};
use crate::protocol::{Headers, ProtocolError, handshake};
use crate::store::{self, Kind, Store};

/// Seconds suggested in `Retry-After` when Rouse cannot take events right now.
pub const RETRY_AFTER_SECS: u32 = 10;
/// Most dedupe keys remembered (oldest forgotten first), whatever the window.
pub const MAX_DEDUPE_KEYS: usize = 1_000_000;

/// A webhook request, transport-independent (the proxy and the standalone server both build one).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: http::Method,
    pub query: String,
    pub headers: Headers,
    pub body: Bytes,
}

/// The answer to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn json(status: u16, value: &serde_json::Value) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// A refusal: JSON naming the subscription and the reason.
    pub fn error(status: u16, subscription: &str, reason: &str, message: &str) -> Self {
        let mut r = Response::json(
            status,
            &json!({"subscription": subscription, "reason": reason, "message": message}),
        );
        if status == 503 || status == 429 {
            r.headers
                .push(("retry-after".into(), RETRY_AFTER_SECS.to_string()));
        }
        if status == 405 {
            r.headers.push(("allow".into(), "POST, OPTIONS".into()));
        }
        r
    }
}

/// One queued event with its delivery attempts so far.
#[derive(Debug, Clone)]
pub struct Item {
    pub event: Arc<store::Event>,
    pub attempts: u32,
}

/// A subscription's queue.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) ready: VecDeque<Item>,
    /// Accepted and not yet done: ready + in flight + waiting for a retry.
    pub(crate) pending: usize,
}

/// One configured subscription.
pub struct Subscription {
    pub config: SubscriptionConfig,
    pub(crate) auth: Authenticator,
    /// Signalled when events become ready to deliver.
    pub(crate) ready: Notify,
    pub(crate) queue: Mutex<Queue>,
    /// Set by an Event Grid SubscriptionDeletion: events are still accepted (a new subscription
    /// may reuse the endpoint) but the state is visible in logs and `/events`.
    pub deleted: std::sync::atomic::AtomicBool,
}

impl Subscription {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pending(&self) -> usize {
        self.lock().pending
    }
}

/// Called with `(subscription, pending)` whenever a subscription's pending count changes, so
/// queued events count in the target's demand (and wake it).
pub type PendingHook = Arc<dyn Fn(&SubscriptionConfig, usize) + Send + Sync>;

/// Keys seen within the dedupe window.
#[derive(Default)]
struct Dedupe {
    seen: HashSet<(String, String)>,
    /// Keys being written right now (not yet acknowledged).
    in_flight: HashSet<(String, String)>,
    order: VecDeque<(u64, String, String)>,
}

impl Dedupe {
    fn expire(&mut self, now_ms: u64, windows: &HashMap<String, u64>) {
        while let Some((at, sub, _)) = self.order.front() {
            let window = windows.get(sub).copied().unwrap_or(0);
            let expired = at.saturating_add(window) <= now_ms || self.order.len() > MAX_DEDUPE_KEYS;
            if !expired {
                break;
            }
            if let Some((_, sub, key)) = self.order.pop_front() {
                self.seen.remove(&(sub, key));
            }
        }
    }
}

/// The gateway: subscriptions, the store and the queues.
pub struct Gateway {
    pub(crate) subs: Vec<Arc<Subscription>>,
    pub(crate) store: Arc<Store>,
    pub metrics: Metrics,
    max_body: u64,
    seq: AtomicU64,
    dedupe: Mutex<Dedupe>,
    windows: HashMap<String, u64>,
    pending_hook: Option<PendingHook>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Gateway {
    /// Opens the store, replays it and queues every pending event again.
    pub fn open(
        config: &GatewayConfig,
        metrics: Metrics,
        pending_hook: Option<PendingHook>,
    ) -> anyhow::Result<Arc<Gateway>> {
        let (store, recovered) = Store::open(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("event store {}: {e}", config.data_dir.display()))?;
        if recovered.truncated > 0 {
            tracing::warn!(
                bytes = recovered.truncated,
                "Cut a torn tail off the event log (never acknowledged)."
            );
        }
        let subs: Vec<Arc<Subscription>> = config
            .subscriptions
            .iter()
            .map(|c| {
                Arc::new(Subscription {
                    config: c.clone(),
                    auth: Authenticator::new(c.auth.clone()),
                    ready: Notify::new(),
                    queue: Mutex::new(Queue::default()),
                    deleted: Default::default(),
                })
            })
            .collect();
        let windows: HashMap<String, u64> = config
            .subscriptions
            .iter()
            .map(|c| (c.name.clone(), c.dedupe_window_secs.saturating_mul(1000)))
            .collect();
        let now = now_ms();
        let mut dedupe = Dedupe::default();
        for (sub, key, at) in recovered.seen {
            let window = windows.get(&sub).copied().unwrap_or(0);
            if at.saturating_add(window) > now && dedupe.seen.insert((sub.clone(), key.clone())) {
                dedupe.order.push_back((at, sub, key));
            }
        }
        let mut orphans = 0;
        for e in recovered.pending {
            match subs.iter().find(|s| s.config.name == e.subscription) {
                Some(s) => {
                    let mut q = s.lock();
                    q.ready.push_back(Item {
                        event: Arc::new(e),
                        attempts: 0,
                    });
                    q.pending += 1;
                }
                None => orphans += 1,
            }
        }
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "Pending events of subscriptions no longer configured stay in the log."
            );
        }
        let gw = Arc::new(Gateway {
            subs,
            store: Arc::new(store),
            metrics,
            max_body: config.max_body_bytes,
            seq: AtomicU64::new(recovered.next_seq),
            dedupe: Mutex::new(dedupe),
            windows,
            pending_hook,
        });
        for s in &gw.subs {
            let pending = s.pending();
            if pending > 0 {
                tracing::info!(subscription = %s.config.name, pending, "Recovered pending events.");
            }
            gw.pending_changed(s);
        }
        Ok(gw)
    }

    /// The subscription whose webhook path is `path` (exact; a trailing `/` is ignored).
    pub fn subscription_for(&self, path: &str) -> Option<&Arc<Subscription>> {
        let path = path.trim_end_matches('/');
        self.subs
            .iter()
            .find(|s| s.config.path.trim_end_matches('/') == path)
    }

    pub fn subscriptions(&self) -> &[Arc<Subscription>] {
        &self.subs
    }

    /// Largest body accepted (413 above it, before reading).
    pub fn max_body(&self) -> u64 {
        self.max_body
    }

    pub(crate) fn pending_changed(&self, sub: &Subscription) {
        let pending = sub.pending();
        self.metrics
            .pending
            .with_label_values(&[&sub.config.name])
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        if let Some(hook) = &self.pending_hook {
            hook(&sub.config, pending);
        }
    }

    fn reject(&self, sub: &Subscription, status: u16, reason: &str, message: &str) -> Response {
        self.metrics
            .rejected
            .with_label_values(&[&sub.config.name, &status.to_string()])
            .inc();
        tracing::info!(subscription = %sub.config.name, status, reason, message, "Webhook request refused.");
        Response::error(status, &sub.config.name, reason, message)
    }

    /// Answers one webhook request for `sub`.
    pub async fn handle(self: &Arc<Self>, sub: &Arc<Subscription>, req: Request) -> Response {
        let name = &sub.config.name;
        if req.method == http::Method::OPTIONS {
            let a = handshake::options(
                &req.headers,
                &sub.config.allowed_origins,
                sub.config.allowed_rate,
            );
            return Response {
                status: a.status,
                headers: a
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                body: Vec::new(),
            };
        }
        if req.method != http::Method::POST {
            return self.reject(
                sub,
                405,
                "method_not_allowed",
                "use POST (or OPTIONS for the handshake)",
            );
        }
        if req.body.len() as u64 > self.max_body {
            return self.reject(
                sub,
                413,
                "body_too_large",
                &format!("the body exceeds {} bytes", self.max_body),
            );
        }
        match sub.auth.check(&req.headers, &req.query).await {
            Ok(()) => {}
            Err(Denied::Unauthorized(m)) => return self.reject(sub, 401, "unauthorized", &m),
            Err(Denied::Unavailable(m)) => return self.reject(sub, 503, "auth_unavailable", &m),
        }
        let is_ce = match sub.config.schema {
            Schema::Eventgrid => false,
            Schema::Cloudevents => true,
            Schema::Both => {
                let ct = req
                    .headers
                    .get("content-type")
                    .unwrap_or("")
                    .to_ascii_lowercase();
                ct.starts_with("application/cloudevents")
                    || req.headers.get("ce-specversion").is_some()
            }
        };
        let result = if is_ce {
            self.cloudevents(sub, &req)
        } else {
            self.eventgrid(sub, &req)
        };
        let (events, kind) = match result {
            Ok(Parsed::Answer(r)) => return r,
            Ok(Parsed::Events(events, kind)) => (events, kind),
            Err(e) => {
                return self.reject(
                    sub,
                    e.status,
                    if e.status == 415 {
                        "unsupported_media_type"
                    } else {
                        "bad_request"
                    },
                    &e.message,
                );
            }
        };
        self.metrics
            .received
            .with_label_values(&[name])
            .inc_by(events.len() as u64);
        match self.accept(sub, events, kind).await {
            Ok(()) => Response::empty(if kind == Kind::CloudEvent { 202 } else { 200 }),
            Err(Refused::Full) => self.reject(
                sub,
                503,
                "queue_full",
                &format!(
                    "{} events are already pending (max_pending)",
                    sub.config.max_pending
                ),
            ),
            Err(Refused::InFlight) => self.reject(
                sub,
                503,
                "duplicate_in_flight",
                "an event of this request is being stored by another request; retry",
            ),
            Err(Refused::Store(e)) => self.reject(
                sub,
                503,
                "store_unavailable",
                &format!("events could not be stored durably: {e}"),
            ),
        }
    }

    fn eventgrid(&self, sub: &Subscription, req: &Request) -> Result<Parsed, ProtocolError> {
        match eventgrid::parse(&req.headers, &req.body)? {
            Delivery::Validation { code } => {
                let names = &sub.config.subscription_names;
                let given = req.headers.get("aeg-subscription-name").unwrap_or("");
                if !names.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(given)) {
                    return Ok(Parsed::Answer(self.reject(
                        sub,
                        403,
                        "unknown_subscription",
                        &format!(
                            "aeg-subscription-name {given:?} is not one of subscription_names"
                        ),
                    )));
                }
                tracing::info!(subscription = %sub.config.name, event_grid_subscription = given, "Event Grid subscription validated.");
                Ok(Parsed::Answer(Response {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: eventgrid::validation_response(&code),
                }))
            }
            Delivery::Deletion { subscription_id } => {
                sub.deleted.store(true, Ordering::Relaxed);
                tracing::warn!(subscription = %sub.config.name, event_grid_subscription = ?subscription_id, "Event Grid deleted the subscription.");
                Ok(Parsed::Answer(Response::empty(200)))
            }
            Delivery::Unsubscribe => Ok(Parsed::Answer(Response::empty(202))),
            Delivery::Notification(events) => {
                let forwarded = forwarded_headers(&sub.config.forward_headers, &req.headers);
                let now = now_ms();
                Ok(Parsed::Events(
                    events
                        .into_iter()
                        .map(|e| Draft {
                            key: format!("{}\u{0}{}", e.topic, e.id),
                            json: e.raw.get().to_string(),
                            headers: forwarded.clone(),
                            received_ms: now,
                        })
                        .collect(),
                    Kind::EventGrid,
                ))
            }
        }
    }

    fn cloudevents(&self, sub: &Subscription, req: &Request) -> Result<Parsed, ProtocolError> {
        let strict = Strictness {
            extension_names: sub.config.strict_extension_names,
        };
        let parsed = cloudevents::parse(&req.headers, &req.body, strict)?;
        if parsed.raw_header_values > 0 {
            self.metrics
                .raw_header_values
                .with_label_values(&[&sub.config.name])
                .inc_by(parsed.raw_header_values as u64);
        }
        let forwarded = forwarded_headers(&sub.config.forward_headers, &req.headers);
        let now = now_ms();
        Ok(Parsed::Events(
            parsed
                .events
                .into_iter()
                .map(|e| Draft {
                    key: format!("{}\u{0}{}", e.source, e.id),
                    json: e.json.get().to_string(),
                    headers: forwarded.clone(),
                    received_ms: now,
                })
                .collect(),
            Kind::CloudEvent,
        ))
    }

    /// Dedupes, stores durably and queues `drafts`. `Ok` = safe to acknowledge.
    ///
    /// Keys are reserved *in flight* before the write: a concurrent request carrying the same
    /// event gets 503 (retry) rather than an acknowledgement for an event not yet on disk. The
    /// write and the commit run in their own task, so a sender hanging up mid-write cannot
    /// leave keys reserved or a stored event unqueued.
    async fn accept(
        self: &Arc<Self>,
        sub: &Arc<Subscription>,
        drafts: Vec<Draft>,
        kind: Kind,
    ) -> Result<(), Refused> {
        let name = sub.config.name.clone();
        if drafts.is_empty() {
            return Ok(());
        }
        let mut fresh: Vec<Draft> = Vec::with_capacity(drafts.len());
        {
            let mut d = self.dedupe.lock().unwrap_or_else(|p| p.into_inner());
            d.expire(now_ms(), &self.windows);
            let mut busy = false;
            let mut mine = HashSet::new();
            for draft in drafts {
                let k = (name.clone(), draft.key.clone());
                if d.seen.contains(&k) || mine.contains(&draft.key) {
                    self.metrics.deduplicated.with_label_values(&[&name]).inc();
                } else if d.in_flight.contains(&k) {
                    busy = true;
                } else {
                    mine.insert(draft.key.clone());
                    fresh.push(draft);
                }
            }
            if busy {
                return Err(Refused::InFlight);
            }
            for f in &fresh {
                d.in_flight.insert((name.clone(), f.key.clone()));
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let gw = self.clone();
        let sub = sub.clone();
        let commit = tokio::spawn(async move { gw.store_and_queue(&sub, fresh, kind).await });
        commit
            .await
            .unwrap_or_else(|e| Err(Refused::Store(format!("commit task: {e}"))))
    }

    async fn store_and_queue(
        &self,
        sub: &Subscription,
        fresh: Vec<Draft>,
        kind: Kind,
    ) -> Result<(), Refused> {
        let name = &sub.config.name;
        let release = |keys: &[Draft]| {
            let mut d = self.dedupe.lock().unwrap_or_else(|p| p.into_inner());
            for k in keys {
                d.in_flight.remove(&(name.clone(), k.key.clone()));
            }
        };
        if sub.pending() + fresh.len() > sub.config.max_pending {
            release(&fresh);
            return Err(Refused::Full);
        }
        let events: Vec<store::Event> = fresh
            .iter()
            .map(|d| store::Event {
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
                subscription: name.clone(),
                key: d.key.clone(),
                received_ms: d.received_ms,
                kind,
                json: d.json.clone(),
                headers: d.headers.clone(),
            })
            .collect();
        let store = self.store.clone();
        let to_write = events.clone();
        let written = tokio::task::spawn_blocking(move || store.append(&to_write))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = written {
            release(&fresh);
            return Err(Refused::Store(e.to_string()));
        }
        {
            let mut d = self.dedupe.lock().unwrap_or_else(|p| p.into_inner());
            for e in &events {
                let k = (name.clone(), e.key.clone());
                d.in_flight.remove(&k);
                d.seen.insert(k);
                d.order
                    .push_back((e.received_ms, name.clone(), e.key.clone()));
            }
        }
        let count = events.len();
        {
            let mut q = sub.lock();
            for e in events {
                q.ready.push_back(Item {
                    event: Arc::new(e),
                    attempts: 0,
                });
            }
            q.pending += count;
        }
        self.metrics
            .acknowledged
            .with_label_values(&[name])
            .inc_by(count as u64);
        self.pending_changed(sub);
        sub.ready.notify_waiters();
        sub.ready.notify_one();
        Ok(())
    }

    /// Fsyncs finished deliveries every [`store::DONE_SYNC`] and restarts the log when empty.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(store::DONE_SYNC);
        let mut n = 0u64;
        loop {
            tick.tick().await;
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.sync()).await;
            n += 1;
            if n.is_multiple_of(100) && self.store.wants_compaction() {
                let carry: Vec<(String, String, u64)> = {
                    let d = self.dedupe.lock().unwrap_or_else(|p| p.into_inner());
                    d.order
                        .iter()
                        .map(|(at, sub, key)| (sub.clone(), key.clone(), *at))
                        .collect()
                };
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.compact(&carry)).await {
                    Ok(Ok(true)) => tracing::info!("Event log compacted."),
                    Ok(Err(e)) => tracing::warn!(error = %e, "Event log compaction failed."),
                    _ => {}
                }
            }
        }
    }

    /// The events of `subscription` waiting to be delivered (ready ones, in order).
    pub fn queued(&self, subscription: &str) -> Vec<Arc<store::Event>> {
        self.subs
            .iter()
            .find(|s| s.config.name == subscription)
            .map(|s| s.lock().ready.iter().map(|i| i.event.clone()).collect())
            .unwrap_or_default()
    }

    /// Test hook: make durable writes fail (the "store is down" case).
    pub fn inject_store_failure(&self, fail: bool) {
        self.store.inject_failure(fail);
    }

    /// Waits until nothing is pending (tests, drain).
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.subs.iter().any(|s| s.pending() > 0) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// An event ready to store.
struct Draft {
    key: String,
    json: String,
    headers: Vec<(String, String)>,
    received_ms: u64,
}

enum Parsed {
    /// Answer at once (handshakes, deletion).
    Answer(Response),
    Events(Vec<Draft>, Kind),
}

enum Refused {
    Full,
    Store(String),
    /// The same event is being stored by a concurrent request.
    InFlight,
}

fn forwarded_headers(names: &[String], headers: &Headers) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|n| {
            let n = n.to_ascii_lowercase();
            headers.get(&n).map(|v| (n, v.to_string()))
        })
        .collect()
}
