//! Where a cold HTTP/1 request waits: parked before the engine, as its socket, its head bytes,
//! its route and its deadline. No engine session, no per-request task or future of the
//! engine's size exists while it waits; when the hold ends, the connection goes on to the
//! engine with the head replayed and the outcome of the hold (an endpoint slot, or why there is
//! none) attached to the stream ([`Handoff`]), which the forwarder takes instead of holding the
//! request again.
//!
//! Why: a pingora session and its boxed future cost tens of KiB per request, and a cold start
//! may hold tens of thousands. The hold itself is the same code either side of the handover
//! ([`crate::hold::acquire`]), so limits, deadlines, the wake signal and the hold metrics do not
//! depend on where a request waited; what the engine does with the outcome (failover, JSON
//! errors, cold-start headers) stays in [`crate::forward`].
//!
//! Only a request the engine would hold is parked: one whose route resolves, is not answered by
//! the proxy itself (a placeholder, a static answer, a webhook, a refused delivery path), and
//! whose target has no ready endpoint with room or already has requests queued.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::stream::FrontStream;
use crate::access_log::Entry;
use crate::event_gateway::GatewaySlot;
use crate::hold::{Acquired, acquire};
use crate::reason::Reason;
use crate::routing::{self, Decision};
use crate::state::{ActiveRequest, ProxyState, RouteState};
use rouse_core::http1::{self, Body, Head};

/// Bytes a parked bodyless request may buffer after its head (a pipelined next request) while
/// its socket is watched for the client leaving; past it the socket is left unread (TCP pushes
/// back) until the hold ends.
const WATCH_LIMIT: usize = 64 * 1024;

/// A request the engine would hold, found from its head alone.
pub struct Candidate {
    route: Arc<RouteState>,
    /// Head + declared body: what the hold budget counts.
    bytes: u64,
    /// Bodyless and not an upgrade: any byte or EOF from the client while it waits can only be
    /// a next request or the client leaving, so the socket is watched.
    watch: bool,
}

/// What a parked request brings to the engine.
pub struct Handoff {
    pub route: Arc<RouteState>,
    /// When the head had arrived: held time and the hold's deadline count from here.
    pub arrived: Instant,
    pub deadline: Instant,
    /// The slot the hold won, or why it ended without one.
    pub outcome: Result<Acquired, Reason>,
    /// Counts the request as active (a drain waits for it) until the engine's context does.
    _active: ActiveRequest,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("route", &self.route.route.name)
            .field("arrived", &self.arrived)
            .field("deadline", &self.deadline)
            .field(
                "outcome",
                &self.outcome.as_ref().map(|a| a.slot.endpoint.addr),
            )
            .finish()
    }
}

/// How a parked request ended.
pub enum Parked {
    /// The hold ended: go on to the engine with this.
    Handoff(Box<Handoff>),
    /// The client left while parked (counted as `client_closed`): close the connection.
    Gone,
}

/// The route of the complete head at the start of `buf`, if the engine would hold the request.
pub fn candidate(
    state: &ProxyState,
    events: &GatewaySlot,
    buf: &[u8],
    head: &Head,
) -> Option<Candidate> {
    let head_bytes = buf.get(..head.len)?;
    http1::with_fields(head_bytes, |_, target, fields| {
        // The authority the engine routes by: an absolute-form target's (it wins over Host),
        // else the Host field.
        let absolute: http::Uri;
        let (host, raw) = if target.starts_with('/') {
            let host = fields
                .get("host")
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| !h.is_empty());
            (host, target)
        } else {
            absolute = http::Uri::try_from(target).ok()?;
            let host = absolute.authority().map(|a| a.as_str());
            (host, absolute.path_and_query().map_or("/", |p| p.as_str()))
        };
        let events = events.load();
        let snapshot = state.snapshot();
        // The engine's own decision, so a parked request is one the engine would have held.
        let Decision::Route(routed) =
            routing::decide(&snapshot, events.as_deref(), host, raw, fields)
        else {
            return None;
        };
        let route = routed.route;
        let limits = &route.route.limits;
        if limits.static_answer.is_some() || limits.placeholder.is_some() || !would_wait(route) {
            return None;
        }
        let body = match head.body {
            Body::Length(n) => n,
            Body::None | Body::Chunked => 0,
        };
        Some(Candidate {
            route: route.clone(),
            bytes: (head.len as u64).saturating_add(body),
            watch: head.body == Body::None && !head.upgrade,
        })
    })
    .flatten()
}

/// Whether a request on `route` would wait rather than take a slot at once: nobody may
/// overtake queued requests, and a slot needs a ready endpoint below its concurrency cap.
fn would_wait(route: &RouteState) -> bool {
    let target = &route.target;
    if target.demand.held() > 0 {
        return true;
    }
    let set = target.endpoints();
    match route.route.limits.endpoint_concurrency {
        _ if set.is_empty() => true,
        Some(cap) => set.endpoints.iter().all(|e| e.in_flight() >= cap),
        None => false,
    }
}

