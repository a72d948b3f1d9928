//! KEDA HTTP Add-on's `InterceptorRoute` on Rouse, on the real control plane: KEDA's documented
//! examples, applied unchanged as `http.keda.sh/v1beta1` (KEDA's own CRD, installed from the
//! pinned Go module, with `--keda-interceptor-routes`) and as `rouse.dev/v1alpha1` (only the
//! apiVersion changed), route and wake their app — scaled the KEDA way, through Rouse's
//! external scaler acting for the user's ScaledObject — and a static route answers a probe
//! without waking it. With `spec.rouse.scaleTargetRef` Rouse scales the app itself; a newer
//! HTTPScaledObject claiming its host and path gets RouteConflict; a field Rouse cannot serve
//! is refused in the object's conditions, by name.

mod k8s;

use std::time::Duration;

use k8s::{Env, Resp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use rouse_controller::external_scaler::proto::external_scaler_client::ExternalScalerClient;
use rouse_controller::external_scaler::proto::{IsActiveResponse, ScaledObjectRef};
use rouse_testcluster::wait_until;
use serde_json::json;

/// KEDA's reference example, v0.15 docs (keda.sh/http-add-on/0.15/reference/interceptorroute):
/// what KEDA's v0.15 CRD accepts.
const KEDA_015_REFERENCE: &str = "
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: my-app
  namespace: default
spec:
  target:
    service: my-app-svc
    port: 8080
  rules:
    - hosts:
        - app.example.com
      paths:
        - value: /api
  scalingMetric:
    concurrency:
      targetValue: 100
";

/// KEDA's reference example, v0.16 docs (keda.sh/http-add-on/0.16/reference/interceptorroute):
/// the v0.15 one plus a static route for a health probe.
const KEDA_016_REFERENCE: &str = "
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: my-app
  namespace: default
spec:
  target:
    service: my-app-svc
    port: 8080
  rules:
    - hosts:
        - app.example.com
      paths:
        - value: /api
  scalingMetric:
    concurrency:
      targetValue: 100
  staticRoutes:
    - rules:
        - paths:
            - value: /healthz
      response:
        statusCode: 200
        body: \"OK\"
";

/// KEDA's per-route timeouts example (keda.sh/http-add-on/0.16/user-guide/configure-timeouts),
/// its placeholders filled in.
const KEDA_TIMEOUTS: &str = "
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: my-app
spec:
  target:
    service: my-app-svc
    port: 8080
  scalingMetric:
    concurrency:
      targetValue: 100
  timeouts:
    request: 60s
    responseHeader: 30s
    readiness: 10s
";

/// KEDA's placeholder example (keda.sh/http-add-on/0.15/user-guide/configure-cold-start).
const KEDA_PLACEHOLDER: &str = "
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: my-app
spec:
  target:
    service: my-app-svc
    port: 8080
  scalingMetric:
    concurrency:
      targetValue: 100
  coldStart:
    placeholder:
      response:
        body: \"<h1>Loading...</h1>\"
        headers:
          Content-Type: text/html
          Refresh: \"5\"
        statusCode: 503
";

/// KEDA's fallback example (same page), its placeholders filled in.
const KEDA_FALLBACK: &str = "
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: my-app
spec:
  target:
    service: my-app-svc
    port: 8080
  scalingMetric:
    concurrency:
      targetValue: 100
  coldStart:
    fallback:
      service:
        name: fallback-svc
        port: 8080
  timeouts:
    readiness: 5s
";

/// Where KEDA HTTP Add-on v0.15.0's sources are (its CRD is installed from there at test time,
/// never vendored): `ROUSE_KEDA_HTTP_ADDON_DIR`, else the Go module cache.
fn keda_module_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("ROUSE_KEDA_HTTP_ADDON_DIR") {
        return dir.into();
    }
    let cache = std::env::var_os("GOMODCACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            std::path::PathBuf::from(home).join("go/pkg/mod")
        },
        std::path::PathBuf::from,
    );
    cache.join("github.com/kedacore/http-add-on@v0.15.0")
}

/// `yaml` as one object in namespace `ns` with `apiVersion` (the test's namespace replaces the
/// example's `default`; nothing else changes).
fn object(yaml: &str, api_version: &str, ns: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_yaml::from_str(yaml).expect("example parses");
    v["apiVersion"] = json!(api_version);
    v["metadata"]["namespace"] = json!(ns);
    v
}

