//! What the proxy answers itself: unknown hosts, full hold queues, expired deadlines, bad config.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rouse_e2e::{App, Rouse, bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_404_json_naming_the_reason() {
    let rouse = Rouse::start(&App::hello("known")).await;
    let r = rouse.get("unknown.localhost", "/x").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["reason"], "no_route");
    assert_eq!(j["route"], serde_json::Value::Null);
    assert_eq!(j["host"], "unknown.localhost");
    // A wake would be asynchronous: look only once the output has settled.
    rouse.settle().await;
    let wakes = || {
        rouse
            .output()
            .iter()
            .filter(|l| l.contains("Scaled.") && l.contains("from=0"))
            .count()
    };
    assert_eq!(wakes(), 0, "a 404 never wakes anything");
    assert_eq!(rouse.count_output("hello-fn started"), 0);
    assert_eq!(rouse.ready_replicas("known").await, 0);
    // The control: a request for the app is seen waking it, the same way.
    assert_eq!(rouse.get("known.localhost", "/").await.status, 200);
    rouse.settle().await;
    assert_eq!(wakes(), 1, "the wake is observed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_routes_share_a_host_and_wake_only_their_app() {
    let apps = [
        App::hello("stable").hosts("shared.localhost"),
        App::hello("canary")
            .hosts("shared.localhost")
            .with("headers: [{name: X-Canary}]"),
        App::hello("blue")
            .hosts("shared.localhost")
            .with("headers: [{name: x-canary, value: blue}]"),
    ];
    let rouse = Rouse::start_with(&apps, "").await;
    let curl = |headers: &'static [&'static str]| {
        let url = format!("http://{}/", rouse.proxy);
        async move {
            let mut cmd = tokio::process::Command::new("curl");
            cmd.args(["-s", "-H", "Host: shared.localhost"]);
            for h in headers {
                cmd.args(["-H", h]);
            }
            let out = cmd.arg(&url).output().await.expect("run curl");
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    assert_eq!(curl(&["X-Canary: yes"]).await, "hello from canary-1\n");
    assert_eq!(curl(&["X-Canary: blue"]).await, "hello from blue-1\n");
    assert_eq!(curl(&[]).await, "hello from stable-1\n");
    assert_eq!(rouse.count_output("hello-fn started"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_exceeded_gets_504_json() {
    let app = App::hello("sleepy")
        .env("STARTUP_DELAY_MS", "3000")
        .with("cold_start: {hold_timeout_ms: 300}");
    let rouse = Rouse::start(&app).await;
    let r = rouse.get("sleepy.localhost", "/").await;
    assert_eq!(r.status, 504, "{}", r.text());
    let j = r.json();
    assert_eq!(j["route"], "sleepy");
    assert_eq!(j["reason"], "cold_start_timeout");
    // Counted in pingora's logging phase, which may run just after the client has the answer.
    rouse
        .wait_for("the rejection metric", Duration::from_secs(2), || async {
            rouse
                .metric(
                    "rouse_proxy_rejections_total{reason=\"cold_start_timeout\",route=\"sleepy\"}",
                )
                .await
                == Some(1.0)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_exceeded_gets_503_with_retry_after() {
    let app = App::hello("capped")
        .env("STARTUP_DELAY_MS", "1500")
        .with("cold_start: {max_held_requests: 3, retry_after_secs: 7}");
    let rouse = Rouse::start(&app).await;
    let responses =
        futures::future::join_all((0..8).map(|_| rouse.get("capped.localhost", "/"))).await;
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let rejected: Vec<_> = responses.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok, 3, "exactly the cap is held and served");
    assert_eq!(rejected.len(), 5);
    for r in rejected {
        assert_eq!(r.header("retry-after"), Some("7"));
        let j = r.json();
        assert_eq!(j["reason"], "route_queue_full");
        assert_eq!(j["route"], "capped");
        assert_eq!(j["retry_after_secs"], 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_byte_cap_rejects_large_declared_bodies() {
    let app = App::hello("big").env("STARTUP_DELAY_MS", "500");
    let rouse = Rouse::start_with(&[app], "  max_held_bytes: 100000\n").await;
    let req = http::Request::post(format!("http://{}/count", rouse.proxy))
        .header("host", "big.localhost")
        .header("content-length", "200000")
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            0u8;
            200_000
        ])))
        .expect("request");
    let r = rouse.request(req).await.expect("response");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["reason"], "global_bytes_full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_uri_naming_another_host_does_not_escape_the_table() {
    // A server that must never be reached: counts connections.
    let canary = TcpListener::bind("127.0.0.1:0").expect("canary");
    let canary_addr = canary.local_addr().expect("addr");
    canary.set_nonblocking(true).expect("nonblocking");
    let hits = Arc::new(AtomicUsize::new(0));
    let rouse = Rouse::start(&App::hello("safe")).await;

    let send = |host: String| {
        let proxy = rouse.proxy;
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(proxy).expect("connect proxy");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            write!(s, "GET http://{canary_addr}/secret HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("write");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
    };
    // Host names a routed app, the URI names the canary: pingora rejects the mismatch
    // (RFC 9112 §3.2.2) before routing.
    let mismatch = send("safe.localhost".into()).await.expect("raw request");
    assert!(mismatch.starts_with("HTTP/1.1 400"), "{mismatch}");
    // Host and URI agree on the canary: the table has no such host, so 404 JSON.
    let other = send(canary_addr.to_string()).await.expect("raw request");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert!(other.contains("\"reason\":\"no_route\""), "{other}");
    while canary.accept().is_ok() {
        hits.fetch_add(1, Ordering::Relaxed);
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "the proxy connected to the host in the URI"
    );
    assert_eq!(rouse.count_output("hello-fn started"), 0);
}

#[test]
fn bad_config_is_rejected_naming_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("rouse-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apps:\n  - name: a\n    hosts: [a.localhost]\n    command: /bin/true\n    replicas: {min: 0, max: many}\n",
    )
    .expect("write");
    let out = std::process::Command::new(bin("rouse"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run rouse");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:5:", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("apps[0].replicas.max"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_whose_client_hangs_up_leaves_the_queue_and_is_never_forwarded() {
    let rouse = Rouse::start(&App::hello("patient").env("STARTUP_DELAY_MS", "1500")).await;
    let proxy = rouse.proxy;
    let client = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect");
        s.write_all(b"GET /?abandoned=1 HTTP/1.1\r\nHost: patient.localhost\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(s); // the client gives up while the app is still starting
    });
    rouse
        .wait_for("the request to be held", Duration::from_secs(5), || async {
            rouse
                .metric("rouse_proxy_held_requests{route=\"patient\"}")
                .await
                == Some(1.0)
        })
        .await;
    client.await.expect("client task");
    rouse
        .wait_for(
            "the abandoned request to leave the queue",
            Duration::from_secs(1),
            || async {
                rouse
                    .metric("rouse_proxy_held_requests{route=\"patient\"}")
                    .await
                    == Some(0.0)
            },
        )
        .await;
    // The app still wakes (the request asked for it) and serves others, but never sees it.
    assert_eq!(
        rouse.get("patient.localhost", "/?later=1").await.status,
        200
    );
    rouse.settle().await;
    assert_eq!(
        rouse.count_output("request GET /?abandoned=1"),
        0,
        "forwarded a dead client's request"
    );
    assert!(
        rouse
            .metrics()
            .await
            .contains("rouse_proxy_rejections_total{reason=\"client_closed\",route=\"patient\"} 1")
    );
}
