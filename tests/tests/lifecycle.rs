//! Graceful shutdown: SIGTERM lets in-flight requests finish, refuses new connections, stops the
//! apps and exits within the grace period.

use std::time::{Duration, Instant};

use rouse_e2e::{App, Rouse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_in_grace() {
    let mut rouse = Rouse::start_with(&[App::hello("drain")], "  drain: {grace_secs: 10}\n").await;
    assert_eq!(rouse.get("drain.localhost", "/").await.status, 200);

    let proxy = rouse.proxy;
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                let out = tokio::process::Command::new("curl")
                    .args(["-s", "-H", "Host: drain.localhost", "-w", "|%{http_code}"])
                    .arg(format!("http://{proxy}/sleep?ms=1500"))
                    .output()
                    .await
                    .expect("curl");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        })
        .collect();
    // At the app, not only counted by the proxy: the gauge may still hold the warm-up request
    // for a moment after its answer.
    rouse
        .wait_for(
            "5 requests in flight at the app",
            Duration::from_secs(5),
            || async {
                rouse.count_output("request GET /sleep?ms=1500") == 5
                    && rouse
                        .metric("rouse_proxy_requests_in_flight{route=\"drain\"}")
                        .await
                        == Some(5.0)
            },
        )
        .await;

    let signalled = Instant::now();
    rouse.signal("TERM");
    // New connections are refused once the listener closes.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(proxy).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the proxy still accepts connections after SIGTERM");

    for r in in_flight {
        let out = r.await.expect("request task");
        assert!(out.ends_with("|200"), "in-flight request cut: {out}");
    }
    let code = tokio::task::block_in_place(|| rouse.wait_exit(Duration::from_secs(10)));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "exit status");
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?}, grace is 10 s"
    );
    assert_eq!(
        rouse.count_output("hello-fn stopping name=drain-1 (SIGTERM)"),
        1,
        "app stopped gracefully"
    );
}

/// curl through the proxy, as a client would; returns `<body>|<status>`.
async fn curl(proxy: std::net::SocketAddr, host: &str, path: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-H", &format!("Host: {host}"), "-w", "|%{http_code}"])
        .arg(format!("http://{proxy}{path}"))
        .output()
        .await
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `drain.readiness_delay_ms`: on SIGTERM `/readyz` fails at once while the listener keeps
/// accepting for the delay (load balancers stop sending first), then closes; a request held for
/// a cold app when the listener closes is still answered once the app is up, and Rouse exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_keeps_listening_for_the_delay_and_finishes_held_requests() {
    // A 3 s delay (room for a loaded machine to see it), an app that takes 6 s to start.
    let app = App::hello("held").env("STARTUP_DELAY_MS", "6000");
    let mut rouse = Rouse::start_with(
        &[app],
        "  drain: {grace_secs: 30, readiness_delay_ms: 3000}\n",
    )
    .await;
    assert_eq!(
        rouse.admin_get("/readyz").await.map(|r| r.status),
        Some(200)
    );
    let proxy = rouse.proxy;
    let held = tokio::spawn(curl(proxy, "held.localhost", "/"));
    rouse
        .wait_for("the request held", Duration::from_secs(5), || async {
            rouse
                .metric("rouse_proxy_held_requests{route=\"held\"}")
                .await
                == Some(1.0)
        })
        .await;

    let signalled = Instant::now();
    rouse.signal("TERM");
    rouse
        .wait_for("/readyz failing", Duration::from_secs(2), || async {
            rouse.admin_get("/readyz").await.map(|r| r.status) == Some(503)
        })
        .await;
    // Within the delay the public listener still accepts.
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_ok()
            && signalled.elapsed() < Duration::from_millis(3000),
        "no connection accepted during the readiness delay ({:?} after SIGTERM)",
        signalled.elapsed()
    );
    let closed_after = loop {
        if tokio::net::TcpStream::connect(proxy).await.is_err() {
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "the listener never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        closed_after >= Duration::from_millis(3000),
        "the listener closed {closed_after:?} after SIGTERM, before the 3000 ms delay"
    );
    // Precondition: the request was still held when the listener closed.
    assert_eq!(
        rouse
            .metric("rouse_proxy_held_requests{route=\"held\"}")
            .await,
        Some(1.0),
        "the app came up before the listener closed: nothing was held through the drain"
    );
    let out = held.await.expect("request task");
    assert!(
        out.ends_with("|200"),
        "held request not answered in drain: {out}"
    );
    let code = tokio::task::block_in_place(|| rouse.wait_exit(Duration::from_secs(30)));
    assert_eq!(code, Some(0), "exit status");
}

