//! What a request gets from Rouse on Kubernetes while its HTTPScaledObject's target is cold,
//! besides being held: `spec.rouse.placeholder` (answered at once, the Deployment scaled up all
//! the same) and KEDA's `coldStartTimeoutFailoverRef` (a second Service answers once
//! `timeoutSeconds` pass without a ready pod). Real control plane, `rouse kubernetes` and
//! `rouse-controller` under their own ServiceAccounts, pods run by KWOK.

mod k8s;

use std::time::Duration;

use k8s::{Env, Resp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use rouse_testcluster::wait_until;
use serde_json::json;

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_object_answers_with_its_placeholder_at_once_and_its_deployment_is_scaled_up() {
    let mut env = Env::new("placeholder").await;
    env.start_proxy().await;
    env.start_controller().await;
    // Pods take 3 s to become ready: a request that waited for one could not be back sooner.
    env.app(
        "page",
        "page.test",
        "3s",
        json!({"rouse": {"placeholder": {"body": "<p>starting</p>", "headers": {"Refresh": "1"}}}}),
    )
    .await;
    env.wait_routed("page.test").await;

    let r = env.request(0, "page.test", "/").await.expect("answered");
    assert_eq!(r.status, 503, "{}\n{}", r.body, env.logs());
    assert_eq!(r.body, "<p>starting</p>");
    assert_eq!(header(&r, "x-rouse-placeholder"), Some("true"));
    assert_eq!(header(&r, "refresh"), Some("1"));
    assert_eq!(header(&r, "retry-after"), Some("1"), "503 gets Retry-After");
    assert_eq!(header(&r, "content-type"), Some("text/html; charset=utf-8"));

    // That request alone was the wake: the Deployment is scaled up and its pod starts serving.
    env.wait_replicas(
        "page",
        "scaled up by a placeholder's request",
        Duration::from_secs(30),
        |n| n >= 1,
    )
    .await;
    // The controller logs its scale-up after the write the test just saw: wait for the line.
    wait_until("the wake logged", Duration::from_secs(10), || async {
        env.controllers[0].proc.count("reason=\"wake\"") >= 1
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    assert_eq!(
        env.controllers[0].proc.count("reason=\"wake\""),
        1,
        "{}",
        env.logs()
    );
    let served = std::sync::Mutex::new(None);
    wait_until("a pod answers", Duration::from_secs(30), || async {
        match env.request(0, "page.test", "/").await {
            Ok(r) if r.status == 200 => {
                *served.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                true
            }
            _ => false,
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    let warm = served
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .expect("answer");
    assert!(warm.body.starts_with("page-"), "from a pod: {}", warm.body);
    assert_eq!(header(&warm, "x-rouse-placeholder"), None);
    assert_eq!(header(&warm, "x-keda-http-cold-start"), Some("false"));
}

/// An always-on Deployment (`replicas` pods, ready at once) behind a Service of the same name:
/// what a failover Service is in a cluster.
async fn always_on(env: &Env, name: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    deployments
        .patch(name, &PatchParams::apply("rouse-e2e").force(), &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                                             "ports": [{"name": "http", "containerPort": 8080}]}]}
                }
            }
        })))
        .await
        .unwrap_or_else(|e| panic!("deployment {name}: {e}"));
    env.service(name).await;
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), &env.ns);
    let selector = format!("kubernetes.io/service-name={name}");
    wait_until(
        &format!("{name} has a ready endpoint"),
        Duration::from_secs(30),
        || {
            let (slices, selector) = (slices.clone(), selector.clone());
            async move {
                slices
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .is_ok_and(|l| {
                        l.items.iter().any(|s| {
                            s.endpoints
                                .iter()
                                .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                        })
                    })
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_slower_than_timeout_seconds_is_failed_over_to_the_second_service() {
    let mut env = Env::new("failover").await;
    env.start_proxy().await;
    env.start_controller().await;
    always_on(&env, "fallback", 1).await;
    // The target's pods need a minute: far beyond the 1 s timeoutSeconds.
    env.app(
        "late",
        "late.test",
        "60s",
        json!({"coldStartTimeoutFailoverRef": {"service": "fallback", "port": 80, "timeoutSeconds": 1}}),
    )
    .await;
    env.wait_routed("late.test").await;
    // The proxy follows the failover Service like a target (its own endpoint watch).
    let published = format!("target={}/late#failover ready=1", env.ns);
    wait_until(
        "the failover's endpoints reach the proxy",
        Duration::from_secs(20),
        || async { env.proxies[0].proc.count(&published) > 0 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));

    let held = futures::future::join_all((0..3).map(|i| {
        let env = &env;
        async move { env.request(0, "late.test", &format!("/{i}")).await }
    }))
    .await;
    for r in held {
        let r = r.expect("answered");
        assert_eq!(r.status, 200, "not a 504: {}\n{}", r.body, env.logs());
        assert!(
            r.body.starts_with("fallback-"),
            "answered by the failover's pod: {}",
            r.body
        );
        assert_eq!(header(&r, "x-rouse-failover"), Some("true"));
        assert_eq!(header(&r, "x-rouse-cold-start"), Some("true"));
        assert_eq!(header(&r, "x-keda-http-cold-start"), Some("true"));
        let held_ms: u64 = header(&r, "x-rouse-held-ms")
            .and_then(|v| v.parse().ok())
            .expect("held ms header");
        assert!(
            held_ms >= 1000,
            "failed over after {held_ms} ms, before timeoutSeconds"
        );
    }
    // The target was woken all the same: its Deployment is scaling up, its pod still starting.
    env.wait_replicas(
        "late",
        "scaled up by the held requests",
        Duration::from_secs(30),
        |n| n >= 1,
    )
    .await;
    assert_eq!(
        env.replicas("fallback").await,
        1,
        "the failover is never scaled"
    );
}

/// What the proxy speaks to a pod follows its Service port's `appProtocol`: h2c for
/// `kubernetes.io/h2c` (gRPC backends need it), HTTP/1.1 when it names none — through a cold
/// start either way. The stand-in backend serves both on every port and reports the version
/// each request reached it with. (Before, the proxy spoke HTTP/1.1 whatever the Service said.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_ports_app_protocol_makes_the_proxy_speak_h2c_to_the_pods() {
    let mut env = Env::new("protocol").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app("plain", "plain.test", "200ms", json!({})).await;
    env.app("streams", "h2c.test", "200ms", json!({})).await;
    env.service_speaking("streams", Some("kubernetes.io/h2c"))
        .await;
    env.wait_routed("plain.test").await;
    env.wait_routed("h2c.test").await;
    // Precondition: both start at zero, so each request below is held through a wake.
    assert_eq!(env.replicas("plain").await, 0);
    assert_eq!(env.replicas("streams").await, 0);

    let version = rouse_testcluster::backends::HTTP_VERSION_HEADER;
    for (host, want) in [("h2c.test", "HTTP/2.0"), ("plain.test", "HTTP/1.1")] {
        let r = env.request(0, host, "/").await.expect("answered");
        assert_eq!(r.status, 200, "{host}: {}\n{}", r.body, env.logs());
        assert_eq!(header(&r, "x-rouse-cold-start"), Some("true"), "{host}");
        assert_eq!(header(&r, version), Some(want), "{host}\n{}", env.logs());
    }
}

/// Passes a gRPC message through untouched: the test speaks gRPC framing without a schema.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A unary gRPC call (tonic's client, h2c to the proxy) to an app at zero whose Service port
/// says `appProtocol: grpc`: held through the wake, forwarded over h2c, and its trailers
/// (`grpc-status`, without which the client fails the call, and the pod's own) arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_to_an_app_at_zero_is_held_and_answered_with_its_trailers() {
    let mut env = Env::new("grpc").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app("greeter", "grpc.test", "300ms", json!({})).await;
    env.service_speaking("greeter", Some("grpc")).await;
    env.wait_routed("grpc.test").await;
    assert_eq!(env.replicas("greeter").await, 0, "precondition: cold");

    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", env.proxies[0].listen))
            .expect("endpoint")
            .origin("http://grpc.test".parse().expect("origin"))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .expect("h2c connection to the proxy");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let answer = grpc
        .unary(
            tonic::Request::new(bytes::Bytes::from_static(b"hello")),
            http::uri::PathAndQuery::from_static("/rouse.test.Greeter/SayHello"),
            RawCodec,
        )
        .await
        .unwrap_or_else(|status| panic!("gRPC call failed: {status:?}\n{}", env.logs()));
    let pod = String::from_utf8_lossy(answer.get_ref()).into_owned();
    assert!(
        pod.starts_with("greeter-"),
        "the message names the pod: {pod:?}"
    );
    let metadata = answer.metadata();
    let get = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok());
    assert_eq!(get("x-rouse-cold-start"), Some("true"), "{metadata:?}");
    assert_eq!(
        get("x-backend-http-version"),
        Some("HTTP/2.0"),
        "{metadata:?}"
    );
    // Only sent as a trailer (tonic merges a unary call's trailers into its metadata);
    // `grpc-status` too, and the call would have failed without it.
    assert_eq!(get("x-backend-trailer"), Some(pod.as_str()), "{metadata:?}");
    assert!(env.replicas("greeter").await >= 1);
}
