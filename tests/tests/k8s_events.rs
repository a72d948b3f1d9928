//! EventSubscriptions on the real control plane: `rouse kubernetes` replicas (under the
//! manifests' RBAC) serve the webhook with the queue on a real nats-server (JetStream), keys come
//! from a Secret the test rotates, and deliveries reach pods the test cluster runs (each POST a
//! backend answers is recorded, so the test counts what was delivered).

mod k8s;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s::{Env, Resp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rouse_core::crd::EventSubscription;
use rouse_testcluster::backends::posts;
use rouse_testcluster::nats::Nats;
use serde_json::json;

/// POSTs `body` to `path_and_query` on proxy `i` (no Host: webhooks match any host).
async fn post(
    env: &Env,
    i: usize,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Resp {
    let addr = env.proxies[i].listen;
    let mut req = http::Request::post(format!("http://{addr}{path_and_query}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(60), env.http.request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Resp {
        status: parts.status.as_u16(),
        body: String::from_utf8_lossy(&body).into_owned(),
        headers: parts.headers,
    }
}

/// An Event Grid validation handshake with `code` to `/events/orders` on proxy `i`, with `key`.
async fn handshake(env: &Env, i: usize, key: &str, code: &str) -> Resp {
    let path = format!("/events/orders?code={key}");
    post(env, i, &path, &[VALIDATE], validation(code)).await
}

/// Event Grid events `from..to` (ids `e-<n>`), one JSON array.
fn events(from: usize, to: usize) -> String {
    let list: Vec<serde_json::Value> = (from..to)
        .map(|n| {
            json!({"id": format!("e-{n}"), "topic": "/subscriptions/x/orders", "subject": "o",
                   "eventType": "Order.Created", "eventTime": "2026-12-01T00:00:00Z",
                   "data": {"n": n}, "dataVersion": "1"})
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn validation(code: &str) -> String {
    json!([{"id": "v-1", "topic": "/subscriptions/x", "subject": "", "data": {"validationCode": code},
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-12-01T00:00:00Z", "dataVersion": "2"}])
    .to_string()
}

const NOTIFY: (&str, &str) = ("aeg-event-type", "Notification");
const VALIDATE: (&str, &str) = ("aeg-event-type", "SubscriptionValidation");

/// Delivered event ids (per id: how many times), from the backends of app `app`.
fn delivered(env: &Env, app: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for p in posts(&env.ns, &format!("{app}-")) {
        if p.status != 200 {
            continue;
        }
        let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&p.body) else {
            continue;
        };
        for e in list {
            if let Some(id) = e["id"].as_str() {
                *out.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    out
}

async fn secret(env: &Env, name: &str, data: serde_json::Value) {
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    api.patch(
        name,
        &PatchParams::apply("rouse-e2e").force(),
        &Patch::Apply(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                             "stringData": data}),
        ),
    )
    .await
    .expect("secret");
}

/// What a user does once per namespace with EventSubscriptions: lets the proxies read its key
/// Secrets (manifests/base/rbac.yaml, `rouse-event-keys`).
async fn grant_key_secrets(env: &Env) {
    let yaml = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: rouse-event-keys, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: rouse-event-keys}}\n\
         subjects: [{{kind: ServiceAccount, name: rouse-proxy, namespace: rouse-system}}]\n",
        ns = env.ns
    );
    k8s::apply_yaml(&env.client, &yaml, "rouse-e2e")
        .await
        .expect("role binding");
}

async fn subscription(env: &Env, name: &str, spec: serde_json::Value) {
    let api: Api<EventSubscription> = Api::namespaced(env.client.clone(), &env.ns);
    api.patch(
        name,
        &PatchParams::apply("rouse-e2e").force(),
        &Patch::Apply(
            json!({"apiVersion": "rouse.dev/v1alpha1", "kind": "EventSubscription",
                             "metadata": {"name": name}, "spec": spec}),
        ),
    )
    .await
    .expect("event subscription");
}

/// `(status, reason, message)` of condition `type_` of EventSubscription `name`.
async fn condition(env: &Env, name: &str, type_: &str) -> (String, String, String) {
    let api: Api<EventSubscription> = Api::namespaced(env.client.clone(), &env.ns);
    let Ok(o) = api.get(name).await else {
        return Default::default();
    };
    o.status
        .into_iter()
        .flat_map(|s| s.conditions)
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message))
        .unwrap_or_default()
}

async fn wait_condition(env: &Env, name: &str, type_: &str, status: &str, reason: &str) -> String {
    let start = Instant::now();
    loop {
        let c = condition(env, name, type_).await;
        if c.0 == status && c.1 == reason {
            return c.2;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name}: {type_} is {c:?}, expected {status}/{reason}\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `f` until it is true (bounded).
async fn wait_for<F, Fut>(env: &Env, what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < within,
            "timed out waiting for {what}\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const KEY_ONE: &str = "k-one-3f9a";
const KEY_TWO: &str = "k-two-77c1";

/// The webhook, on two proxy replicas sharing one JetStream stream, for app `fn` at zero.
async fn setup(prefix: &str) -> (Env, Nats) {
    let mut env = Env::new(prefix).await;
    let nats = Nats::start_in(&env.dir.0).await;
    env.proxy_args = vec![
        "--nats-url".into(),
        nats.url(),
        "--nats-stream".into(),
        format!("EV_{}", env.ns.replace('-', "_")),
    ];
    grant_key_secrets(&env).await;
    secret(&env, "orders-keys", json!({"key1": KEY_ONE})).await;
    env.start_proxy().await;
    env.start_proxy().await;
    env.start_controller().await;
    env.app("fn", "fn.test", "300ms", json!({"scaledownPeriod": 300}))
        .await;
    env.wait_routed("fn.test").await;
    subscription(
        &env,
        "orders",
        json!({"path": "/events/orders",
               "auth": {"keySecretRef": {"name": "orders-keys"}, "keyQuery": "code"},
               "target": {"httpScaledObject": "fn", "path": "/api/events"},
               "delivery": {"batching": "per-batch", "maxEvents": 1000}}),
    )
    .await;
    // Served by both replicas (before: the path routes nowhere, 404) with the key loaded.
    for i in 0..2 {
        wait_for(
            &env,
            "the webhook served with its key",
            Duration::from_secs(30),
            || async {
                let r = handshake(&env, i, KEY_ONE, "warm-up").await;
                r.status == 200
            },
        )
        .await;
    }
    (env, nats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_target_at_zero_once_through_two_proxies_with_keys_from_a_rotated_secret() {
    let (env, _nats) = setup("events").await;

    // The handshake is answered by Rouse at once, without waking the target.
    let r = handshake(&env, 0, KEY_ONE, "c0de-42").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("c0de-42"), "{}", r.body);
    let wrong = handshake(&env, 1, "nope", "c0de-43").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(
        !wrong.body.contains("c0de-43"),
        "no validation code for a wrong key: {}",
        wrong.body
    );
    // The controller saw the handshake (a full report cycle later) and the target is still at zero.
    let msg = wait_condition(&env, "orders", "Validated", "True", "HandshakeAnswered").await;
    assert!(msg.contains("handshake"), "{msg}");
    wait_condition(&env, "orders", "Ready", "True", "Reconciled").await;
    assert_eq!(
        env.replicas("fn").await,
        0,
        "a handshake does not wake the target"
    );

    // Clients cannot forge a delivery: the target path is the gateway's.
    let forged = post(
        &env,
        0,
        "/api/events",
        &[("host", "fn.test"), NOTIFY],
        events(0, 1),
    )
    .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(
        forged.body.contains("delivery_path_reserved"),
        "{}",
        forged.body
    );

    // 5 000 events, 1 000 per request, spread over both proxies; one event sent to both.
    let code = format!("/events/orders?code={KEY_ONE}");
    for (i, from) in (0..5000).step_by(1000).enumerate() {
        let r = post(&env, i % 2, &code, &[NOTIFY], events(from, from + 1000)).await;
        assert_eq!(r.status, 200, "batch {i}: {}", r.body);
    }
    for i in 0..2 {
        let r = post(&env, i, &code, &[NOTIFY], events(4999, 5000)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_for(
        &env,
        "5000 events delivered",
        Duration::from_secs(90),
        || async { delivered(&env, "fn").len() >= 5000 },
    )
    .await;
    let counts = delivered(&env, "fn");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert!((0..5000).all(|n| counts.contains_key(&format!("e-{n}"))));
    assert!(
        env.replicas("fn").await >= 1,
        "queued events woke the target"
    );
    for p in posts(&env.ns, "fn-") {
        assert_eq!(p.target, "/api/events");
        assert!(
            !p.headers.contains_key("x-rouse-delivery-token"),
            "token stripped"
        );
    }
    wait_for(
        &env,
        "pending back to 0 in status",
        Duration::from_secs(30),
        || async {
            let api: Api<EventSubscription> = Api::namespaced(env.client.clone(), &env.ns);
            api.get("orders")
                .await
                .ok()
                .and_then(|o| o.status)
                .and_then(|s| s.pending)
                == Some(0)
        },
    )
    .await;

    // Rotation: the new key works and the removed one is refused, without a restart.
    secret(&env, "orders-keys", json!({"key2": KEY_TWO})).await;
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    api.patch(
        "orders-keys",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"key1": null}})),
    )
    .await
    .expect("remove key1");
    for i in 0..2 {
        wait_for(
            &env,
            "the new key in force",
            Duration::from_secs(20),
            || async { handshake(&env, i, KEY_TWO, "r").await.status == 200 },
        )
        .await;
        wait_for(
            &env,
            "the old key refused",
            Duration::from_secs(20),
            || async { handshake(&env, i, KEY_ONE, "r").await.status == 401 },
        )
        .await;
    }
    // Keys never reach logs.
    for p in &env.proxies {
        let out = p.proc.output().join("\n");
        assert!(
            !out.contains(KEY_ONE) && !out.contains(KEY_TWO),
            "a key in the proxy's log"
        );
    }
    for c in &env.controllers {
        let out = c.proc.output().join("\n");
        assert!(
            !out.contains(KEY_ONE) && !out.contains(KEY_TWO),
            "a key in the controller's log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_secret_and_target_errors_show_as_conditions_naming_the_field() {
    let (env, _nats) = setup("evcond").await;
    // A missing Secret: SecretFound False, and the webhook answers 503 (retry), never 200.
    subscription(
        &env,
        "nokeys",
        json!({"path": "/events/nokeys",
        "auth": {"keySecretRef": {"name": "absent"}, "keyQuery": "code"},
        "target": {"httpScaledObject": "fn"}}),
    )
    .await;
    let msg = wait_condition(&env, "nokeys", "SecretFound", "False", "SecretNotFound").await;
    assert!(msg.contains("absent"), "{msg}");
    let r = post(&env, 0, "/events/nokeys?code=x", &[NOTIFY], events(0, 1)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    // A missing target.
    subscription(
        &env,
        "notarget",
        json!({"path": "/events/notarget",
        "target": {"httpScaledObject": "ghost"}}),
    )
    .await;
    let msg = wait_condition(
        &env,
        "notarget",
        "TargetFound",
        "False",
        "HTTPScaledObjectNotFound",
    )
    .await;
    assert!(msg.contains("ghost"), "{msg}");
    // A spec the schema admits but Rouse cannot serve: CloudEvents in, Event Grid out.
    subscription(
        &env,
        "badspec",
        json!({"path": "/events/badspec", "schema": "cloudevents",
        "target": {"httpScaledObject": "fn"}}),
    )
    .await;
    let msg = wait_condition(&env, "badspec", "Validated", "False", "InvalidSpec").await;
    assert!(msg.contains("spec.delivery.format"), "{msg}");
    // The same path as an older object.
    subscription(
        &env,
        "copycat",
        json!({"path": "/events/orders",
        "target": {"httpScaledObject": "fn"}}),
    )
    .await;
    let msg = wait_condition(&env, "copycat", "PathConflict", "True", "PathTaken").await;
    assert!(msg.contains("orders"), "{msg}");
    // The older one keeps serving.
    let r = handshake(&env, 1, KEY_ONE, "still").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let api: Api<EventSubscription> = Api::namespaced(env.client.clone(), &env.ns);
    api.delete("copycat", &DeleteParams::default())
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_answers_503_acknowledging_nothing_and_recovers_on_its_own() {
    let (env, mut nats) = setup("evnats").await;
    let code = format!("/events/orders?code={KEY_ONE}");
    nats.stop();
    let r = post(&env, 0, &code, &[NOTIFY], events(100, 110)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    nats.start().await;
    wait_for(
        &env,
        "the webhook accepting again",
        Duration::from_secs(30),
        || async {
            post(&env, 0, &code, &[NOTIFY], events(100, 110))
                .await
                .status
                == 200
        },
    )
    .await;
    wait_for(
        &env,
        "the events delivered",
        Duration::from_secs(60),
        || async {
            let d = delivered(&env, "fn");
            (100..110).all(|n| d.contains_key(&format!("e-{n}")))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_sigkilled_mid_delivery_leaves_every_acknowledged_event_to_the_other() {
    let (mut env, _nats) = setup("evkill").await;
    // Small batches, a short delivery timeout (AckWait = timeout + 5 s) and a slow target, so
    // that replica 0 is in the middle of deliveries when it dies. The spec change itself
    // replaces both replicas' gateways.
    subscription(
        &env,
        "orders",
        json!({"path": "/events/orders",
               "auth": {"keySecretRef": {"name": "orders-keys"}, "keyQuery": "code"},
               "target": {"httpScaledObject": "fn", "path": "/api/events"},
               "delivery": {"batching": "per-batch", "maxEvents": 20, "concurrency": 2,
                            "timeoutMs": 4000}}),
    )
    .await;
    env.set_backend_delay("fn", 200).await;
    let code = format!("/events/orders?code={KEY_ONE}");
    for (i, from) in (0..2000).step_by(500).enumerate() {
        let r = post(&env, i % 2, &code, &[NOTIFY], events(from, from + 500)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Precondition: deliveries are under way when replica 0 dies ...
    wait_for(
        &env,
        "deliveries under way",
        Duration::from_secs(60),
        || async { delivered(&env, "fn").len() >= 200 },
    )
    .await;
    // ... and replica 0 is one of the deliverers (its own counter), with events left to do.
    wait_for(
        &env,
        "replica 0 delivering",
        Duration::from_secs(30),
        || async {
            let metrics = k8s::get(&env.http, env.proxies[0].admin, "/metrics", None).await;
            metrics.is_ok_and(|m| {
                m.body.lines().any(|l| {
                    l.starts_with("rouse_events_delivered_total")
                        && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
                })
            })
        },
    )
    .await;
    let before = delivered(&env, "fn").len();
    env.proxies[0].proc.kill();
    assert!(
        before < 2000,
        "replica 0 was killed before all deliveries ({before})"
    );
    wait_for(
        &env,
        "every acknowledged event delivered",
        Duration::from_secs(120),
        || async { delivered(&env, "fn").len() >= 2000 },
    )
    .await;
    let counts = delivered(&env, "fn");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    // At most the batches replica 0 had in flight: concurrency × maxEvents.
    println!("killed replica: {duplicates} duplicate deliveries (batches in flight)");
    assert!(duplicates <= 2 * 20, "{duplicates} duplicates");
    assert!((0..2000).all(|n| counts.contains_key(&format!("e-{n}"))));
}
