//! The embedded backend: the fsync'd log of [`crate::store`] plus an in-memory ready queue per
//! subscription.
//!
//! The log is the truth (an event is pending from its `Accepted` record to its `Done`); the
//! ready queues only order what this process will deliver next, and are rebuilt from the log at
//! start. One process owns the directory: this backend is not shared between replicas.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{EventQueue, Item, QueueError, SubId};
use crate::config::SubscriptionConfig;
use crate::dedupe::{Dedupe, SeenKey};
use crate::store::{self, Event, Outcome, Store};

/// Maintenance ticks (of [`store::DONE_SYNC`]) between two compaction checks.
const COMPACT_EVERY: u64 = 100;

/// One subscription's queue.
struct Lane {
    name: String,
    max_pending: usize,
    /// Signalled when events become ready to deliver.
    ready: Notify,
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    ready: VecDeque<Item>,
    /// Accepted and not yet retired: ready + in flight + waiting for a retry.
    pending: usize,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The log and the ready queues.
pub struct Embedded {
    store: Arc<Store>,
    /// Indexed by [`SubId`]: one per configured subscription, in order.
    lanes: Vec<Lane>,
    next_seq: AtomicU64,
}

impl Embedded {
    /// Opens (creating) `dir`, replays the log and queues every pending event again. Returns
    /// the dedupe keys the log remembers.
    pub fn open(
        dir: &Path,
        subscriptions: &[SubscriptionConfig],
    ) -> std::io::Result<(Embedded, Vec<SeenKey>)> {
        let (store, recovered) = Store::open(dir)?;
        if recovered.truncated > 0 {
            tracing::warn!(
                bytes = recovered.truncated,
                "Cut a torn tail off the event log (never acknowledged)."
            );
        }
        let lanes: Vec<Lane> = subscriptions
            .iter()
            .map(|c| Lane {
                name: c.name.clone(),
                max_pending: c.max_pending,
                ready: Notify::new(),
                state: Mutex::default(),
            })
            .collect();
        let mut orphans = 0;
        for e in recovered.pending {
            match lanes.iter().find(|l| l.name == e.subscription) {
                Some(lane) => {
                    let mut q = lane.lock();
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
        for lane in &lanes {
            let pending = lane.lock().pending;
            if pending > 0 {
                tracing::info!(subscription = %lane.name, pending, "Recovered pending events.");
            }
        }
        let queue = Embedded {
            store: Arc::new(store),
            lanes,
            next_seq: AtomicU64::new(recovered.next_seq),
        };
        Ok((queue, recovered.seen))
    }

    /// `SubId`s are made by the gateway for exactly these lanes (one per subscription).
    fn lane(&self, sub: SubId) -> &Lane {
        &self.lanes[sub.index()]
    }

    /// The ready events of `sub`, in order (inspection and tests).
    pub fn ready_events(&self, sub: SubId) -> Vec<Arc<Event>> {
        self.lane(sub)
            .lock()
            .ready
            .iter()
            .map(|i| i.event.clone())
            .collect()
    }

    /// Test hook: make durable writes fail (the "store is down" case).
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_failure(&self, fail: bool) {
        self.store.inject_failure(fail);
    }

    async fn compact(&self, dedupe: &Dedupe) {
        if !self.store.wants_compaction() {
            return;
        }
        let carry = dedupe.carry();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.compact(&carry)).await {
            Ok(Ok(true)) => tracing::info!("Event log compacted."),
            Ok(Err(e)) => tracing::warn!(error = %e, "Event log compaction failed."),
            _ => {}
        }
    }
}

impl EventQueue for Embedded {
    /// One group-committed append (fsync'd) for the whole batch, then the ready queue.
    async fn push(&self, sub: SubId, mut events: Vec<Event>) -> Result<(), QueueError> {
        let lane = self.lane(sub);
        if lane.lock().pending + events.len() > lane.max_pending {
            return Err(QueueError::Full);
        }
        for e in &mut events {
            e.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        }
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let store = self.store.clone();
        let (written, events) =
            tokio::task::spawn_blocking(move || (store.append(&events), events))
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        written.map_err(|e| QueueError::Unavailable(e.to_string()))?;
        {
            let mut q = lane.lock();
            q.pending += events.len();
            q.ready
                .extend(events.into_iter().map(|event| Item { event, attempts: 0 }));
        }
        lane.ready.notify_waiters();
        lane.ready.notify_one();
        Ok(())
    }

    async fn take(&self, sub: SubId, max: usize) -> Vec<Item> {
        let lane = self.lane(sub);
        loop {
            let notified = lane.ready.notified();
            {
                let mut q = lane.lock();
                if let Some(first) = q.ready.front() {
                    let headers = &first.event.headers;
                    let n = q
                        .ready
                        .iter()
                        .take(max)
                        .take_while(|i| i.event.headers == *headers)
                        .count();
                    let items: Vec<Item> = q.ready.drain(..n).collect();
                    if !q.ready.is_empty() {
                        lane.ready.notify_one();
                    }
                    return items;
                }
            }
            notified.await;
        }
    }

    /// Sleeps `delay`, then puts the items back at the front (they were taken first).
    async fn requeue(&self, sub: SubId, items: Vec<Item>, delay: Duration) {
        tokio::time::sleep(delay).await;
        let lane = self.lane(sub);
        {
            let mut q = lane.lock();
            for i in items.into_iter().rev() {
                q.ready.push_front(i);
            }
        }
        lane.ready.notify_one();
    }

    /// A `Done` record per item (fsync'd within [`store::DONE_SYNC`] by `maintain`).
    async fn retire(&self, sub: SubId, items: &[Item], outcome: Outcome) -> Result<(), QueueError> {
        let seqs: Vec<u64> = items.iter().map(|i| i.event.seq).collect();
        let store = self.store.clone();
        let recorded = tokio::task::spawn_blocking(move || store.done(&seqs, outcome)).await;
        {
            let mut q = self.lane(sub).lock();
            q.pending = q.pending.saturating_sub(items.len());
        }
        match recorded {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(QueueError::Unavailable(e.to_string())),
            Err(e) => Err(QueueError::Unavailable(e.to_string())),
        }
    }

    fn pending(&self, sub: SubId) -> usize {
        self.lane(sub).lock().pending
    }

    /// Fsyncs `Done` records every [`store::DONE_SYNC`]; now and then restarts a large log
    /// whose events are all done, carrying the dedupe window over.
    async fn maintain(&self, dedupe: &Dedupe) {
        let mut tick = tokio::time::interval(store::DONE_SYNC);
        let mut n = 0u64;
        loop {
            tick.tick().await;
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.sync()).await;
            n += 1;
            if n.is_multiple_of(COMPACT_EVERY) {
                self.compact(dedupe).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Kind;

    fn open(dir: &Path, max_pending: usize) -> Embedded {
        let yaml = format!(
            "subscriptions:\n  - {{name: s, path: /s, target: {{url: \"http://x\"}}, \
             max_pending: {max_pending}}}\n"
        );
        let config = crate::config::parse(&yaml, "test").expect("config");
        Embedded::open(dir, &config.subscriptions).expect("open").0
    }

    fn event(key: &str, tenant: &str) -> Event {
        Event {
            seq: 0,
            subscription: "s".into(),
            key: key.into(),
            received_ms: 1,
            kind: Kind::EventGrid,
            json: "{}".into(),
            headers: vec![("x-tenant".into(), tenant.into())],
        }
    }

    fn keys(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.event.key.as_str()).collect()
    }

    #[tokio::test]
    async fn batches_share_headers_requeued_items_come_first_and_retired_ones_stay_gone() {
        let dir = tempfile::tempdir().expect("tmp");
        let q = open(dir.path(), 4);
        let s = SubId::new(0);
        let batch = vec![event("a", "t1"), event("b", "t1"), event("c", "t2")];
        q.push(s, batch).await.expect("push");
        assert_eq!(
            q.push(s, vec![event("d", "t2"), event("e", "t2")]).await,
            Err(QueueError::Full),
            "3 + 2 > max_pending 4"
        );
        let first = q.take(s, 10).await;
        assert_eq!(keys(&first), ["a", "b"], "c has other headers");
        assert_eq!(first[0].event.seq + 1, first[1].event.seq, "seqs assigned");
        q.requeue(s, first, Duration::from_millis(10)).await;
        let again = q.take(s, 1).await;
        assert_eq!(keys(&again), ["a"], "requeued in front, in order");
        q.retire(s, &again, Outcome::Delivered)
            .await
            .expect("retire");
        assert_eq!(q.pending(s), 2);
        drop(q);
        let q = open(dir.path(), 4);
        assert_eq!(q.pending(s), 2, "b and c survive a restart, a does not");
        assert_eq!(keys(&q.take(s, 10).await), ["b"]);
    }

    #[tokio::test]
    async fn a_failed_append_queues_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let q = open(dir.path(), 10);
        let s = SubId::new(0);
        q.inject_failure(true);
        assert!(matches!(
            q.push(s, vec![event("a", "t")]).await,
            Err(QueueError::Unavailable(_))
        ));
        assert_eq!(q.pending(s), 0);
        assert!(q.ready_events(s).is_empty());
    }
}
