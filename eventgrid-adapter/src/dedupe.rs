//! The dedupe window: which `(subscription, key)` pairs were accepted recently, and which are
//! being stored right now.
//!
//! Senders retry (Event Grid until it sees a 2xx), so the same event arrives more than once. A
//! key seen within the subscription's window is acknowledged and dropped. A key being stored by
//! another request is *reserved*: that request answers 503 (retry) rather than acknowledge an
//! event not yet on disk. A reservation is committed once the events are durable, released if
//! they could not be stored. At most [`MAX_DEDUPE_KEYS`] keys are remembered, oldest forgotten
//! first, whatever the window.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::config::SubscriptionConfig;
use crate::queue::SubId;
use crate::store::Event;

/// Most dedupe keys remembered (oldest forgotten first), whatever the window.
pub const MAX_DEDUPE_KEYS: usize = 1_000_000;

/// A remembered key: `(subscription, key, accepted at in Unix ms)`, as the log persists it.
pub type SeenKey = (String, String, u64);

/// The keys of one request, reserved while they are being stored. Hand it back with
/// [`Dedupe::commit`] or [`Dedupe::release`].
#[must_use = "a reservation left alone blocks its keys (503) until the process restarts"]
#[derive(Debug)]
pub struct Reservation {
    sub: SubId,
    keys: Vec<String>,
    at: u64,
}

/// Some key of the request is being stored by another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight;

#[derive(Default)]
struct Keys {
    /// Per subscription (by [`SubId`]).
    seen: Vec<HashSet<String>>,
    /// Per subscription: reserved, not yet committed.
    in_flight: Vec<HashSet<String>>,
    /// Every seen key, oldest first: `(accepted at, subscription, key)`.
    order: VecDeque<(u64, SubId, String)>,
}

/// The window of every subscription.
pub struct Dedupe {
    names: Vec<String>,
    /// Window in ms, by [`SubId`].
    windows: Vec<u64>,
    keys: Mutex<Keys>,
}

