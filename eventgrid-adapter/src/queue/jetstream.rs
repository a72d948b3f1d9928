//! The JetStream backend: events live in a NATS JetStream stream shared by every proxy replica,
//! and each subscription is one durable pull consumer that all replicas take from (work-queue
//! semantics: an event is handed to one replica at a time).
//!
//! | [`EventQueue`] | JetStream |
//! |---|---|
//! | `push` | one publish per event on `rouse.<stream>.<subscription>`, `Nats-Msg-Id` = the dedupe key; `Ok` only after the stream's publish ack of every event |
//! | `take` | a pull from the subscription's durable consumer, for all its workers in this process (explicit ack, `AckWait` = delivery timeout + 5 s); an in-progress ack keeps a delivery that outlives half of it |
//! | `requeue(delay)` | `Nak` with the delay |
//! | `retire(Delivered)` | `Ack`, sent in the background and not confirmed (one the server never got means a redelivery after `AckWait`) |
//! | `retire(DeadLettered)` | `Term`, once the delivery side wrote the dead letter (a file, or with `dead_letter: {stream: …}` a message on `rouse-dead.<stream>.<subscription>` in that stream, reason and attempts in headers: [`Jetstream::dead_letter`]) |
//! | `pending` | the consumer's `num_pending + num_ack_pending`, cached: adjusted on push/retire, refreshed from the server in `maintain` |
//!
//! The stream is a work queue (an acknowledged or terminated event is removed), on file storage,
//! with `replicas` copies and a duplicate window as long as the longest dedupe window of its
//! subscriptions: a retry of an event already stored, by this replica or another, is absorbed
//! by the stream. The message is the event as the embedded log encodes it (its JSON, forwarded
//! headers included); `Event::seq` is the stream sequence, set when the event is taken.
//!
//! Unlike the embedded log, a request's events are published one by one: when `push` fails
//! half-way (the server went away), the events already stored stay and will be delivered. The
//! sender was answered 503 and retries; its retry carries the same `Nats-Msg-Id`s, which the
//! stream absorbs, so each event is still delivered once (within the duplicate window).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::IntoFuture;
#[cfg(any(test, feature = "test-util"))]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::message::{AckKind, PublishMessage};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, Subject};
use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, OnceCell};

use super::{EventQueue, Item, QueueError, SubId};
use crate::config::{DeadLetter, JetstreamConfig, SubscriptionConfig};
use crate::dedupe::Dedupe;
use crate::store::{Event, Outcome};

/// How long one waiting pull lasts before it is renewed.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// How long past its expiry a pull's answer may take before the pull is given up.
const PULL_ANSWER_SLACK: Duration = Duration::from_secs(2);
/// Pause after a failed pull (NATS unreachable) before the next one.
const PULL_RETRY: Duration = Duration::from_millis(500);
/// Most events one pull asks for.
const MAX_PULL: usize = 1000;
/// How often `maintain` refreshes the pending counts from the server (and sends in-progress
/// acks), at the latest.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// ... and at the earliest this long after the previous refresh: under load every push and
/// retire asks for one, and each is a consumer-info request per subscription.
const MIN_REFRESH: Duration = Duration::from_millis(250);
/// Added to the delivery timeout to make `AckWait` (reading the answer takes up to 5 s more).
const ACK_WAIT_SLACK: Duration = Duration::from_secs(5);
/// How often a dead-letter count is read from its stream (one request per subscription).
const DEAD_COUNT_EVERY: Duration = Duration::from_secs(5);
/// A dead-letter count not read yet (or not readable).
const UNKNOWN: u64 = u64::MAX;
/// Headers of a dead-letter message.
pub const DEAD_LETTER_REASON: &str = "Rouse-Dead-Letter-Reason";
pub const DEAD_LETTER_ATTEMPTS: &str = "Rouse-Attempts";
pub const DEAD_LETTER_SUBSCRIPTION: &str = "Rouse-Subscription";
/// Bytes a message's header block takes besides the `Nats-Msg-Id` value
/// (`NATS/1.0\r\nNats-Msg-Id: …\r\n\r\n`, rounded up): the server counts headers against
/// `max_payload`.
const MSG_ID_HEADER_OVERHEAD: usize = 64;
/// How long setting up waits for the first connection.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// The longest pause between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// A taken event's acknowledgement subject, while its delivery runs.
struct Held {
    /// The message's reply subject: acks, naks, terms and in-progress acks are sent there.
    reply: Subject,
    /// When the server last heard of it (taken, or the last in-progress ack).
    since: Instant,
}

