//! The gateway's delivery path is not a public door: a client that POSTs a forged event straight
//! to the app's delivery path through the proxy gets 403 `delivery_path_reserved` (nothing
//! reaches the app, nothing wakes it), while the gateway's own deliveries still arrive.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use rouse_e2e::{App, Launch, Rouse};

const FORGED: &str = r#"[{"id":"forged-1","topic":"/t","subject":"s","eventType":"Forged","eventTime":"2026-11-28T18:41:00Z","data":{},"dataVersion":"1"}]"#;
const REAL: &str = r#"[{"id":"real-1","topic":"/t","subject":"s","eventType":"Real","eventTime":"2026-11-28T18:41:00Z","data":{},"dataVersion":"1"}]"#;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn send(
    rouse: &Rouse,
    path: &str,
    host: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value, bool) {
    let mut req = http::Request::post(format!("http://{}{path}", rouse.proxy))
        .header("host", host)
        .header("content-type", "application/json")
        .header("aeg-event-type", "Notification");
    if let Some(t) = token {
        req = req.header("x-rouse-delivery-token", t);
    }
    let resp = rouse
        .request(
            req.body(Full::new(Bytes::from(body.to_string())))
                .expect("request"),
        )
        .await
        .expect("answered");
    let json = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    (
        resp.status,
        json,
        resp.headers.contains_key("x-rouse-cold-start"),
    )
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_posted_to_the_delivery_path_is_refused_and_real_deliveries_arrive() {
    let d = Dir(std::env::temp_dir().join(format!("rouse-guard-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&d.0);
    std::fs::create_dir_all(&d.0).expect("dir");
    let log = d.0.join("events.log");
    let apps = [App::hello("sink")
        .with("replicas: {min: 0, max: 1}")
        .with("scaledown_period_secs: 60")
        .env("EVENT_LOG", &log.display().to_string())];
    let extra = format!(
        "event_gateway:\n  data_dir: {}\n  subscriptions:\n    - name: blobs\n      path: /webhooks/blobs\n      auth: {{keys: [k1], key_query: code}}\n      target: {{app: sink, path: /events}}\n",
        d.0.join("queue").display()
    );
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;

    // Precondition: the app's other paths are routed as usual (this wakes it).
    let (status, _, _) = send(&rouse, "/", "sink.localhost", None, "").await;
    assert_eq!(status, 200, "{}", rouse.output().join("\n"));

    for (path, token) in [
        ("/events", None),
        ("/events/", None),
        (
            "/events?x=1",
            Some("0000000000000000000000000000000000000000000000000000000000000000"),
        ),
    ] {
        let (status, body, forwarded) = send(&rouse, path, "sink.localhost", token, FORGED).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["reason"], "delivery_path_reserved", "{body}");
        assert_eq!(body["route"], "sink", "{body}");
        assert!(!forwarded, "{path}: answered by the proxy, not the app");
    }

    // The gateway's own delivery of a real event reaches the same path.
    let (status, _, _) = send(&rouse, "/webhooks/blobs?code=k1", "any.example", None, REAL).await;
    assert_eq!(status, 200, "acknowledged");
    let start = Instant::now();
    while !log_text(&log).contains("real-1") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the real event was not delivered\n{}",
            rouse.output().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !log_text(&log).contains("forged-1"),
        "no forged event reached the app"
    );
    let metrics = rouse.metrics().await;
    assert!(
        metrics.contains(
            "rouse_proxy_rejections_total{reason=\"delivery_path_reserved\",route=\"sink\"} 3"
        ),
        "{metrics}"
    );
}
