//! The admin listener (never the public port): `/metrics`, `/livez`, `/readyz`, `/routes`,
//! `/explain?host=&path=&header=name:value`, `/queues`, `/status` (what `rouse status` shows:
//! [`crate::status`]), and on Kubernetes `/demand/stream` (see [`crate::demand`]).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rouse_core::normalize_path;
use serde_json::json;
use tokio::net::TcpListener;

use crate::demand::DemandFeed;
use crate::state::ProxyState;

type Body = Full<Bytes>;

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

/// Parses `a=b&c=d` (`application/x-www-form-urlencoded`); repeated keys are kept in order.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Answers one admin request. Pure over `state`, so tests call it without a socket.
pub fn handle(state: &ProxyState, method: &Method, path: &str, query: &str) -> Response<Body> {
    if method != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"reason": "method_not_allowed"}),
        );
    }
    match path {
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" if !state.is_synced() => text(StatusCode::SERVICE_UNAVAILABLE, "syncing\n"),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => text(StatusCode::OK, state.metrics.render()),
        "/routes" => {
            let snap = state.snapshot();
            let routes: Vec<_> = snap
                .table
                .routes()
                .iter()
                .map(|r| json!(r.as_ref()))
                .collect();
            json_response(StatusCode::OK, &json!({ "routes": routes }))
        }
        "/status" => json_response(
            StatusCode::OK,
            &serde_json::to_value(crate::status::document(state)).unwrap_or_default(),
        ),
        "/queues" => {
            let snap = state.snapshot();
            let mut routes: Vec<_> = snap
                .routes
                .values()
                .map(|rs| {
                    let endpoints: Vec<_> = rs
                        .target
                        .endpoints()
                        .endpoints
                        .iter()
                        .map(|e| json!({"id": e.id, "addr": e.addr.to_string(), "in_flight": e.in_flight()}))
                        .collect();
                    json!({
                        "route": rs.route.name,
                        "target": rs.target.name,
                        "held": rs.held.requests(),
                        "held_bytes": rs.held.bytes(),
                        "in_flight": rs.target.demand.in_flight(),
                        "endpoints": endpoints,
                    })
                })
                .collect();
            routes.sort_by(|a, b| a["route"].as_str().cmp(&b["route"].as_str()));
            let g = state.budget.global();
            json_response(
                StatusCode::OK,
                &json!({"held": g.requests(), "held_bytes": g.bytes(), "routes": routes}),
            )
        }
        "/explain" => {
            let pairs = query_pairs(query);
            let get = |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            };
            let Some(host) = get("host") else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"reason": "missing_host", "message": "use /explain?host=H&path=/p&header=name:value"}),
                );
            };
            let raw_path = get("path").unwrap_or("/");
            let normalized = normalize_path(if raw_path.starts_with('/') {
                raw_path
            } else {
                "/"
            });
            let path = normalized.split('?').next().unwrap_or("/");
            let headers: Vec<(String, String)> = pairs
                .iter()
                .filter(|(k, _)| k == "header")
                .filter_map(|(_, v)| v.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let snap = state.snapshot();
            let m = snap.table.resolve(host, path, headers.as_slice());
            let value = match m {
                Some(m) => json!({
                    "matched": true,
                    "route": m.route.name,
                    "target": m.route.target,
                    "host_pattern": m.host.to_string(),
                    "path_prefix": m.prefix.to_string(),
                    "normalized_path": normalized,
                    "upstream_path": m.upstream_path(&normalized).unwrap_or_else(|| normalized.clone()),
                }),
                None => json!({
                    "matched": false,
                    "reason": "no_route",
                    "host_pattern": snap.table.host_pattern(host).map(|p| p.to_string()),
                    "normalized_path": normalized,
                }),
            };
            json_response(StatusCode::OK, &value)
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"reason": "not_found", "paths": ["/metrics", "/livez", "/readyz", "/routes", "/explain", "/queues", "/status"]}),
        ),
    }
}

/// `/demand/stream?interval_ms=N`: N clamped to 50..=60000, default 1000.
fn stream_interval(query: &str) -> std::time::Duration {
    let ms = query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "interval_ms")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(1000)
        .clamp(50, 60_000);
    std::time::Duration::from_millis(ms)
}

/// Serves the admin API on `listener` until the process exits. `feed` enables
/// `/demand/stream` (Kubernetes mode, where a separate controller reads it).
pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<ProxyState>,
    feed: Option<DemandFeed>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Admin listener unusable.");
            return;
        }
    };
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Admin accept failed.");
                continue;
            }
        };
        let state = state.clone();
        let feed = feed.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let query = req.uri().query().unwrap_or("");
                let resp: Response<BoxBody<Bytes, Infallible>> = match (&feed, req.uri().path()) {
                    (Some(feed), "/demand/stream") if req.method() == Method::GET => {
                        let body = feed.stream(state.clone(), stream_interval(query));
                        Response::builder()
                            .header("content-type", "application/x-ndjson")
                            .header("cache-control", "no-store")
                            .body(BodyExt::boxed(body))
                            .unwrap_or_default()
                    }
                    _ => handle(&state, req.method(), req.uri().path(), query).map(BodyExt::boxed),
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(error = %e, "Admin connection ended with an error.");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::Caps;
    use crate::telemetry::Metrics;
    use rouse_core::{HostPattern, Route, RouteLimits, UpstreamProtocol};

    fn state() -> Arc<ProxyState> {
        let s = ProxyState::new(
            Caps {
                max_requests: 10,
                max_bytes: 1000,
            },
            Metrics::new(prometheus::Registry::new()),
        );
        s.set_routes(vec![Route {
            name: "hello".into(),
            target: "hello".into(),
            hosts: vec![HostPattern::parse("hello.localhost").expect("host")],
            path_prefixes: vec![],
            headers: vec![],
            rewrite_prefix: None,
            upstream_protocol: UpstreamProtocol::Http1,
            limits: RouteLimits::default(),
        }]);
        s
    }

    #[test]
    fn explain_names_the_route() {
        let s = state();
        let r = handle(
            &s,
            &Method::GET,
            "/explain",
            "host=Hello.localhost%3A8080&path=%2Fa%2F..%2Fb",
        );
        assert_eq!(r.status(), StatusCode::OK);
        let r = handle(&s, &Method::GET, "/explain", "path=/");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn readiness_fails_while_draining() {
        let s = state();
        assert_eq!(
            handle(&s, &Method::GET, "/readyz", "").status(),
            StatusCode::OK
        );
        s.start_draining();
        assert_eq!(
            handle(&s, &Method::GET, "/readyz", "").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            handle(&s, &Method::GET, "/livez", "").status(),
            StatusCode::OK
        );
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_pairs("host=a%2Eb&header=x-a%3A1&bad=%zz&x"),
            vec![
                ("host".into(), "a.b".into()),
                ("header".into(), "x-a:1".into()),
                ("bad".into(), "%zz".into()),
                ("x".into(), String::new())
            ]
        );
    }
}
