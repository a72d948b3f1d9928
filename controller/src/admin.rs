//! The controller's admin listener: `/livez`, `/readyz`, `/metrics`, `/proxies` (replicas and
//! whether their demand stream is connected), `/demand?target=ns/name` (the summed input) and
//! `/status` (every target, for `rouse status`: [`crate::status`]).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, IntGaugeVec, Registry, TextEncoder};
use serde_json::json;

use crate::demand::Aggregate;
use crate::status::ScalerSlot;

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn handle(
    registry: &Registry,
    connected: Option<&IntGaugeVec>,
    aggregate: &Aggregate,
    scaler: &ScalerSlot,
    path: &str,
    query: &str,
) -> Response<Full<Bytes>> {
    let json_body = |v: serde_json::Value| {
        respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec_pretty(&v).unwrap_or_default(),
        )
    };
    match path {
        "/livez" | "/readyz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        "/metrics" => {
            // Per proxy replica: whether its demand stream is connected, read now (a replica
            // that stopped reporting reads 0; one that is gone drops out).
            if let Some(connected) = connected {
                connected.reset();
                for (addr, name, up) in aggregate.proxies() {
                    let label = name.unwrap_or_else(|| addr.to_string());
                    connected.with_label_values(&[&label]).set(i64::from(up));
                }
            }
            let mut out = Vec::new();
            let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
            respond(StatusCode::OK, "text/plain; version=0.0.4", out)
        }
        "/proxies" => json_body(json!({
            "proxies": aggregate.proxies().into_iter().map(|(addr, name, connected)| json!({
                "addr": addr.to_string(), "name": name, "connected": connected,
            })).collect::<Vec<_>>()
        })),
        "/status" => json_body(
            serde_json::to_value(crate::status::document(
                aggregate,
                scaler.get().map(|s| s.as_ref()),
            ))
            .unwrap_or_default(),
        ),
        "/demand" => {
            let target = form_urlencoded::parse(query.as_bytes())
                .find_map(|(k, v)| (k == "target").then(|| v.into_owned()))
                .unwrap_or_default();
            let o = aggregate.observe(&target);
            json_body(json!({
                "target": target,
                "held": o.held,
                "in_flight": o.in_flight,
                "requests_total": o.requests_total,
                "idle_ms": o.last_activity.map(|t| t.elapsed().as_millis() as u64),
            }))
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "application/json",
            br#"{"reason":"not_found","paths":["/livez","/readyz","/metrics","/proxies","/demand","/status"]}"#.to_vec(),
        ),
    }
}

/// Serves until the process exits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    aggregate: Arc<Aggregate>,
    scaler: ScalerSlot,
) {
    let connected = rouse_core::metrics::gauge_vec(
        &registry,
        "rouse_controller_proxy_connected",
        "1 while the demand stream of this proxy replica is connected, 0 when it stopped reporting.",
        &["proxy"],
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (registry, aggregate, scaler) = (registry.clone(), aggregate.clone(), scaler.clone());
        let connected = connected.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = handle(
                    &registry,
                    Some(&connected),
                    &aggregate,
                    &scaler,
                    req.uri().path(),
                    req.uri().query().unwrap_or(""),
                );
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