/// One subscription: its subject and durable consumer.
struct Lane {
    name: String,
    /// Shared, so publishing an event clones a reference count rather than the name.
    subject: Subject,
    durable: String,
    max_pending: usize,
    ack_wait: Duration,
    /// Delivery workers of the subscription in this process: a pull fetches for all of them.
    workers: usize,
    /// Accepted and not retired, as last seen (all replicas).
    pending: AtomicUsize,
    /// Taken from the server but not handed out yet (a pull returned events whose forwarded
    /// headers differ from the first one's): the next `take` hands them out first.
    stash: Mutex<VecDeque<Item>>,
    /// One pull at a time per subscription and process.
    pulling: tokio::sync::Mutex<()>,
    /// Handed out, by stream sequence.
    held: Mutex<HashMap<u64, Held>>,
    /// `(stream, subject)` of the dead letters, with `dead_letter: {stream: …}`.
    dead: Option<(String, String)>,
    /// Messages on `dead`'s subject, as last read ([`UNKNOWN`] until then).
    dead_count: AtomicU64,
}

/// What exists once the stream and the consumers are in place.
struct Ready {
    js: jetstream::Context,
    /// By [`SubId`].
    consumers: Vec<PullConsumer>,
}

type OnChange = Box<dyn Fn(SubId) + Send + Sync>;

