//! Where an `EventSubscription`'s status is written: watches the subscriptions (and reads the
//! `HTTPScaledObject`s the object reconciler watches); while leader, writes each subscription's
//! conditions, counts and last handshake, and a Warning Event when a condition turns bad.
//!
//! The proxies serve the webhooks and are the only part of Rouse that reads Secrets; what they
//! see arrives in their demand feeds ([`Aggregate::events`]). So served, pending, dead-lettered,
//! the last handshake and whether the key Secret could be loaded all come from those reports,
//! and change without any API event: besides watch events, a pass runs every [`RESYNC`].
//!
//! One pass: `assess` each subscription from the watched state and the reports (pure), decide
//! its status (pure, in `conditions`), then write what changed (`status`, leader only).

mod assess;
mod conditions;
mod status;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use rouse_core::crd::{
    EventSubscription, EventSubscriptionStatus, HTTPScaledObject, object_key, subscription_key,
};
use rouse_kube::{Scope, all_ready, watch_all};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::demand::Aggregate;
use crate::reconcile::{ObjectReader, ticks};
use assess::{World, assess};

/// How often every subscription is re-assessed without a watch event: the proxies' reports
/// (served, pending, handshakes, Secret problems) change without one. Only differences are
/// written.
const RESYNC: Duration = Duration::from_secs(2);

/// The shortest wait before a subscription no proxy reports counts as not served. A proxy
/// picks up a new object and reports it within one report interval, and this replica's own
/// feeds connect within a few after it starts: judging sooner would mark every new object (and,
/// after each controller restart, every object) `NotServed` and warn about it.
const MIN_SERVE_GRACE: Duration = Duration::from_secs(5);

/// Report intervals a proxy gets to report a subscription (see [`MIN_SERVE_GRACE`]).
const SERVE_GRACE_INTERVALS: u32 = 3;

/// How long after it appears (or this reconciler starts) a subscription without reports counts
/// as not served yet rather than not served.
fn serve_grace(report_interval: Duration) -> Duration {
    report_interval
        .saturating_mul(SERVE_GRACE_INTERVALS)
        .max(MIN_SERVE_GRACE)
}

/// Everything the EventSubscription reconciler needs.
pub struct Reconciler {
    pub client: Client,
    pub scope: Scope,
    /// The proxies' reports.
    pub aggregate: Arc<Aggregate>,
    /// Sends the Warning Events (the same reporter as the object reconciler's).
    pub recorder: Recorder,
    /// How often proxies send full snapshots: sets how long a missing report is not yet a
    /// problem ([`serve_grace`]).
    pub report_interval: Duration,
}

/// What the reconciler keeps from one pass to the next.
#[derive(Default)]
struct State {
    /// The status last written (or found unchanged) per subscription key.
    reported: HashMap<String, EventSubscriptionStatus>,
    /// When each subscription's status (and with it its counts) was last written.
    counts_written: HashMap<String, Instant>,
}

impl Reconciler {
    /// Runs until `stop`; writes status only while `leader` is true. `objects` are the
    /// `HTTPScaledObject`s the object reconciler watches (targets are looked up there).
    pub async fn run(
        self,
        objects: ObjectReader,
        mut leader: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let (subscriptions, events) = watch_all::<EventSubscription>(&self.scope, &self.client);
        let mut events = ticks("EventSubscription", events);
        let ObjectReader {
            stores: objects,
            changed: mut objects_changed,
        } = objects;
        let mut objects_open = true;
        let started = jiff::Timestamp::now();
        let mut state = State::default();
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                e = events.next() => match e {
                    Some(Err(e)) => {
                        let kind = e.metric_label();
                        tracing::warn!(error = %e, kind, "Watch failed; retrying with backoff.");
                        continue;
                    }
                    Some(Ok(())) => {}
                    None => return,
                },
                changed = objects_changed.changed(), if objects_open => {
                    // Closed: the object reconciler stopped (shutting down); resyncs go on.
                    objects_open = changed.is_ok();
                }
                _ = resync.tick() => {}
                _ = leader.changed() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
            if let Some(world) = self.snapshot(&subscriptions, &objects, started) {
                self.pass(&world, &leader, &mut state).await;
            }
        }
    }

    /// The watched state and the proxies' reports, once every store has seen its first list
    /// (before that, "absent" could mean "not listed yet").
    fn snapshot(
        &self,
        subscriptions: &[Store<EventSubscription>],
        objects: &[Store<HTTPScaledObject>],
        started: jiff::Timestamp,
    ) -> Option<World> {
        if !(all_ready(subscriptions) && all_ready(objects)) {
            return None;
        }
        let subscriptions: Vec<Arc<EventSubscription>> =
            subscriptions.iter().flat_map(Store::state).collect();
        let reports = subscriptions
            .iter()
            .map(|s| {
                let key = subscription_key(s);
                let observed = self.aggregate.events(&key);
                (key, observed)
            })
            .collect();
        Some(World {
            subscriptions,
            objects: objects
                .iter()
                .flat_map(Store::state)
                .map(|o| object_key(&o))
                .collect(),
            reports,
            started,
            grace: serve_grace(self.report_interval),
        })
    }

    /// One pass: assess every subscription, then write what changed (leader only).
    async fn pass(&self, world: &World, leader: &watch::Receiver<bool>, state: &mut State) {
        if !*leader.borrow() {
            // Another replica writes status meanwhile: compare against the objects again when
            // leading next time.
            state.reported.clear();
            state.counts_written.clear();
            return;
        }
        let assessments = assess(world);
        self.report_all(&world.subscriptions, &assessments, leader, state)
            .await;
        state
            .reported
            .retain(|key, _| assessments.contains_key(key));
        state
            .counts_written
            .retain(|key, _| assessments.contains_key(key));
    }
}
