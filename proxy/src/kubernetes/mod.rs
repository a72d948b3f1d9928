//! The Kubernetes platform of the proxy (`rouse kubernetes`): routes from `HTTPScaledObject`s
//! and `InterceptorRoute`s (rouse.dev, and KEDA's http.keda.sh ones with
//! `--keda-interceptor-routes`), endpoints from each target Service's EndpointSlices (and from
//! each fallback Service's), webhooks from `EventSubscription`s ([`events`]). The proxy never
//! scales anything here: it streams demand and wakes to the controller (see [`crate::demand`]).
//!
//! All route kinds share one key space (`namespace/name`) and one claim order
//! ([`rouse_core::crd::claim_all`]), computed the same way by the controller, so both agree on
//! which object serves a host and path.
//!
//! State stays where it is in local mode ([`ProxyState`]); this module only feeds it. When the
//! API server is unreachable the watches retry with backoff and the last table keeps routing.

pub mod endpoints;
pub mod events;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Client;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use rouse_core::Route;
use rouse_core::crd::{
    HTTPScaledObject, InterceptorRoute, KedaInterceptorRoute, RouteObject, ServicePort, claim_all,
};
use rouse_core::route::{FAILOVER_SUFFIX, failover_target};
use tokio::task::JoinHandle;

pub use rouse_kube::Scope;
use rouse_kube::{WatchEvents, all_ready, kind_unavailable, watch_all};

use crate::demand::DemandFeed;
use crate::state::ProxyState;
use endpoints::{PortRef, ServiceRef};

/// What the proxy watches for routes.
#[derive(Debug, Clone)]
pub struct Sources {
    pub scope: Scope,
    /// Also route KEDA's own `http.keda.sh/v1beta1` InterceptorRoutes, as they are
    /// (`--keda-interceptor-routes`); needs KEDA's CRD installed.
    pub keda_interceptor_routes: bool,
}

/// The endpoint source a [`ServicePort`] names (`None` without a port: the object is invalid
/// and not routed anyway).
fn service_ref(p: ServicePort) -> Option<ServiceRef> {
    let port = match (p.port, p.port_name) {
        (Some(n), _) => PortRef::Number(n),
        (None, Some(name)) => PortRef::Name(name),
        (None, None) => return None,
    };
    Some(ServiceRef {
        namespace: p.namespace,
        name: p.service,
        port,
    })
}

/// The endpoint follower of one target.
struct Follower {
    svc: ServiceRef,
    task: JoinHandle<()>,
}

/// The route objects' stores, one list per kind (KEDA's only when enabled).
struct Stores {
    scaled: Vec<Store<HTTPScaledObject>>,
    routes: Vec<Store<InterceptorRoute>>,
    keda: Vec<Store<KedaInterceptorRoute>>,
    /// Kinds the API server does not serve or lets us list (CRD missing, RBAC missing): routing
    /// goes on with the others instead of waiting for ever.
    unavailable: HashSet<&'static str>,
}

/// The watch names of the kinds (also in logs).
const SCALED: &str = "HTTPScaledObject";
const ROUTES: &str = "InterceptorRoute";
const KEDA_ROUTES: &str = "InterceptorRoute.http.keda.sh";

impl Stores {
    /// Whether every store has seen its first list (or its kind cannot be listed at all):
    /// before that, an empty store means "not read yet", and routing from it would drop
    /// routes.
    fn ready(&self) -> bool {
        let ok = |ready: bool, kind: &str| ready || self.unavailable.contains(kind);
        ok(all_ready(&self.scaled), SCALED)
            && ok(all_ready(&self.routes), ROUTES)
            && ok(all_ready(&self.keda), KEDA_ROUTES)
    }
}

/// One watch event of any kind: `Ok(true)` when it may change the routes.
type Change = Result<bool, (&'static str, watcher::Error)>;

fn changes<K: Send + 'static>(
    kind: &'static str,
    events: WatchEvents<K>,
) -> BoxStream<'static, Change> {
    events
        .map(move |e| match e {
            Err(e) => Err((kind, e)),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Ok(false),
            Ok(_) => Ok(true),
        })
        .boxed()
}

/// Starts the watches of `sources`: their stores, and their events merged.
fn watch(sources: &Sources, client: &Client) -> (Stores, BoxStream<'static, Change>) {
    let (scaled, scaled_events) = watch_all::<HTTPScaledObject>(&sources.scope, client);
    let (routes, route_events) = watch_all::<InterceptorRoute>(&sources.scope, client);
    let mut streams = vec![
        changes(SCALED, scaled_events),
        changes(ROUTES, route_events),
    ];
    let mut keda = Vec::new();
    if sources.keda_interceptor_routes {
        let (stores, events) = watch_all::<KedaInterceptorRoute>(&sources.scope, client);
        keda = stores;
        streams.push(changes(KEDA_ROUTES, events));
    }
    let stores = Stores {
        scaled,
        routes,
        keda,
        unavailable: HashSet::new(),
    };
    (stores, futures::stream::select_all(streams).boxed())
}

/// What the watched objects ask the proxy for: routes in claim order, and the Services whose
/// endpoints to follow (targets woken on demand, fallbacks never).
#[derive(Debug, Default, PartialEq)]
struct Plan {
    routes: Vec<Route>,
    targets: HashMap<String, ServiceRef>,
    /// `ns/name#failover` → the fallback Service.
    failovers: HashMap<String, ServiceRef>,
    /// Every object key present, valid or not.
    present: HashSet<String>,
}

