//! Where a request waits for a ready endpoint with capacity.
//!
//! A request takes a slot at once when its target has room and nobody is queued ahead of it.
//! Otherwise it is admitted into the hold budget, signals a wake to the controller, and waits
//! on two notifications: the target's endpoint set changing (a replica became ready) and a slot
//! freeing on an endpoint (per-endpoint cap). The deadline is the only timer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rouse_core::{Endpoint, Target};

use crate::balance;

/// Pause before reconnecting to endpoints that all refused this request, per refusal so far
/// (100, 200, 300 ms for the 1st..3rd retry).
const CONNECT_RETRY_BACKOFF: Duration = Duration::from_millis(100);
use crate::reason::Reason;
use crate::state::{ProxyState, RouteState};

/// A slot on an endpoint, held for the life of one request (or WebSocket). Dropping it returns
/// the slot, wakes one request held for capacity and records the end of the request.
pub struct EndpointSlot {
    pub endpoint: Arc<Endpoint>,
    target: Arc<Target>,
    in_flight: prometheus::IntGauge,
    /// Whether the request counts as the target's demand (not for a static route's request:
    /// a load balancer's probe must not keep an idle app awake).
    counted: bool,
}

impl EndpointSlot {
    fn new(route: &RouteState, endpoint: Arc<Endpoint>) -> Self {
        EndpointSlot::on(&route.target, route, endpoint)
    }

    /// A slot on an endpoint of `target`, which may be the route's failover: the slot is
    /// returned to, and the request's demand counted on, the target that owns the endpoint.
    fn on(target: &Arc<Target>, route: &RouteState, endpoint: Arc<Endpoint>) -> Self {
        target.demand.in_flight_inc();
        route.metrics.in_flight.inc();
        EndpointSlot {
            endpoint,
            target: target.clone(),
            in_flight: route.metrics.in_flight.clone(),
            counted: true,
        }
    }
}

/// A slot on a ready endpoint for a static route's request that is forwarded (its target is
/// up), without counting it as demand; `None` when no endpoint has room right now. Never holds
/// nor wakes: a static route's request must not start the target.
pub fn static_slot(route: &RouteState, exclude: &[SocketAddr]) -> Option<EndpointSlot> {
    let cap = route.route.limits.endpoint_concurrency;
    let endpoint = balance::pick(&route.target.endpoints(), cap, exclude)?;
    route.metrics.in_flight.inc();
    Some(EndpointSlot {
        endpoint,
        target: route.target.clone(),
        in_flight: route.metrics.in_flight.clone(),
        counted: false,
    })
}

/// A slot on one of `route`'s failover endpoints for a request the hold gave up on, or why
/// there is none (the route has no failover, or its target has no ready endpoint: the text
/// names it). Never waits: the failover is an always-on service and the request has waited
/// its hold timeout already. `exclude` lists endpoints that refused this request.
pub fn failover_slot(route: &RouteState, exclude: &[SocketAddr]) -> Result<EndpointSlot, String> {
    let Some(target) = &route.failover else {
        return Err("the route has no failover".to_string());
    };
    match balance::pick(&target.endpoints(), None, exclude) {
        Some(ep) => Ok(EndpointSlot::on(target, route, ep)),
        None => Err(match target.unavailable() {
            Some(why) => format!("failover {}: {why}", target.name),
            None => format!("failover {} has no ready endpoint", target.name),
        }),
    }
}

impl Drop for EndpointSlot {
    fn drop(&mut self) {
        self.target.release(&self.endpoint);
        if self.counted {
            self.target.demand.in_flight_dec();
            self.target.demand.request_finished();
        }
        self.in_flight.dec();
    }
}

/// The outcome of [`acquire`]: a slot, and how long the request waited for it (`None` when it
/// did not wait).
pub struct Acquired {
    pub slot: EndpointSlot,
    pub waited: Option<Duration>,
    /// For a held request: time from the endpoint set it was released by being published to
    /// the release (Rouse's own share of a cold start).
    pub since_ready: Option<Duration>,
}

/// Counts a request as held for exactly as long as it waits, even if the wait is cancelled
/// (client gone, server shutting down).
struct Held<'a> {
    route: &'a RouteState,
    bytes: u64,
}

impl<'a> Held<'a> {
    fn enter(route: &'a RouteState, bytes: u64) -> Self {
        route.target.demand.held_inc();
        route.metrics.held.inc();
        route
            .metrics
            .held_bytes
            .add(i64::try_from(bytes).unwrap_or(i64::MAX));
        route.metrics.held_admitted.inc();
        Held { route, bytes }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.route.target.demand.held_dec();
        self.route.metrics.held.dec();
        self.route
            .metrics
            .held_bytes
            .sub(i64::try_from(self.bytes).unwrap_or(i64::MAX));
        self.route.metrics.held_released.inc();
    }
}

