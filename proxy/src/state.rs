//! The proxy's state, owned in one place: the routing snapshot (swapped whole), the targets
//! (kept across snapshots so held requests and counters survive a table rebuild), the global
//! hold budget, the metrics and the drain flag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntGauge};
use rouse_core::{Conflict, Endpoint, Route, RouteTable, Target};

use crate::access_log::AccessLog;
use crate::hold::{Budget, Caps, Counter, WakeClaim};
use crate::telemetry::Metrics;

/// Metric handles of one route, resolved once per snapshot rather than per request.
#[derive(Clone)]
pub struct RouteMetrics {
    pub in_flight: IntGauge,
    pub held: IntGauge,
    pub held_bytes: IntGauge,
    pub held_admitted: IntCounter,
    pub held_released: IntCounter,
    pub cold_starts: IntCounter,
}

/// One route with everything a request on it needs.
pub struct RouteState {
    pub route: Arc<Route>,
    pub target: Arc<Target>,
    /// Held-request usage of this route (survives rebuilds).
    pub held: Arc<Counter>,
    pub metrics: RouteMetrics,
    /// Set while a placeholder's wake stands in for a held request on `target` (shared by every
    /// route of the target, survives rebuilds): see [`crate::hold::claim`].
    pub wake_claim: Arc<WakeClaim>,
    /// The target of the route's failover, if it has one (`route.limits.failover`).
    pub failover: Option<Arc<Target>>,
}

impl RouteState {
    pub fn caps(&self) -> Caps {
        Caps {
            max_requests: self.route.limits.max_held_requests as u64,
            max_bytes: self.route.limits.max_held_bytes,
        }
    }
}

/// An immutable routing snapshot: the table plus per-route state by name.
pub struct Snapshot {
    pub table: RouteTable,
    pub routes: HashMap<String, Arc<RouteState>>,
}

/// Shared proxy state. Cheap to read on every request: one atomic load for the snapshot.
pub struct ProxyState {
    snapshot: ArcSwap<Snapshot>,
    targets: Mutex<HashMap<String, Arc<Target>>>,
    held_counters: Mutex<HashMap<String, Arc<Counter>>>,
    /// Per target: a placeholder's wake is standing in for a held request (see `RouteState`).
    wake_claims: Mutex<HashMap<String, Arc<WakeClaim>>>,
    pub budget: Budget,
    pub metrics: Metrics,
    draining: AtomicBool,
    /// False until the platform has delivered its first full routing table (Kubernetes: the
    /// first list of HTTPScaledObjects); readiness waits for it so no replica answers 404 for
    /// routes it has not read yet.
    synced: AtomicBool,
    /// Requests between their first byte and their end, whatever phase they are in.
    active: Arc<AtomicU64>,
    /// Set once at start-up when the access log is on.
    access_log: std::sync::OnceLock<AccessLog>,
    /// Replicas the platform is asked for, by target, where this process knows them (the local
    /// platform): for `/status`.
    desired: std::sync::OnceLock<DesiredReplicas>,
}

/// Looks up the replicas a target is asked for (see [`ProxyState::set_desired_replicas`]).
pub type DesiredReplicas = Box<dyn Fn(&str) -> Option<u32> + Send + Sync>;