/// Plans from the objects (pure; every kind goes through [`claim_all`]).
fn plan(objects: Vec<RouteObject<'_>>) -> Plan {
    let mut out = Plan {
        present: objects.iter().map(RouteObject::key).collect(),
        ..Plan::default()
    };
    let (claiming, shadowed) = claim_all(objects);
    for (o, by) in shadowed {
        tracing::warn!(object = %o.key(), kind = o.kind(), replaced_by = by, "Object not routed: another kind of the same name wins.");
    }
    for o in claiming {
        let key = o.key();
        match o.routes() {
            Ok(routes) => out.routes.extend(routes),
            Err(errors) => {
                tracing::warn!(object = %key, kind = o.kind(), ?errors, "Object not routed.");
                continue;
            }
        }
        if let Some(svc) = o.fallback().and_then(service_ref) {
            out.failovers.insert(failover_target(&key), svc);
        }
        if let Some(svc) = o.target().and_then(service_ref) {
            out.targets.insert(key, svc);
        }
    }
    out
}

/// Feeds `state` from the API server until the process exits.
pub async fn run(client: Client, sources: Sources, state: Arc<ProxyState>, feed: DemandFeed) {
    state.set_synced(false);
    let (mut stores, mut events) = watch(&sources, &client);
    let mut followers: HashMap<String, Follower> = HashMap::new();
    let mut last_routes: Option<Vec<Route>> = None;
    let mut wakes: HashMap<String, JoinHandle<()>> = HashMap::new();
    while let Some(event) = events.next().await {
        match event {
            Err((kind, e)) => {
                tracing::warn!(error = %e, kind, "Route watch failed; routing continues from the last table.");
                // A kind the cluster does not serve (or we may not list) must not hold up the
                // others' routes: from now on it counts as listed (empty until it is).
                if !(kind_unavailable(&e) && stores.unavailable.insert(kind)) {
                    continue;
                }
                tracing::warn!(
                    kind,
                    "Routing without this kind until it can be listed (CRD or RBAC missing?)."
                );
            }
            Ok(false) => continue,
            Ok(true) => {}
        }
        if !stores.ready() {
            continue;
        }
        let scaled: Vec<Arc<HTTPScaledObject>> =
            stores.scaled.iter().flat_map(Store::state).collect();
        let routes: Vec<Arc<InterceptorRoute>> =
            stores.routes.iter().flat_map(Store::state).collect();
        let keda: Vec<Arc<KedaInterceptorRoute>> =
            stores.keda.iter().flat_map(Store::state).collect();
        let objects = scaled
            .iter()
            .map(|o| RouteObject::Scaled(o))
            .chain(routes.iter().map(|o| RouteObject::Route(o)))
            .chain(keda.iter().map(|o| RouteObject::Keda(o)))
            .collect();
        let Plan {
            routes,
            targets: wanted,
            failovers,
            present,
        } = plan(objects);

        // Routes first: a request must not find a route whose endpoints were just withdrawn.
        if last_routes.as_ref() != Some(&routes) {
            let count = routes.len();
            let conflicts = state.set_routes(routes.clone());
            for c in &conflicts {
                tracing::warn!(conflict = %c, "Route refused: the older object keeps it.");
            }
            tracing::info!(
                routes = count - conflicts.len(),
                refused = conflicts.len(),
                "Routing table updated."
            );
            last_routes = Some(routes);
        }
        // Wake relays for objects that are gone stop; endpoint followers start for new objects,
        // restart for changed Services and stop for removed ones.
        wakes.retain(|key, task| {
            let keep = present.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
        followers.retain(|key, f| {
            let now = wanted.get(key).or_else(|| failovers.get(key));
            let keep = now == Some(&f.svc);
            if !keep {
                f.task.abort();
                let target = state.target(key);
                target.set_endpoints(Vec::new());
                // Deleted (or no longer routable): requests still held for it are answered now
                // rather than at their deadline. A changed Service just waits for the new one.
                if now.is_none() {
                    target.set_unavailable(Some(match key.strip_suffix(FAILOVER_SUFFIX) {
                        Some(object) => {
                            format!("{object} has no fallback any more, or was deleted")
                        }
                        None => format!("{key} was deleted or is invalid"),
                    }));
                }
            }
            keep
        });
        let scaled = wanted.into_iter().map(|(k, s)| (k, s, true));
        let failover = failovers.into_iter().map(|(k, s)| (k, s, false));
        for (key, svc, woken) in scaled.chain(failover) {
            if followers.contains_key(&key) {
                continue;
            }
            let target = state.target(&key);
            // Unknown until the follower has read the Service.
            target.set_unavailable(None);
            if woken {
                wakes
                    .entry(key.clone())
                    .or_insert_with(|| tokio::spawn(feed.clone().forward_wakes(target.clone())));
            }
            let task = tokio::spawn(endpoints::follow(client.clone(), svc.clone(), target));
            followers.insert(key, Follower { svc, task });
        }

        if !state.is_synced() {
            tracing::info!("First routing table loaded; ready.");
            state.set_synced(true);
        }
    }
}

#[cfg(test)]
mod tests;
