//! Rouse on the real control plane (kube-apiserver, etcd, controller-manager, scheduler, KWOK):
//! `rouse kubernetes` and `rouse-controller` run as processes under their own ServiceAccount
//! tokens (the RBAC of `manifests/base`), apps are Deployments whose pods KWOK runs and the
//! test cluster's backends serve on 127.x addresses.

mod k8s;

use std::time::{Duration, Instant};

use k8s::Env;
use kube::api::{Api, DeleteParams};
use rouse_core::crd::HTTPScaledObject;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_apply_server_side_and_the_example_app_is_accepted() {
    let cluster = rouse_testcluster::TestCluster::shared();
    k8s::install(cluster).await;
    let client = cluster.client().await;
    // Applying again is a no-op, not an error (what `kubectl apply --server-side` does twice).
    let mut all = Vec::new();
    for (name, yaml) in k8s::MANIFESTS {
        let applied = k8s::apply_yaml(&client, yaml, "rouse-e2e")
            .await
            .unwrap_or_else(|e| panic!("manifests/{name}: {e:#}"));
        assert!(!applied.is_empty(), "{name} has objects");
        all.extend(applied);
    }
    // Validated by the real API server (enforcement needs a CNI that implements it).
    assert!(
        all.iter().any(|a| a == "NetworkPolicy/rouse-proxy"),
        "{all:?}"
    );
    // Every resource of the kustomize base is among the manifests applied here.
    let kustomization = include_str!("../../manifests/base/kustomization.yaml");
    for line in kustomization.lines() {
        if let Some(file) = line.trim().strip_prefix("- ")
            && file.ends_with(".yaml")
        {
            let name = format!("base/{file}");
            assert!(
                k8s::MANIFESTS.iter().any(|(n, _)| *n == name),
                "{name} is in manifests/base/kustomization.yaml but not applied by the tests"
            );
        }
    }
    for (name, yaml) in k8s::EXAMPLES {
        for _ in 0..2 {
            let applied = k8s::apply_yaml(&client, yaml, "rouse-e2e")
                .await
                .unwrap_or_else(|e| panic!("manifests/{name}: {e:#}"));
            assert!(!applied.is_empty(), "{name} has objects");
        }
    }
    let example = include_str!("../../manifests/examples/hello/app.yaml");
    let applied = k8s::apply_yaml(&client, example, "rouse-e2e")
        .await
        .unwrap_or_else(|e| panic!("manifests/examples/hello: {e:#}"));
    assert!(
        applied.iter().any(|a| a == "HTTPScaledObject/hello"),
        "{applied:?}"
    );
    // A KEDA manifest with only the apiVersion changed.
    let ns = cluster.namespace("keda").await;
    let keda = include_str!("../../manifests/examples/keda-httpscaledobject.yaml")
        .replace("http.keda.sh/v1alpha1", "rouse.dev/v1alpha1");
    let mut o: HTTPScaledObject = serde_yaml::from_str(&keda).expect("KEDA manifest");
    o.metadata.namespace = Some(ns.clone());
    let api: Api<HTTPScaledObject> = Api::namespaced(client, &ns);
    api.create(&Default::default(), &o)
        .await
        .expect("KEDA manifest accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_request_wakes_the_deployment_and_200_concurrent_cold_requests_need_one_scale_up() {
    let mut env = Env::new("wake").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app("web", "web.test", "300ms", json!({"scaledownPeriod": 2}))
        .await;
    env.wait_routed("web.test").await;

    // One request to an app at zero: held, woken, answered by a pod.
    let started = Instant::now();
    let r = env.request(0, "web.test", "/").await.expect("answered");
    assert_eq!(r.status, 200, "{}\n{}", r.body, env.logs());
    assert!(r.body.starts_with("web-"), "answered by a pod: {}", r.body);
    assert_eq!(
        r.headers.get("x-rouse-cold-start").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    println!("first cold request: {:?}", started.elapsed());

    // Back to zero after the 2 s scaledown period.
    env.wait_replicas("web", "idle to zero", Duration::from_secs(30), |n| n == 0)
        .await;
    let scaled_before = env.controllers[0].proc.count("reason=\"wake\"");

    // Wait until the proxy has no endpoint left, so all 200 are cold.
    env.wait_no_endpoints(0).await;

    let mut tasks = Vec::new();
    for i in 0..200 {
        let (http, addr) = (env.http.clone(), env.proxies[0].listen);
        tasks.push(tokio::spawn(async move {
            k8s::get(&http, addr, &format!("/{i}"), Some("web.test")).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if let Ok(Ok(r)) = t.await
            && r.status == 200
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 200, "all 200 cold requests answered\n{}", env.logs());
    let wakes = env.controllers[0].proc.count("reason=\"wake\"");
    assert_eq!(
        wakes - scaled_before,
        1,
        "one scale-up for 200 cold requests\n{}",
        env.logs()
    );
}

/// Runs `n` request loops against proxy `i` for `host` until `stop`; returns (ok, failed).
fn load(
    env: &Env,
    i: usize,
    host: &'static str,
    n: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64, Vec<String>)>> {
    (0..n)
        .map(|_| {
            let (http, addr, stop) = (env.http.clone(), env.proxies[i].listen, stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed, mut errors) = (0, 0, Vec::new());
                while !*stop.borrow() {
                    match k8s::get(&http, addr, "/", Some(host)).await {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => {
                            failed += 1;
                            errors.push(format!("{} {}", r.status, r.body));
                        }
                        Err(e) => {
                            failed += 1;
                            errors.push(e);
                        }
                    }
                }
                (ok, failed, errors)
            })
        })
        .collect()
}

async fn totals(
    tasks: Vec<tokio::task::JoinHandle<(u64, u64, Vec<String>)>>,
) -> (u64, u64, Vec<String>) {
    let mut out = (0, 0, Vec::new());
    for t in tasks {
        if let Ok((ok, failed, mut errors)) = t.await {
            out.0 += ok;
            out.1 += failed;
            out.2.append(&mut errors);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_concurrency_scales_out_idle_scales_to_zero_and_one_request_wakes_it_again() {
    let mut env = Env::new("scale").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app(
        "busy",
        "busy.test",
        "200ms",
        json!({"scaledownPeriod": 2, "scalingMetric": {"concurrency": {"targetValue": 2}}}),
    )
    .await;
    env.wait_routed("busy.test").await;
    // Every answer takes 200 ms, so 12 loops keep ~12 requests in flight: 6 replicas' worth.
    env.set_backend_delay("busy", 200).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = load(&env, 0, "busy.test", 12, stop_rx);
    env.wait_replicas(
        "busy",
        "scale out under load",
        Duration::from_secs(40),
        |n| n >= 4,
    )
    .await;
    // Sustained: the load goes on at N replicas.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send_replace(true);
    let (ok, failed, errors) = totals(tasks).await;
    println!(
        "under load: {ok} ok, {failed} failed, replicas {}",
        env.replicas("busy").await
    );
    assert_eq!(failed, 0, "{errors:?}");
    assert!(ok > 50, "{ok}");

    env.wait_replicas("busy", "idle to zero", Duration::from_secs(60), |n| n == 0)
        .await;
    env.wait_no_endpoints(0).await;
    let r = env
        .request(0, "busy.test", "/")
        .await
        .expect("single request after idle");
    assert_eq!(r.status, 200, "{}\n{}", r.body, env.logs());
    assert_eq!(
        r.headers.get("x-rouse-cold-start").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_aggregate_and_losing_one_mid_load_leaves_the_other_and_the_total_alone() {
    let mut env = Env::new("pair").await;
    env.start_proxy().await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app(
        "pair",
        "pair.test",
        "100ms",
        json!({"scalingMetric": {"concurrency": {"targetValue": 100}}}),
    )
    .await;
    env.wait_routed("pair.test").await;
    env.set_backend_delay("pair", 300).await;

    let (stop_a, rx_a) = tokio::sync::watch::channel(false);
    let (stop_b, rx_b) = tokio::sync::watch::channel(false);
    let on_a = load(&env, 0, "pair.test", 4, rx_a);
    let on_b = load(&env, 1, "pair.test", 3, rx_b);
    // Both replicas' in-flight requests add up at the controller.
    let start = Instant::now();
    loop {
        let d = env.controller_demand(0, "pair").await;
        let in_flight = d["in_flight"].as_u64().unwrap_or(0) + d["held"].as_u64().unwrap_or(0);
        if in_flight >= 6 {
            println!("controller sums {in_flight} pending across two proxies");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "sum never reached 7: {d}\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Proxy 0 starts draining (its pod terminating, not serving): it still has requests in
    // flight, so it still counts.
    env.publish_proxies_with(&[
        json!({"ready": false, "serving": false, "terminating": true}),
        json!({"ready": true}),
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let d = env.controller_demand(0, "pair").await;
    let pending = d["in_flight"].as_u64().unwrap_or(0) + d["held"].as_u64().unwrap_or(0);
    assert!(pending >= 5, "a draining proxy's requests still count: {d}");

    // Kill proxy 0 (SIGKILL) mid-load. Its pod would still be listed until the kubelet notices:
    // meanwhile the controller keeps its last report (unreachable is not zero). Proxy 1 alone
    // has at most 3 pending, so more than 3 means proxy 0's share is kept.
    env.proxies[0].proc.kill();
    stop_a.send_replace(true);
    let _ = totals(on_a).await;
    for _ in 0..10 {
        let d = env.controller_demand(0, "pair").await;
        let pending = d["in_flight"].as_u64().unwrap_or(0) + d["held"].as_u64().unwrap_or(0);
        assert!(
            pending >= 4,
            "the unreachable proxy's last report must still count: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The replica vanishes from the Service: its share goes, proxy 1's stays.
    env.unpublish_proxy(0).await;
    let start = Instant::now();
    loop {
        let d = env.controller_demand(0, "pair").await;
        let pending = d["in_flight"].as_u64().unwrap_or(0) + d["held"].as_u64().unwrap_or(0);
        if (1..=3).contains(&pending) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "after removal: {d}\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_b.send_replace(true);
    let (ok, failed, errors) = totals(on_b).await;
    assert_eq!(
        failed, 0,
        "requests on the surviving proxy were disturbed: {errors:?}"
    );
    assert!(ok > 5, "{ok}");
    assert!(env.replicas("pair").await >= 1, "still scaled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_leader_dies_and_held_requests_are_served() {
    let mut env = Env::new("leader").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.start_controller().await;
    env.app("lead", "lead.test", "200ms", json!({})).await;
    env.wait_routed("lead.test").await;
    let start = Instant::now();
    let leader = loop {
        if let Some(l) = env.leader().await {
            break l;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no leader\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (dead, standby) = if leader == env.controllers[0].id {
        (0, 1)
    } else {
        (1, 0)
    };
    // Let the standby's demand stream connect before the leader goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.controllers[dead].proc.kill();
    // Cold requests held while nobody leads: the standby must take the Lease and wake the app.
    let killed = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (http, addr) = (env.http.clone(), env.proxies[0].listen);
        tasks.push(tokio::spawn(async move {
            k8s::get(&http, addr, &format!("/{i}"), Some("lead.test")).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if let Ok(Ok(r)) = t.await
            && r.status == 200
        {
            ok += 1;
        }
    }
    println!(
        "20 held requests answered {:?} after the leader died",
        killed.elapsed()
    );
    assert_eq!(ok, 20, "{}", env.logs());
    assert_eq!(
        env.leader().await.as_deref(),
        Some(env.controllers[standby].id.as_str())
    );
    assert!(env.controllers[standby].proc.count("Became leader.") >= 1);
    assert!(
        env.controllers[standby].proc.count("reason=\"wake\"") >= 1,
        "{}",
        env.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_updates_and_deletes_and_the_newer_of_two_claims_gets_route_conflict() {
    let mut env = Env::new("routes").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app("first", "shared.test", "100ms", json!({})).await;
    env.wait_routed("shared.test").await;
    env.wait_condition("first", "Ready", "True", "Reconciled")
        .await;
    // A second object claims the same host and path: it is refused and told why.
    env.app("second", "shared.test", "100ms", json!({})).await;
    env.wait_condition("second", "RouteConflict", "True", "HostPathTaken")
        .await;
    env.wait_condition("second", "Ready", "False", "HostPathTaken")
        .await;
    let (_, _, msg) = env.condition("second", "RouteConflict").await;
    assert!(msg.contains("/first"), "names the winner: {msg}");
    env.wait_condition("first", "RouteConflict", "False", "NoConflict")
        .await;
    let r = env.request(0, "shared.test", "/").await.expect("answered");
    assert!(
        r.body.starts_with("first-"),
        "the older object keeps the route: {}",
        r.body
    );

    // Update: the second object moves to its own host and starts working.
    env.scaled_object("second", "second.test", json!({})).await;
    env.wait_routed("second.test").await;
    env.wait_condition("second", "Ready", "True", "Reconciled")
        .await;
    let r = env.request(0, "second.test", "/").await.expect("answered");
    assert!(r.body.starts_with("second-"), "{}", r.body);

    // Delete: the route goes.
    let api: Api<HTTPScaledObject> = Api::namespaced(env.client.clone(), &env.ns);
    api.delete("second", &DeleteParams::default())
        .await
        .expect("delete");
    let start = Instant::now();
    loop {
        let r = env.request(0, "second.test", "/").await.expect("answered");
        if r.status == 404 {
            assert!(r.body.contains("no_route"), "{}", r.body);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "route not removed: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_target_service_is_reported_and_requests_get_a_json_503_naming_it() {
    let mut env = Env::new("nosvc").await;
    env.start_proxy().await;
    env.start_controller().await;
    // A short hold: a request sent before the proxy has read that the Service is missing waits
    // (it cannot know yet) and times out quickly; the loop below then asks again.
    env.scaled_object(
        "ghost",
        "ghost.test",
        json!({"rouse": {"coldStart": {"holdTimeoutMs": 500}}}),
    )
    .await;
    env.wait_routed("ghost.test").await;
    env.wait_condition("ghost", "TargetFound", "False", "ServiceNotFound")
        .await;
    let (_, _, msg) = env.condition("ghost", "TargetFound").await;
    assert!(msg.contains(&format!("{}/ghost", env.ns)), "{msg}");
    let start = Instant::now();
    let r = loop {
        let r = env.request(0, "ghost.test", "/").await.expect("answered");
        if r.status == 503 || start.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 503, "{}", r.body);
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("JSON body");
    assert_eq!(body["reason"], "target_unavailable");
    assert_eq!(body["route"], format!("{}/ghost", env.ns));
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("{}/ghost", env.ns))),
        "{body}"
    );
    assert!(r.headers.get("retry-after").is_some());
    // Events tell the same story.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.ns);
    let list = events.list(&Default::default()).await.expect("events");
    assert!(
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ServiceNotFound")),
        "{:?}",
        list.items
            .iter()
            .map(|e| e.reason.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_on_the_same_workload_is_detected_and_reported() {
    let mut env = Env::new("hpa").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app(
        "owned",
        "owned.test",
        "100ms",
        json!({"rouse": {"coldStart": {"holdTimeoutMs": 1500}}}),
    )
    .await;
    env.wait_condition("owned", "ScalingActive", "True", "Scaling")
        .await;
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(env.client.clone(), &env.ns);
    hpas.patch(
        "owned",
        &kube::api::PatchParams::apply("rouse-e2e"),
        &kube::api::Patch::Apply(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "owned"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "owned"},
                     "minReplicas": 1, "maxReplicas": 3}
        })),
    )
    .await
    .expect("hpa");
    env.wait_condition("owned", "ScalingActive", "False", "HPAOwnsWorkload")
        .await;
    let (_, _, msg) = env.condition("owned", "ScalingActive").await;
    assert!(msg.contains("HorizontalPodAutoscaler"), "{msg}");
    // Rouse no longer patches /scale: a cold request is held until its deadline, then 504.
    let r = env.request(0, "owned.test", "/").await.expect("answered");
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(
        env.replicas("owned").await,
        0,
        "no /scale patch while the HPA exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_kube_apiserver_keeps_routing_and_the_watches_resume() {
    // A private cluster: restarting the shared one would disturb the other tests.
    static CLUSTER: std::sync::OnceLock<rouse_testcluster::TestCluster> =
        std::sync::OnceLock::new();
    let cluster = CLUSTER.get_or_init(|| {
        rouse_testcluster::TestCluster::start(rouse_testcluster::Options::default())
            .unwrap_or_else(|e| panic!("private cluster: {e:#}"))
    });
    let mut env = Env::on(cluster, "restart").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app(
        "steady",
        "steady.test",
        "100ms",
        json!({"replicas": {"min": 1, "max": 3}}),
    )
    .await;
    env.wait_routed("steady.test").await;
    let r = env.request(0, "steady.test", "/").await.expect("answered");
    assert_eq!(r.status, 200, "{}", r.body);

    cluster
        .restart("kube-apiserver")
        .unwrap_or_else(|e| panic!("restart: {e:#}"));
    // While the API server is away (or just back), the last table keeps routing.
    for _ in 0..10 {
        let r = env.request(0, "steady.test", "/").await.expect("answered");
        assert_eq!(r.status, 200, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New objects are seen once the watches resume.
    let client = cluster.client().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    rouse_testcluster::wait_until("kube-apiserver back", Duration::from_secs(60), || {
        let namespaces = namespaces.clone();
        async move { namespaces.list(&Default::default()).await.is_ok() }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    env.client = client;
    env.app("later", "later.test", "100ms", json!({})).await;
    env.wait_routed("later.test").await;
    let r = env.request(0, "later.test", "/").await.expect("answered");
    assert_eq!(r.status, 200, "{}\n{}", r.body, env.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keda_external_push_client_sees_is_active_flip_on_the_first_held_request() {
    use rouse_controller::external_scaler::proto::external_scaler_client::ExternalScalerClient;
    use rouse_controller::external_scaler::proto::{GetMetricsRequest, ScaledObjectRef};

    // KEDA mode: KEDA owns the HPA and scales; Rouse holds, wakes KEDA through this API and
    // stays off /scale.
    let mut env = Env::new("keda").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.start_controller().await;
    env.app(
        "pushed",
        "pushed.test",
        "100ms",
        json!({"scalingMetric": {"concurrency": {"targetValue": 7}}}),
    )
    .await;
    env.wait_routed("pushed.test").await;
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(env.client.clone(), &env.ns);
    hpas.patch(
        "keda-hpa-pushed",
        &kube::api::PatchParams::apply("keda-operator"),
        &kube::api::Patch::Apply(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-hpa-pushed"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "pushed"},
                     "minReplicas": 1, "maxReplicas": 3}
        })),
    )
    .await
    .expect("KEDA's HPA");
    env.wait_condition("pushed", "ScalingActive", "False", "HPAOwnsWorkload")
        .await;

    // Ask the standby: every replica serves the API from the same summed demand.
    let leader = env.leader().await.unwrap_or_default();
    let standby = env
        .controllers
        .iter()
        .find(|c| c.id != leader)
        .expect("a standby");
    let endpoint = format!("http://{}", standby.grpc);
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connect");
    let mut client = ExternalScalerClient::new(channel);
    let object = ScaledObjectRef {
        name: "pushed-so".into(),
        namespace: env.ns.clone(),
        scaler_metadata: [("httpScaledObject".to_string(), "pushed".to_string())].into(),
    };
    let active = client
        .is_active(object.clone())
        .await
        .expect("IsActive")
        .into_inner();
    assert!(!active.result, "idle at first");
    let spec = client
        .get_metric_spec(object.clone())
        .await
        .expect("GetMetricSpec")
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(
        spec.metric_specs[0].target_size, 7,
        "the object's concurrency target"
    );
    let metric = spec.metric_specs[0].metric_name.clone();
    assert_eq!(metric, format!("http-{}_002Fpushed", env.ns));

    let mut stream = client
        .stream_is_active(object.clone())
        .await
        .expect("StreamIsActive")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("first message")
        .expect("stream open");
    assert!(!first.result, "first push: inactive");

    let (http, addr) = (env.http.clone(), env.proxies[0].listen);
    let sent = Instant::now();
    let held = tokio::spawn(async move { k8s::get(&http, addr, "/", Some("pushed.test")).await });
    let flipped = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a push within 5 s")
        .expect("stream ok")
        .expect("message");
    let took = sent.elapsed();
    assert!(flipped.result, "pushed active on the first held request");
    println!("StreamIsActive pushed true {took:?} after the request was sent");
    let metrics = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object.clone()),
            metric_name: metric.clone(),
        })
        .await
        .expect("GetMetrics")
        .into_inner();
    assert_eq!(metrics.metric_values[0].metric_name, metric);
    assert!(
        metrics.metric_values[0].metric_value >= 1,
        "the held request counts"
    );
    let wrong = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object),
            metric_name: "other".into(),
        })
        .await;
    assert_eq!(
        wrong.expect_err("unknown metric").code(),
        tonic::Code::NotFound
    );
    // Rouse did not scale (the HPA owns the workload)...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.replicas("pushed").await, 0, "Rouse stays off /scale");
    // ...KEDA does, on the pushed activation; the held request is then answered.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), &env.ns);
    deployments
        .patch_scale(
            "pushed",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("KEDA's scale-up");
    let r = held.await.expect("join").expect("answered");
    assert_eq!(r.status, 200, "{}", r.body);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The wake timeline on the real control plane, median over 20 wakes (printed; the closing note
/// of the Kubernetes issue quotes it). Asserts only that every wake was answered by a pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_timeline_over_twenty_wakes() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    use std::sync::{Arc, Mutex};

    let mut env = Env::new("timeline").await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app("tl", "tl.test", "100ms", json!({"scaledownPeriod": 1}))
        .await;
    env.wait_routed("tl.test").await;

    // When the test sees a pod turn Ready and the EndpointSlice list a ready endpoint.
    let seen: Arc<Mutex<(Vec<Instant>, Vec<Instant>)>> = Arc::default();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(env.client.clone(), &env.ns);
    let s = seen.clone();
    let pod_watch = tokio::spawn(async move {
        let mut w = watcher(pods, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(p)) = w.next().await {
            let ready = p
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .0
                    .push(Instant::now());
            }
        }
    });
    let s = seen.clone();
    let slice_watch = tokio::spawn(async move {
        let cfg = watcher::Config::default().labels("kubernetes.io/service-name=tl");
        let mut w = watcher(slices, cfg).applied_objects().boxed();
        while let Some(Ok(sl)) = w.next().await {
            let ready = sl
                .endpoints
                .iter()
                .any(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
            if ready {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .1
                    .push(Instant::now());
            }
        }
    });

    let (mut scale, mut pod, mut slice, mut forwarded, mut total) =
        (vec![], vec![], vec![], vec![], vec![]);
    for wake in 0..20 {
        env.wait_replicas("tl", "back to zero", Duration::from_secs(30), |n| n == 0)
            .await;
        env.wait_no_endpoints(0).await;
        let scaled_lines = env.controllers[0].proc.count("wake_to_scale_us=");
        let released_lines = env.proxies[0].proc.count("since_ready_us=");
        seen.lock().unwrap_or_else(|p| p.into_inner()).0.clear();
        seen.lock().unwrap_or_else(|p| p.into_inner()).1.clear();
        let sent = Instant::now();
        let r = env.request(0, "tl.test", "/").await.expect("answered");
        let done = sent.elapsed();
        assert_eq!(r.status, 200, "wake {wake}: {}\n{}", r.body, env.logs());
        let field = |lines: Vec<String>, skip: usize, name: &str| -> Option<f64> {
            lines
                .iter()
                .filter(|l| l.contains(name))
                .nth(skip)
                .and_then(|l| {
                    l.split_whitespace()
                        .find_map(|f| f.strip_prefix(name))
                        .and_then(|v| v.parse::<f64>().ok())
                })
        };
        // Give the log pumps a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s_us = field(
            env.controllers[0].proc.output(),
            scaled_lines,
            "wake_to_scale_us=",
        );
        let f_us = field(
            env.proxies[0].proc.output(),
            released_lines,
            "since_ready_us=",
        );
        let (pods_seen, slices_seen) = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(us) = s_us {
            scale.push(us / 1000.0);
        }
        if let Some(at) = pods_seen.first() {
            pod.push(at.duration_since(sent).as_secs_f64() * 1000.0);
        }
        if let Some(at) = slices_seen.first() {
            slice.push(at.duration_since(sent).as_secs_f64() * 1000.0);
        }
        if let Some(us) = f_us {
            forwarded.push(us / 1000.0);
        }
        total.push(done.as_secs_f64() * 1000.0);
    }
    pod_watch.abort();
    slice_watch.abort();
    println!(
        "wake timeline, median of {} wakes (pod start delay 100 ms):\n  \
         held request -> /scale PATCH: {:.2} ms\n  \
         request sent -> pod Ready (test's watch): {:.1} ms\n  \
         request sent -> EndpointSlice ready (test's watch): {:.1} ms\n  \
         endpoint seen by the proxy -> forwarded: {:.3} ms\n  \
         request sent -> response: {:.1} ms",
        total.len(),
        median(scale.clone()),
        median(pod.clone()),
        median(slice.clone()),
        median(forwarded.clone()),
        median(total.clone()),
    );
    assert_eq!(total.len(), 20);
    assert!(
        scale.len() >= 15,
        "wake_to_scale_us logged for most wakes: {scale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_kind_with_a_scale_subresource_is_scaled() {
    let mut env = Env::new("anykind").await;
    // A custom kind with a /scale subresource (no controller behind it: only the patch is
    // checked).
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.rouse.dev}
spec:
  group: test.rouse.dev
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, properties: {replicas: {type: integer}}}
            status: {type: object, properties: {replicas: {type: integer}}}
"#;
    k8s::apply_yaml(&env.cluster.client().await, crd, "rouse-e2e")
        .await
        .expect("widget CRD");
    let widget = format!(
        "apiVersion: test.rouse.dev/v1\nkind: Widget\nmetadata: {{name: w, namespace: {}}}\nspec: {{replicas: 0}}\n",
        env.ns
    );
    let start = Instant::now();
    while let Err(e) = k8s::apply_yaml(&env.client, &widget, "rouse-e2e").await {
        assert!(start.elapsed() < Duration::from_secs(20), "widget: {e:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.start_proxy().await;
    env.start_controller().await;
    env.service("w").await;
    env.scaled_object(
        "w",
        "w.test",
        json!({
            "scaleTargetRef": {"name": "w", "kind": "Widget", "apiVersion": "test.rouse.dev/v1",
                               "service": "w", "port": 80},
            "rouse": {"coldStart": {"holdTimeoutMs": 1500}}
        }),
    )
    .await;
    env.wait_routed("w.test").await;
    env.wait_condition("w", "ScalingActive", "True", "Scaling")
        .await;
    // No pod will ever come: the request times out, but the wake reached /scale.
    let r = env.request(0, "w.test", "/").await.expect("answered");
    assert_eq!(r.status, 504, "{}", r.body);
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("test.rouse.dev", "v1", "Widget"),
        "widgets",
    );
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &ar);
    let start = Instant::now();
    loop {
        let w = api.get("w").await.expect("widget");
        if w.data["spec"]["replicas"] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "Widget not scaled: {}\n{}",
            w.data,
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, msg) = env.condition("w", "TargetFound").await;
    assert!(msg.contains("test.rouse.dev/v1/Widget/w"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_ready_before_it_listens_is_retried_not_abandoned() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A selectorless Service whose EndpointSlice lists a ready address nothing listens on yet
    // (a pod marked Ready a moment before its socket is bound).
    let mut env = Env::new("refuse").await;
    env.start_proxy().await;
    let addr = rouse_e2e::free_addr();
    let pp = kube::api::PatchParams::apply("rouse-e2e");
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(env.client.clone(), &env.ns);
    services
        .patch(
            "late",
            &pp,
            &kube::api::Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
                "spec": {"ports": [{"name": "http", "port": 80}]}
            })),
        )
        .await
        .expect("service");
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(env.client.clone(), &env.ns);
    slices
        .patch(
            "late-1",
            &pp,
            &kube::api::Patch::Apply(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "late-1", "labels": {"kubernetes.io/service-name": "late"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": addr.port()}],
                "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}]
            })),
        )
        .await
        .expect("slice");
    env.scaled_object("late", "late.test", json!({})).await;
    env.wait_routed("late.test").await;
    let proxy_admin = env.proxies[0].admin;
    let http = env.http.clone();
    rouse_testcluster::wait_until("endpoint known", Duration::from_secs(20), || {
        let http = http.clone();
        async move {
            k8s::get(&http, proxy_admin, "/queues", None)
                .await
                .is_ok_and(|r| r.body.contains(&addr.to_string()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let (http, proxy) = (env.http.clone(), env.proxies[0].listen);
    let request = tokio::spawn(async move { k8s::get(&http, proxy, "/", Some("late.test")).await });
    // The first connection is refused (the precondition, seen in the proxy's log); the socket
    // comes after that.
    let proxy_out = &env.proxies[0].proc;
    rouse_testcluster::wait_until("the first connect refused", Duration::from_secs(10), || {
        let refused = proxy_out.count("Endpoint refused the connection") >= 1;
        async move { refused }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nlate")
                .await;
        }
    });
    let r = request.await.expect("join").expect("answered");
    server.abort();
    assert_eq!(r.status, 200, "{}\n{}", r.body, env.logs());
    assert_eq!(r.body, "late");
}

/// Every ready endpoint refusing connections (pods marked Ready with nothing listening): the
/// request is tried on each (at most four) and then answered `502 upstream_unreachable`, not
/// held until its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_that_all_refuse_are_answered_502_upstream_unreachable() {
    let mut env = Env::new("unreachable").await;
    env.start_proxy().await;
    let addrs: Vec<std::net::SocketAddr> = (0..4).map(|_| rouse_e2e::free_addr()).collect();
    let pp = kube::api::PatchParams::apply("rouse-e2e");
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(env.client.clone(), &env.ns);
    services
        .patch(
            "gone",
            &pp,
            &kube::api::Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "gone"},
                "spec": {"ports": [{"name": "http", "port": 80}]}
            })),
        )
        .await
        .expect("service");
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(env.client.clone(), &env.ns);
    // One slice per address: the addresses share 127.0.0.1, each with its own port.
    for (i, addr) in addrs.iter().enumerate() {
        slices
            .patch(
                &format!("gone-{i}"),
                &pp,
                &kube::api::Patch::Apply(json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("gone-{i}"), "labels": {"kubernetes.io/service-name": "gone"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": addr.port()}],
                    "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}]
                })),
            )
            .await
            .expect("slice");
    }
    env.scaled_object("gone", "gone.test", json!({})).await;
    env.wait_routed("gone.test").await;
    let (http, proxy_admin) = (env.http.clone(), env.proxies[0].admin);
    rouse_testcluster::wait_until("all four endpoints known", Duration::from_secs(20), || {
        let http = http.clone();
        let addrs = addrs.clone();
        async move {
            k8s::get(&http, proxy_admin, "/queues", None)
                .await
                .is_ok_and(|r| addrs.iter().all(|a| r.body.contains(&a.to_string())))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let r = env.request(0, "gone.test", "/").await.expect("answered");
    assert_eq!(r.status, 502, "{}\n{}", r.body, env.logs());
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("JSON error");
    assert_eq!(body["reason"], "upstream_unreachable", "{body}");
    // Precondition: it was refused by every endpoint, not answered early for another reason.
    assert_eq!(
        env.proxies[0].proc.count("Endpoint refused the connection"),
        4,
        "{}",
        env.logs()
    );
}
