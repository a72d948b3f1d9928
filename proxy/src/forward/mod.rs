//! The pingora `ProxyHttp` implementation: the life of one request.
//!
//! 1. `request_filter`: pick the route (404 JSON when none) and count the request; while the
//!    target is cold, a route with a placeholder answers with it here and wakes the target
//!    ([`cold::placeholder_for`], [`crate::hold::claim_wake`]). A static route answers with its
//!    fixed response here, or marks the request uncounted, and never wakes the target.
//! 2. `upstream_peer`: take an endpoint slot, holding the request while the target is cold or
//!    full ([`crate::hold::acquire`]) — or take the outcome of the hold an HTTP/1 request
//!    already had, parked before the engine ([`crate::front::park`]); a static route's request
//!    never holds:
//!    [`crate::hold::static_slot`]); a hold that times out goes to the route's failover if it
//!    has one ([`cold::after_hold`]); on a refused connection pingora retries this phase with
//!    the failed endpoint excluded.
//! 3. `upstream_request_filter`: hop-by-hop and forwarding headers, origin-form URI, rewrite.
//! 4. `response_filter`: the cold-start headers (Rouse's and KEDA's).
//! 5. `fail_to_proxy`: JSON errors; `logging`: metrics. The endpoint slot is returned when the
//!    request context drops.

pub mod cold;
pub mod headers;
pub mod respond;
pub mod webhook;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use rouse_core::UpstreamProtocol;

use crate::access_log::Entry;
use crate::delivery_guard::DELIVERY_TOKEN_HEADER;
use crate::event_gateway::GatewaySlot;
use crate::front::park::Handoff;
use crate::front::stream::FrontStream;
use crate::hold::{Acquired, EndpointSlot, acquire, claim_wake, failover_slot, static_slot};
use crate::routing::{self, Decision};
use crate::state::{ActiveRequest, ProxyState, RouteState};
use cold::{AfterHold, ColdView};
use respond::{Reason, write_error, write_placeholder};

/// Response header: `true` when the request waited for an endpoint (cold start or capacity).
pub const COLD_START_HEADER: &str = "x-rouse-cold-start";
/// The KEDA HTTP Add-on's cold-start response header (its `kedahttp.HeaderColdStart`, values
/// `true`/`false` from Go's `strconv.FormatBool`), sent with the same value as
/// [`COLD_START_HEADER`] so dashboards built on KEDA keep working.
pub const KEDA_COLD_START_HEADER: &str = "X-KEDA-HTTP-Cold-Start";
/// Response header: milliseconds the request was held, when it was.
pub const HELD_MS_HEADER: &str = "x-rouse-held-ms";
/// Response header: `true` when the route's failover answered, its target being still cold at
/// the end of the hold.
pub const FAILOVER_HEADER: &str = "x-rouse-failover";

/// Refused connections tolerated per request before answering 502.
const MAX_CONNECT_RETRIES: usize = 3;
/// Upstream connect timeout; endpoints are on a LAN or loopback, so this is generous.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The data plane's request handler. Stateless itself: all state lives in [`ProxyState`].
pub struct Forwarder {
    pub state: Arc<ProxyState>,
    /// Event Grid / CloudEvents webhooks on this listener and the guard of their delivery
    /// paths, if configured (replaced whole on Kubernetes when EventSubscriptions change).
    pub events: Arc<GatewaySlot>,
    /// A write to the client blocked this long ends the request, so a client that never reads
    /// cannot keep its endpoint slot (`proxy.connections.send_timeout_secs`).
    pub send_timeout: Duration,
}

/// Per-request state carried across pingora's phases.
pub struct RequestCtx {
    /// Counts the request as active until the context drops (a drain waits for it).
    _active: ActiveRequest,
    /// When the request's context was made (its head had arrived): a failover answer reports
    /// the time held from here.
    arrived: Instant,
    /// End of the hold, fixed when the route is known so connect retries cannot extend it.
    deadline: Option<Instant>,
    route: Option<Arc<RouteState>>,
    host: String,
    /// Origin-form path to send upstream (normalised, rewritten).
    upstream_path: Option<String>,
    /// Head size + declared body: what the hold budget counts.
    bytes: u64,
    slot: Option<EndpointSlot>,
    waited: Option<Duration>,
    reason: Option<Reason>,
    /// A gateway delivery: its token header is removed before forwarding.
    delivery: bool,
    refused: Vec<SocketAddr>,
    forwarded_at: Option<Instant>,
    /// The endpoint the request was last sent to (the access log's `upstream`).
    upstream: Option<SocketAddr>,
    /// Forwarded to the route's failover: why the hold gave up on the target.
    failover: Option<Reason>,
    /// Added to the error body's `detail` (why the failover could not take the request).
    detail: Option<String>,
    /// A static route's request forwarded to a running target: not demand, never held.
    uncounted: bool,
    /// The outcome of the hold of a request parked before the engine: taken by
    /// `upstream_peer` instead of holding it again.
    parked: Option<std::result::Result<Acquired, Reason>>,
}

