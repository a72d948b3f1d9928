//! The demand feed a controller reads from every proxy replica: `GET /demand/stream` on the admin
//! listener, one JSON object per line (NDJSON, readable with `curl -N`).
//!
//! - first line: `{"type":"hello","proxy":ID}`;
//! - then, at once and every `interval_ms` (default 1000, 50..=60000): a `{"type":"tick"}` line
//!   and one `demand` line per
//!   target with `held`, `in_flight`, `requests_total` and `idle_ms` (time since the last request
//!   started or ended; absent = never);
//! - and the moment a request is held for a cold target, a `demand` line for it with
//!   `"wake":true` and `wake_age_us` (how long ago the first held request signalled it): the
//!   controller scales on that line, without waiting for a poll.
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
use serde_json::json;
use tokio::sync::broadcast;

use crate::state::ProxyState;

/// Wakes pending for slow stream readers before they get a full snapshot instead.
const WAKE_BUFFER: usize = 1024;

/// The wake broadcast plus this replica's identity. Cheap to clone.
#[derive(Clone)]
pub struct DemandFeed {
    id: Arc<str>,
    wakes: broadcast::Sender<(Arc<Target>, Instant)>,
}

impl DemandFeed {
    pub fn new(id: &str) -> Self {
        DemandFeed {
            id: Arc::from(id),
            wakes: broadcast::channel(WAKE_BUFFER).0,
        }
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
        let hello = line(&json!({"type": "hello", "proxy": self.id.as_ref()}));
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = (self.wakes.subscribe(), ticks, state);
        let body = futures::stream::once(async move { hello }).chain(futures::stream::unfold(
            start,
            |(mut wakes, mut ticks, state)| async move {
                let chunk = tokio::select! {
                    woken = wakes.recv() => match woken {
                        Ok((target, at)) => demand_line(&target, Some(at)),
                        // Missed some wakes: a full snapshot says everything they would have.
                        Err(broadcast::error::RecvError::Lagged(_)) => snapshot(&state),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = ticks.tick() => snapshot(&state),
                };
                Some((chunk, (wakes, ticks, state)))
            },
        ));
        StreamBody::new(body.map(|b| Ok(Frame::data(b))))
    }
}

fn line(value: &serde_json::Value) -> Bytes {
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn demand_value(target: &Target, wake: Option<Instant>) -> serde_json::Value {
    let d = target.demand.snapshot();
    let idle_ms = d
        .last_activity
        .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut v = json!({
        "type": "demand",
        "target": target.name,
        // Queued events (event gateway) count as held: pending work that needs the target.
        "held": d.held + d.queued,
        "in_flight": d.in_flight,
        "requests_total": d.requests_total,
        "idle_ms": idle_ms,
    });
    if let Some(at) = wake {
        v["wake"] = json!(true);
        v["wake_age_us"] = json!(u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    v
}

fn demand_line(target: &Target, wake: Option<Instant>) -> Bytes {
    line(&demand_value(target, wake))
}

/// A `tick` line (so a replica without routes still shows it is alive: empty chunks are never
/// sent) and one line per routed target (a target shared by several routes appears once).
fn snapshot(state: &ProxyState) -> Bytes {
    let snap = state.snapshot();
    let mut seen = std::collections::HashSet::new();
    let mut out = line(&json!({"type": "tick"})).to_vec();
    for rs in snap.routes.values() {
        if seen.insert(rs.target.name.as_str()) {
            out.extend_from_slice(&demand_line(&rs.target, None));
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_lines_are_one_json_object_each() {
        let t = Target::new("ns/web");
        t.demand.request_started();
        t.demand.held_inc();
        let l = demand_line(&t, Some(Instant::now()));
        assert_eq!(l.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&l).expect("json");
        assert_eq!(v["target"], "ns/web");
        assert_eq!(v["held"], 1);
        assert_eq!(v["requests_total"], 1);
        assert_eq!(v["wake"], true);
        assert!(v["wake_age_us"].as_u64().is_some());
        assert!(v["idle_ms"].as_u64().is_some());
    }
}
