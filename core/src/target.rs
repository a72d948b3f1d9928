//! Per-target state shared by the data plane (reads endpoints, records demand) and the platform
//! (publishes ready endpoints, reads demand to scale). One [`Target`] per workload, owned by the
//! proxy's target registry; the platform only holds `Arc`s to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::route::UpstreamProtocol;

/// One ready replica of a target, with its live in-flight count (for least-pending balancing and
/// the per-endpoint concurrency cap).
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Human-readable replica id (`hello-2`, a pod name); not used as a metric label.
    pub id: String,
    /// What the platform says this endpoint speaks (on Kubernetes, its Service port's
    /// `appProtocol`); `None` leaves it to the route's `upstream_protocol`.
    pub protocol: Option<UpstreamProtocol>,
    in_flight: AtomicU32,
}

impl Endpoint {
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Arc<Self> {
        Endpoint::speaking(id, addr, None)
    }

    /// An endpoint whose protocol the platform knows.
    pub fn speaking(
        id: impl Into<String>,
        addr: SocketAddr,
        protocol: Option<UpstreamProtocol>,
    ) -> Arc<Self> {
        Arc::new(Endpoint {
            addr,
            id: id.into(),
            protocol,
            in_flight: AtomicU32::new(0),
        })
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Takes a slot if the endpoint is under `cap` (always, when `cap` is `None`).
    pub fn try_acquire(&self, cap: Option<u32>) -> bool {
        match cap {
            None => {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                true
            }
            Some(cap) => self
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < cap).then_some(n + 1)
                })
                .is_ok(),
        }
    }

    fn release(&self) {
        // Saturating: a double release must not wrap to u32::MAX and lock the endpoint out.
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// The ready endpoints of a target at one moment; replaced whole on every change.
#[derive(Debug)]
pub struct EndpointSet {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// When this set was published: "endpoint ready → held request forwarded" is measured from
    /// here.
    pub published: Instant,
}

impl Default for EndpointSet {
    fn default() -> Self {
        EndpointSet {
            endpoints: Vec::new(),
            published: Instant::now(),
        }
    }
}

impl EndpointSet {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

/// Pending work for one target as seen by this proxy: the scaling input.
///
/// Activation uses `held` (a request is waiting) and idleness uses `last_activity`, never a sampled
/// rate, so a single request after a long idle always wakes the target and sparse short requests
/// keep it up (the two KEDA bugs this design avoids).
#[derive(Debug)]
pub struct Demand {
    epoch: Instant,
    held: AtomicU64,
    /// Events accepted by the event gateway and not yet delivered: pending work like held
    /// requests, so they wake and scale the target too.
    queued: AtomicU64,
    in_flight: AtomicU64,
    requests_total: AtomicU64,
    /// Nanoseconds since `epoch` of the last start or finish; 0 = never.
    last_activity: AtomicU64,
    /// When the oldest wake not yet seen by the controller was signalled (nanos since `epoch`,
    /// 0 = none): the controller measures wake → scale from the held request, not from when its
    /// task got to run.
    wake_at: AtomicU64,
    /// When a wake was last signalled (nanos since `epoch`, 0 = never): for people (`rouse
    /// status`), not for decisions.
    last_wake: AtomicU64,
    wake: Notify,
}

/// A copy of [`Demand`] at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DemandSnapshot {
    pub held: u64,
    pub queued: u64,
    pub in_flight: u64,
    pub requests_total: u64,
    pub last_activity: Option<Instant>,
}

impl DemandSnapshot {
    /// Work waiting for the target: held requests plus queued events (the event gateway's
    /// accepted, undelivered events wake and scale a target exactly like held requests).
    pub fn pending(&self) -> u64 {
        self.held + self.queued
    }
}

impl Default for Demand {
    fn default() -> Self {
        Demand {
            epoch: Instant::now(),
            held: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
            wake_at: AtomicU64::new(0),
            last_wake: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }
}

impl Demand {
    /// Nanoseconds since `epoch`, never 0 (0 means "unset" in the atomics).
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn touch(&self) {
        self.last_activity
            .store(self.now_nanos(), Ordering::Relaxed);
    }

    /// A request arrived for this target.
    pub fn request_started(&self) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// A request (or a long-lived stream) ended, whatever its outcome.
    pub fn request_finished(&self) {
        self.touch();
    }

    pub fn held_inc(&self) {
        self.held.fetch_add(1, Ordering::AcqRel);
    }

    pub fn held_dec(&self) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn in_flight_inc(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub fn in_flight_dec(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Sets the number of queued events (the event gateway owns the count).
    pub fn set_queued(&self, n: u64) {
        self.queued.store(n, Ordering::Release);
    }

    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> DemandSnapshot {
        let last = self.last_activity.load(Ordering::Relaxed);
        DemandSnapshot {
            held: self.held(),
            queued: self.queued(),
            in_flight: self.in_flight(),
            requests_total: self.requests_total.load(Ordering::Relaxed),
            last_activity: (last > 0).then(|| self.epoch + Duration::from_nanos(last)),
        }
    }

    /// Asks the controller to look at this target now (a request is held). Never blocks; repeated
    /// calls before the controller wakes coalesce into one.
    pub fn wake(&self) {
        let now = self.now_nanos();
        let _ = self
            .wake_at
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        self.last_wake.store(now, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// When a wake was last signalled, if ever.
    pub fn last_wake(&self) -> Option<Instant> {
        match self.last_wake.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos)),
        }
    }

    /// Resolves when [`Demand::wake`] was called since the last time this resolved, with the
    /// instant of the earliest of those calls.
    pub async fn woken(&self) -> Instant {
        self.wake.notified().await;
        match self.wake_at.swap(0, Ordering::AcqRel) {
            0 => Instant::now(),
            nanos => self.epoch + Duration::from_nanos(nanos),
        }
    }
}

/// A workload the proxy can forward to: its ready endpoints and its demand.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub demand: Demand,
    endpoints: watch::Sender<Arc<EndpointSet>>,
    /// Signalled when an endpoint slot frees while requests are held for capacity.
    capacity: Notify,
    /// Why the target cannot get endpoints at all (e.g. its Service does not exist): requests
    /// are answered at once with this instead of being held for nothing.
    unavailable: std::sync::Mutex<Option<Arc<str>>>,
}

impl Target {
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(Target {
            name: name.into(),
            demand: Demand::default(),
            endpoints: watch::Sender::new(Arc::new(EndpointSet::default())),
            capacity: Notify::new(),
            unavailable: std::sync::Mutex::new(None),
        })
    }

    /// Platform side: marks the target as unable to get endpoints (`Some(why)`), or able again.
    /// Requests held for it are woken, so they see the verdict at once.
    pub fn set_unavailable(&self, why: Option<String>) {
        let wake = why.is_some();
        {
            let mut slot = self.unavailable.lock().unwrap_or_else(|p| p.into_inner());
            *slot = why.map(Arc::from);
        }
        if wake {
            self.endpoints.send_if_modified(|_| true);
        }
    }

    /// Why the target cannot get endpoints, if it cannot. Read only when no endpoint is ready.
    pub fn unavailable(&self) -> Option<Arc<str>> {
        self.unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The ready endpoints now.
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.endpoints.borrow().clone()
    }

    /// A receiver that sees every change of the ready set (held requests wait on it).
    pub fn watch_endpoints(&self) -> watch::Receiver<Arc<EndpointSet>> {
        self.endpoints.subscribe()
    }

    /// Platform side: replaces the ready set and wakes every held request at once.
    pub fn set_endpoints(&self, endpoints: Vec<Arc<Endpoint>>) {
        self.endpoints.send_replace(Arc::new(EndpointSet {
            endpoints,
            published: Instant::now(),
        }));
    }

    /// Returns an endpoint slot taken with [`Endpoint::try_acquire`], waking one request held for
    /// capacity.
    pub fn release(&self, endpoint: &Endpoint) {
        endpoint.release();
        if self.demand.held() > 0 {
            self.capacity.notify_one();
        }
    }

    /// Wakes one more request held for capacity, if any (see [`Target::release`]): a request that
    /// got a slot calls this so that a second free slot is not left idle behind a coalesced
    /// wake-up.
    pub fn pass_capacity_on(&self) {
        if self.demand.held() > 0 {
            self.capacity.notify_one();
        }
    }

    /// Resolves when a slot may have freed (see [`Target::release`]).
    pub async fn capacity_freed(&self) {
        self.capacity.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn woken_reports_the_earliest_unseen_wake() {
        let d = Demand::default();
        let before_first = Instant::now();
        d.wake();
        let after_first = Instant::now();
        d.wake(); // coalesces: the first instant is kept
        let at = d.woken().await;
        assert!(before_first <= at && at <= after_first);
        // Seen: the next wake carries its own instant.
        let before_next = Instant::now();
        d.wake();
        assert!(d.woken().await >= before_next);
    }
}