impl RequestCtx {
    fn route_name(&self) -> Option<&str> {
        self.route.as_ref().map(|r| r.route.name.as_str())
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    match session.client_addr() {
        Some(PSocketAddr::Inet(addr)) => Some(addr.ip()),
        _ => None,
    }
}

/// The authority the request names: the absolute-form URI's (RFC 9112 §3.2.2: it wins over
/// `Host`), the h2 `:authority`, or the `Host` header.
fn request_host(req: &RequestHeader) -> Option<String> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str().to_string());
    }
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Bytes the request commits the proxy to carry: its head plus the declared body. Runs on every
/// request, so it measures without allocating.
fn committed_bytes(req: &RequestHeader) -> u64 {
    let target = req.raw_path().len() + req.uri.authority().map_or(0, |a| a.as_str().len());
    let head: usize = target
        + req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let body = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    (head as u64).saturating_add(body)
}

/// Whether the client already reset this h2 stream (HEADERS then RST_STREAM: "rapid reset").
/// Checked without waiting before a request is sent to the app, so a stream the client gave up
/// on never costs the app anything. HTTP/1 has no such signal short of a close, which the hold
/// watches for.
fn reset_by_client(session: &mut Session) -> bool {
    use futures::FutureExt;
    session.downstream_session.is_http2()
        && matches!(
            session
                .downstream_session
                .read_body_or_idle(true)
                .now_or_never(),
            Some(Err(_))
        )
}

/// The outcome of the hold of a request parked before the engine, attached to its connection
/// ([`FrontStream::set_handoff`]); `None` for any other request (h2, TLS, not parked).
fn take_handoff(session: &Session) -> Option<Box<Handoff>> {
    // Through the box: `Box<dyn IO>` is itself an `IO`, whose `as_any` would name the box.
    let stream: &dyn pingora_core::protocols::IO = &**session.downstream_session.stream()?;
    stream
        .as_any()
        .downcast_ref::<FrontStream>()?
        .take_handoff()
}

/// Ends a request whose client is gone: nothing is written, `client_closed` is counted.
fn client_closed(ctx: &mut RequestCtx) -> Box<Error> {
    ctx.reason = Some(Reason::ClientClosed);
    Error::explain(
        ErrorType::HTTPStatus(Reason::ClientClosed.status()),
        Reason::ClientClosed.as_str(),
    )
}

impl Forwarder {
    /// A slot on one of the route's failover endpoints for a request whose hold ended with
    /// `reason`, or that answer (504 or 503) with a detail naming why the failover could not
    /// take it.
    fn take_failover(
        &self,
        route: &RouteState,
        ctx: &mut RequestCtx,
        reason: Reason,
    ) -> Result<EndpointSlot> {
        match failover_slot(route, &ctx.refused) {
            Ok(slot) => {
                if ctx.failover.is_none() {
                    tracing::debug!(
                        route = %route.route.name,
                        held_ms = ctx.arrived.elapsed().as_millis() as u64,
                        reason = reason.as_str(),
                        "Target still cold: forwarding to the failover."
                    );
                }
                ctx.failover = Some(reason);
                ctx.waited = Some(ctx.arrived.elapsed());
                Ok(slot)
            }
            Err(why) => {
                ctx.reason = Some(reason);
                ctx.detail = Some(why);
                Err(Error::explain(
                    ErrorType::HTTPStatus(reason.status()),
                    reason.as_str(),
                ))
            }
        }
    }