fn resource(group: &str, version: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, "InterceptorRoute"))
}

fn rouse_routes() -> ApiResource {
    resource("rouse.dev", "v1alpha1")
}

fn keda_routes() -> ApiResource {
    resource("http.keda.sh", "v1beta1")
}

/// Server-side applies an InterceptorRoute of either group.
async fn apply(env: &Env, ar: &ApiResource, obj: &serde_json::Value) {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, ar);
    api.patch(
        &name,
        &PatchParams::apply("rouse-e2e").force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("InterceptorRoute {name}: {e}"));
}

/// Condition `type_` of InterceptorRoute `name`: (status, reason, message).
async fn condition(
    env: &Env,
    ar: &ApiResource,
    name: &str,
    type_: &str,
) -> (String, String, String) {
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, ar);
    let Ok(o) = api.get(name).await else {
        return Default::default();
    };
    o.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
        .unwrap_or_default()
}

async fn wait_condition(
    env: &Env,
    ar: &ApiResource,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> String {
    let found = std::sync::Mutex::new(String::new());
    wait_until(
        &format!("{name}: {type_}={status}/{reason}"),
        Duration::from_secs(20),
        || async {
            let c = condition(env, ar, name, type_).await;
            let ok = c.0 == status && c.1 == reason;
            *found.lock().unwrap_or_else(|p| p.into_inner()) = c.2;
            ok
        },
    )
    .await
    .unwrap_or_else(|e| {
        let c = found.lock().unwrap_or_else(|p| p.into_inner()).clone();
        panic!("{e} (message: {c})\n{}", env.logs())
    });
    found.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// The app of KEDA's examples: Deployment `my-app` at zero (pods ready after `start_delay`),
/// Service `my-app-svc` port 8080.
async fn my_app(env: &Env, start_delay: &str) {
    let pp = PatchParams::apply("rouse-e2e").force();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    deployments
        .patch("my-app", &pp, &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "my-app"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "my-app"}},
                "template": {
                    "metadata": {"labels": {"app": "my-app"},
                                 "annotations": {rouse_testcluster::START_DELAY_ANNOTATION: start_delay}},
                    "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                                             "ports": [{"name": "http", "containerPort": 8080}]}]}
                }
            }
        })))
        .await
        .expect("deployment");
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    services
        .patch(
            "my-app-svc",
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "my-app-svc"},
                "spec": {"selector": {"app": "my-app"},
                         "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}
            })),
        )
        .await
        .expect("service");
}

/// Waits until every proxy routes `host` + `path`.
async fn wait_routed(env: &Env, host: &str, path: &str) {
    for p in &env.proxies {
        let query = format!("/explain?host={host}&path={path}");
        wait_until(
            &format!("{host}{path} routed"),
            Duration::from_secs(20),
            || async {
                k8s::get(&env.http, p.admin, &query, None)
                    .await
                    .is_ok_and(|r| r.body.contains("\"matched\": true"))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    }
}

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// What KEDA does for a ScaledObject whose `external-push` trigger names InterceptorRoute
/// `route`: watch `StreamIsActive` on Rouse's controller, scale the Deployment 0 → 1 when it
/// pushes "active". Returns once the cold request sent meanwhile (by `send`) is answered.
async fn wake_through_the_external_scaler(env: &Env, route: &str, path: &str) -> Resp {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", env.controllers[0].grpc))
            .expect("endpoint")
            .connect()
            .await
            .expect("gRPC connect");
    let mut client = ExternalScalerClient::new(channel);
    let trigger = ScaledObjectRef {
        name: "my-app-so".into(),
        namespace: env.ns.clone(),
        scaler_metadata: [
            (
                "scalerAddress".to_string(),
                env.controllers[0].grpc.to_string(),
            ),
            ("interceptorRoute".to_string(), route.to_string()),
        ]
        .into(),
    };
    // The route's metric as KEDA names it, with the object's target (known once it is valid).
    let spec = std::sync::Mutex::new(None);
    wait_until(
        "GetMetricSpec answers for the route",
        Duration::from_secs(20),
        || async {
            let r = client.clone().get_metric_spec(trigger.clone()).await;
            let ok = r.is_ok();
            *spec.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.map(|r| r.into_inner()));
            ok
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}",
            spec.lock().map(|s| format!("{s:?}")),
            env.logs()
        )
    });
    let spec = spec
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .expect("spec")
        .expect("ok");
    assert_eq!(
        spec.metric_specs[0].metric_name,
        format!("http_{route}_concurrency")
    );
    assert_eq!(
        spec.metric_specs[0].target_size_float, 100.0,
        "the example's targetValue"
    );

    let mut stream = client
        .stream_is_active(trigger)
        .await
        .expect("StreamIsActive")
        .into_inner();
    let first: IsActiveResponse = stream.message().await.expect("first").expect("open");
    assert!(!first.result, "idle at first");
    let (http, addr) = (env.http.clone(), env.proxies[0].listen);
    let path = path.to_string();
    let held =
        tokio::spawn(async move { k8s::get(&http, addr, &path, Some("app.example.com")).await });
    let pushed = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a push within 10 s")
        .expect("stream ok")
        .expect("message");
    assert!(pushed.result, "the held request made the route active");
    assert_eq!(
        env.replicas("my-app").await,
        0,
        "Rouse leaves /scale to KEDA here"
    );
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    deployments
        .patch_scale(
            "my-app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("KEDA's scale-up");
    held.await
        .expect("join")
        .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()))
}

