//! Where an event is parsed, checked and made safe: the webhook handler. A request is answered
//! by Rouse itself, whatever state the target is in:
//!
//! 1. method: `OPTIONS` → the CloudEvents handshake; anything but `POST` → 405;
//! 2. auth ([`crate::auth`]): 401, or 503 when the check cannot run; then a `ce-*` or
//!    forwarded header whose value is not UTF-8: 400 `bad_header`. Steps 1–2 and the declared
//!    size are [`Gateway::check_head`], which the front ends run before reading the body (and
//!    before answering `Expect: 100-continue`); body errors are [`Gateway::body_failed`];
//! 3. parse ([`crate::protocol`]): Event Grid validation → 200 `{"validationResponse":…}`,
//!    deletion → 200, events → 4;
//! 4. dedupe by `(topic, id)` / `(source, id)` within the window, then one durable append
//!    (fsync'd) for all new events of the request, *then* the acknowledgement (200 for Event
//!    Grid, 202 for CloudEvents). If the queue is full or the disk write fails: 503 +
//!    Retry-After, never 400/401/403/413 for a transient condition.
//!
//! Delivery runs apart ([`crate::deliver`]) and takes events only through the gateway, which
//! owns the queue ([`crate::queue`]), the dedupe window ([`crate::dedupe`]) and, after every
//! change of a pending count, the gauge and the app's demand ([`crate::demand`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;

use crate::auth::{Authenticator, Denied};
use crate::config::{GatewayConfig, QueueConfig, Schema, SubscriptionConfig};
use crate::dedupe::{Dedupe, InFlight, Reservation};
use crate::demand::{AppDemand, DemandTargets};
use crate::metrics::Metrics;
use crate::protocol::cloudevents::{self, Strictness};
use crate::protocol::eventgrid::{self, Delivery};
use crate::protocol::{Headers, ProtocolError, handshake};
use crate::queue::embedded::Embedded;
use crate::queue::jetstream::Jetstream;
use crate::queue::{Backend, EventQueue, Item, QueueError, SubId};
use crate::store::{self, Kind, Outcome};

pub use crate::dedupe::MAX_DEDUPE_KEYS;

/// Seconds suggested in `Retry-After` when Rouse cannot take events right now.
pub const RETRY_AFTER_SECS: u32 = 10;

/// The longest a webhook body may take to arrive, from the end of the head (both front ends):
/// then `408 body_timeout`. Event Grid itself gives up on a delivery after 30 s.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a front end could not read a webhook body ([`Gateway::body_failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// More than `max_body_bytes` (a chunked body, or one longer than declared).
    TooLarge,
    /// Not a well-formed body (bad chunked encoding, a protocol error): 400.
    Malformed(String),
    /// Not complete within [`BODY_TIMEOUT`]: 408.
    TimedOut,
    /// The sender hung up mid-body: nothing to answer.
    ClientGone(String),
}

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

/// One configured subscription.
pub struct Subscription {
    pub config: SubscriptionConfig,
    pub(crate) auth: Authenticator,
    id: SubId,
    queue: Arc<Backend>,
    /// Set by an Event Grid SubscriptionDeletion: events are still accepted (a new subscription
    /// may reuse the endpoint) but the state is visible in logs and `/events`.
    pub deleted: std::sync::atomic::AtomicBool,
    /// When a validation handshake (Event Grid or CloudEvents) was last answered, Unix ms; 0 =
    /// never. Reported to the controller (the `Validated` condition).
    handshake_ms: std::sync::atomic::AtomicU64,
}

impl Subscription {
    /// Events accepted and not yet delivered or dead-lettered.
    pub fn pending(&self) -> usize {
        self.queue.pending(self.id)
    }

