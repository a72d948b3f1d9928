//! Where a request goes, decided from its head alone: the event gateway's webhook, a route (and
//! whether it is a gateway delivery), or an error. The front ([`crate::front::park`], deciding
//! whether to park a cold request before the engine) and the forwarder ([`crate::forward`],
//! serving it) both call [`decide`], so they cannot disagree about a request's route. What a
//! route then does with the request (a static answer, a placeholder, a hold) depends on its
//! target's state at that moment and stays with each caller.

use std::sync::Arc;

use rouse_core::{RequestHeaders, normalize_path};
use rouse_eventgrid::gateway::Subscription;

use crate::delivery_guard::{DELIVERY_TOKEN_HEADER, Verdict};
use crate::event_gateway::EventGateway;
use crate::state::{RouteState, Snapshot};

/// What to do with one request.
pub enum Decision<'s> {
    /// A webhook path of the event gateway: the gateway serves this subscription.
    Webhook(Arc<Subscription>),
    /// Neither an absolute-form authority nor a `Host`: 400.
    NoHost,
    /// No route for this host, path and headers: 404.
    NoRoute,
    /// A route's reserved delivery path without this process's delivery token: 403, never
    /// forwarded, never demand. The route, when it is still in the snapshot, for metrics.
    DeliveryRefused {
        route_name: &'s str,
        route: Option<&'s Arc<RouteState>>,
    },
    /// The request goes to `route`'s target.
    Route(Routed<'s>),
}

/// A request that has a route.
pub struct Routed<'s> {
    pub route: &'s Arc<RouteState>,
    /// Origin-form path and query to send upstream: normalised, then rewritten by the route.
    pub upstream_path: String,
    /// A gateway delivery (it carried the delivery token to a reserved path): the token is
    /// removed before forwarding.
    pub delivery: bool,
}

/// Decides where a request for `host` (`None`: the request names none) and `target` (the
/// origin-form path and query) goes, given the routes in force and the event gateway, if any.
pub fn decide<'s>(
    snapshot: &'s Snapshot,
    events: Option<&EventGateway>,
    host: Option<&str>,
    target: &str,
    headers: &(impl RequestHeaders + ?Sized),
) -> Decision<'s> {
    if let Some(sub) = events.and_then(|ev| {
        ev.gateway
            .subscription_for(target.split('?').next().unwrap_or("/"))
    }) {
        return Decision::Webhook(sub.clone());
    }
    let Some(host) = host else {
        return Decision::NoHost;
    };
    let normalized = normalize_path(target);
    let path = normalized.split('?').next().unwrap_or("/");
    let Some(m) = snapshot.table.resolve(host, path, headers) else {
        return Decision::NoRoute;
    };
    let verdict = events.map_or(Verdict::Open, |ev| {
        let token = headers.values(DELIVERY_TOKEN_HEADER).next();
        ev.guard
            .check(&m.route.name, path, token.map(str::as_bytes))
    });
    let name: &'s str = &m.route.name;
    if verdict == Verdict::Refused {
        return Decision::DeliveryRefused {
            route_name: name,
            route: snapshot.routes.get(name),
        };
    }
    let Some(route) = snapshot.routes.get(name) else {
        return Decision::NoRoute;
    };
    Decision::Route(Routed {
        route,
        upstream_path: m.upstream_path(&normalized).unwrap_or(normalized),
        delivery: verdict == Verdict::Delivery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_support::{route, state};
    use rouse_core::{HeaderMatch, NoHeaders, PathPrefix};

    /// `(route, upstream path)` of a routed request, or the decision's name.
    fn outcome(d: Decision<'_>) -> Result<(String, String), &'static str> {
        match d {
            Decision::Route(r) => Ok((r.route.route.name.clone(), r.upstream_path)),
            Decision::Webhook(_) => Err("webhook"),
            Decision::NoHost => Err("no host"),
            Decision::NoRoute => Err("no route"),
            Decision::DeliveryRefused { .. } => Err("delivery refused"),
        }
    }

    /// The one routing decision of the front and the engine: the host and the normalised path
    /// pick the route, the route's rewrite makes the upstream path (query kept), a request
    /// without an authority or matching nothing is named as such.
    #[test]
    fn a_request_is_routed_by_host_and_normalised_path_and_rewritten_for_upstream() {
        let mut api = route("api", "shop.test", "/api");
        api.rewrite_prefix = Some(PathPrefix::parse("/v2").expect("prefix"));
        let mut canary = route("canary", "shop.test", "/");
        canary.headers = vec![HeaderMatch::new("x-canary", "1").expect("header")];
        let st = state(vec![api, route("shop", "shop.test", "/"), canary]);
        let snap = st.snapshot();
        let decide = |host: Option<&str>, target: &str, headers: &[(&str, &str)]| {
            outcome(decide(&snap, None, host, target, headers))
        };
        assert_eq!(
            decide(Some("shop.test"), "/api/orders?page=2", &[]),
            Ok(("api".into(), "/v2/orders?page=2".into()))
        );
        // Dot segments are resolved before matching: no escape from the prefix.
        assert_eq!(
            decide(Some("shop.test"), "/api/../admin", &[]),
            Ok(("shop".into(), "/admin".into()))
        );
        assert_eq!(
            decide(Some("SHOP.test:8080"), "/", &[]),
            Ok(("shop".into(), "/".into()))
        );
        assert_eq!(
            decide(Some("shop.test"), "/", &[("x-canary", "1")]),
            Ok(("canary".into(), "/".into()))
        );
        assert_eq!(decide(Some("other.test"), "/", &[]), Err("no route"));
        assert_eq!(decide(None, "/", &[]), Err("no host"));
        assert_eq!(
            outcome(super::decide(
                &snap,
                None,
                Some("shop.test"),
                "/x",
                &NoHeaders
            )),
            Ok(("shop".into(), "/x".into()))
        );
    }
}