/// Counts one parked request on a gauge for as long as it lives.
struct Gauged<'a>(&'a prometheus::IntGauge);

impl<'a> Gauged<'a> {
    fn inc(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Gauged(gauge)
    }
}

impl Drop for Gauged<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The path of a request target (origin or absolute form) without its query: how logs name a
/// request. The query is cut off before anything else, so no part of it (a key) can be
/// mistaken for the path of an absolute-form target without one.
fn logged_path(target: &str) -> String {
    let target = target.split('?').next().unwrap_or("/");
    match http::Uri::try_from(target) {
        Ok(uri) if uri.authority().is_some() => uri.path().to_string(),
        _ => target.to_string(),
    }
}

/// Ends a parked request whose client left: counted (`000`, `client_closed`) and logged as the
/// engine would have, named by method and path (never the query, where keys travel).
fn client_left(state: &ProxyState, route: &Arc<RouteState>, head: &[u8], arrived: Instant) {
    let name = route.route.name.as_str();
    state
        .metrics
        .request_finished(name, "000", Some(Reason::ClientClosed));
    // The head was read and checked by the front, so both parse; the query is cut off first
    // (an absolute-form target's authority-less tail could otherwise carry part of a key).
    let Some((method, path)) = http1::with_fields(head, |method, target, _| {
        Some((
            http::Method::from_bytes(method.as_bytes()).ok()?,
            logged_path(target),
        ))
    })
    .flatten() else {
        return;
    };
    tracing::debug!(
        route = name,
        request = %format_args!("{method} {path}"),
        held_ms = arrived.elapsed().as_millis() as u64,
        "Client left while its request was held."
    );
    if let Some(log) = state.access_log() {
        log.record(Entry {
            at: SystemTime::now(),
            route: Some(route.clone()),
            method,
            path,
            status: None,
            duration: arrived.elapsed(),
            held: Some(arrived.elapsed()),
            upstream: None,
            failover: false,
            reason: Some(Reason::ClientClosed),
        });
    }
}

