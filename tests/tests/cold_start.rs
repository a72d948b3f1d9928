//! Cold start on the local platform: a held request wakes the app and is answered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rouse_e2e::{App, Rouse, bin, free_addr};

/// The harness never takes a failed read for zero replicas: once Rouse is gone, asking for
/// an app's ready replicas fails instead of answering 0 (which would let every "scaled to zero"
/// wait pass vacuously); an app Rouse does not run has no series either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_replicas_is_a_reported_zero_never_a_failed_read() {
    use futures::FutureExt;
    let mut rouse = Rouse::start(&App::hello("zero")).await;
    assert_eq!(rouse.ready_replicas("zero").await, 0, "reported at start");
    let unknown = std::panic::AssertUnwindSafe(rouse.ready_replicas("no-such-app"))
        .catch_unwind()
        .await;
    assert!(
        unknown.is_err(),
        "no series for an unknown app: {unknown:?}"
    );
    rouse.signal("KILL");
    // Killed by a signal: no exit code; reaped once it has exited.
    let _ = rouse.wait_exit(Duration::from_secs(10));
    assert!(
        rouse.admin_get("/metrics").await.is_none(),
        "the precondition: Rouse's admin port is gone"
    );
    let gone = std::panic::AssertUnwindSafe(rouse.ready_replicas("zero"))
        .catch_unwind()
        .await;
    assert!(gone.is_err(), "Rouse is gone: {gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_request_wakes_the_app_which_starts_exactly_once() {
    let rouse = Rouse::start(&App::hello("hello").env("STARTUP_DELAY_MS", "200")).await;
    assert_eq!(
        rouse.ready_replicas("hello").await,
        0,
        "scale-to-zero app starts at zero"
    );

    let r = rouse.get("hello.localhost", "/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello from hello-1\n");
    assert_eq!(r.header("x-rouse-cold-start"), Some("true"));
    assert_eq!(
        r.header("x-keda-http-cold-start"),
        Some("true"),
        "KEDA's header alongside Rouse's"
    );
    let held_ms: u64 = r
        .header("x-rouse-held-ms")
        .and_then(|v| v.parse().ok())
        .expect("held ms header");
    assert!(
        held_ms >= 200,
        "held {held_ms} ms, app takes 200 ms to start"
    );

    let warm = rouse.get("hello.localhost", "/").await;
    assert_eq!(warm.status, 200);
    assert_eq!(warm.header("x-rouse-cold-start"), Some("false"));
    assert_eq!(warm.header("x-keda-http-cold-start"), Some("false"));
    rouse.settle().await;
    assert_eq!(
        rouse.count_output("hello-fn started"),
        1,
        "the backend's own log shows one start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_cold_requests_are_each_served_once_by_one_start() {
    let app = App::hello("burst")
        .env("STARTUP_DELAY_MS", "300")
        .with("replicas: {min: 0, max: 1}");
    let rouse = Rouse::start(&app).await;
    let requests = (0..500).map(|i| {
        let rouse = &rouse;
        async move { rouse.get("burst.localhost", &format!("/?id={i}")).await }
    });
    let responses = futures::future::join_all(requests).await;
    let ok = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        500,
        "statuses: {:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    rouse.settle().await;
    assert_eq!(rouse.count_output("hello-fn started"), 1);

    // Each id reached the backend exactly once (the app logs every request).
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in rouse.output() {
        if let Some(rest) = line.split("request GET /?id=").nth(1) {
            let id = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            *seen.entry(id).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 500, "distinct ids at the backend");
    assert!(
        seen.values().all(|&n| n == 1),
        "duplicates: {:?}",
        seen.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_held_then_in_flight_during_a_cold_start() {
    let rouse = Rouse::start(&App::hello("slow").env("STARTUP_DELAY_MS", "1500")).await;
    let held = tokio::spawn({
        let proxy = rouse.proxy;
        async move {
            let out = tokio::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    "Host: slow.localhost",
                ])
                .arg(format!("http://{proxy}/sleep?ms=1000"))
                .output()
                .await
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    });
    rouse
        .wait_for(
            "held gauge = 1 while the app starts",
            Duration::from_secs(5),
            || async {
                rouse
                    .metric("rouse_proxy_held_requests{route=\"slow\"}")
                    .await
                    == Some(1.0)
            },
        )
        .await;
    let m = rouse.metrics().await;
    assert!(
        m.contains("rouse_proxy_requests_in_flight{route=\"slow\"} 0"),
        "{m}"
    );
    rouse
        .wait_for(
            "in-flight gauge = 1 once forwarded",
            Duration::from_secs(5),
            || async {
                rouse
                    .metric("rouse_proxy_requests_in_flight{route=\"slow\"}")
                    .await
                    == Some(1.0)
                    && rouse
                        .metric("rouse_proxy_held_requests{route=\"slow\"}")
                        .await
                        == Some(0.0)
            },
        )
        .await;
    assert_eq!(held.await.expect("curl task"), "200");
    let m = rouse.metrics().await;
    assert!(
        m.contains("rouse_proxy_cold_starts_total{route=\"slow\"} 1"),
        "{m}"
    );
    // The slot is returned in pingora's logging phase, just after the client has the answer.
    rouse
        .wait_for("in-flight back to 0", Duration::from_secs(2), || async {
            rouse
                .metric("rouse_proxy_requests_in_flight{route=\"slow\"}")
                .await
                == Some(0.0)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_replica_is_restarted_and_requests_held_meanwhile_are_served() {
    let rouse = Rouse::start(&App::hello("crashy").env("STARTUP_DELAY_MS", "400")).await;
    assert_eq!(rouse.get("crashy.localhost", "/").await.status, 200);

    // The crash request itself gets no answer from the app: the connection drops mid-request,
    // and a POST is not retried (it may have had effects), so the proxy answers 502 JSON.
    let post = http::Request::post(format!("http://{}/crash", rouse.proxy))
        .header("host", "crashy.localhost")
        .body(Default::default())
        .expect("request");
    let crash = rouse.request(post).await.expect("proxy answers");
    assert_eq!(crash.status, 502, "{}", crash.text());
    assert_eq!(crash.json()["reason"], "upstream_error");

    // Requests sent while the replica restarts are held and then served by the new process.
    let during =
        futures::future::join_all((0..20).map(|_| rouse.get("crashy.localhost", "/"))).await;
    assert!(
        during.iter().all(|r| r.status == 200),
        "{:?}",
        during
            .iter()
            .map(|r| (r.status, r.text()))
            .collect::<Vec<_>>()
    );
    assert!(
        during
            .iter()
            .any(|r| r.header("x-rouse-cold-start") == Some("true")),
        "no request was held while the replica restarted"
    );
    rouse.settle().await;
    assert_eq!(rouse.count_output("hello-fn started"), 2, "restarted once");
    assert!(
        rouse
            .metric("rouse_local_replica_crashes_total{target=\"crashy\"}")
            .await
            >= Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_app_answers_with_its_placeholder_at_once_and_the_placeholder_starts_it() {
    let app = App::hello("page").env("STARTUP_DELAY_MS", "2000").with(
        "cold_start: {retry_after_secs: 3, placeholder: \
         {body: '<html>starting</html>', headers: {Refresh: '1'}}}",
    );
    let rouse = Rouse::start(&app).await;

    let r = rouse.get("page.localhost", "/").await;
    // Answered before the app could have been: it needs 2 s to start and is not ready yet.
    assert_eq!(
        rouse.ready_replicas("page").await,
        0,
        "answered without waiting"
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), "<html>starting</html>");
    assert_eq!(r.header("x-rouse-placeholder"), Some("true"));
    assert_eq!(r.header("refresh"), Some("1"));
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // That one request, answered at once, was enough to start the app.
    rouse
        .wait_for(
            "the app started by the placeholder's request alone",
            Duration::from_secs(15),
            || async { rouse.ready_replicas("page").await == 1 },
        )
        .await;
    assert_eq!(rouse.count_output("reason=\"wake\""), 1, "one wake");
    let warm = rouse.get("page.localhost", "/").await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    assert_eq!(warm.text(), "hello from page-1\n");
    assert_eq!(warm.header("x-rouse-placeholder"), None);
    assert_eq!(warm.header("x-keda-http-cold-start"), Some("false"));
}

/// A `hello-fn` run by the test itself on a fixed port (an always-on service), killed on drop.
struct Backend(Child);

impl Backend {
    async fn start(name: &str) -> (Backend, SocketAddr) {
        let addr = free_addr();
        let child = Command::new(bin("hello-fn"))
            .env("PORT", addr.port().to_string())
            .env("ROUSE_REPLICA", name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hello-fn");
        let backend = Backend(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never listened"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (backend, addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_still_held_at_the_hold_timeout_go_to_the_failover_instead_of_504() {
    let (_fallback, addr) = Backend::start("fallback").await;
    // The app cannot be ready before the 700 ms hold timeout: it takes 30 s to start.
    let app = App::hello("late")
        .env("STARTUP_DELAY_MS", "30000")
        .with(&format!(
            "cold_start: {{hold_timeout_ms: 700, failover: {{url: 'http://{addr}'}}}}"
        ));
    let rouse = Rouse::start(&app).await;

    let held = futures::future::join_all((0..5).map(|i| {
        let rouse = &rouse;
        async move { rouse.get("late.localhost", &format!("/?id={i}")).await }
    }))
    .await;
    for r in &held {
        assert_eq!(r.status, 200, "not a 504: {}", r.text());
        assert_eq!(r.text(), "hello from fallback\n");
        assert_eq!(r.header("x-rouse-failover"), Some("true"));
        assert_eq!(r.header("x-rouse-cold-start"), Some("true"));
        assert_eq!(r.header("x-keda-http-cold-start"), Some("true"));
        let held_ms: u64 = r
            .header("x-rouse-held-ms")
            .and_then(|v| v.parse().ok())
            .expect("held ms header");
        assert!(
            held_ms >= 700,
            "failed over after {held_ms} ms, before the hold timeout"
        );
    }
    // The app was woken all the same and keeps starting.
    assert_eq!(rouse.count_output("reason=\"wake\""), 1, "one wake");
    assert!(rouse.count_output("Replica starting. replica=late-1") >= 1);
    assert_eq!(rouse.ready_replicas("late").await, 0);
}

/// `audience: browsers`: a request that prefers HTML gets the waiting page at once (503,
/// `Refresh`, the app's name) and wakes the app; an API client arriving meanwhile is held and
/// answered by the app, never shown the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_page_is_for_browsers_while_api_clients_are_held() {
    let app = App::hello("pages")
        .env("STARTUP_DELAY_MS", "300")
        .with("cold_start: {placeholder: {audience: browsers}}");
    let rouse = Rouse::start(&app).await;
    assert_eq!(rouse.ready_replicas("pages").await, 0, "starts at zero");
    let get = |accept: &'static str| {
        let req = http::Request::get(format!("http://{}/", rouse.proxy))
            .header("host", "pages.localhost")
            .header("accept", accept)
            .body(http_body_util::Full::default())
            .expect("request");
        rouse.request(req)
    };
    let page = get("text/html,application/xhtml+xml,*/*;q=0.8")
        .await
        .expect("answered");
    assert_eq!(page.status, 503, "{}", page.text());
    assert_eq!(page.header("refresh"), Some("2"), "reloads by itself");
    assert_eq!(page.header("x-rouse-placeholder"), Some("true"));
    assert!(page.text().contains("Starting pages…"), "{}", page.text());
    let api = get("application/json").await.expect("answered");
    assert_eq!(
        api.status,
        200,
        "held, then the app's answer: {}",
        api.text()
    );
    assert_eq!(api.text(), "hello from pages-1\n");
    assert_eq!(api.header("x-rouse-cold-start"), Some("true"));
    // Warm: browsers get the app too.
    let warm = get("text/html").await.expect("answered");
    assert_eq!(warm.status, 200);
    assert_eq!(rouse.count_output("hello-fn started"), 1);
}

/// A cold HTTP/1.1 request waits parked before the forwarding engine (socket and head only);
/// an h2c stream is held inside the engine. Both are counted as held, both are answered once
/// the app is up, and the parked one comes out of the engine marked as a cold start with the
/// time it was held, like any held request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_http1_request_is_parked_before_the_engine_and_an_h2c_stream_is_held_inside_it() {
    let gate = std::env::temp_dir().join(format!("rouse-park-gate-{}", std::process::id()));
    let _ = std::fs::remove_file(&gate);
    let app = App::hello("parked").env("START_GATE_FILE", &gate.display().to_string());
    let rouse = Rouse::start(&app).await;
    let curl = |extra: &'static [&'static str]| {
        let proxy = rouse.proxy;
        tokio::spawn(async move {
            let out = tokio::process::Command::new("curl")
                .args([
                    "-s",
                    "-D",
                    "-",
                    "-o",
                    "/dev/null",
                    "-H",
                    "Host: parked.localhost",
                ])
                .args(extra)
                .arg(format!("http://{proxy}/headers"))
                .output()
                .await
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).to_lowercase()
        })
    };
    let h1 = curl(&["--http1.1"]);
    rouse
        .wait_for(
            "the HTTP/1.1 request parked",
            Duration::from_secs(10),
            || async {
                rouse.metric("rouse_proxy_parked_requests").await == Some(1.0)
                    && rouse
                        .metric("rouse_proxy_held_requests{route=\"parked\"}")
                        .await
                        == Some(1.0)
            },
        )
        .await;
    let h2 = curl(&["--http2-prior-knowledge"]);
    rouse
        .wait_for(
            "the h2c stream held too",
            Duration::from_secs(10),
            || async {
                rouse
                    .metric("rouse_proxy_held_requests{route=\"parked\"}")
                    .await
                    == Some(2.0)
            },
        )
        .await;
    assert_eq!(
        rouse.metric("rouse_proxy_parked_requests").await,
        Some(1.0),
        "an h2c stream is held inside the engine, not parked"
    );
    std::fs::write(&gate, b"").expect("open the gate");
    let (h1, h2) = (h1.await.expect("h1"), h2.await.expect("h2"));
    let _ = std::fs::remove_file(&gate);
    for (name, head) in [("HTTP/1.1", &h1), ("h2c", &h2)] {
        assert!(
            head.starts_with("http/1.1 200") || head.starts_with("http/2 200"),
            "{name}: {head}"
        );
        assert!(head.contains("x-rouse-cold-start: true"), "{name}: {head}");
        assert!(head.contains("x-rouse-held-ms: "), "{name}: {head}");
    }
    assert_eq!(rouse.metric("rouse_proxy_parked_requests").await, Some(0.0));
    assert_eq!(
        rouse
            .metric("rouse_proxy_cold_starts_total{route=\"parked\"}")
            .await,
        Some(2.0)
    );
}
