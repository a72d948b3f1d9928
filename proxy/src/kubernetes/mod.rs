//! The Kubernetes platform of the proxy (`rouse kubernetes`): routes from `HTTPScaledObject`s,
//! endpoints from each target Service's EndpointSlices (and from each failover Service's, for
//! `coldStartTimeoutFailoverRef`), webhooks from `EventSubscription`s ([`events`]). The proxy
//! never scales anything here: it
//! streams demand and wakes to the controller (see [`crate::demand`]).
//!
//! State stays where it is in local mode ([`ProxyState`]); this module only feeds it. When the
//! API server is unreachable the watches retry with backoff and the last table keeps routing.

pub mod endpoints;
pub mod events;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::Client;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use rouse_core::Route;
use rouse_core::crd::{HTTPScaledObject, claim_order, object_key, route_of};
use rouse_core::route::{FAILOVER_SUFFIX, failover_target};
use tokio::task::JoinHandle;

pub use rouse_kube::Scope;
use rouse_kube::{all_ready, watch_all};

use crate::demand::DemandFeed;
use crate::state::ProxyState;
use endpoints::{PortRef, ServiceRef};

/// The endpoint source of one object's target.
fn service_ref(o: &HTTPScaledObject) -> Option<ServiceRef> {
    let r = &o.spec.scale_target_ref;
    let port = match (r.port, &r.port_name) {
        (Some(n), _) => PortRef::Number(n),
        (None, Some(name)) => PortRef::Name(name.clone()),
        (None, None) => return None,
    };
    Some(ServiceRef {
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: r.service.clone(),
        port,
    })
}

/// The endpoint source of one object's failover (`coldStartTimeoutFailoverRef`), if any.
fn failover_ref(o: &HTTPScaledObject) -> Option<ServiceRef> {
    let r = o.spec.cold_start_timeout_failover_ref.as_ref()?;
    let port = match (r.port, &r.port_name) {
        (Some(n), _) => PortRef::Number(n),
        (None, Some(name)) => PortRef::Name(name.clone()),
        (None, None) => return None,
    };
    Some(ServiceRef {
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: r.service.clone(),
        port,
    })
}

/// The endpoint follower of one target.
struct Follower {
    svc: ServiceRef,
    task: JoinHandle<()>,
}

/// Feeds `state` from the API server until the process exits.
pub async fn run(client: Client, scope: Scope, state: Arc<ProxyState>, feed: DemandFeed) {
    state.set_synced(false);
    let (stores, mut events) = watch_all::<HTTPScaledObject>(&scope, &client);
    let mut followers: HashMap<String, Follower> = HashMap::new();
    let mut last_routes: Option<Vec<Route>> = None;
    let mut wakes: HashMap<String, JoinHandle<()>> = HashMap::new();
    while let Some(event) = events.next().await {
        match event {
            Err(e) => {
                tracing::warn!(error = %e, "HTTPScaledObject watch failed; routing continues from the last table.");
                continue;
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => {}
        }
        // Until every namespace has been listed once, an empty store means "not read yet".
        // Until every namespace has been listed once, an empty store means "not read yet".
        if !all_ready(&stores) {
            continue;
        }
        let all: Vec<Arc<HTTPScaledObject>> = stores.iter().flat_map(Store::state).collect();
        let mut objects: Vec<&HTTPScaledObject> = all.iter().map(AsRef::as_ref).collect();
        claim_order(&mut objects);

        let mut routes = Vec::with_capacity(objects.len());
        let mut wanted: HashMap<String, ServiceRef> = HashMap::new();
        // Failover targets (`ns/name#failover`): followed like targets, never woken or scaled.
        let mut failovers: HashMap<String, ServiceRef> = HashMap::new();
        for o in &objects {
            let key = object_key(o);
            match route_of(o) {
                Ok(route) => routes.push(route),
                Err(errors) => {
                    tracing::warn!(object = %key, ?errors, "HTTPScaledObject not routed.");
                    continue;
                }
            }
            if let Some(svc) = failover_ref(o) {
                failovers.insert(failover_target(&key), svc);
            }
            if let Some(svc) = service_ref(o) {
                wanted.insert(key, svc);
            }
        }

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
        let present: std::collections::HashSet<String> =
            objects.iter().map(|o| object_key(o)).collect();
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
                        Some(object) => format!(
                            "HTTPScaledObject {object} has no failover any more, or was deleted"
                        ),
                        None => format!("HTTPScaledObject {key} was deleted or is invalid"),
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
