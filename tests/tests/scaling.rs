//! Scaling on the local platform: idle → zero and back, long-lived streams keep an app up,
//! sustained concurrency scales out and in.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rouse_e2e::{App, Rouse};
use tokio_tungstenite::tungstenite::Message;

/// Fast windows so tests take seconds: idle after 1 s.
fn quick(name: &str) -> App {
    App::hello(name)
        .with("scaledown_period_secs: 1")
        .with("scaling: {target: 2, stable_window_secs: 2, panic_window_secs: 0.5, tick_secs: 0.1}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_app_scales_to_zero_after_scaledown_period_then_wakes_again() {
    let rouse = Rouse::start(&quick("idle")).await;
    assert_eq!(rouse.get("idle.localhost", "/").await.status, 200);
    assert_eq!(rouse.ready_replicas("idle").await, 1);
    rouse
        .wait_for("scale to zero", Duration::from_secs(10), || async {
            rouse.ready_replicas("idle").await == 0
        })
        .await;
    rouse
        .wait_for(
            "replica stopped by SIGTERM",
            Duration::from_secs(5),
            || async { rouse.count_output("hello-fn stopping name=idle-1 (SIGTERM)") == 1 },
        )
        .await;

    let again = rouse.get("idle.localhost", "/").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-rouse-cold-start"), Some("true"));
    rouse.settle().await;
    assert_eq!(rouse.count_output("hello-fn started"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_keeps_the_app_up() {
    let rouse = Rouse::start(&quick("sticky")).await;
    let mut ws = rouse.open_ws("sticky.localhost").await;
    // Three scale-down periods with no request, only the open stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rouse.ready_replicas("sticky").await,
        1,
        "app scaled down under an open WebSocket"
    );
    ws.send(Message::text("still here")).await.expect("send");
    assert_eq!(
        ws.next().await.and_then(Result::ok),
        Some(Message::text("still here"))
    );

    ws.close(None).await.expect("close");
    drop(ws);
    rouse
        .wait_for(
            "scale to zero after the stream closed",
            Duration::from_secs(10),
            || async { rouse.ready_replicas("sticky").await == 0 },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_concurrency_scales_out_and_back_in() {
    let app = quick("busy").with("replicas: {min: 0, max: 3}");
    let rouse = Rouse::start(&app).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 8 clients looping on a 200 ms request: concurrency ≈ 8, target 2 per replica → max (3).
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            let rouse = &rouse;
            async move {
                let mut codes = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    codes.push(rouse.get("busy.localhost", "/sleep?ms=200").await.status);
                }
                codes
            }
        })
        .collect();
    let load = futures::future::join_all(clients);
    let watch = async {
        rouse
            .wait_for("scale out to 3", Duration::from_secs(15), || async {
                rouse.ready_replicas("busy").await == 3
            })
            .await;
        // Keep the load on a little longer so every replica takes a share of it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (codes, ()) = tokio::join!(load, watch);
    assert!(
        codes.iter().flatten().all(|&c| c == 200),
        "all requests served during scale-out"
    );
    let servers: std::collections::HashSet<_> = rouse
        .output()
        .iter()
        .filter(|l| l.contains("] request GET /sleep"))
        .filter_map(|l| {
            l.strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        servers.len(),
        3,
        "replicas that served requests: {servers:?}"
    );
    rouse
        .wait_for("scale back in to zero", Duration::from_secs(15), || async {
            rouse.ready_replicas("busy").await == 0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_endpoint_cap_releases_held_requests_as_capacity_frees() {
    // One replica, at most 2 requests in flight on it: a cold burst of 10 must not flood it.
    let app = App::hello("capped")
        .env("STARTUP_DELAY_MS", "200")
        .with("replicas: {min: 0, max: 1}")
        .with("endpoint_concurrency: 2");
    let rouse = Rouse::start(&app).await;
    let burst =
        futures::future::join_all((0..10).map(|_| rouse.get("capped.localhost", "/sleep?ms=150")))
            .await;
    assert!(
        burst.iter().all(|r| r.status == 200),
        "{:?}",
        burst.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let stats = rouse.get("capped.localhost", "/stats").await.text();
    assert_eq!(
        stats.trim(),
        "max_in_flight=2",
        "the replica saw more than its cap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_ignores_sigterm_is_killed_after_its_grace() {
    let app = quick("stubborn")
        .env("IGNORE_SIGTERM", "1")
        .with("stop_grace_secs: 0.5");
    let rouse = Rouse::start(&app).await;
    assert_eq!(rouse.get("stubborn.localhost", "/").await.status, 200);
    rouse
        .wait_for(
            "SIGKILL after the grace",
            Duration::from_secs(10),
            || async { rouse.count_output("Replica ignored SIGTERM; killing.") == 1 },
        )
        .await;
    assert_eq!(
        rouse.count_output("hello-fn ignoring SIGTERM name=stubborn-1"),
        1
    );
    assert_eq!(rouse.ready_replicas("stubborn").await, 0);
}