/// A drain whose requests outlast `drain.grace_secs` ends at the grace, exit status 1 (the
/// orchestrator learns the shutdown was not clean), without waiting for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_outlasts_its_grace_exits_1_at_the_grace() {
    let mut rouse = Rouse::start_with(&[App::hello("slow")], "  drain: {grace_secs: 1}\n").await;
    assert_eq!(rouse.get("slow.localhost", "/").await.status, 200);
    let proxy = rouse.proxy;
    let long = tokio::spawn(curl(proxy, "slow.localhost", "/sleep?ms=8000"));
    // At the app, not only counted by the proxy: the gauge may still hold the warm-up request
    // for a moment after its answer, and SIGTERM would then find nothing in flight.
    rouse
        .wait_for(
            "a request in flight at the app",
            Duration::from_secs(5),
            || async {
                rouse.count_output("request GET /sleep?ms=8000") == 1
                    && rouse
                        .metric("rouse_proxy_requests_in_flight{route=\"slow\"}")
                        .await
                        == Some(1.0)
            },
        )
        .await;
    let signalled = Instant::now();
    rouse.signal("TERM");
    let code = tokio::task::block_in_place(|| rouse.wait_exit(Duration::from_secs(10)));
    let took = signalled.elapsed();
    assert_eq!(code, Some(1), "exit status when the grace runs out");
    assert!(
        took < Duration::from_secs(6),
        "waited {took:?} for a request past the 1 s grace"
    );
    let out = long.await.expect("request task");
    assert!(
        !out.ends_with("|200"),
        "the request outlived the drain: {out}"
    );
}

/// `startup_timeout_secs`: a replica that is not ready in time is killed (its process is gone)
/// and another one is started, while the request that woke the app stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_not_ready_within_its_startup_timeout_is_killed_and_another_started() {
    let app = App::hello("stuck")
        .env("STARTUP_DELAY_MS", "60000")
        .with("startup_timeout_secs: 1");
    let rouse = Rouse::start_with(&[app], "").await;
    let held = tokio::spawn(curl(rouse.proxy, "stuck.localhost", "/"));
    rouse
        .wait_for(
            "a replica killed at its startup timeout",
            Duration::from_secs(10),
            || async { rouse.count_output("Replica not ready in time; killing.") >= 1 },
        )
        .await;
    let first_pid = rouse
        .output()
        .iter()
        .find(|l| l.contains("Replica starting."))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("pid=")))
        .and_then(|p| p.parse::<u32>().ok())
        .expect("the first replica's pid in its start line");
    // Logged just before the kill: gone soon after (it would sleep 60 s otherwise).
    let proc_dir = format!("/proc/{first_pid}");
    rouse
        .wait_for(
            &format!("the timed-out replica (pid {first_pid}) gone"),
            Duration::from_secs(5),
            || async { !std::path::Path::new(&proc_dir).exists() },
        )
        .await;
    rouse
        .wait_for(
            "another replica started",
            Duration::from_secs(10),
            || async { rouse.count_output("Replica starting.") >= 2 },
        )
        .await;
    assert_eq!(
        rouse
            .metric("rouse_proxy_held_requests{route=\"stuck\"}")
            .await,
        Some(1.0),
        "the waking request is still held"
    );
    assert!(!held.is_finished(), "the held request was answered");
    held.abort();
}
