//! The demand feed a controller reads from every proxy replica: `GET /demand/stream` on the admin
//! listener, one JSON object per line (NDJSON, readable with `curl -N`). The lines are
//! [`rouse_core::feed::FeedLine`]s (hello, then a tick and one demand line per target at once and
//! every `interval_ms` (default 1000, 50..=60000), and a demand line with `"wake":true` the moment
//! a request is held for a cold target: the controller scales on it without waiting for a poll).
//!
//! A controller sums the lines of all replicas; a broken stream means "reconnect", not "zero".

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use rouse_core::Target;
use rouse_core::feed::{DemandReport, FeedLine};
use tokio::sync::broadcast;

use crate::kubernetes::events::EventSource;
use crate::state::ProxyState;

/// Wakes pending for slow stream readers before they get a full snapshot instead.
const WAKE_BUFFER: usize = 1024;

/// The wake broadcast plus this replica's identity. Cheap to clone.
#[derive(Clone)]
pub struct DemandFeed {
    id: Arc<str>,
    wakes: broadcast::Sender<(Arc<Target>, Instant)>,
    /// The EventSubscriptions this replica serves (or not), reported with every snapshot.
    events: Option<Arc<EventSource>>,
}

impl DemandFeed {
    pub fn new(id: &str) -> Self {
        DemandFeed {
            id: Arc::from(id),
            wakes: broadcast::channel(WAKE_BUFFER).0,
            events: None,
        }
    }

    /// Reports `events`' subscriptions in every snapshot.
    pub fn with_events(mut self, events: Arc<EventSource>) -> Self {
        self.events = Some(events);
        self
    }

    /// Relays `target`'s wakes to every stream, forever. One per target: it is the only reader
    /// of [`rouse_core::Demand::woken`] (nothing autoscales inside the proxy on Kubernetes).
    pub async fn forward_wakes(self, target: Arc<Target>) {
        loop {
            let at = target.demand.woken().await;
            // No receiver = no controller connected yet; it gets a snapshot on connect.
            let _ = self.wakes.send((target.clone(), at));
        }
    }

    /// The NDJSON body of one `/demand/stream` request.
    pub fn stream(
        &self,
        state: Arc<ProxyState>,
        interval: Duration,
    ) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + use<>> {
        let hello = Bytes::from(
            FeedLine::Hello {
                proxy: self.id.to_string(),
            }
            .to_ndjson(),
        );
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = (self.wakes.subscribe(), ticks, state, self.events.clone());
        let body = futures::stream::once(async move { hello }).chain(futures::stream::unfold(
            start,
            |(mut wakes, mut ticks, state, events)| async move {
                let chunk = tokio::select! {
                    woken = wakes.recv() => match woken {
                        Ok((target, at)) => demand_line(&target, Some(at)),
                        // Missed some wakes: a full snapshot says everything they would have.
                        Err(broadcast::error::RecvError::Lagged(_)) => snapshot(&state, events.as_deref()),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = ticks.tick() => snapshot(&state, events.as_deref()),
                };
                Some((chunk, (wakes, ticks, state, events)))
            },
        ));
        StreamBody::new(body.map(|b| Ok(Frame::data(b))))
    }
}

fn demand_line(target: &Target, wake: Option<Instant>) -> Bytes {
    Bytes::from(demand(target, wake).to_ndjson())
}

fn demand(target: &Target, wake: Option<Instant>) -> FeedLine {
    let snapshot = target.demand.snapshot();
    FeedLine::Demand(DemandReport::new(
        &target.name,
        &snapshot,
        Instant::now(),
        wake,
    ))
}

/// A `tick` line (so a replica without routes still shows it is alive: empty chunks are never
/// sent), one line per routed target (a target shared by several routes appears once) and one
/// per EventSubscription in scope.
fn snapshot(state: &ProxyState, events: Option<&EventSource>) -> Bytes {
    let snap = state.snapshot();
    let mut seen = std::collections::HashSet::new();
    let mut out = FeedLine::Tick.to_ndjson();
    for rs in snap.routes.values() {
        if seen.insert(rs.target.name.as_str()) {
            out.extend_from_slice(&demand(&rs.target, None).to_ndjson());
        }
    }
    for report in events.map(EventSource::reports).unwrap_or_default() {
        out.extend_from_slice(&FeedLine::Events(report).to_ndjson());
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_request_makes_a_wake_line_counting_queued_events_as_held() {
        let t = Target::new("ns/web");
        t.demand.request_started();
        t.demand.held_inc();
        t.demand.set_queued(2);
        let l = demand_line(&t, Some(Instant::now()));
        assert_eq!(l.last(), Some(&b'\n'));
        let FeedLine::Demand(d) = serde_json::from_slice(&l).expect("a feed line") else {
            panic!("not a demand line");
        };
        assert_eq!(d.target, "ns/web");
        assert_eq!(d.held, 3);
        assert_eq!(d.requests_total, 1);
        assert!(d.wake);
        assert!(d.wake_age_us.is_some());
        assert!(d.idle_ms.is_some());
    }
}
