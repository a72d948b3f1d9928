//! The demand feed's wire contract: what a proxy replica streams to the controller
//! (`GET /demand/stream` on its admin port, one JSON object per line) and the controller reads.
//! Both ends use these types, so a field renamed on one side fails to compile on the other.
//!
//! - first line: [`FeedLine::Hello`] with the replica's name;
//! - then at once and every interval: [`FeedLine::Tick`] (the replica is alive even without
//!   routes) and one [`FeedLine::Demand`] per target;
//! - and the moment a request is held for a cold target: a [`FeedLine::Demand`] with
//!   `wake: true`, on which the controller scales without waiting for the next interval.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::target::DemandSnapshot;

/// One line of the feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedLine {
    /// The stream's first line.
    Hello { proxy: String },
    /// Sent with every snapshot.
    Tick,
    /// One target's demand on this replica.
    Demand(DemandReport),
    /// One event subscription served by this replica (sent with every snapshot).
    Events(EventsReport),
    /// A line type this build does not know (a newer proxy): skipped, not an error.
    #[serde(other)]
    Unknown,
}

/// One target's demand on one proxy replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemandReport {
    /// The target key (`namespace/name` on Kubernetes).
    pub target: String,
    /// Pending work that needs the target: held requests plus queued events
    /// ([`DemandSnapshot::pending`]).
    pub held: u64,
    /// The part of `held` that is queued events. With a shared queue (JetStream) every replica
    /// reports the same events, so the reader counts this part once (the largest report), not
    /// once per replica.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub queued: u64,
    pub in_flight: u64,
    /// Requests admitted since the replica started (monotonic; a smaller value means the
    /// replica restarted).
    pub requests_total: u64,
    /// Milliseconds since a request last started or ended; `None` = never.
    #[serde(default)]
    pub idle_ms: Option<u64>,
    /// A request was just held for this target: scale now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wake: bool,
    /// Microseconds between the proxy holding the request and writing this line: the reader
    /// takes the wake instant on its own clock as `received - age` (no cross-node clocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_age_us: Option<u64>,
}

impl DemandReport {
    /// The report of `snapshot` taken at `now`; `wake` is when the first unseen held request
    /// signalled, if this line announces a wake.
    pub fn new(
        target: &str,
        snapshot: &DemandSnapshot,
        now: Instant,
        wake: Option<Instant>,
    ) -> Self {
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        DemandReport {
            target: target.to_string(),
            held: snapshot.pending(),
            queued: snapshot.queued,
            in_flight: snapshot.in_flight,
            requests_total: snapshot.requests_total,
            idle_ms: snapshot
                .last_activity
                .map(|at| millis(now.saturating_duration_since(at))),
            wake: wake.is_some(),
            wake_age_us: wake.map(|at| {
                u64::try_from(now.saturating_duration_since(at).as_micros()).unwrap_or(u64::MAX)
            }),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One event subscription on one proxy replica. Counts come from the shared queue, so every
/// replica reports about the same numbers: the reader takes the largest, not the sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsReport {
    /// The object key (`namespace/name`).
    pub subscription: String,
    /// Events accepted and not yet delivered or dead-lettered.
    pub pending: u64,
    /// Events in the dead-letter destination for this subscription; `None` = unknown (not
    /// readable right now).
    #[serde(default)]
    pub dead_lettered: Option<u64>,
    /// When this replica last answered a validation handshake (Unix ms); `None` = never.
    #[serde(default)]
    pub handshake_ms: Option<u64>,
    /// Why this replica has no keys for the subscription (its key Secret is missing, empty or
    /// not readable); `None` = keys loaded, or none needed. The proxies are the only part of
    /// Rouse that reads Secrets, so the controller's `SecretFound` condition comes from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_problem: Option<String>,
    /// Why this replica does not serve the subscription (e.g. its spec could not be turned into
    /// a gateway configuration); `None` = served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl FeedLine {
    /// The line as NDJSON: one JSON object and a newline.
    pub fn to_ndjson(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_line_round_trips_through_ndjson() {
        let now = Instant::now();
        let snap = DemandSnapshot {
            held: 2,
            queued: 3,
            in_flight: 4,
            requests_total: 9,
            last_activity: Some(now - Duration::from_millis(250)),
        };
        let wake = DemandReport::new(
            "ns/web",
            &snap,
            now,
            Some(now - Duration::from_micros(1500)),
        );
        assert_eq!(wake.held, 5, "queued events count as held");
        assert_eq!(wake.queued, 3, "and are named, so shared queues count once");
        assert_eq!(wake.idle_ms, Some(250));
        assert_eq!(wake.wake_age_us, Some(1500));
        let lines = [
            FeedLine::Hello {
                proxy: "rouse-proxy-0".into(),
            },
            FeedLine::Tick,
            FeedLine::Demand(wake),
            FeedLine::Demand(DemandReport::new(
                "ns/idle",
                &DemandSnapshot::default(),
                now,
                None,
            )),
            FeedLine::Events(EventsReport {
                subscription: "ns/orders".into(),
                pending: 7,
                dead_lettered: Some(1),
                handshake_ms: Some(1_700_000_000_000),
                secret_problem: Some("secret \"ns/keys\" not found".into()),
                problem: None,
            }),
        ];
        for line in lines {
            let bytes = line.to_ndjson();
            assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
            assert_eq!(bytes.last(), Some(&b'\n'));
            let back: FeedLine = serde_json::from_slice(&bytes).expect("parses");
            assert_eq!(back, line);
        }
    }

    #[test]
    fn the_wire_format_is_stable() {
        let tick = String::from_utf8(FeedLine::Tick.to_ndjson()).expect("utf-8");
        assert_eq!(tick, "{\"type\":\"tick\"}\n");
        let idle = DemandReport::new("t", &DemandSnapshot::default(), Instant::now(), None);
        let v: serde_json::Value =
            serde_json::from_slice(&FeedLine::Demand(idle).to_ndjson()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"type": "demand", "target": "t", "held": 0, "in_flight": 0,
                "requests_total": 0, "idle_ms": null}),
            "no wake fields unless waking"
        );
    }

    #[test]
    fn unknown_line_types_and_fields_are_tolerated() {
        let l: FeedLine = serde_json::from_str(r#"{"type":"gossip","x":1}"#).expect("parses");
        assert_eq!(l, FeedLine::Unknown);
        let l: FeedLine =
            serde_json::from_str(r#"{"type":"demand","target":"t","held":1,"in_flight":0,"requests_total":1,"new_field":true}"#)
                .expect("parses");
        assert!(matches!(l, FeedLine::Demand(d) if d.held == 1 && !d.wake));
    }
}
