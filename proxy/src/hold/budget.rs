//! Caps on held requests, per route and for the whole proxy, by count and by bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::reason::Reason;

/// Limits for one scope (a route, or the whole proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub max_requests: u64,
    pub max_bytes: u64,
}

/// Live usage of one scope.
#[derive(Debug, Default)]
pub struct Counter {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Counter {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Reserves one request of `bytes` if it fits under `caps`.
    fn reserve(&self, caps: Caps, bytes: u64) -> Result<(), Overflow> {
        self.requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < caps.max_requests).then_some(n + 1)
            })
            .map_err(|_| Overflow::Requests)?;
        let fits = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(bytes)
                    .filter(|&total| total <= caps.max_bytes)
            });
        if fits.is_err() {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(Overflow::Bytes);
        }
        Ok(())
    }

    fn release(&self, bytes: u64) {
        self.requests.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Requests,
    Bytes,
}

/// The proxy-wide budget; per-route counters live with each route.
#[derive(Debug)]
pub struct Budget {
    caps: Caps,
    global: Arc<Counter>,
}

/// Proof that a held request fits the caps; returns its share when dropped.
#[derive(Debug)]
pub struct HoldPermit {
    route: Arc<Counter>,
    global: Arc<Counter>,
    bytes: u64,
}

impl Drop for HoldPermit {
    fn drop(&mut self) {
        self.route.release(self.bytes);
        self.global.release(self.bytes);
    }
}

impl Budget {
    pub fn new(caps: Caps) -> Self {
        Budget {
            caps,
            global: Arc::new(Counter::default()),
        }
    }

    pub fn global(&self) -> &Counter {
        &self.global
    }

    /// Admits one held request of `bytes` into `route` (capped by `route_caps`) and the global
    /// scope, or names the cap it would break. Nothing is reserved on failure.
    pub fn try_admit(
        &self,
        route: &Arc<Counter>,
        route_caps: Caps,
        bytes: u64,
    ) -> Result<HoldPermit, Reason> {
        route.reserve(route_caps, bytes).map_err(|o| match o {
            Overflow::Requests => Reason::RouteQueueFull,
            Overflow::Bytes => Reason::RouteBytesFull,
        })?;
        if let Err(o) = self.global.reserve(self.caps, bytes) {
            route.release(bytes);
            return Err(match o {
                Overflow::Requests => Reason::GlobalQueueFull,
                Overflow::Bytes => Reason::GlobalBytesFull,
            });
        }
        Ok(HoldPermit {
            route: route.clone(),
            global: self.global.clone(),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: Caps = Caps {
        max_requests: 2,
        max_bytes: 100,
    };

    #[test]
    fn admits_until_route_count_cap() {
        let b = Budget::new(Caps {
            max_requests: 10,
            max_bytes: 1000,
        });
        let r = Arc::new(Counter::default());
        let p1 = b.try_admit(&r, ROUTE, 10);
        let p2 = b.try_admit(&r, ROUTE, 10);
        assert!(p1.is_ok() && p2.is_ok());
        assert_eq!(
            b.try_admit(&r, ROUTE, 10).err(),
            Some(Reason::RouteQueueFull)
        );
        drop(p1);
        assert!(b.try_admit(&r, ROUTE, 10).is_ok());
    }

    #[test]
    fn byte_caps_reject_without_leaking_a_slot() {
        let b = Budget::new(Caps {
            max_requests: 10,
            max_bytes: 1000,
        });
        let r = Arc::new(Counter::default());
        assert_eq!(
            b.try_admit(&r, ROUTE, 101).err(),
            Some(Reason::RouteBytesFull)
        );
        assert_eq!((r.requests(), r.bytes()), (0, 0));
        let _p = b.try_admit(&r, ROUTE, 100).expect("fits exactly");
        assert_eq!(
            b.try_admit(&r, ROUTE, 1).err(),
            Some(Reason::RouteBytesFull)
        );
    }

    #[test]
    fn global_caps_roll_back_the_route_reservation() {
        let b = Budget::new(Caps {
            max_requests: 1,
            max_bytes: 50,
        });
        let (r1, r2) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
        let _p = b.try_admit(&r1, ROUTE, 10).expect("first");
        assert_eq!(
            b.try_admit(&r2, ROUTE, 10).err(),
            Some(Reason::GlobalQueueFull)
        );
        assert_eq!(r2.requests(), 0);
        let b = Budget::new(Caps {
            max_requests: 10,
            max_bytes: 50,
        });
        let _p = b.try_admit(&r1, ROUTE, 40).expect("first");
        assert_eq!(
            b.try_admit(&r2, ROUTE, 20).err(),
            Some(Reason::GlobalBytesFull)
        );
        assert_eq!((r2.requests(), r2.bytes()), (0, 0));
    }

    #[test]
    fn permits_release_both_scopes_on_drop() {
        let b = Budget::new(Caps {
            max_requests: 10,
            max_bytes: 1000,
        });
        let r = Arc::new(Counter::default());
        let p = b.try_admit(&r, ROUTE, 30).expect("fits");
        assert_eq!((b.global().requests(), b.global().bytes()), (1, 30));
        drop(p);
        assert_eq!(
            (
                b.global().requests(),
                b.global().bytes(),
                r.requests(),
                r.bytes()
            ),
            (0, 0, 0, 0)
        );
    }
}