/// Installs KEDA's own InterceptorRoute CRD (v0.15.0, from the Go module) and waits until it is
/// served.
async fn install_keda_crd(env: &Env) {
    let path = keda_module_dir().join("config/crd/bases/http.keda.sh_interceptorroutes.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "KEDA's CRD {}: {e} (set ROUSE_KEDA_HTTP_ADDON_DIR)",
            path.display()
        )
    });
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("KEDA's CRD parses");
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("rouse-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|e| panic!("installing {name}: {e}"));
    let api: Api<DynamicObject> = Api::all_with(env.client.clone(), &keda_routes());
    wait_until(
        "KEDA's InterceptorRoute CRD is served",
        Duration::from_secs(30),
        || async { api.list(&Default::default()).await.is_ok() },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kedas_own_interceptor_route_is_routed_as_it_is_and_wakes_its_app_through_the_external_scaler()
 {
    let mut env = Env::new("keda-ir").await;
    install_keda_crd(&env).await;
    k8s::apply_yaml(
        &env.client,
        include_str!("../../manifests/examples/keda-interceptorroute/rbac.yaml"),
        "rouse-e2e",
    )
    .await
    .expect("the opt-in RBAC");
    env.proxy_args.push("--keda-interceptor-routes".into());
    env.controller_args.push("--keda-interceptor-routes".into());
    env.start_proxy().await;
    env.start_controller().await;
    my_app(&env, "300ms").await;
    apply(
        &env,
        &keda_routes(),
        &object(KEDA_015_REFERENCE, "http.keda.sh/v1beta1", &env.ns),
    )
    .await;
    wait_routed(&env, "app.example.com", "/api").await;
    let msg = wait_condition(
        &env,
        &keda_routes(),
        "my-app",
        "ScalingActive",
        "True",
        "ExternalScaler",
    )
    .await;
    assert!(msg.contains("interceptorRoute: my-app"), "{msg}");
    wait_condition(
        &env,
        &keda_routes(),
        "my-app",
        "Ready",
        "True",
        "Reconciled",
    )
    .await;

    let r = wake_through_the_external_scaler(&env, "my-app", "/api/items").await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, env.logs());
    assert!(r.body.starts_with("my-app-"), "from a pod: {}", r.body);
    assert_eq!(header(&r, "x-keda-http-cold-start"), Some("true"));
    // Only the example's rules route: another path of the host has no route.
    let other = env
        .request(0, "app.example.com", "/other")
        .await
        .expect("answered");
    assert_eq!(other.status, 404, "{}", other.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rouse_twin_of_kedas_example_wakes_its_app_and_its_static_route_answers_a_probe_without_waking_it()
 {
    let mut env = Env::new("rouse-ir").await;
    env.start_proxy().await;
    env.start_controller().await;
    my_app(&env, "300ms").await;
    apply(
        &env,
        &rouse_routes(),
        &object(KEDA_016_REFERENCE, "rouse.dev/v1alpha1", &env.ns),
    )
    .await;
    wait_routed(&env, "app.example.com", "/healthz").await;
    wait_condition(
        &env,
        &rouse_routes(),
        "my-app",
        "Ready",
        "True",
        "Reconciled",
    )
    .await;

    // The probe while the app is at zero: the static response at once, not counted as demand.
    for _ in 0..3 {
        let r = env
            .request(0, "app.example.com", "/healthz")
            .await
            .expect("answered");
        assert_eq!((r.status, r.body.as_str()), (200, "OK"), "{}", env.logs());
    }
    let r = wake_through_the_external_scaler(&env, "my-app", "/api").await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, env.logs());
    assert!(r.body.starts_with("my-app-"), "from a pod: {}", r.body);
    // The controller has the /api request in its sums: the three probes before it never were.
    let total = std::sync::Mutex::new(serde_json::Value::Null);
    wait_until(
        "the /api request reported",
        Duration::from_secs(10),
        || async {
            let d = env.controller_demand(0, "my-app").await;
            let seen = d["requests_total"].as_u64().unwrap_or(0) >= 1;
            *total.lock().unwrap_or_else(|p| p.into_inner()) = d;
            seen
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    let total = total.into_inner().unwrap_or_else(|p| p.into_inner());
    assert_eq!(total["requests_total"], 1, "probes are not demand: {total}");
    // Warm: the probe reaches the app (responseMode WhenUnavailable), still uncounted.
    let warm = env
        .request(0, "app.example.com", "/healthz")
        .await
        .expect("answered");
    assert!(
        warm.body.starts_with("my-app-"),
        "forwarded to a pod: {}",
        warm.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rouse_scales_an_interceptor_route_that_names_its_workload_and_refuses_a_timeout_it_cannot_serve()
 {
    let mut env = Env::new("rouse-ir-scaled").await;
    env.start_proxy().await;
    env.start_controller().await;
    my_app(&env, "300ms").await;
    let mut ir = object(KEDA_016_REFERENCE, "rouse.dev/v1alpha1", &env.ns);
    ir["spec"]["rouse"] =
        json!({"scaleTargetRef": {"name": "my-app"}, "replicas": {"min": 0, "max": 3}});
    apply(&env, &rouse_routes(), &ir).await;
    wait_routed(&env, "app.example.com", "/api").await;
    wait_condition(
        &env,
        &rouse_routes(),
        "my-app",
        "ScalingActive",
        "True",
        "Scaling",
    )
    .await;

    // Rouse itself wakes it: one cold request, the Deployment patched, the pod answers.
    let r = env
        .request(0, "app.example.com", "/api/x")
        .await
        .expect("answered");
    assert_eq!(r.status, 200, "{}\n{}", r.body, env.logs());
    assert!(r.body.starts_with("my-app-"), "from a pod: {}", r.body);
    assert_eq!(header(&r, "x-rouse-cold-start"), Some("true"));
    assert!(env.replicas("my-app").await >= 1);

    // A newer HTTPScaledObject claiming the same host and path loses it, and is told to whom.
    // (Creation times have one-second resolution and ties go by name: `zz-` sorts last.)
    env.service("zz-clash").await;
    env.scaled_object(
        "zz-clash",
        "app.example.com",
        json!({"pathPrefixes": ["/api"]}),
    )
    .await;
    env.wait_condition("zz-clash", "RouteConflict", "True", "HostPathTaken")
        .await;
    let (_, _, msg) = env.condition("zz-clash", "RouteConflict").await;
    assert!(msg.contains(&format!("{}/my-app", env.ns)), "{msg}");
    let still = env
        .request(0, "app.example.com", "/api/x")
        .await
        .expect("answered");
    assert!(
        still.body.starts_with("my-app-"),
        "the older route keeps it: {}",
        still.body
    );

    // KEDA's timeouts example: `request` and `responseHeader` have no deadline in Rouse's proxy,
    // so the object is refused, by field, rather than served without them.
    let mut timed = object(KEDA_TIMEOUTS, "rouse.dev/v1alpha1", &env.ns);
    timed["metadata"]["name"] = json!("timed");
    apply(&env, &rouse_routes(), &timed).await;
    let msg = wait_condition(
        &env,
        &rouse_routes(),
        "timed",
        "Ready",
        "False",
        "InvalidSpec",
    )
    .await;
    for field in [
        "spec.timeouts.request: not served",
        "spec.timeouts.responseHeader: not served",
    ] {
        assert!(msg.contains(field), "{field} not named: {msg}");
    }
    assert!(
        !msg.contains("spec.timeouts.readiness"),
        "readiness is served: {msg}"
    );
}

/// An always-on Deployment `name` (one pod, ready at once) behind Service `name` port 8080.
async fn always_on(env: &Env, name: &str) {
    let pp = PatchParams::apply("rouse-e2e").force();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    deployments
        .patch(name, &pp, &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
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
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    services
        .patch(
            name,
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name},
                "spec": {"selector": {"app": name},
                         "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}
            })),
        )
        .await
        .expect("service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kedas_placeholder_example_answers_a_cold_request_at_once_and_still_wakes_the_app() {
    let mut env = Env::new("rouse-ir-placeholder").await;
    env.start_proxy().await;
    env.start_controller().await;
    my_app(&env, "300ms").await;
    apply(
        &env,
        &rouse_routes(),
        &object(KEDA_PLACEHOLDER, "rouse.dev/v1alpha1", &env.ns),
    )
    .await;
    wait_routed(&env, "app.example.com", "/").await;
    wait_condition(
        &env,
        &rouse_routes(),
        "my-app",
        "Ready",
        "True",
        "Reconciled",
    )
    .await;

    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", env.controllers[0].grpc))
            .expect("endpoint")
            .connect()
            .await
            .expect("gRPC connect");
    let trigger = ScaledObjectRef {
        name: "my-app-so".into(),
        namespace: env.ns.clone(),
        scaler_metadata: [("interceptorRoute".to_string(), "my-app".to_string())].into(),
    };
    let mut stream = ExternalScalerClient::new(channel)
        .stream_is_active(trigger)
        .await
        .expect("StreamIsActive")
        .into_inner();
    let first = stream.message().await.expect("first").expect("open");
    assert!(!first.result, "idle at first");
    let r = env
        .request(0, "app.example.com", "/")
        .await
        .expect("answered");
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "<h1>Loading...</h1>"),
        "{}",
        env.logs()
    );
    assert_eq!(header(&r, "content-type"), Some("text/html"));
    assert_eq!(header(&r, "refresh"), Some("5"));
    let pushed = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a push within 10 s")
        .expect("stream ok")
        .expect("message");
    assert!(pushed.result, "the placeholder's request woke the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kedas_fallback_example_sends_a_request_still_cold_at_the_readiness_timeout_to_the_fallback()
 {
    let mut env = Env::new("rouse-ir-fallback").await;
    env.start_proxy().await;
    env.start_controller().await;
    my_app(&env, "300ms").await;
    always_on(&env, "fallback-svc").await;
    apply(
        &env,
        &rouse_routes(),
        &object(KEDA_FALLBACK, "rouse.dev/v1alpha1", &env.ns),
    )
    .await;
    wait_routed(&env, "app.example.com", "/").await;
    wait_condition(
        &env,
        &rouse_routes(),
        "my-app",
        "Ready",
        "True",
        "Reconciled",
    )
    .await;
    let published = format!("target={}/my-app#failover ready=1", env.ns);
    wait_until(
        "the fallback's endpoints reach the proxy",
        Duration::from_secs(30),
        || async { env.proxies[0].proc.count(&published) > 0 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));

    // Nobody scales my-app here (no ScaledObject): at `readiness: 5s` the fallback answers.
    let r = env
        .request(0, "app.example.com", "/x")
        .await
        .expect("answered");
    assert_eq!(r.status, 200, "not a 504: {}\n{}", r.body, env.logs());
    assert!(
        r.body.starts_with("fallback-svc-"),
        "from the fallback's pod: {}",
        r.body
    );
    assert_eq!(header(&r, "x-rouse-failover"), Some("true"));
    let held_ms: u64 = header(&r, "x-rouse-held-ms")
        .and_then(|v| v.parse().ok())
        .expect("held ms");
    assert!(
        held_ms >= 5000,
        "failed over after {held_ms} ms, before readiness"
    );
    assert_eq!(env.replicas("my-app").await, 0, "left to KEDA");
}