    /// Holds the request until it has a slot on `route`'s target (see [`acquire`]) or the hold
    /// ends. A held request whose client hangs up is dropped from the queue at once: it must
    /// not keep a slot, nor be forwarded to the app once it wakes. Only for bodyless requests,
    /// where any downstream activity can only be the client going away.
    async fn hold(
        &self,
        session: &mut Session,
        route: &RouteState,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Acquired, Reason> {
        let deadline = *ctx
            .deadline
            .get_or_insert_with(|| Instant::now() + route.route.limits.hold_timeout);
        let watch_client = session.is_body_empty() && !session.is_upgrade_req();
        session.set_abort_on_close(watch_client);
        let acquisition = acquire(&self.state, route, ctx.bytes, &ctx.refused, deadline);
        let outcome = if watch_client {
            tokio::select! {
                // Acquisition first: on the fast path it is ready at once and the socket is
                // never polled.
                biased;
                r = acquisition => r,
                _ = session.downstream_session.read_body_or_idle(true) => Err(Reason::ClientClosed),
            }
        } else {
            acquisition.await
        };
        session.set_abort_on_close(false);
        outcome
    }

    /// The pingora peer for `slot`'s endpoint; the slot is kept in the context until the
    /// request ends.
    fn peer_for(
        &self,
        route: &RouteState,
        ctx: &mut RequestCtx,
        slot: EndpointSlot,
    ) -> Box<HttpPeer> {
        let addr = slot.endpoint.addr;
        // What the platform knows of the endpoint (a Service port's `appProtocol`) wins over
        // the route's default.
        let protocol = slot
            .endpoint
            .protocol
            .unwrap_or(route.route.upstream_protocol);
        ctx.slot = Some(slot);
        ctx.upstream = Some(addr);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        if protocol == UpstreamProtocol::H2c {
            peer.options.set_http_version(2, 2);
        }
        ctx.forwarded_at = Some(Instant::now());
        Box::new(peer)
    }
}

#[async_trait]
impl ProxyHttp for Forwarder {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _active: self.state.active_request(),
            arrived: Instant::now(),
            deadline: None,
            route: None,
            host: String::new(),
            upstream_path: None,
            bytes: 0,
            slot: None,
            waited: None,
            reason: None,
            delivery: false,
            refused: Vec::new(),
            forwarded_at: None,
            upstream: None,
            failover: None,
            detail: None,
            uncounted: false,
            parked: None,
        }
    }

    /// How pingora's error and warning lines name the request: the path *without* the query,
    /// where keys travel (`/webhooks/x?code=…`, Azure Functions' `?code=…`).
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!(
            "{} {}, Host: {}",
            req.method,
            req.uri.path(),
            request_host(req).as_deref().unwrap_or("-")
        )
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        session
            .downstream_session
            .set_write_timeout(Some(self.send_timeout));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Taken first, so that whatever happens below it never outlives this request.
        let handoff = take_handoff(session);
        let snapshot = self.state.snapshot();
        let req = session.req_header();
        let host = request_host(req);
        let raw = req.uri.path_and_query().map_or("/", |p| p.as_str());
        // A guard, not a clone: no reference count is touched on the common path. It is let go
        // before the webhook is served and once the route is decided.
        let events = self.events.load();
        let decision = routing::decide(
            &snapshot,
            events.as_deref(),
            host.as_deref(),
            raw,
            &headers::Routing(&req.headers),
        );
        let routed = match decision {
            Decision::Route(routed) => routed,
            Decision::Webhook(sub) => {
                let gateway = events.as_ref().map(|ev| ev.gateway.clone());
                drop(events);
                if let Some(gateway) = gateway {
                    webhook::serve(session, &gateway, &sub).await?;
                }
                return Ok(true);
            }
            Decision::NoHost => {
                drop(events);
                ctx.reason = Some(Reason::BadRequest);
                write_error(session, None, Reason::BadRequest, None, 0, None).await?;
                return Ok(true);
            }
            Decision::NoRoute => {
                drop(events);
                ctx.reason = Some(Reason::NoRoute);
                ctx.host = host.unwrap_or_default();
                write_error(session, None, Reason::NoRoute, Some(&ctx.host), 0, None).await?;
                return Ok(true);
            }
            Decision::DeliveryRefused { route_name, route } => {
                drop(events);
                let reason = Reason::DeliveryPathReserved;
                ctx.reason = Some(reason);
                // Counted under its route (metrics), never forwarded nor counted as demand.
                ctx.route = route.cloned();
                write_error(session, Some(route_name), reason, None, 0, None).await?;
                return Ok(true);
            }
        };
        drop(events);
        let route = routed.route.clone();
        let host = host.unwrap_or_default();
        if let Some(answer) = &route.route.limits.static_answer {
            // Never counted nor woken: a probe must not start (or keep up) the target.
            if answer.answers(!route.target.endpoints().is_empty()) {
                ctx.host = host;
                let retry_after = route.route.limits.retry_after_secs;
                ctx.route = Some(route.clone());
                write_placeholder(
                    session,
                    &answer.response,
                    &answer.response.body,
                    retry_after,
                )
                .await?;
                return Ok(true);
            }
            ctx.uncounted = true;
        }
        let req = session.req_header();
        if route.route.limits.placeholder.is_some() {
            let endpoints = route.target.endpoints();
            let html = req
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(rouse_core::route::prefers_html);
            let view = ColdView {
                ready: !endpoints.is_empty(),
                unavailable: endpoints.is_empty() && route.target.unavailable().is_some(),
                delivery: routed.delivery,
                html,
            };
            if let Some(p) = cold::placeholder_for(&route.route.limits, view) {
                // Counted and woken like a held request, answered at once.
                route.target.demand.request_started();
                claim_wake(
                    &route.target,
                    &route.wake_claim,
                    route.route.limits.hold_timeout,
                );
                ctx.host = host;
                let retry_after = route.route.limits.retry_after_secs;
                let body = p.render(&route.route.name, route.wake_claim.elapsed());
                ctx.route = Some(route.clone());
                write_placeholder(session, p, &body, retry_after).await?;
                return Ok(true);
            }
        }
        ctx.delivery = routed.delivery;
        ctx.bytes = committed_bytes(req);
        // pingora keeps an absolute-form target only in the raw path: always send origin-form.
        let raw = req.uri.path_and_query().map_or("/", |p| p.as_str());
        if routed.upstream_path != raw || !req.raw_path().starts_with(b"/") {
            ctx.upstream_path = Some(routed.upstream_path);
        }
        ctx.host = host;
        // A parked request was counted, and its hold run, on this very target; if the routes
        // changed under it meanwhile, its outcome is dropped (a slot goes back) and it is
        // treated as new.
        let parked = handoff.filter(|h| {
            h.route.route.name == route.route.name && Arc::ptr_eq(&h.route.target, &route.target)
        });
        match parked {
            Some(h) => {
                ctx.arrived = h.arrived;
                ctx.deadline = Some(h.deadline);
                let Handoff { outcome, .. } = *h;
                ctx.parked = Some(outcome);
            }
            None => {
                ctx.deadline = Some(Instant::now() + route.route.limits.hold_timeout);
                if !ctx.uncounted {
                    route.target.demand.request_started();
                }
            }
        }
        ctx.route = Some(route);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx.route.clone().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "upstream_peer without a route")
        })?;
        if reset_by_client(session) {
            return Err(client_closed(ctx));
        }
        // A retry gives back the slot of the endpoint that refused before taking another.
        ctx.slot = None;
        if let Some(reason) = ctx.failover {
            // A failover endpoint refused: another one, never the hold again.
            let slot = self.take_failover(&route, ctx, reason)?;
            return Ok(self.peer_for(&route, ctx, slot));
        }
        if ctx.uncounted {
            // A static route's request: forwarded while the target runs, answered (503) if it
            // just lost its last endpoint; never held, so never a wake.
            return match static_slot(&route, &ctx.refused) {
                Some(slot) => Ok(self.peer_for(&route, ctx, slot)),
                None => {
                    ctx.reason = Some(Reason::NoEndpoint);
                    Err(Error::explain(
                        ErrorType::HTTPStatus(Reason::NoEndpoint.status()),
                        Reason::NoEndpoint.as_str(),
                    ))
                }
            };
        }
        let outcome = match ctx.parked.take() {
            Some(outcome) => outcome,
            None => self.hold(session, &route, ctx).await,
        };
        let acquired = match outcome {
            Ok(a) => a,
            Err(reason) => match cold::after_hold(&route.route.limits, reason, ctx.delivery) {
                AfterHold::Failover => {
                    let slot = self.take_failover(&route, ctx, reason)?;
                    return Ok(self.peer_for(&route, ctx, slot));
                }
                AfterHold::Answer(reason) => {
                    ctx.reason = Some(reason);
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(reason.status()),
                        reason.as_str(),
                    ));
                }
            },
        };
        if acquired.waited.is_some() && reset_by_client(session) {
            // Reset while held (its body was not watched): the slot goes back with `acquired`.
            return Err(client_closed(ctx));
        }
        if let Some(waited) = acquired.waited {
            route.metrics.cold_starts.inc();
            self.state
                .metrics
                .cold_start_wait
                .with_label_values(&[route.route.name.as_str()])
                .observe(waited.as_secs_f64());
            *ctx.waited.get_or_insert(Duration::ZERO) += waited;
        }
        if let Some(d) = acquired.since_ready {
            tracing::debug!(
                route = %route.route.name,
                waited_us = acquired.waited.map_or(0, |w| w.as_micros() as u64),
                since_ready_us = d.as_micros() as u64,
                "Held request released."
            );
            self.state
                .metrics
                .ready_to_forward
                .with_label_values(&[route.route.name.as_str()])
                .observe(d.as_secs_f64());
        }
        Ok(self.peer_for(&route, ctx, acquired.slot))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // The endpoint died between readiness and this connect (crash, scale-in). Nothing was
        // sent, so retrying on another endpoint, or holding until one is ready, is safe for any
        // method.
        if let Some(slot) = ctx.slot.take() {
            tracing::debug!(
                route = ctx.route_name().unwrap_or("-"),
                endpoint = %slot.endpoint.addr,
                attempt = ctx.refused.len() + 1,
                error = %e,
                "Endpoint refused the connection; trying another."
            );
            ctx.refused.push(slot.endpoint.addr);
        }
        if ctx.refused.len() <= MAX_CONNECT_RETRIES {
            e.set_retry(true);
        } else {
            ctx.reason = Some(Reason::UpstreamUnreachable);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.delivery {
            upstream.remove_header(DELIVERY_TOKEN_HEADER);
        }
        if let Some(path) = ctx.upstream_path.as_deref() {
            let uri = http::Uri::try_from(path)
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "rewritten path", e))?;
            upstream.set_uri(uri);
        }
        let inbound = headers::Inbound {
            client: client_ip(session),
            proto: if is_tls(session) { "https" } else { "http" },
            host: &ctx.host,
            upgrade: session.is_upgrade_req(),
        };
        headers::prepare_upstream(upstream, &inbound)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        headers::strip_response_hop_by_hop(upstream);
        let cold = if ctx.waited.is_some() {
            "true"
        } else {
            "false"
        };
        upstream.insert_header(COLD_START_HEADER, cold)?;
        upstream.insert_header(KEDA_COLD_START_HEADER, cold)?;
        if let Some(w) = ctx.waited {
            upstream.insert_header(HELD_MS_HEADER, w.as_millis().to_string())?;
        }
        if ctx.failover.is_some() {
            upstream.insert_header(FAILOVER_HEADER, "true")?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let reason = match (ctx.reason, e.esource()) {
            (Some(r), _) => r,
            (None, ErrorSource::Downstream) => match e.etype() {
                // The client went away: nothing to write to.
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    };
                }
                _ => Reason::BadRequest,
            },
            (None, _) => match e.etype() {
                ErrorType::ConnectRefused
                | ErrorType::ConnectTimedout
                | ErrorType::ConnectError => Reason::UpstreamUnreachable,
                _ => Reason::UpstreamError,
            },
        };
        ctx.reason = Some(reason);
        if reason == Reason::ClientClosed {
            return FailToProxy {
                error_code: reason.status(),
                can_reuse_downstream: false,
            };
        }
        if session.response_written().is_some() {
            // Headers already went out: the only honest signal left is closing the stream.
            return FailToProxy {
                error_code: reason.status(),
                can_reuse_downstream: false,
            };
        }
        let retry_after = ctx
            .route
            .as_ref()
            .map_or(1, |r| r.route.limits.retry_after_secs);
        let route = ctx.route.as_ref().map(|r| r.route.name.clone());
        let unavailable = match reason {
            Reason::TargetUnavailable => ctx.route.as_ref().and_then(|r| r.target.unavailable()),
            _ => None,
        };
        let detail = match (unavailable, ctx.detail.take()) {
            (Some(why), Some(failover)) => Some(format!("{why}; {failover}")),
            (Some(why), None) => Some(why.to_string()),
            (None, failover) => failover,
        };
        // This connection is not reused (see below): say so, so clients do not send the next
        // request on a socket about to close.
        session.set_keepalive(None);
        if let Err(err) = write_error(
            session,
            route.as_deref(),
            reason,
            None,
            retry_after,
            detail.as_deref(),
        )
        .await
        {
            tracing::debug!(error = %err, "Error response not delivered.");
        }
        FailToProxy {
            error_code: reason.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let route = ctx.route_name().unwrap_or("-");
        let m = &self.state.metrics;
        let status = session.response_written().map(|r| r.status);
        m.request_finished(
            route,
            status.as_ref().map_or("000", |s| s.as_str()),
            ctx.reason,
        );
        if let Some(at) = ctx.forwarded_at {
            m.upstream_duration
                .with_label_values(&[route])
                .observe(at.elapsed().as_secs_f64());
        }
        if let Some(log) = self.state.access_log() {
            let req = session.req_header();
            log.record(Entry {
                at: SystemTime::now(),
                route: ctx.route.clone(),
                method: req.method.clone(),
                path: req.uri.path().to_string(),
                status,
                duration: ctx.arrived.elapsed(),
                held: ctx.waited,
                upstream: ctx.upstream,
                failover: ctx.failover.is_some(),
                reason: ctx.reason,
            });
        }
        // Return the endpoint slot now rather than whenever pingora drops the context.
        ctx.slot = None;
    }
}
