//! The seam between the gateway and a durable queue: what a backend must guarantee.
//!
//! The gateway acknowledges a sender only after [`EventQueue::push`] returned `Ok`, and delivery
//! workers only see events through [`EventQueue::take`], so "no event lost" rests on the
//! backend alone. Two backends, chosen per gateway (`event_gateway.queue`):
//!
//! - [`embedded`] (the default): the fsync'd log of [`crate::store`] plus in-memory ready
//!   queues. One process, no broker.
//! - [`jetstream`]: a NATS JetStream stream shared by every proxy replica (publish ack =
//!   durable, `Nats-Msg-Id` = the dedupe key, a durable consumer per subscription shared by all
//!   replicas, `Nak` with a delay for retries, `Term` for dead letters).
//!
//! Dispatch is an enum rather than `dyn` so that the futures stay unboxed: no allocation is
//! added to the per-request and per-batch paths.

pub mod embedded;
pub mod jetstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::dedupe::Dedupe;
use crate::store::{Event, Outcome};

/// A subscription, as the queue knows it: its position in the gateway's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubId(usize);

impl SubId {
    pub(crate) fn new(index: usize) -> Self {
        SubId(index)
    }

    pub fn index(self) -> usize {
        self.0
    }
}

/// One event handed out for delivery, with its delivery attempts so far. The items
/// [`EventQueue::take`] returns are the tokens given back to [`EventQueue::requeue`] or
/// [`EventQueue::retire`] (a backend may add its own acknowledgement handle here).
#[derive(Debug, Clone)]
pub struct Item {
    pub event: Arc<Event>,
    pub attempts: u32,
}

/// Why a push was refused. `Full` and `Unavailable` are transient for the sender (503 +
/// Retry-After); `TooLarge` is final (413).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// Event `index` of the request encodes to `size` bytes, above the `limit` the queue takes
    /// in one message (NATS `max_payload`); none of the request's events was stored.
    #[error(
        "event {index} of the request is {size} bytes as a queue message; the queue takes at most {limit} (NATS max_payload)"
    )]
    TooLarge {
        index: usize,
        size: usize,
        limit: usize,
    },
    /// `max_pending` events are already pending.
    #[error("too many events pending")]
    Full,
    /// The events could not be made durable (disk, broker); none of them was accepted.
    #[error("{0}")]
    Unavailable(String),
}

/// A durable queue of events, per subscription. What every backend must guarantee:
///
/// - `push` returns `Ok` only once *all* its events are durable (survive a crash of this
///   process); on `Err` none of them may be delivered later. The sender is acknowledged right
///   after `Ok`.
/// - Every pushed event is handed out by `take` until it is retired: a crash, a restart or a
///   requeue never drops one (delivery is at-least-once; a redelivery after a crash is fine).
/// - `take` waits for at least one event and returns at most `max`, in acceptance order, all
///   with the same forwarded headers (they travel on the delivery request, not per event).
/// - `requeue` hands the items out again no earlier than `delay` from now (retries), attempts
///   as set on the items. Its future may resolve only once they are ready again: callers
///   spawn it.
/// - `retire` takes the items out for good (delivered, or written to the dead-letter sink).
///   The pending count drops even when recording it fails (the error then means "may be
///   redelivered after a restart").
/// - `pending` counts events accepted and not retired: ready, in delivery and waiting for a
///   retry. The gateway turns it into the target's demand. A shared backend counts what all
///   replicas see.
/// - `maintain` runs for as long as the gateway does (background syncs, compaction); it may
///   persist the dedupe window's keys ([`Dedupe::carry`]) so that a restart still knows them.
pub trait EventQueue: Send + Sync {
    /// Stores `events` durably and makes them ready. The backend assigns `Event::seq`.
    fn push(
        &self,
        sub: SubId,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    fn take(&self, sub: SubId, max: usize) -> impl Future<Output = Vec<Item>> + Send;
    fn requeue(
        &self,
        sub: SubId,
        items: Vec<Item>,
        delay: Duration,
    ) -> impl Future<Output = ()> + Send;
    fn retire(
        &self,
        sub: SubId,
        items: &[Item],
        outcome: Outcome,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    fn pending(&self, sub: SubId) -> usize;
    fn maintain(&self, dedupe: &Dedupe) -> impl Future<Output = ()> + Send;
}

/// The configured backend.
pub enum Backend {
    Embedded(embedded::Embedded),
    /// Boxed: much larger than the embedded handle (connection state, per-lane stashes).
    Jetstream(Box<jetstream::Jetstream>),
}

impl EventQueue for Backend {
    async fn push(&self, sub: SubId, events: Vec<Event>) -> Result<(), QueueError> {
        match self {
            Backend::Embedded(q) => q.push(sub, events).await,
            Backend::Jetstream(q) => q.push(sub, events).await,
        }
    }

    async fn take(&self, sub: SubId, max: usize) -> Vec<Item> {
        match self {
            Backend::Embedded(q) => q.take(sub, max).await,
            Backend::Jetstream(q) => q.take(sub, max).await,
        }
    }

    async fn requeue(&self, sub: SubId, items: Vec<Item>, delay: Duration) {
        match self {
            Backend::Embedded(q) => q.requeue(sub, items, delay).await,
            Backend::Jetstream(q) => q.requeue(sub, items, delay).await,
        }
    }

    async fn retire(&self, sub: SubId, items: &[Item], outcome: Outcome) -> Result<(), QueueError> {
        match self {
            Backend::Embedded(q) => q.retire(sub, items, outcome).await,
            Backend::Jetstream(q) => q.retire(sub, items, outcome).await,
        }
    }

    fn pending(&self, sub: SubId) -> usize {
        match self {
            Backend::Embedded(q) => q.pending(sub),
            Backend::Jetstream(q) => q.pending(sub),
        }
    }

    async fn maintain(&self, dedupe: &Dedupe) {
        match self {
            Backend::Embedded(q) => q.maintain(dedupe).await,
            Backend::Jetstream(q) => q.maintain(dedupe).await,
        }
    }
}