/// The stream and its consumers. Connects lazily (and keeps reconnecting): opening never waits
/// for NATS, and a server that is away only makes `push` answer [`QueueError::Unavailable`].
pub struct Jetstream {
    config: JetstreamConfig,
    lanes: Vec<Lane>,
    duplicate_window: Duration,
    client: OnceCell<Client>,
    ready: Mutex<Option<Arc<Ready>>>,
    setting_up: tokio::sync::Mutex<()>,
    /// Wakes `maintain` to refresh the pending counts.
    refresh: Notify,
    /// Called when `maintain` finds a pending count changed (by another replica, a redelivery).
    on_change: OnceLock<OnChange>,
    /// Dead-letter streams known to exist.
    dead_streams: tokio::sync::Mutex<HashSet<String>>,
    /// Set by [`Jetstream::close`]: takes end, stashed events go back to the server.
    closed: std::sync::atomic::AtomicBool,
    #[cfg(any(test, feature = "test-util"))]
    fail: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Nats-Msg-Id` of an event: `<subscription>/<topic or source>/<id>`, with every byte outside
/// printable ASCII, and `%` and `/` inside the parts, percent-encoded (a header value must
/// not carry a line break; the encoding keeps distinct keys distinct).
pub fn message_id(subscription: &str, key: &str) -> String {
    let mut id = String::with_capacity(subscription.len() + key.len() + 8);
    id.push_str(subscription);
    id.push('/');
    for b in key.bytes() {
        match b {
            0 => id.push('/'),
            b'%' | b'/' => id.push_str(&format!("%{b:02X}")),
            0x21..=0x7e => id.push(char::from(b)),
            _ => id.push_str(&format!("%{b:02X}")),
        }
    }
    id
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("NATS JetStream: {what}: {e}"))
}

impl Jetstream {
    /// The backend for `subscriptions` (indexed like [`SubId`]); nothing is contacted yet.
    pub fn new(config: &JetstreamConfig, subscriptions: &[SubscriptionConfig]) -> Jetstream {
        let lanes = subscriptions
            .iter()
            .map(|c| Lane {
                name: c.name.clone(),
                subject: Subject::from(format!("rouse.{}.{}", config.stream, c.name)),
                durable: format!("rouse-{}", c.name),
                max_pending: c.max_pending,
                ack_wait: c.delivery.timeout() + ACK_WAIT_SLACK,
                workers: c.delivery.concurrency,
                pending: AtomicUsize::new(0),
                stash: Mutex::default(),
                pulling: tokio::sync::Mutex::new(()),
                held: Mutex::default(),
                dead: match &c.dead_letter {
                    Some(DeadLetter::Stream(d)) => Some((
                        d.stream.clone(),
                        format!("rouse-dead.{}.{}", d.stream, c.name),
                    )),
                    _ => None,
                },
                dead_count: AtomicU64::new(UNKNOWN),
            })
            .collect();
        let longest = subscriptions
            .iter()
            .map(|c| c.dedupe_window_secs)
            .max()
            .unwrap_or(0);
        Jetstream {
            config: config.clone(),
            lanes,
            // 0 would mean the server's default (2 min): a second is the shortest honest value.
            duplicate_window: Duration::from_secs(longest.max(1)),
            client: OnceCell::new(),
            ready: Mutex::new(None),
            setting_up: tokio::sync::Mutex::new(()),
            refresh: Notify::new(),
            on_change: OnceLock::new(),
            dead_streams: tokio::sync::Mutex::default(),
            closed: Default::default(),
            #[cfg(any(test, feature = "test-util"))]
            fail: AtomicBool::new(false),
        }
    }

    /// `f(sub)` runs whenever `maintain` sees `sub`'s pending count change on the server (the
    /// gateway then updates its gauge and the app's demand). Set once.
    pub fn on_pending_change(&self, f: impl Fn(SubId) + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(f));
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.config.stream
    }

    /// The durable consumer of `sub`.
    pub fn consumer_name(&self, sub: SubId) -> &str {
        &self.lane(sub).durable
    }

    /// Events of `sub` taken from the server and not yet handed out (inspection).
    pub fn stashed_events(&self, sub: SubId) -> Vec<Arc<Event>> {
        lock(&self.lane(sub).stash)
            .iter()
            .map(|i| i.event.clone())
            .collect()
    }

    /// Test hook: make pushes fail (the "broker is down" case without stopping it).
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_failure(&self, fail: bool) {
        self.fail.store(fail, Ordering::Relaxed);
    }

    /// Events of `sub` in its dead-letter stream, as last read; `None` without a dead-letter
    /// stream or before the first read.
    pub fn dead_lettered(&self, sub: SubId) -> Option<u64> {
        let lane = self.lane(sub);
        lane.dead.as_ref()?;
        Some(lane.dead_count.load(Ordering::Relaxed)).filter(|n| *n != UNKNOWN)
    }

    /// Stops handing out events (a replaced gateway): pending `take`s return empty, and events
    /// taken from the server but not handed out go back at once (`Nak`), rather than after
    /// `AckWait`. Deliveries already running finish and are acknowledged as usual.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for lane in &self.lanes {
            let stashed: Vec<Item> = lock(&lane.stash).drain(..).collect();
            let replies: Vec<Subject> = {
                let mut held = lock(&lane.held);
                stashed
                    .iter()
                    .filter_map(|i| held.remove(&i.event.seq).map(|h| h.reply))
                    .collect()
            };
            for reply in replies {
                let _ = self.signal(reply, AckKind::Nak(None)).await;
            }
        }
    }

    /// Publishes `items` to the dead-letter stream `stream` (created if missing), one message
    /// per event (its JSON as the body; reason, attempts and subscription in headers), and waits
    /// for every publish ack. `Nats-Msg-Id` is the event's, so a repeat is absorbed.
    pub async fn dead_letter(
        &self,
        sub: SubId,
        stream: &str,
        items: &[Item],
        reason: &str,
    ) -> Result<(), QueueError> {
        let lane = self.lane(sub);
        let subject = format!("rouse-dead.{stream}.{}", lane.name);
        let ready = self.ready().await?;
        self.ensure_dead_stream(&ready, stream).await?;
        let mut acks = Vec::with_capacity(items.len());
        for i in items {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(DEAD_LETTER_REASON, header_safe(reason).as_str());
            headers.insert(DEAD_LETTER_ATTEMPTS, (i.attempts + 1).to_string().as_str());
            headers.insert(DEAD_LETTER_SUBSCRIPTION, lane.name.as_str());
            let publish = PublishMessage::build()
                .payload(i.event.json.clone().into_bytes().into())
                .headers(headers)
                .message_id(message_id(&lane.name, &i.event.key));
            let ack = ready
                .js
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| unavailable("dead-letter publish", e))?;
            acks.push(ack);
        }
        for ack in join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.map_err(|e| unavailable("dead-letter publish ack", e))?;
        }
        Ok(())
    }

    async fn ensure_dead_stream(&self, ready: &Ready, stream: &str) -> Result<(), QueueError> {
        let mut known = self.dead_streams.lock().await;
        if known.contains(stream) {
            return Ok(());
        }
        ready
            .js
            .create_or_update_stream(stream::Config {
                name: stream.to_string(),
                description: Some("Rouse event gateway: dead-lettered events".into()),
                subjects: vec![format!("rouse-dead.{stream}.>")],
                storage: stream::StorageType::File,
                num_replicas: self.config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&format!("dead-letter stream {stream}"), e))?;
        known.insert(stream.to_string());
        Ok(())
    }

    /// Reads each dead-letter count (at most every [`DEAD_COUNT_EVERY`]).
    async fn count_dead(&self, ready: &Ready) {
        for lane in &self.lanes {
            let Some((stream, subject)) = &lane.dead else {
                continue;
            };
            let count = match ready.js.get_stream_no_info(stream).await {
                Ok(s) => match s.info_with_subjects(subject).await {
                    Ok(mut subjects) => {
                        let mut n = 0;
                        while let Some(Ok((_, c))) = subjects.next().await {
                            n += c as u64;
                        }
                        n
                    }
                    Err(_) => continue,
                },
                // No stream yet: nothing was dead-lettered.
                Err(_) => 0,
            };
            lane.dead_count.store(count, Ordering::Relaxed);
        }
    }

    fn lane(&self, sub: SubId) -> &Lane {
        &self.lanes[sub.index()]
    }

    async fn connect(&self) -> Result<Client, QueueError> {
        let mut options = ConnectOptions::new()
            .name("rouse-eventgrid")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(self.config.publish_timeout())
            .reconnect_delay_callback(|attempts| {
                let ms = 50u64.saturating_mul(u64::try_from(attempts).unwrap_or(u64::MAX));
                Duration::from_millis(ms).min(MAX_RECONNECT_DELAY)
            })
            .event_callback(|event| async move {
                tracing::info!(%event, "NATS connection event.");
            });
        if let Some(path) = &self.config.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| unavailable(&format!("credentials {}", path.display()), e))?;
        }
        let servers: Vec<&str> = self.config.url.split(',').map(str::trim).collect();
        options
            .connect(servers)
            .await
            .map_err(|e| unavailable(&format!("connect {}", self.config.url), e))
    }

    /// The stream and consumers, created (or updated) on first use and after a failure.
    async fn ready(&self) -> Result<Arc<Ready>, QueueError> {
        if let Some(r) = lock(&self.ready).clone() {
            return Ok(r);
        }
        let _one = self.setting_up.lock().await;
        if let Some(r) = lock(&self.ready).clone() {
            return Ok(r);
        }
        let client = self.client.get_or_try_init(|| self.connect()).await?;
        let timeout = self.config.publish_timeout();
        // The first connection is made in the background: give it a moment.
        let deadline = Instant::now() + timeout.min(CONNECT_WAIT);
        while client.connection_state() != async_nats::connection::State::Connected {
            if Instant::now() >= deadline {
                return Err(unavailable(
                    &format!("connect {}", self.config.url),
                    "not connected",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .ack_timeout(timeout)
            .build(client.clone());
        let stream = js
            .create_or_update_stream(stream::Config {
                name: self.config.stream.clone(),
                description: Some("Rouse event gateway: accepted webhook events".into()),
                subjects: vec![format!("rouse.{}.>", self.config.stream)],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: self.config.replicas,
                duplicate_window: self.duplicate_window,
                discard: stream::DiscardPolicy::New,
                max_messages: -1,
                max_bytes: -1,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&format!("stream {}", self.config.stream), e))?;
        let stream = js
            .get_stream_no_info(&stream.config.name)
            .await
            .map_err(|e| unavailable(&format!("stream {}", self.config.stream), e))?;
        let mut consumers = Vec::with_capacity(self.lanes.len());
        for lane in &self.lanes {
            let consumer = stream
                .create_consumer(pull::Config {
                    durable_name: Some(lane.durable.clone()),
                    description: Some(format!("Rouse deliveries of {}", lane.name)),
                    filter_subject: lane.subject.to_string(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: lane.ack_wait,
                    // Attempts are counted (and dead letters written) by the delivery side.
                    max_deliver: -1,
                    max_ack_pending: i64::try_from(lane.max_pending).unwrap_or(i64::MAX),
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable(&format!("consumer {}", lane.durable), e))?;
            consumers.push(consumer);
        }
        tracing::info!(stream = %self.config.stream, replicas = self.config.replicas, subscriptions = self.lanes.len(), "JetStream queue ready.");
        let ready = Arc::new(Ready { js, consumers });
        *lock(&self.ready) = Some(ready.clone());
        Ok(ready)
    }

    /// Publishes `events` (pipelined) and waits for every ack. Returns how many were new (not
    /// absorbed as duplicates).
    async fn publish(
        &self,
        ready: &Ready,
        lane: &Lane,
        events: &[Event],
    ) -> Result<usize, QueueError> {
        // Each publish holds one of the context's in-flight ack permits until its ack future
        // completes. Acks are awaited *while* later events are sent: a request that sent all its
        // events before awaiting any held its permits while waiting for more, and eight
        // concurrent 1 000-event requests (5 000 permits) stalled each other until the publish
        // timeout (idle server, 503s): ~4 000 → ~30 000 events/s acknowledged, no 503.
        let mut acks = FuturesUnordered::new();
        let mut new = 0;
        let mut count = |ack: Result<PublishAck, PublishError>| -> Result<(), QueueError> {
            if !ack.map_err(|e| unavailable("publish ack", e))?.duplicate {
                new += 1;
            }
            Ok(())
        };
        // Every message is encoded and sized before the first is sent: an event the server
        // would refuse (`max_payload`) refuses the whole request (413), with nothing stored.
        let limit = ready.js.client().server_info().max_payload;
        let mut messages = Vec::with_capacity(events.len());
        for (index, e) in events.iter().enumerate() {
            let payload = serde_json::to_vec(e).map_err(|e| unavailable("encode", e))?;
            let id = message_id(&lane.name, &e.key);
            let size = payload.len() + id.len() + MSG_ID_HEADER_OVERHEAD;
            if size > limit {
                return Err(QueueError::TooLarge { index, size, limit });
            }
            messages.push((payload, id));
        }
        for (payload, id) in messages {
            let publish = PublishMessage::build()
                .payload(payload.into())
                .message_id(id);
            let send = ready.js.send_publish(lane.subject.clone(), publish);
            tokio::pin!(send);
            let ack = loop {
                tokio::select! {
                    biased;
                    done = acks.next(), if !acks.is_empty() => {
                        if let Some(done) = done {
                            count(done)?;
                        }
                    }
                    sent = &mut send => break sent.map_err(|e| unavailable("publish", e))?,
                }
            };
            acks.push(ack.into_future());
        }
        while let Some(done) = acks.next().await {
            count(done)?;
        }
        Ok(new)
    }

    /// Hands out up to `max` stashed items sharing the first one's headers.
    fn from_stash(lane: &Lane, max: usize) -> Option<Vec<Item>> {
        let mut stash = lock(&lane.stash);
        let headers = stash.front()?.event.headers.clone();
        let n = stash
            .iter()
            .take(max)
            .take_while(|i| i.event.headers == headers)
            .count();
        Some(stash.drain(..n).collect())
    }

    /// Turns pulled messages into items (holding their ack handles).
    fn receive(&self, lane: &Lane, messages: Vec<jetstream::Message>) -> Vec<Item> {
        let mut items = Vec::with_capacity(messages.len());
        let mut held = Vec::with_capacity(messages.len());
        for m in messages {
            let (seq, delivered) = match m.info() {
                Ok(i) => (i.stream_sequence, i.delivered),
                Err(e) => {
                    tracing::warn!(subscription = %lane.name, error = %e, "JetStream message without delivery info; skipped (redelivered after AckWait).");
                    continue;
                }
            };
            let message = m.message;
            let Some(reply) = message.reply.clone() else {
                tracing::warn!(subscription = %lane.name, seq, "JetStream message without a reply subject; skipped (redelivered after AckWait).");
                continue;
            };
            match serde_json::from_slice::<Event>(&message.payload) {
                Ok(mut event) => {
                    event.seq = seq;
                    held.push((
                        seq,
                        Held {
                            reply,
                            since: Instant::now(),
                        },
                    ));
                    items.push(Item {
                        event: Arc::new(event),
                        attempts: u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX),
                    });
                }
                Err(e) => {
                    // Not written by a gateway: it can never be delivered. Terminated so it
                    // does not block the subscription; its text goes to the log.
                    tracing::error!(subscription = %lane.name, seq, error = %e, payload = %String::from_utf8_lossy(&message.payload[..message.payload.len().min(512)]), "Undecodable JetStream message terminated.");
                    if let Some(client) = self.client.get().cloned() {
                        tokio::spawn(async move {
                            let _ = client.publish(reply, AckKind::Term.into()).await;
                        });
                    }
                }
            }
        }
        // One lock per pull, not per message.
        lock(&lane.held).extend(held);
        items
    }

    /// One pull: what is there now, or else the first event to arrive within [`PULL_WAIT`]
    /// (followed by whatever came with it).
    async fn pull(
        &self,
        consumer: &PullConsumer,
        max: usize,
    ) -> Result<Vec<jetstream::Message>, String> {
        let mut got = drain(consumer.fetch().max_messages(max).messages().await).await?;
        if got.is_empty() {
            let waiting = consumer
                .batch()
                .max_messages(1)
                .expires(PULL_WAIT)
                .messages()
                .await;
            let first = tokio::time::timeout(PULL_WAIT + PULL_ANSWER_SLACK, drain(waiting))
                .await
                .map_err(|_| "pull: no answer".to_string())??;
            if first.is_empty() {
                return Ok(first);
            }
            got = first;
            if max > 1 {
                got.extend(drain(consumer.fetch().max_messages(max - 1).messages().await).await?);
            }
        }
        Ok(got)
    }

    /// Sends `kind` (Nak, Term, in-progress) to a message's reply subject without waiting for
    /// the server: one lost only means the server redelivers after `AckWait`.
    async fn signal(&self, reply: Subject, kind: AckKind) -> Result<(), String> {
        let client = self.client.get().ok_or("not connected")?;
        client
            .publish(reply, kind.into())
            .await
            .map_err(|e| e.to_string())
    }

    fn changed(&self, sub: SubId) {
        if let Some(f) = self.on_change.get() {
            f(sub);
        }
    }

    /// Refreshes every pending count from the server; in-progress acks for long deliveries.
    async fn tick(&self) {
        let ready = lock(&self.ready).clone();
        let ready = match ready {
            Some(r) => Some(r),
            None => self.ready().await.ok(),
        };
        if let Some(ready) = ready {
            for (i, (lane, consumer)) in self.lanes.iter().zip(&ready.consumers).enumerate() {
                match consumer.get_info().await {
                    Ok(info) => {
                        let now = usize::try_from(info.num_pending)
                            .unwrap_or(usize::MAX)
                            .saturating_add(info.num_ack_pending);
                        if lane.pending.swap(now, Ordering::Relaxed) != now {
                            self.changed(SubId::new(i));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(subscription = %lane.name, error = %e, "JetStream consumer info unavailable.")
                    }
                }
            }
        }
        for lane in &self.lanes {
            let now = Instant::now();
            let due: Vec<Subject> = lock(&lane.held)
                .values_mut()
                .filter(|h| now.duration_since(h.since) >= lane.ack_wait / 2)
                .map(|h| {
                    h.since = now;
                    h.reply.clone()
                })
                .collect();
            for reply in due {
                if let Err(e) = self.signal(reply, AckKind::Progress).await {
                    tracing::debug!(subscription = %lane.name, error = %e, "In-progress ack not sent.");
                }
            }
        }
    }
}

/// Collects a pull's messages (the stream ends when the pull is done).
async fn drain<E: std::fmt::Display>(
    batch: Result<pull::Batch, E>,
) -> Result<Vec<jetstream::Message>, String> {
    let mut batch = batch.map_err(|e| format!("pull: {e}"))?;
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        match m {
            Ok(m) => out.push(m),
            // What arrived before the error is kept (it is held by this replica now).
            Err(e) if out.is_empty() => return Err(format!("pull: {e}")),
            Err(_) => break,
        }
    }
    Ok(out)
}

impl EventQueue for Jetstream {
    /// Every event published with its dedupe key as `Nats-Msg-Id`; `Ok` after all the acks.
    async fn push(&self, sub: SubId, events: Vec<Event>) -> Result<(), QueueError> {
        #[cfg(any(test, feature = "test-util"))]
        if self.fail.load(Ordering::Relaxed) {
            return Err(unavailable("publish", "injected failure"));
        }
        let lane = self.lane(sub);
        if lane.pending.load(Ordering::Relaxed) + events.len() > lane.max_pending {
            return Err(QueueError::Full);
        }
        let timeout = self.config.publish_timeout();
        let stored = tokio::time::timeout(timeout, async {
            let ready = self.ready().await?;
            if ready.js.client().connection_state() != async_nats::connection::State::Connected {
                return Err(unavailable("connection", "not connected"));
            }
            self.publish(&ready, lane, &events).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(unavailable(
                "publish",
                format!("no ack within {} ms", timeout.as_millis()),
            ))
        });
        match stored {
            Ok(new) => {
                lane.pending.fetch_add(new, Ordering::Relaxed);
                self.refresh.notify_one();
                Ok(())
            }
            Err(e) => {
                self.refresh.notify_one();
                Err(e)
            }
        }
    }

    async fn take(&self, sub: SubId, max: usize) -> Vec<Item> {
        let lane = self.lane(sub);
        let max = max.max(1);
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return Vec::new();
            }
            if let Some(items) = Self::from_stash(lane, max) {
                return items;
            }
            let _pull = lane.pulling.lock().await;
            if let Some(items) = Self::from_stash(lane, max) {
                return items;
            }
            let ready = match self.ready().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(subscription = %lane.name, error = %e, "JetStream not ready; deliveries wait.");
                    tokio::time::sleep(PULL_RETRY).await;
                    continue;
                }
            };
            // Enough for every worker of this process (the rest wait in the stash, held).
            let want = max.saturating_mul(lane.workers).clamp(1, MAX_PULL);
            // A pull whose answer was lost in a reconnect would otherwise wait forever, holding
            // this lane's pull lock: bounded, and then tried again (messages it had received
            // come back after AckWait).
            let pulled = tokio::time::timeout(
                PULL_WAIT + PULL_ANSWER_SLACK,
                self.pull(&ready.consumers[sub.index()], want),
            )
            .await
            .unwrap_or_else(|_| Err("pull: no answer".to_string()));
            match pulled {
                Ok(messages) => {
                    let items = self.receive(lane, messages);
                    lock(&lane.stash).extend(items);
                }
                Err(e) => {
                    tracing::debug!(subscription = %lane.name, error = %e, "JetStream pull failed; retrying.");
                    tokio::time::sleep(PULL_RETRY).await;
                }
            }
        }
    }

    /// `Nak` with `delay` (the server redelivers then, to any replica); resolves after `delay`.
    async fn requeue(&self, sub: SubId, items: Vec<Item>, delay: Duration) {
        let lane = self.lane(sub);
        let replies: Vec<Subject> = {
            let mut held = lock(&lane.held);
            items
                .iter()
                .filter_map(|i| held.remove(&i.event.seq).map(|h| h.reply))
                .collect()
        };
        let kind = AckKind::Nak((!delay.is_zero()).then_some(delay));
        for reply in replies {
            if let Err(e) = self.signal(reply, kind).await {
                // Redelivered after AckWait instead.
                tracing::warn!(subscription = %lane.name, error = %e, "Nak not sent; the event comes back after AckWait.");
            }
        }
        tokio::time::sleep(delay).await;
    }

    /// `Ack` (delivered) or `Term` (dead-lettered), sent without waiting for the server.
    async fn retire(&self, sub: SubId, items: &[Item], outcome: Outcome) -> Result<(), QueueError> {
        let lane = self.lane(sub);
        let replies: Vec<Option<Subject>> = {
            let mut held = lock(&lane.held);
            items
                .iter()
                .map(|i| held.remove(&i.event.seq).map(|h| h.reply))
                .collect()
        };
        let kind = match outcome {
            Outcome::Delivered => AckKind::Ack,
            Outcome::DeadLettered => AckKind::Term,
        };
        let missing = replies.iter().filter(|r| r.is_none()).count();
        let total = items.len();
        // Plain acks, not "double" ones: an ack the server never got only means a redelivery
        // after AckWait (at least once), and a confirmation could not have led anywhere else.
        // Confirming each cost a request, a reply and a waiting entry per event (the
        // delivery side was slower than acknowledging under load). Sent from a task of their
        // own: a publish waits while the client's command queue is full (a reconnect), and the
        // worker must not wait with it.
        let replies: Vec<Subject> = replies.into_iter().flatten().collect();
        if let Some(client) = self.client.get().cloned() {
            let name = lane.name.clone();
            tokio::spawn(async move {
                let (mut failed, mut first) = (0, None);
                for reply in replies {
                    if let Err(e) = client.publish(reply, kind.into()).await {
                        failed += 1;
                        first.get_or_insert(e.to_string());
                    }
                }
                if let Some(e) = first {
                    tracing::warn!(subscription = %name, error = %e, "{failed} of {total} acks not sent; those events come back after AckWait.");
                }
            });
        }
        let _ = lane
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(items.len()))
            });
        self.refresh.notify_one();
        match missing {
            0 => Ok(()),
            n => Err(unavailable(
                &format!("{n} of {total} acks"),
                "no acknowledgement subject (not taken by this process)",
            )),
        }
    }

    fn pending(&self, sub: SubId) -> usize {
        self.lane(sub).pending.load(Ordering::Relaxed)
    }

    /// Connects early, then refreshes the pending counts (after every push and retire, at the
    /// latest every [`REFRESH_EVERY`]) and keeps long deliveries alive with in-progress acks.
    /// The dedupe window needs no carrying: the stream's duplicate window remembers the keys.
    async fn maintain(&self, _dedupe: &Dedupe) {
        if let Err(e) = self.ready().await {
            tracing::warn!(error = %e, "JetStream queue not ready yet; will retry.");
        }
        let mut counted: Option<Instant> = None;
        while !self.closed.load(Ordering::Relaxed) {
            // Woken early by push/retire; several wake-ups in one tick make one refresh.
            let _ = tokio::time::timeout(REFRESH_EVERY, self.refresh.notified()).await;
            let started = Instant::now();
            self.tick().await;
            let ready = lock(&self.ready).clone();
            if counted.is_none_or(|at| at.elapsed() >= DEAD_COUNT_EVERY)
                && let Some(ready) = ready
            {
                self.count_dead(&ready).await;
                counted = Some(Instant::now());
            }
            tokio::time::sleep(MIN_REFRESH.saturating_sub(started.elapsed())).await;
        }
    }
}

/// A reason as a header value: one line, printable ASCII, at most 512 bytes.
fn header_safe(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(512)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{header_safe, message_id};

    #[test]
    fn dead_letter_reasons_fit_in_one_header_line() {
        assert_eq!(
            header_safe("target answered 400\r\nX: y é"),
            "target answered 400??X: y ?"
        );
        assert_eq!(header_safe(&"a".repeat(600)).len(), 512);
    }

    #[test]
    fn message_ids_are_header_safe_and_keep_distinct_keys_distinct() {
        assert_eq!(message_id("s", "/t/x\u{0}id-1"), "s/%2Ft%2Fx/id-1");
        assert_eq!(message_id("s", "a b\r\n\u{0}é%"), "s/a%20b%0D%0A/%C3%A9%25");
        assert_ne!(message_id("s", "a/b\u{0}c"), message_id("s", "a\u{0}b/c"));
    }
}
