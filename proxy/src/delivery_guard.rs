//! The event gateway's delivery paths belong to the gateway alone.
//!
//! Deliveries reach an app through this proxy's own listener (so a cold app is held for and
//! woken), which means the app's delivery path (`/events`, an Azure Functions host's
//! `/runtime/webhooks/EventGrid`) is routable like any other path: without this guard anyone
//! could POST a forged event straight to the app, past the webhook's key check. So every
//! delivery path of a subscription is *reserved* on its app's route: only requests carrying this
//! process's delivery token (a random 256-bit value made at start, never logged, sent only to
//! this process's own listener) get through, with the token removed before forwarding; every
//! other request to that path is answered 403 `delivery_path_reserved`.

use std::collections::{HashMap, HashSet};

use subtle::ConstantTimeEq;

/// The request header that carries the delivery token.
pub const DELIVERY_TOKEN_HEADER: &str = "x-rouse-delivery-token";

/// The reserved paths by route and the token that opens them. Keyed by route so the check on
/// every request borrows its arguments (no allocation on the request path).
pub struct DeliveryGuard {
    token: String,
    reserved: HashMap<String, HashSet<String>>,
}

/// What a request to a route's path may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a delivery path: forward as usual.
    Open,
    /// A delivery from the gateway: forward without the token header.
    Delivery,
    /// A delivery path without the right token: refuse.
    Refused,
}

impl DeliveryGuard {
    /// Reserves each `(route, path)` (the path of a subscription's `target.path`, its query
    /// ignored) with a fresh random token.
    pub fn new(reserved: impl IntoIterator<Item = (String, String)>) -> Self {
        let bytes: [u8; 32] = rand::random();
        let mut by_route: HashMap<String, HashSet<String>> = HashMap::new();
        for (route, path) in reserved {
            by_route
                .entry(route)
                .or_default()
                .insert(trim(&path).to_string());
        }
        DeliveryGuard {
            token: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            reserved: by_route,
        }
    }

    /// The token deliveries carry in [`DELIVERY_TOKEN_HEADER`].
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether `route` may be sent `path` (normalised, no query) with `presented` as the token
    /// header. Paths match exactly, ignoring one trailing slash.
    pub fn check(&self, route: &str, path: &str, presented: Option<&[u8]>) -> Verdict {
        let reserved = self
            .reserved
            .get(route)
            .is_some_and(|paths| paths.contains(trim(path)));
        if !reserved {
            return Verdict::Open;
        }
        match presented {
            Some(p) if bool::from(p.ct_eq(self.token.as_bytes())) => Verdict::Delivery,
            _ => Verdict::Refused,
        }
    }
}

/// `path` without its query and without one trailing slash (`/` stays `/`).
fn trim(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or(path);
    match path.strip_suffix('/') {
        Some("") | None => path,
        Some(p) => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> DeliveryGuard {
        DeliveryGuard::new([
            ("hello".to_string(), "/events".to_string()),
            (
                "fn".to_string(),
                "/runtime/webhooks/EventGrid?functionName=F&code=K".to_string(),
            ),
        ])
    }

    #[test]
    fn only_the_token_opens_a_delivery_path() {
        let g = guard();
        let token = g.token().as_bytes().to_vec();
        assert_eq!(g.check("hello", "/events", Some(&token)), Verdict::Delivery);
        assert_eq!(
            g.check("hello", "/events/", Some(&token)),
            Verdict::Delivery
        );
        assert_eq!(g.check("hello", "/events", None), Verdict::Refused);
        assert_eq!(
            g.check("hello", "/events", Some(b"guess")),
            Verdict::Refused
        );
        let mut wrong = token.clone();
        wrong[0] ^= 1;
        assert_eq!(g.check("hello", "/events", Some(&wrong)), Verdict::Refused);
        assert_eq!(
            g.check("fn", "/runtime/webhooks/EventGrid", None),
            Verdict::Refused,
            "the query of target.path is not part of the reserved path"
        );
    }

    #[test]
    fn other_paths_and_routes_stay_open() {
        let g = guard();
        assert_eq!(g.check("hello", "/", None), Verdict::Open);
        assert_eq!(g.check("hello", "/events/x", None), Verdict::Open);
        assert_eq!(g.check("other", "/events", None), Verdict::Open);
    }

    #[test]
    fn tokens_are_random_per_process_start() {
        assert_ne!(guard().token(), guard().token());
        assert_eq!(guard().token().len(), 64);
    }
}
