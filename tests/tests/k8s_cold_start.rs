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
