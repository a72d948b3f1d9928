//! Generates the KEDA external scaler gRPC service (`externalscaler.ExternalScaler`, KEDA's
//! `pkg/scalers/externalscaler/externalscaler.proto`) with tonic's manual builder: the messages
//! are hand-written prost structs in `src/external_scaler.rs`, so the build needs no
//! `protoc`.

fn main() {
    let method = |name: &str, route: &str, input: &str, output: &str, streaming: bool| {
        let b = tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::external_scaler::proto::{input}"))
            .output_type(format!("crate::external_scaler::proto::{output}"))
            .codec_path("tonic_prost::ProstCodec");
        if streaming {
            b.server_streaming().build()
        } else {
            b.build()
        }
    };
    let service = tonic_build::manual::Service::builder()
        .name("ExternalScaler")
        .package("externalscaler")
        .method(method(
            "is_active",
            "IsActive",
            "ScaledObjectRef",
            "IsActiveResponse",
            false,
        ))
        .method(method(
            "stream_is_active",
            "StreamIsActive",
            "ScaledObjectRef",
            "IsActiveResponse",
            true,
        ))
        .method(method(
            "get_metric_spec",
            "GetMetricSpec",
            "ScaledObjectRef",
            "GetMetricSpecResponse",
            false,
        ))
        .method(method(
            "get_metrics",
            "GetMetrics",
            "GetMetricsRequest",
            "GetMetricsResponse",
            false,
        ))
        .build();
    tonic_build::manual::Builder::new()
        .build_transport(false)
        .compile(&[service]);
}