/// Holds the candidate's request here until it has a slot, its hold ends, or its client leaves.
/// Bytes the client sends meanwhile (a pipelined next request) are appended to `pending`.
pub async fn park(
    state: &ProxyState,
    c: Candidate,
    stream: &mut FrontStream,
    pending: &mut BytesMut,
) -> Parked {
    let active = state.active_request();
    let _parked = Gauged::inc(&state.metrics.parked);
    // The head (and any bytes after it) is all a parked request keeps: not the spare room of
    // the buffer it was read into.
    if pending.capacity() > pending.len() + 64 {
        let mut exact = BytesMut::with_capacity(pending.len());
        exact.extend_from_slice(pending);
        *pending = exact;
    }
    let arrived = Instant::now();
    let route = c.route;
    let deadline = arrived + route.route.limits.hold_timeout;
    route.target.demand.request_started();
    // Pinned once, here: awaited in place whichever way it ends, so the hold's state has one
    // slot in this future (a second, for an unpinned `acquisition.await`, would be ~0.5 KiB
    // more in every parked connection).
    let outcome = {
        let acquisition = acquire(state, &route, c.bytes, &[], deadline);
        tokio::pin!(acquisition);
        if c.watch {
            loop {
                if pending.len() >= WATCH_LIMIT {
                    break (&mut acquisition).await;
                }
                tokio::select! {
                    // The hold first: on the fast path it is ready at once and the socket is
                    // never polled.
                    biased;
                    r = &mut acquisition => break r,
                    read = stream.read_buf(pending) => match read {
                        Ok(0) | Err(_) => {
                            client_left(state, &route, pending, arrived);
                            return Parked::Gone;
                        }
                        Ok(_) => {}
                    },
                }
            }
        } else {
            acquisition.await
        }
    };
    Parked::Handoff(Box::new(Handoff {
        route,
        arrived,
        deadline,
        outcome,
        _active: active,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_support::{route, state};
    use pingora_core::protocols::l4::stream::Stream as L4Stream;
    use rouse_core::Endpoint;
    use rouse_core::http1::{Parsed, parse};
    use tokio::io::AsyncWriteExt;

    fn head(buf: &[u8]) -> Head {
        match parse(buf) {
            Parsed::Head(h) => h,
            other => panic!("{other:?}"),
        }
    }

    fn parks(state: &ProxyState, req: &str) -> Option<String> {
        let buf = req.as_bytes();
        let h = head(buf);
        candidate(state, &GatewaySlot::new(None), buf, &h).map(|c| c.route.route.name.clone())
    }

    /// Cold targets park; warm ones, placeholders, unknown hosts and full-but-capped targets
    /// are decided as the engine decides them.
    #[test]
    fn only_requests_the_engine_would_hold_are_parked() {
        let mut shown = route("shown", "shown.test", "/");
        shown.limits.placeholder = Some(
            rouse_core::route::Placeholder::build(503, Some("wait".to_string()), [])
                .expect("placeholder"),
        );
        let mut capped = route("capped", "capped.test", "/");
        capped.limits.endpoint_concurrency = Some(1);
        let st = state(vec![route("cold", "cold.test", "/"), shown, capped]);

        let get = |host: &str| format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(parks(&st, &get("cold.test")).as_deref(), Some("cold"));
        assert_eq!(
            parks(
                &st,
                "GET http://cold.test/x HTTP/1.1\r\nHost: other\r\n\r\n"
            )
            .as_deref(),
            Some("cold"),
            "an absolute-form target's authority routes"
        );
        assert_eq!(
            parks(&st, &get("nowhere.test")),
            None,
            "no route: the engine answers 404"
        );
        assert_eq!(
            parks(&st, &get("shown.test")),
            None,
            "a placeholder answers at once"
        );

        let ep = Endpoint::new("e", "127.0.0.1:9".parse().expect("addr"));
        st.target("cold").set_endpoints(vec![ep.clone()]);
        assert_eq!(
            parks(&st, &get("cold.test")),
            None,
            "a warm target is not parked"
        );
        st.target("cold").demand.held_inc();
        assert_eq!(
            parks(&st, &get("cold.test")).as_deref(),
            Some("cold"),
            "nobody overtakes requests already queued"
        );
        st.target("cold").demand.held_dec();

        st.target("capped").set_endpoints(vec![ep.clone()]);
        assert_eq!(
            parks(&st, &get("capped.test")),
            None,
            "room on the endpoint"
        );
        assert!(ep.try_acquire(Some(1)));
        assert_eq!(
            parks(&st, &get("capped.test")).as_deref(),
            Some("capped"),
            "every endpoint at its cap"
        );
    }

    /// A parked request whose client left is logged by path (access log, debug line): never
    /// with its query, where keys travel.
    #[test]
    fn logged_paths_never_carry_the_query() {
        assert_eq!(logged_path("/orders?code=SECRET"), "/orders");
        assert_eq!(logged_path("http://h.test/orders?code=SECRET"), "/orders");
        // An absolute form whose query holds a `/`: nothing of the key is taken as the path.
        assert_eq!(logged_path("http://h.test?code=ab/cd"), "/");
        assert_eq!(logged_path("*"), "*");
    }

    /// The hold runs here: a ready endpoint releases the parked request with a slot (the wake
    /// was signalled and the request counted as held meanwhile); a client that hangs up while
    /// parked ends it as `client_closed`, its bytes never reaching the engine.
    #[tokio::test]
    async fn a_parked_request_is_released_by_readiness_or_dropped_when_its_client_leaves() {
        let st = state(vec![route("cold", "cold.test", "/")]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let req = "GET /x HTTP/1.1\r\nHost: cold.test\r\n\r\n";

        // Released by readiness.
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        client.write_all(req.as_bytes()).await.expect("write");
        let mut stream = FrontStream::new(L4Stream::from(server));
        let mut pending = BytesMut::from(req.as_bytes());
        let c = candidate(
            &st,
            &GatewaySlot::new(None),
            &pending,
            &head(req.as_bytes()),
        )
        .expect("parked");
        let target = st.target("cold");
        let parked = {
            let st = st.clone();
            let target = target.clone();
            async move {
                // Publish an endpoint once the request is really held.
                while target.demand.held() == 0 {
                    tokio::task::yield_now().await;
                }
                target.set_endpoints(vec![Endpoint::new(
                    "e",
                    "127.0.0.1:9".parse().expect("addr"),
                )]);
                drop(st);
            }
        };
        let (out, ()) = tokio::join!(park(&st, c, &mut stream, &mut pending), parked);
        let Parked::Handoff(h) = out else {
            panic!("not released")
        };
        let acquired = h.outcome.as_ref().expect("a slot");
        assert!(acquired.waited.is_some(), "it waited");
        assert_eq!(h.route.route.name, "cold");
        assert_eq!(target.demand.held(), 0);
        drop(h);

        // The client leaves: the parked request ends, counted.
        target.set_endpoints(vec![]);
        let client2 = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let mut stream = FrontStream::new(L4Stream::from(server));
        let mut pending = BytesMut::from(req.as_bytes());
        let c = candidate(
            &st,
            &GatewaySlot::new(None),
            &pending,
            &head(req.as_bytes()),
        )
        .expect("parked");
        let leave = async {
            while target.demand.held() == 0 {
                tokio::task::yield_now().await;
            }
            drop(client2);
        };
        let (out, ()) = tokio::join!(park(&st, c, &mut stream, &mut pending), leave);
        assert!(matches!(out, Parked::Gone), "the client left");
        assert_eq!(target.demand.held(), 0, "no longer held");
        let closed = st
            .metrics
            .rejections
            .with_label_values(&["cold", "client_closed"])
            .get();
        assert_eq!(closed, 1);
        drop(client);
    }
}
