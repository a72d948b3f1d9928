//! KEDA's external-push scaler API (`externalscaler.ExternalScaler`), for clusters where KEDA
//! owns the HPA: a KEDA `ScaledObject` with an `external-push` trigger pointing here gets
//! activation (`IsActive`, pushed by `StreamIsActive` the moment a request is held) and the
//! summed pending count (`GetMetrics`) from the same demand the controller scales on.
//!
//! A `ScaledObjectRef` names its target by `scalerMetadata.interceptorRoute` (KEDA HTTP Add-on
//! v0.14+, for an InterceptorRoute of either API group), `scalerMetadata.httpScaledObject` (its
//! older key) or, without them, by the ScaledObject's own name, in its namespace. All three
//! kinds share one key space (`namespace/name`), so the key alone finds the demand. An
//! InterceptorRoute's metric is named as KEDA names it (`http_<name>_concurrency`).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tonic::{Request, Response, Status};

use crate::demand::Aggregate;
use rouse_scale::Metric;

/// The messages of KEDA's `externalscaler.proto`, field numbers as there.
pub mod proto {
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScaledObjectRef {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub namespace: String,
        #[prost(map = "string, string", tag = "3")]
        pub scaler_metadata: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IsActiveResponse {
        #[prost(bool, tag = "1")]
        pub result: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetMetricSpecResponse {
        #[prost(message, repeated, tag = "1")]
        pub metric_specs: Vec<MetricSpec>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricSpec {
        #[prost(string, tag = "1")]
        pub metric_name: String,
        #[prost(int64, tag = "2")]
        pub target_size: i64,
        #[prost(double, tag = "3")]
        pub target_size_float: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetMetricsRequest {
        #[prost(message, optional, tag = "1")]
        pub scaled_object_ref: Option<ScaledObjectRef>,
        #[prost(string, tag = "2")]
        pub metric_name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetMetricsResponse {
        #[prost(message, repeated, tag = "1")]
        pub metric_values: Vec<MetricValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricValue {
        #[prost(string, tag = "1")]
        pub metric_name: String,
        #[prost(int64, tag = "2")]
        pub metric_value: i64,
        #[prost(double, tag = "3")]
        pub metric_value_float: f64,
    }

    include!(concat!(
        env!("OUT_DIR"),
        "/externalscaler.ExternalScaler.rs"
    ));
}

use proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use proto::*;

/// How often `StreamIsActive` re-checks between wakes (KEDA HTTP Add-on: 200 ms).
const STREAM_CHECK: Duration = Duration::from_millis(200);

/// `scalerMetadata` key naming an InterceptorRoute (KEDA HTTP Add-on v0.14+).
pub const INTERCEPTOR_ROUTE_KEY: &str = "interceptorRoute";
/// `scalerMetadata` key naming an HTTPScaledObject (KEDA HTTP Add-on before v0.14).
pub const HTTP_SCALED_OBJECT_KEY: &str = "httpScaledObject";

/// The InterceptorRoute a reference names, if it names one.
fn interceptor_route(r: &ScaledObjectRef) -> Option<&str> {
    r.scaler_metadata
        .get(INTERCEPTOR_ROUTE_KEY)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// The target key (`namespace/name`) a reference means.
pub fn target_of(r: &ScaledObjectRef) -> Result<String, Status> {
    let name = interceptor_route(r)
        .or_else(|| {
            r.scaler_metadata
                .get(HTTP_SCALED_OBJECT_KEY)
                .map(String::as_str)
                .filter(|n| !n.is_empty())
        })
        .unwrap_or(&r.name);
    if name.is_empty() || r.namespace.is_empty() {
        return Err(Status::invalid_argument(
            "ScaledObjectRef needs a namespace and a name (or scalerMetadata.interceptorRoute \
             or scalerMetadata.httpScaledObject)",
        ));
    }
    Ok(format!("{}/{name}", r.namespace))
}

/// The metric a reference gets: KEDA's InterceptorRoute name (`http_<name>_concurrency`) when
/// it names an InterceptorRoute, else the HTTPScaledObject one ([`metric_name`]).
fn metric_for(r: &ScaledObjectRef, target: &str) -> String {
    match interceptor_route(r) {
        Some(name) => format!("http_{name}_concurrency"),
        None => metric_name(target),
    }
}

/// KEDA HTTP Add-on's metric name for an object: `http-<ns>/<name>` with every character
/// outside `[-.0-9A-Za-z]` written as `_XXXX` (hex code point).
pub fn metric_name(target: &str) -> String {
    let mut out = String::from("http-");
    for c in target.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            out.push(c);
        } else {
            out.push_str(&format!("_{:04X}", u32::from(c)));
        }
    }
    out
}

/// The gRPC service over the controller's demand aggregate.
pub struct Service {
    aggregate: Arc<Aggregate>,
}

impl Service {
    fn pending(&self, target: &str) -> u64 {
        let o = self.aggregate.observe(target);
        o.held + o.in_flight
    }

    /// The concurrency target of `target`: this API serves concurrency (held + in flight), so
    /// an object scaling on request rate is refused rather than given a wrong number.
    fn concurrency_target(&self, target: &str) -> Result<f64, Status> {
        match self.aggregate.target(target) {
            Some(Metric::Concurrency { target }) => Ok(target),
            Some(Metric::RequestRate { .. }) => Err(Status::failed_precondition(format!(
                "{target} scales on requestRate; the external-push API serves concurrency \
                 (held + in-flight requests): use scalingMetric.concurrency"
            ))),
            None => Err(Status::not_found(format!(
                "no valid HTTPScaledObject or InterceptorRoute {target} (missing, or its spec is \
                 invalid: see its status)"
            ))),
        }
    }
}

type ActiveStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for Service {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let target = target_of(request.get_ref())?;
        Ok(Response::new(IsActiveResponse {
            result: self.pending(&target) > 0,
        }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<ActiveStream>, Status> {
        let target = target_of(request.get_ref())?;
        let aggregate = self.aggregate.clone();
        let wakes = aggregate.subscribe_wakes();
        // First message at once; then whenever activity flips (a wake pushes `true` at once).
        let stream = futures::stream::unfold(
            (aggregate, target, wakes, None::<bool>),
            |(aggregate, target, mut wakes, last)| async move {
                loop {
                    let o = aggregate.observe(&target);
                    let active = o.held + o.in_flight > 0;
                    if last != Some(active) {
                        let msg = Ok(IsActiveResponse { result: active });
                        return Some((msg, (aggregate, target, wakes, Some(active))));
                    }
                    tokio::select! {
                        w = wakes.recv() => match w {
                            Ok(t) if t == target => {
                                let msg = Ok(IsActiveResponse { result: true });
                                return Some((msg, (aggregate, target, wakes, Some(true))));
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                            _ => {}
                        },
                        () = tokio::time::sleep(STREAM_CHECK) => {}
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let target = target_of(request.get_ref())?;
        let size = self.concurrency_target(&target)?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: metric_for(request.get_ref(), &target),
                target_size: size.ceil() as i64,
                target_size_float: size,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let r = request.get_ref();
        let object = r
            .scaled_object_ref
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("scaledObjectRef is required"))?;
        let target = target_of(object)?;
        self.concurrency_target(&target)?;
        let name = metric_for(object, &target);
        if !r.metric_name.is_empty() && r.metric_name != name {
            return Err(Status::not_found(format!(
                "no metric {:?} for {target} (it has {name:?})",
                r.metric_name
            )));
        }
        let pending = self.pending(&target);
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: name,
                metric_value: i64::try_from(pending).unwrap_or(i64::MAX),
                metric_value_float: pending as f64,
            }],
        }))
    }
}

/// Serves the API (HTTP/2 cleartext, as KEDA dials it) until the process exits.
pub async fn serve(listener: tokio::net::TcpListener, aggregate: Arc<Aggregate>) {
    let service = ExternalScalerServer::new(Service { aggregate });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .http2_only()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "External scaler connection ended with an error.");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ns: &str, name: &str, meta: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: name.into(),
            namespace: ns.into(),
            scaler_metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn references_name_their_target() {
        assert_eq!(
            target_of(&r("apps", "so", &[])).ok().as_deref(),
            Some("apps/so")
        );
        let with_meta = r("apps", "so", &[("httpScaledObject", "web")]);
        assert_eq!(target_of(&with_meta).ok().as_deref(), Some("apps/web"));
        assert!(target_of(&r("", "so", &[])).is_err());
    }

    #[test]
    fn an_interceptor_route_trigger_names_its_route_and_gets_kedas_metric_name() {
        let ir = r(
            "apps",
            "so",
            &[("interceptorRoute", "shop"), ("httpScaledObject", "old")],
        );
        assert_eq!(target_of(&ir).ok().as_deref(), Some("apps/shop"));
        assert_eq!(metric_for(&ir, "apps/shop"), "http_shop_concurrency");
        let so = r("apps", "so", &[("httpScaledObject", "web")]);
        assert_eq!(metric_for(&so, "apps/web"), "http-apps_002Fweb");
    }

    #[test]
    fn metric_names_escape_like_keda() {
        assert_eq!(metric_name("apps/web-1.x"), "http-apps_002Fweb-1.x");
    }
}
