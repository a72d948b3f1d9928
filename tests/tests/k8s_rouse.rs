//! Rouse on the real control plane (kube-apiserver, etcd, controller-manager, scheduler, KWOK):
//! `rouse kubernetes` and `rouse-controller` run as processes under their own ServiceAccount
//! tokens (the RBAC of `manifests/base`), apps are Deployments whose pods KWOK runs and the
//! test cluster's backends serve on 127.x addresses.

mod k8s;

use std::time::{Duration, Instant};

use k8s::Env;
use kube::api::{Api, DeleteParams};

const _: Option<DeleteParams> = None;
use rouse_core::crd::HTTPScaledObject;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_apply_server_side_and_the_example_app_is_accepted() {
    let cluster = rouse_testcluster::TestCluster::shared();
    k8s::install(cluster).await;
    let client = cluster.client().await;
    // Applying again is a no-op, not an error (what `kubectl apply --server-side` does twice).
    for (name, yaml) in k8s::MANIFESTS {
        let applied = k8s::apply_yaml(&client, yaml, "rouse-e2e")
            .await
            .unwrap_or_else(|e| panic!("manifests/{name}: {e:#}"));
        assert!(!applied.is_empty(), "{name} has objects");
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
    let proxy_admin = env.proxies[0].admin;
    let http = env.http.clone();
    rouse_testcluster::wait_until("endpoints gone", Duration::from_secs(30), || {
        let http = http.clone();
        async move {
            k8s::get(&http, proxy_admin, "/queues", None)
                .await
                .is_ok_and(|r| r.body.contains("\"endpoints\": []"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));

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