/// Gets an endpoint slot for one request on `route`, holding the request if needed.
///
/// `bytes` is what the request commits the proxy to carry (head + declared body) and counts
/// against the byte caps; `exclude` lists endpoints that refused a connection for this request;
/// `deadline` ends the hold (fixed per request, so connect retries do not extend it).
pub async fn acquire(
    state: &ProxyState,
    route: &RouteState,
    bytes: u64,
    exclude: &[SocketAddr],
    deadline: Instant,
) -> Result<Acquired, Reason> {
    let target = &route.target;
    let cap = route.route.limits.endpoint_concurrency;

    // Fast path. Requests already queued go first, so a newcomer may not overtake them.
    if target.demand.held() == 0
        && let Some(ep) = balance::pick(&target.endpoints(), cap, exclude)
    {
        return Ok(Acquired {
            slot: EndpointSlot::new(route, ep),
            waited: None,
            since_ready: None,
        });
    }

    // Nothing to wait for: the platform knows no endpoint can come (e.g. the Service is gone).
    if target.endpoints().is_empty() && target.unavailable().is_some() {
        return Err(Reason::TargetUnavailable);
    }

    let _permit = match state.budget.try_admit(&route.held, route.caps(), bytes) {
        Ok(p) => p,
        // Only the proxy-wide cap can be full while this target has nobody queued; then a free
        // slot serves the request rather than rejecting it. With requests queued, a newcomer
        // never takes the slot a woken waiter is about to claim.
        Err(reason) => {
            let direct = (target.demand.held() == 0)
                .then(|| balance::pick(&target.endpoints(), cap, exclude))
                .flatten();
            return direct
                .map(|ep| Acquired {
                    slot: EndpointSlot::new(route, ep),
                    waited: None,
                    since_ready: None,
                })
                .ok_or(reason);
        }
    };
    let _held = Held::enter(route, bytes);
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(deadline);
    target.demand.wake();

    let mut endpoints = target.watch_endpoints();
    let mut waited = false;
    // Every endpoint refused this request's connection: they may only just be starting to
    // listen (Ready a moment before the socket is bound, or restarting). Try them again after a
    // short backoff rather than waiting for a different endpoint that may never come.
    let mut exclude = exclude;
    let mut backoff_done = false;
    // Whether the last wake-up was a new endpoint set (vs. a freed slot): only then does
    // "ready → forwarded" mean something.
    let mut by_endpoints = false;
    loop {
        let set = endpoints.borrow_and_update().clone();
        if !exclude.is_empty()
            && !set.is_empty()
            && set.endpoints.iter().all(|e| exclude.contains(&e.addr))
        {
            if !backoff_done {
                backoff_done = true;
                let pause = CONNECT_RETRY_BACKOFF * u32::try_from(exclude.len()).unwrap_or(1);
                let wake = tokio::time::Instant::now() + pause;
                if wake >= deadline {
                    return Err(Reason::ColdStartTimeout);
                }
                // A new endpoint set (the refusing replica replaced) ends the pause early.
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    changed = endpoints.changed() => {
                        if changed.is_err() {
                            return Err(Reason::NoEndpoint);
                        }
                    }
                }
                continue;
            }
            exclude = &[];
        }
        if let Some(ep) = balance::pick(&set, cap, exclude) {
            // Several slots may have freed while only one wake-up was stored: hand one on, so
            // the next held request checks too (at most one extra wake per release).
            if cap.is_some() {
                target.pass_capacity_on();
            }
            // Queued behind others but never actually waiting is not a cold start.
            return Ok(Acquired {
                slot: EndpointSlot::new(route, ep),
                waited: waited.then(|| started.elapsed()),
                since_ready: by_endpoints.then(|| set.published.elapsed()),
            });
        }
        // The platform says no endpoint will come (Service or route gone while held).
        if set.is_empty() && target.unavailable().is_some() {
            return Err(Reason::TargetUnavailable);
        }
        waited = true;
        tokio::select! {
            changed = endpoints.changed() => {
                if changed.is_err() {
                    return Err(Reason::NoEndpoint);
                }
                by_endpoints = true;
            }
            () = target.capacity_freed() => by_endpoints = false,
            () = tokio::time::sleep_until(deadline) => return Err(Reason::ColdStartTimeout),
        }
    }
}