impl Dedupe {
    /// The window of `subscriptions` (indexed like [`SubId`]), seeded with `recovered` keys of
    /// theirs still inside it at `now`; the keys of other subscriptions are dropped.
    pub fn new(subscriptions: &[SubscriptionConfig], recovered: Vec<SeenKey>, now: u64) -> Self {
        let n = subscriptions.len();
        let d = Dedupe {
            names: subscriptions.iter().map(|c| c.name.clone()).collect(),
            windows: subscriptions
                .iter()
                .map(|c| c.dedupe_window_secs.saturating_mul(1000))
                .collect(),
            keys: Mutex::new(Keys {
                seen: vec![HashSet::new(); n],
                in_flight: vec![HashSet::new(); n],
                order: VecDeque::new(),
            }),
        };
        {
            let mut k = d.lock();
            for (sub, key, at) in recovered {
                let Some(i) = d.names.iter().position(|s| *s == sub) else {
                    continue;
                };
                if at.saturating_add(d.windows[i]) > now && k.seen[i].insert(key.clone()) {
                    k.order.push_back((at, SubId::new(i), key));
                }
            }
        }
        d
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets keys older than their window, and the oldest beyond [`MAX_DEDUPE_KEYS`].
    fn expire(&self, k: &mut Keys, now: u64) {
        while let Some((at, sub, _)) = k.order.front() {
            let window = self.windows.get(sub.index()).copied().unwrap_or(0);
            let expired = at.saturating_add(window) <= now || k.order.len() > MAX_DEDUPE_KEYS;
            if !expired {
                break;
            }
            if let Some((_, sub, key)) = k.order.pop_front()
                && let Some(seen) = k.seen.get_mut(sub.index())
            {
                seen.remove(&key);
            }
        }
    }

    /// Drops from `events` the ones seen within `sub`'s window (or earlier in `events`) and
    /// reserves the keys of the rest, accepted `now`. Returns how many were dropped as
    /// duplicates, and the reservation — or [`InFlight`] (nothing reserved) if another request
    /// is storing one of them.
    pub fn reserve(
        &self,
        sub: SubId,
        events: &mut Vec<Event>,
        now: u64,
    ) -> (usize, Result<Reservation, InFlight>) {
        let i = sub.index();
        let mut k = self.lock();
        self.expire(&mut k, now);
        let (mut duplicates, mut busy) = (0, false);
        let keep: Vec<bool> = {
            let mut mine = HashSet::new();
            events
                .iter()
                .map(|e| {
                    let key = e.key.as_str();
                    if k.seen[i].contains(key) || mine.contains(key) {
                        duplicates += 1;
                        false
                    } else if k.in_flight[i].contains(key) {
                        busy = true;
                        false
                    } else {
                        mine.insert(key)
                    }
                })
                .collect()
        };
        if busy {
            return (duplicates, Err(InFlight));
        }
        let mut keep = keep.into_iter();
        events.retain(|_| keep.next().unwrap_or(false));
        let keys: Vec<String> = events.iter().map(|e| e.key.clone()).collect();
        k.in_flight[i].extend(keys.iter().cloned());
        (duplicates, Ok(Reservation { sub, keys, at: now }))
    }

    /// The reserved events are durable: their keys are seen from now on.
    pub fn commit(&self, r: Reservation) {
        let i = r.sub.index();
        let mut k = self.lock();
        for key in r.keys {
            k.in_flight[i].remove(&key);
            k.seen[i].insert(key.clone());
            k.order.push_back((r.at, r.sub, key));
        }
    }

    /// The reserved events were not stored: a retry of them is not a duplicate.
    pub fn release(&self, r: Reservation) {
        let mut k = self.lock();
        for key in &r.keys {
            k.in_flight[r.sub.index()].remove(key);
        }
    }

    /// Every key in the window, oldest first (what a compacted log carries over).
    pub fn carry(&self) -> Vec<SeenKey> {
        self.lock()
            .order
            .iter()
            .map(|(at, sub, key)| {
                let name = self.names.get(sub.index()).cloned().unwrap_or_default();
                (name, key.clone(), *at)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Kind;

    fn config(windows: &[(&str, u64)]) -> Vec<SubscriptionConfig> {
        let subs: String = windows
            .iter()
            .map(|(name, secs)| {
                format!(
                    "  - {{name: {name}, path: /{name}, target: {{url: \"http://x\"}}, \
                     dedupe_window_secs: {secs}}}\n"
                )
            })
            .collect();
        crate::config::parse(&format!("subscriptions:\n{subs}"), "test")
            .expect("config")
            .subscriptions
    }

    fn events(keys: &[&str]) -> Vec<Event> {
        keys.iter()
            .map(|k| Event {
                seq: 0,
                subscription: "a".into(),
                key: k.to_string(),
                received_ms: 0,
                kind: Kind::EventGrid,
                json: "{}".into(),
                headers: vec![],
            })
            .collect()
    }

    fn keys(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn a_committed_key_is_a_duplicate_within_its_window_only() {
        let d = Dedupe::new(&config(&[("a", 10), ("b", 10)]), vec![], 0);
        let (a, b) = (SubId::new(0), SubId::new(1));
        let mut e = events(&["k1", "k2", "k1"]);
        let (dups, r) = d.reserve(a, &mut e, 1_000);
        assert_eq!(
            (dups, keys(&e)),
            (1, vec!["k1", "k2"]),
            "in-request duplicate"
        );
        d.commit(r.expect("reserved"));
        let mut e = events(&["k1", "k3"]);
        let (dups, r) = d.reserve(a, &mut e, 5_000);
        assert_eq!((dups, keys(&e)), (1, vec!["k3"]));
        d.release(r.expect("reserved"));
        // Another subscription has its own keys.
        let mut e = events(&["k1"]);
        assert_eq!(d.reserve(b, &mut e, 5_000).0, 0);
        // Past the window (10 s after 1 000 ms), k1 is new again.
        let mut e = events(&["k1"]);
        let (dups, r) = d.reserve(a, &mut e, 11_000);
        assert_eq!((dups, keys(&e)), (0, vec!["k1"]));
        assert!(r.is_ok());
    }

    #[test]
    fn an_in_flight_key_refuses_the_whole_request_until_released() {
        let d = Dedupe::new(&config(&[("a", 10)]), vec![], 0);
        let a = SubId::new(0);
        let mut first = events(&["k1"]);
        let held = d.reserve(a, &mut first, 0).1.expect("reserved");
        let mut second = events(&["k0", "k1"]);
        assert_eq!(d.reserve(a, &mut second, 0).1.err(), Some(InFlight));
        // Nothing of the refused request was reserved: k0 is free.
        let mut third = events(&["k0"]);
        d.release(d.reserve(a, &mut third, 0).1.expect("k0 free"));
        d.release(held);
        let mut retry = events(&["k1"]);
        let (dups, r) = d.reserve(a, &mut retry, 0);
        assert_eq!((dups, keys(&retry)), (0, vec!["k1"]), "released, not seen");
        d.commit(r.expect("reserved"));
        assert_eq!(d.carry(), vec![("a".to_string(), "k1".to_string(), 0)]);
    }

    #[test]
    fn recovered_keys_outside_the_window_or_of_unknown_subscriptions_are_dropped() {
        let recovered = vec![
            ("a".to_string(), "old".to_string(), 0),
            ("a".to_string(), "new".to_string(), 50_000),
            ("gone".to_string(), "x".to_string(), 50_000),
        ];
        let d = Dedupe::new(&config(&[("a", 10)]), recovered, 55_000);
        assert_eq!(
            d.carry(),
            vec![("a".to_string(), "new".to_string(), 50_000)]
        );
        let mut e = events(&["new", "old"]);
        let (dups, r) = d.reserve(SubId::new(0), &mut e, 55_000);
        assert_eq!((dups, keys(&e)), (1, vec!["old"]));
        d.release(r.expect("reserved"));
    }
}
