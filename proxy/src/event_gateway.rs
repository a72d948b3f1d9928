//! The event gateway the listener serves: the gateway itself and the guard of its delivery
//! paths, held in a [`GatewaySlot`] so that, on Kubernetes, a new configuration (an
//! `EventSubscription` added, changed or removed) replaces both at once without a restart.
//! Requests already holding the old one finish with it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rouse_eventgrid::Gateway;
use rouse_eventgrid::deliver::Destination;

use crate::delivery_guard::{DELIVERY_TOKEN_HEADER, DeliveryGuard};

/// A gateway and the guard of its delivery paths.
pub struct EventGateway {
    pub gateway: Arc<Gateway>,
    pub guard: Arc<DeliveryGuard>,
}

/// The gateway in force, if any. One atomic load per request.
#[derive(Default)]
pub struct GatewaySlot(ArcSwapOption<EventGateway>);

impl GatewaySlot {
    pub fn new(gateway: Option<EventGateway>) -> Self {
        GatewaySlot(ArcSwapOption::from(gateway.map(Arc::new)))
    }

    /// The gateway in force.
    pub fn current(&self) -> Option<Arc<EventGateway>> {
        self.0.load_full()
    }

    /// The gateway in force, borrowed: cheaper than [`GatewaySlot::current`] on the request
    /// path; not to be held across an `.await`.
    pub fn load(&self) -> arc_swap::Guard<Option<Arc<EventGateway>>> {
        self.0.load()
    }

    /// Puts `next` in force and returns the one it replaces (for the caller to close).
    pub fn replace(&self, next: Option<EventGateway>) -> Option<Arc<EventGateway>> {
        self.0.swap(next.map(Arc::new))
    }
}

/// Starts delivering `gw`'s events. Deliveries go through this proxy's own listener with the
/// target's `Host`, so they are held for a cold target and wake it; the delivery token opens
/// the target's reserved delivery path. A subscription with `target.url` (standalone style)
/// goes there instead, without the token. `hosts` maps an app (route) to its delivery host.
pub fn start_delivery(
    gw: &EventGateway,
    listen: SocketAddr,
    hosts: &HashMap<String, Option<String>>,
) {
    let listen = loopback_of(listen);
    let token = gw.guard.token().to_string();
    rouse_eventgrid::deliver::start(&gw.gateway, |sub| {
        let t = &sub.config.target;
        let app_host = t.app.as_ref().and_then(|a| hosts.get(a).cloned().flatten());
        let through_proxy = t.url.is_none();
        Destination {
            base: t.url.clone().unwrap_or_else(|| format!("http://{listen}")),
            host: t.host.clone().or(app_host),
            headers: through_proxy
                .then(|| (DELIVERY_TOKEN_HEADER.to_string(), token.clone()))
                .into_iter()
                .collect(),
        }
    });
    tokio::spawn(gw.gateway.clone().maintain());
}

/// Where this process reaches its own listener: a wildcard bind (`0.0.0.0`, `[::]`) is
/// reached on loopback.
fn loopback_of(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        let a: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(loopback_of(a).to_string(), "127.0.0.1:8080");
        let b: SocketAddr = "[::]:8080".parse().expect("addr");
        assert_eq!(loopback_of(b).to_string(), "[::1]:8080");
        let c: SocketAddr = "127.0.0.9:81".parse().expect("addr");
        assert_eq!(loopback_of(c), c);
    }
}