    /// When a validation handshake was last answered here (Unix ms).
    pub fn last_handshake_ms(&self) -> Option<u64> {
        Some(self.handshake_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Events in the dead-letter stream, as last read (`dead_letter: {stream: …}` only).
    pub fn dead_lettered(&self) -> Option<u64> {
        match &*self.queue {
            Backend::Jetstream(q) => q.dead_lettered(self.id),
            Backend::Embedded(_) => None,
        }
    }

    /// Replaces the accepted shared keys (see [`Authenticator::set_keys`]).
    pub fn set_keys(&self, keys: Result<Vec<String>, String>) {
        self.auth.set_keys(keys);
    }

    /// Keeps `before`'s last handshake time (the same subscription in a replaced gateway).
    pub fn carry_handshake(&self, before: &Subscription) {
        self.handshake_ms.fetch_max(
            before.handshake_ms.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    fn handshake_answered(&self) {
        self.handshake_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// The gateway: subscriptions, the queue and the dedupe window.
pub struct Gateway {
    subs: Vec<Arc<Subscription>>,
    queue: Arc<Backend>,
    dedupe: Dedupe,
    demand: AppDemand,
    pub metrics: Metrics,
    max_body: u64,
    data_dir: PathBuf,
    /// Set by [`Gateway::close`]: delivery workers and housekeeping stop.
    closed: tokio::sync::watch::Sender<bool>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Gateway {
    /// Opens the queue (replaying the log: every pending event is queued again) and counts
    /// queued events in the demand of their app's target in `demand` (empty: nowhere).
    pub fn open(
        config: &GatewayConfig,
        metrics: Metrics,
        demand: DemandTargets,
    ) -> anyhow::Result<Arc<Gateway>> {
        let (queue, seen) = match &config.queue {
            QueueConfig::Embedded => {
                let (queue, seen) = Embedded::open(&config.data_dir, &config.subscriptions)
                    .map_err(|e| {
                        anyhow::anyhow!("event store {}: {e}", config.data_dir.display())
                    })?;
                (Backend::Embedded(queue), seen)
            }
            // Connects in the background: NATS being away only makes pushes answer 503. The
            // stream's duplicate window remembers the dedupe keys across restarts.
            QueueConfig::Jetstream(js) => (
                Backend::Jetstream(Box::new(Jetstream::new(js, &config.subscriptions))),
                Vec::new(),
            ),
        };
        let queue = Arc::new(queue);
        let subs = config
            .subscriptions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Arc::new(Subscription {
                    config: c.clone(),
                    auth: Authenticator::new(c.auth.clone()),
                    id: SubId::new(i),
                    queue: queue.clone(),
                    deleted: Default::default(),
                    handshake_ms: Default::default(),
                })
            })
            .collect();
        let gw = Arc::new(Gateway {
            subs,
            queue,
            dedupe: Dedupe::new(&config.subscriptions, seen, now_ms()),
            demand: AppDemand::new(&config.subscriptions, &demand),
            metrics,
            max_body: config.max_body_bytes,
            data_dir: config.data_dir.clone(),
            closed: tokio::sync::watch::Sender::new(false),
        });
        if let Backend::Jetstream(q) = &*gw.queue {
            // Counts changed by other replicas (or redeliveries) reach the gauge and demand.
            let weak = Arc::downgrade(&gw);
            q.on_pending_change(move |sub| {
                if let Some(gw) = weak.upgrade()
                    && let Some(s) = gw.subs.get(sub.index())
                {
                    gw.pending_changed(s);
                }
            });
        }
        for s in &gw.subs {
            gw.pending_changed(s);
            // Exported at 0 from the start, so the first dead letter is an increase (an alert
            // on `increase(...)` would miss a series that appears already at 1).
            gw.metrics
                .dead_lettered
                .with_label_values(&[&s.config.name])
                .inc_by(0);
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

    /// The gateway's data directory (the default dead-letter directory is in it).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// After every change of `sub`'s pending count: the gauge, and its app's demand.
    fn pending_changed(&self, sub: &Subscription) {
        let pending = sub.pending();
        self.metrics
            .pending
            .with_label_values(&[&sub.config.name])
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.demand.changed(sub.id, |s| self.queue.pending(s));
    }

    /// Up to `max` events of `sub` to deliver, waiting for some (see [`EventQueue::take`]);
    /// empty once the gateway is closed.
    pub(crate) async fn take(&self, sub: &Subscription, max: usize) -> Vec<Item> {
        let mut closed = self.closed.subscribe();
        tokio::select! {
            items = self.queue.take(sub.id, max) => items,
            _ = closed.wait_for(|c| *c) => Vec::new(),
        }
    }

    /// Stops this gateway (it is being replaced by one with another configuration): delivery
    /// workers finish the batch in hand and stop, housekeeping stops, and with JetStream the
    /// events taken but not handed out go back to the server at once for the next gateway.
    /// Webhook requests still holding this gateway are answered as usual.
    pub async fn close(&self) {
        self.closed.send_replace(true);
        if let Backend::Jetstream(q) = &*self.queue {
            q.close().await;
        }
    }

    /// Whether [`Gateway::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Writes `items` to the JetStream dead-letter stream `stream`.
    pub(crate) async fn dead_letter_to_stream(
        &self,
        sub: &Subscription,
        stream: &str,
        items: &[Item],
        reason: &str,
    ) -> Result<(), String> {
        match &*self.queue {
            Backend::Jetstream(q) => q
                .dead_letter(sub.id, stream, items, reason)
                .await
                .map_err(|e| e.to_string()),
            Backend::Embedded(_) => Err("dead_letter.stream needs the jetstream queue".into()),
        }
    }

    /// Hands `items` out again after `delay`, in the background.
    pub(crate) fn requeue(
        self: &Arc<Self>,
        sub: &Arc<Subscription>,
        items: Vec<Item>,
        delay: Duration,
    ) {
        let (gw, sub) = (self.clone(), sub.clone());
        tokio::spawn(async move {
            gw.queue.requeue(sub.id, items, delay).await;
            gw.pending_changed(&sub);
        });
    }

    /// Takes `items` out of the queue for good (delivered or dead-lettered).
    pub(crate) async fn retire(&self, sub: &Subscription, items: &[Item], outcome: Outcome) {
        if let Err(e) = self.queue.retire(sub.id, items, outcome).await {
            // Done already; failing to record it means a redelivery after a restart.
            tracing::warn!(subscription = %sub.config.name, error = %e, "Could not record delivery; may redeliver after a restart.");
        }
        self.pending_changed(sub);
    }

    /// A refusal, counted in `rouse_event_requests_rejected_total` and logged (without the
    /// request's query or credentials).
    pub fn reject(&self, sub: &Subscription, status: u16, reason: &str, message: &str) -> Response {
        self.metrics
            .rejected
            .with_label_values(&[&sub.config.name, &status.to_string(), reason])
            .inc();
        tracing::info!(subscription = %sub.config.name, status, reason, detail = message, "Webhook request refused.");
        Response::error(status, &sub.config.name, reason, message)
    }

    /// The checks a request's head allows, before its body is read: method, declared size,
    /// auth, header encoding. `Some` = the refusal to send at once (the front ends then never
    /// read the body, and answer `Expect: 100-continue` only when this is `None`). `OPTIONS`
    /// passes: [`Gateway::handle`] answers the handshake.
    pub async fn check_head(
        &self,
        sub: &Subscription,
        method: &http::Method,
        query: &str,
        headers: &Headers,
        length: Option<u64>,
    ) -> Option<Response> {
        if method == http::Method::OPTIONS {
            return None;
        }
        if method != http::Method::POST {
            return Some(self.reject(
                sub,
                405,
                "method_not_allowed",
                "use POST (or OPTIONS for the handshake)",
            ));
        }
        if length.is_some_and(|n| n > self.max_body) {
            return Some(self.reject(
                sub,
                413,
                "body_too_large",
                &format!("the body exceeds {} bytes", self.max_body),
            ));
        }
        match sub.auth.check(headers, query).await {
            Ok(()) => {}
            Err(Denied::Unauthorized(m)) => return Some(self.reject(sub, 401, "unauthorized", &m)),
            Err(Denied::Unavailable(m)) => {
                return Some(self.reject(sub, 503, "auth_unavailable", &m));
            }
        }
        // A `ce-*` value (CloudEvents HTTP binding: percent-encoded UTF-8) or a header stored
        // for delivery that is not UTF-8 would be read lossily: distinct events would collapse
        // into one (dedupe) or reach the target altered. Refused, never acknowledged.
        let forwarded = |n: &str| {
            sub.config
                .forward_headers
                .iter()
                .any(|f| f.eq_ignore_ascii_case(n))
        };
        if let Some(name) = headers
            .not_utf8()
            .find(|n| n.starts_with("ce-") || forwarded(n))
        {
            return Some(self.reject(
                sub,
                400,
                "bad_header",
                &format!(
                    "the value of header {name} is not UTF-8 (CloudEvents header values are percent-encoded UTF-8)"
                ),
            ));
        }
        None
    }

    /// The answer to a body that could not be read (`None`: the sender is gone, nothing to
    /// write). Counted in `rouse_event_requests_rejected_total` (a hang-up as status 499).
    pub fn body_failed(&self, sub: &Subscription, e: BodyError) -> Option<Response> {
        match e {
            BodyError::TooLarge => Some(self.reject(
                sub,
                413,
                "body_too_large",
                &format!("the body exceeds {} bytes", self.max_body),
            )),
            BodyError::Malformed(m) => Some(self.reject(
                sub,
                400,
                "bad_body",
                &format!("the body could not be read: {m}"),
            )),
            BodyError::TimedOut => Some(self.reject(
                sub,
                408,
                "body_timeout",
                &format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )),
            BodyError::ClientGone(m) => {
                self.metrics
                    .rejected
                    .with_label_values(&[&sub.config.name, "499", "client_closed"])
                    .inc();
                tracing::info!(subscription = %sub.config.name, status = 499, reason = "client_closed", detail = %m, "Webhook sender hung up before the body was complete.");
                None
            }
        }
    }

    /// Answers one webhook request for `sub`.
    pub async fn handle(self: &Arc<Self>, sub: &Arc<Subscription>, req: Request) -> Response {
        if req.method == http::Method::OPTIONS {
            return handshake_answer(sub, &req);
        }
        let length = Some(req.body.len() as u64);
        if let Some(refusal) = self
            .check_head(sub, &req.method, &req.query, &req.headers, length)
            .await
        {
            return refusal;
        }
        let (events, kind) = match self.parse(sub, &req) {
            Ok(Parsed::Answer(r)) => return r,
            Ok(Parsed::Events(events, kind)) => (events, kind),
            Err(e) => {
                let reason = if e.status == 415 {
                    "unsupported_media_type"
                } else {
                    "bad_request"
                };
                return self.reject(sub, e.status, reason, &e.message);
            }
        };
        self.metrics
            .received
            .with_label_values(&[&sub.config.name])
            .inc_by(events.len() as u64);
        match self.accept(sub, events).await {
            Ok(()) => Response::empty(if kind == Kind::CloudEvent { 202 } else { 200 }),
            Err(refused) => self.refused(sub, refused),
        }
    }

    fn refused(&self, sub: &Subscription, refused: Refused) -> Response {
        match refused {
            Refused::Full => self.reject(
                sub,
                503,
                "queue_full",
                &format!(
                    "{} events are already pending (max_pending)",
                    sub.config.max_pending
                ),
            ),
            Refused::InFlight => self.reject(
                sub,
                503,
                "duplicate_in_flight",
                "an event of this request is being stored by another request; retry",
            ),
            Refused::Store(e) => self.reject(
                sub,
                503,
                "store_unavailable",
                &format!("events could not be stored durably: {e}"),
            ),
            Refused::TooLarge(e) => self.reject(sub, 413, "event_too_large", &e),
        }
    }

    /// Event Grid or CloudEvents, per the subscription's schema (and, for `both`, the request).
    fn parse(&self, sub: &Subscription, req: &Request) -> Result<Parsed, ProtocolError> {
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
        if is_ce {
            self.cloudevents(sub, req)
        } else {
            self.eventgrid(sub, req)
        }
    }

    fn eventgrid(&self, sub: &Subscription, req: &Request) -> Result<Parsed, ProtocolError> {
        match eventgrid::parse(&req.headers, &req.body)? {
            Delivery::Validation { code } => Ok(Parsed::Answer(self.validation(sub, req, &code))),
            Delivery::Deletion { subscription_id } => {
                sub.deleted.store(true, Ordering::Relaxed);
                tracing::warn!(subscription = %sub.config.name, event_grid_subscription = ?subscription_id, "Event Grid deleted the subscription.");
                Ok(Parsed::Answer(Response::empty(200)))
            }
            Delivery::Unsubscribe => Ok(Parsed::Answer(Response::empty(202))),
            Delivery::Notification(events) => {
                let new = NewEvents::new(sub, req, Kind::EventGrid);
                Ok(Parsed::Events(
                    events
                        .into_iter()
                        .map(|e| new.event(format!("{}\u{0}{}", e.topic, e.id), e.raw.get()))
                        .collect(),
                    Kind::EventGrid,
                ))
            }
        }
    }

    /// The Event Grid validation handshake: 200 `{"validationResponse":…}`, or 403 for an
    /// `aeg-subscription-name` not in `subscription_names`.
    fn validation(&self, sub: &Subscription, req: &Request, code: &str) -> Response {
        let names = &sub.config.subscription_names;
        let given = req.headers.get("aeg-subscription-name").unwrap_or("");
        if !names.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(given)) {
            return self.reject(
                sub,
                403,
                "unknown_subscription",
                &format!("aeg-subscription-name {given:?} is not one of subscription_names"),
            );
        }
        tracing::info!(subscription = %sub.config.name, event_grid_subscription = given, "Event Grid subscription validated.");
        sub.handshake_answered();
        Response {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: eventgrid::validation_response(code),
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
        let new = NewEvents::new(sub, req, Kind::CloudEvent);
        Ok(Parsed::Events(
            parsed
                .events
                .into_iter()
                .map(|e| new.event(format!("{}\u{0}{}", e.source, e.id), e.json.get()))
                .collect(),
            Kind::CloudEvent,
        ))
    }

    /// Dedupes `events`, stores them durably and queues them. `Ok` = safe to acknowledge.
    ///
    /// Keys are reserved *in flight* before the write: a concurrent request carrying the same
    /// event gets 503 (retry) rather than an acknowledgement for an event not yet on disk. The
    /// write and the commit run in their own task, so a sender hanging up mid-write cannot
    /// leave keys reserved or a stored event unqueued.
    async fn accept(
        self: &Arc<Self>,
        sub: &Arc<Subscription>,
        mut events: Vec<store::Event>,
    ) -> Result<(), Refused> {
        let Some(now) = events.first().map(|e| e.received_ms) else {
            return Ok(());
        };
        let (duplicates, reserved) = self.dedupe.reserve(sub.id, &mut events, now);
        if duplicates > 0 {
            self.metrics
                .deduplicated
                .with_label_values(&[&sub.config.name])
                .inc_by(duplicates as u64);
        }
        let reservation = reserved.map_err(|InFlight| Refused::InFlight)?;
        if events.is_empty() {
            self.dedupe.release(reservation);
            return Ok(());
        }
        let gw = self.clone();
        let sub = sub.clone();
        let commit =
            tokio::spawn(async move { gw.store_and_queue(&sub, events, reservation).await });
        commit
            .await
            .unwrap_or_else(|e| Err(Refused::Store(format!("commit task: {e}"))))
    }

    async fn store_and_queue(
        &self,
        sub: &Subscription,
        events: Vec<store::Event>,
        reservation: Reservation,
    ) -> Result<(), Refused> {
        let count = events.len();
        if let Err(e) = self.queue.push(sub.id, events).await {
            self.dedupe.release(reservation);
            return Err(match e {
                QueueError::Full => Refused::Full,
                QueueError::Unavailable(e) => Refused::Store(e),
                e @ QueueError::TooLarge { .. } => Refused::TooLarge(e.to_string()),
            });
        }
        self.dedupe.commit(reservation);
        self.metrics
            .acknowledged
            .with_label_values(&[&sub.config.name])
            .inc_by(count as u64);
        self.pending_changed(sub);
        Ok(())
    }

    /// The queue's housekeeping (see [`EventQueue::maintain`]), until the gateway is closed.
    pub async fn maintain(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        tokio::select! {
            () = self.queue.maintain(&self.dedupe) => {}
            _ = closed.wait_for(|c| *c) => {}
        }
    }

    /// The events of `subscription` waiting to be delivered (ready ones, in order).
    pub fn queued(&self, subscription: &str) -> Vec<Arc<store::Event>> {
        let Some(sub) = self.subs.iter().find(|s| s.config.name == subscription) else {
            return Vec::new();
        };
        match &*self.queue {
            Backend::Embedded(q) => q.ready_events(sub.id),
            Backend::Jetstream(q) => q.stashed_events(sub.id),
        }
    }

    /// Test hook: make durable writes fail (the "store is down" case).
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_store_failure(&self, fail: bool) {
        match &*self.queue {
            Backend::Embedded(q) => q.inject_failure(fail),
            Backend::Jetstream(q) => q.inject_failure(fail),
        }
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

/// The CloudEvents webhook handshake (`OPTIONS`).
fn handshake_answer(sub: &Subscription, req: &Request) -> Response {
    let a = handshake::options(
        &req.headers,
        &sub.config.allowed_origins,
        sub.config.allowed_rate,
    );
    if a.status == 200 {
        sub.handshake_answered();
    }
    Response {
        status: a.status,
        headers: a
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        body: Vec::new(),
    }
}

/// What the events of one request share.
struct NewEvents<'a> {
    subscription: &'a str,
    kind: Kind,
    headers: Vec<(String, String)>,
    received_ms: u64,
}

impl<'a> NewEvents<'a> {
    fn new(sub: &'a Subscription, req: &Request, kind: Kind) -> Self {
        NewEvents {
            subscription: &sub.config.name,
            kind,
            headers: forwarded_headers(&sub.config.forward_headers, &req.headers),
            received_ms: now_ms(),
        }
    }

    /// An event to store (its `seq` is assigned by the queue).
    fn event(&self, key: String, json: &str) -> store::Event {
        store::Event {
            seq: 0,
            subscription: self.subscription.to_string(),
            key,
            received_ms: self.received_ms,
            kind: self.kind,
            json: json.to_string(),
            headers: self.headers.clone(),
        }
    }
}

enum Parsed {
    /// Answer at once (handshakes, deletion).
    Answer(Response),
    Events(Vec<store::Event>, Kind),
}

enum Refused {
    Full,
    Store(String),
    /// The same event is being stored by a concurrent request.
    InFlight,
    /// An event is larger than the queue takes in one message (final: 413).
    TooLarge(String),
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