/// Counts one request as active while it lives (see [`ProxyState::active_request`]).
pub struct ActiveRequest(Arc<AtomicU64>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ProxyState {
    /// Marks a request active until the returned guard drops; a drain waits for all of them.
    pub fn active_request(&self) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(self.active.clone())
    }

    pub fn new(global: Caps, metrics: Metrics) -> Arc<Self> {
        Arc::new(ProxyState {
            snapshot: ArcSwap::from_pointee(Snapshot {
                table: RouteTable::default(),
                routes: HashMap::new(),
            }),
            targets: Mutex::new(HashMap::new()),
            held_counters: Mutex::new(HashMap::new()),
            wake_claims: Mutex::new(HashMap::new()),
            budget: Budget::new(global),
            metrics,
            draining: AtomicBool::new(false),
            synced: AtomicBool::new(true),
            active: Arc::new(AtomicU64::new(0)),
            access_log: std::sync::OnceLock::new(),
            desired: std::sync::OnceLock::new(),
        })
    }

    /// Where `/status` reads the replicas each target is asked for (once, at start-up).
    pub fn set_desired_replicas(&self, lookup: DesiredReplicas) {
        let _ = self.desired.set(lookup);
    }

    /// The replicas `target` is asked for, if this process knows.
    pub fn desired_replicas(&self, target: &str) -> Option<u32> {
        self.desired.get().and_then(|f| f(target))
    }

    /// Turns the access log on (once, at start-up).
    pub fn set_access_log(&self, log: AccessLog) {
        let _ = self.access_log.set(log);
    }

    /// The access log, when it is on.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.get()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The target named `name`, created on first use. Platforms publish endpoints into it.
    pub fn target(&self, name: &str) -> Arc<Target> {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets
            .entry(name.to_string())
            .or_insert_with(|| Target::new(name))
            .clone()
    }

    pub fn targets(&self) -> Vec<Arc<Target>> {
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets.values().cloned().collect()
    }

    /// Replaces the routing table. Routes are given oldest first; conflicting later routes are
    /// dropped and returned so the caller can report them.
    ///
    /// A failover given as a fixed address (the local file's `failover.url`) is published here
    /// as its target's only endpoint: no platform follows it.
    pub fn set_routes(&self, routes: Vec<Route>) -> Vec<Conflict> {
        let (table, conflicts) = RouteTable::build(routes);
        let m = &self.metrics;
        let mut routes = HashMap::with_capacity(table.len());
        for route in table.routes() {
            let name = route.name.as_str();
            let held = {
                let mut counters = self.held_counters.lock().unwrap_or_else(|p| p.into_inner());
                counters.entry(name.to_string()).or_default().clone()
            };
            let wake_claim = {
                let mut claims = self.wake_claims.lock().unwrap_or_else(|p| p.into_inner());
                claims.entry(route.target.clone()).or_default().clone()
            };
            let failover = route.limits.failover.as_ref().map(|f| {
                let target = self.target(&f.target);
                if let Some(addr) = f.addr {
                    let current = target.endpoints();
                    if !matches!(current.endpoints.as_slice(), [e] if e.addr == addr) {
                        target.set_endpoints(vec![Endpoint::new(f.target.clone(), addr)]);
                    }
                }
                target
            });
            let state = RouteState {
                route: route.clone(),
                target: self.target(&route.target),
                held,
                wake_claim,
                failover,
                metrics: RouteMetrics {
                    in_flight: m.in_flight.with_label_values(&[name]),
                    held: m.held.with_label_values(&[name]),
                    held_bytes: m.held_bytes.with_label_values(&[name]),
                    held_admitted: m.held_admitted.with_label_values(&[name]),
                    held_released: m.held_released.with_label_values(&[name]),
                    cold_starts: m.cold_starts.with_label_values(&[name]),
                },
            };
            // Exported at 0 from the start, so the first hold timeout is an increase (an alert
            // on `increase(...)` would miss a series that appears already at 1).
            m.rejections
                .with_label_values(&[name, crate::reason::Reason::ColdStartTimeout.as_str()])
                .inc_by(0);
            routes.insert(name.to_string(), Arc::new(state));
        }
        self.snapshot.store(Arc::new(Snapshot { table, routes }));
        conflicts
    }

    /// Requests in progress in any phase (routing, held, forwarded, being answered by the proxy
    /// itself): what a drain waits for. Held and in-flight counts per target are a subset.
    pub fn pending(&self) -> u64 {
        self.active.load(Ordering::Acquire)
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// See the `synced` field.
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Fails readiness; the first step of a graceful shutdown.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.metrics.draining.set(1);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rouse_core::route::{Failover, failover_target};
    use rouse_core::{HostPattern, RouteLimits, UpstreamProtocol};

    use super::*;

    fn route(failover: Option<SocketAddr>) -> Route {
        Route {
            name: "app".into(),
            target: "app".into(),
            hosts: vec![HostPattern::Any],
            path_prefixes: vec![],
            headers: vec![],
            rewrite_prefix: None,
            upstream_protocol: UpstreamProtocol::Http1,
            limits: RouteLimits {
                failover: failover.map(|addr| Failover {
                    target: failover_target("app"),
                    addr: Some(addr),
                }),
                ..RouteLimits::default()
            },
        }
    }

    #[test]
    fn a_fixed_failover_address_is_published_once_and_kept_across_rebuilds() {
        let s = ProxyState::new(
            Caps {
                max_requests: 10,
                max_bytes: 1000,
            },
            Metrics::new(prometheus::Registry::new()),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], 9000));
        s.set_routes(vec![route(Some(addr))]);
        let snap = s.snapshot();
        let failover = snap.routes["app"]
            .failover
            .clone()
            .expect("failover target");
        assert_eq!(failover.name, "app#failover");
        let first = failover.endpoints();
        assert_eq!(first.endpoints.len(), 1);
        assert_eq!(first.endpoints[0].addr, addr);
        // Rebuilt with the same address: the same endpoint (its in-flight count) stays.
        s.set_routes(vec![route(Some(addr))]);
        assert!(Arc::ptr_eq(
            &first.endpoints[0],
            &failover.endpoints().endpoints[0]
        ));
        s.set_routes(vec![route(None)]);
        assert!(s.snapshot().routes["app"].failover.is_none());
    }
}

/// Routes and a state for unit tests of what reads the routing snapshot (the front's parking
/// decision, the routing decision).
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use rouse_core::{HostPattern, PathPrefix, Route};

    use super::ProxyState;
    use crate::hold::Caps;
    use crate::telemetry::Metrics;

    /// A route `name` to target `name` for `host` under `prefix`, with default limits.
    pub fn route(name: &str, host: &str, prefix: &str) -> Route {
        Route {
            name: name.to_string(),
            target: name.to_string(),
            hosts: vec![HostPattern::parse(host).expect("host")],
            path_prefixes: vec![PathPrefix::parse(prefix).expect("prefix")],
            headers: vec![],
            rewrite_prefix: None,
            upstream_protocol: Default::default(),
            limits: Default::default(),
        }
    }

    /// A proxy state serving `routes` (which must not conflict).
    pub fn state(routes: Vec<Route>) -> Arc<ProxyState> {
        let caps = Caps {
            max_requests: 1000,
            max_bytes: 1 << 20,
        };
        let state = ProxyState::new(caps, Metrics::new(prometheus::Registry::new()));
        assert!(state.set_routes(routes).is_empty());
        state
    }
}
