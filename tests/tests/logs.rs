//! Rouse's log lines as a log pipeline reads them: `--log-format json` (here through
//! `ROUSE_LOG_FORMAT`) writes one JSON object per line with stable field names, and no key,
//! token or webhook query string reaches them, even at `debug`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use rouse_e2e::{App, Launch, Rouse};

/// The webhook's key (in `?code=`), a wrong key, a token and a signed query of an app request:
/// none may appear in any line Rouse writes.
const KEY: &str = "KEY-5f1e9c-SECRET";
const WRONG_KEY: &str = "WRONG-KEY-77ad-SECRET";
const TOKEN: &str = "TOKEN-0b3d-SECRET";
const QUERY: &str = "SIG-c41a-SECRET";

const EVENT: &str = r#"[{"id":"ev-1","topic":"/subscriptions/s","subject":"/blobs/1","eventType":"Microsoft.Storage.BlobCreated","eventTime":"2026-11-28T18:41:00Z","data":{},"dataVersion":"","metadataVersion":"1"}]"#;

async fn post_event(rouse: &Rouse, key: &str) -> u16 {
    let req = http::Request::post(format!("http://{}/webhooks/blobs?code={key}", rouse.proxy))
        .header("host", "events.example.com")
        .header("content-type", "application/json")
        .header("aeg-event-type", "Notification")
        .body(Full::new(Bytes::from(EVENT)))
        .expect("request");
    rouse.request(req).await.expect("answered").status
}

/// `2026-12-01T07:01:46.123456Z`: RFC 3339, UTC.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_stable_fields_and_never_carry_secrets() {
    let dir = std::env::temp_dir().join(format!("rouse-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let apps = [App::hello("web")
        .with("replicas: {min: 0, max: 1}")
        .env("EVENT_LOG", &dir.join("events.log").display().to_string())
        .env("LOG_REQUESTS", "0")];
    let extra = format!(
        "event_gateway:\n  data_dir: {}\n  subscriptions:\n    - name: blobs\n      path: /webhooks/blobs\n      auth: {{keys: [{KEY}], key_query: code}}\n      target: {{app: web, path: /events}}\n",
        dir.join("queue").display()
    );
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        log: "debug",
        log_format: "json",
        ..Launch::default()
    })
    .await;

    assert_eq!(post_event(&rouse, WRONG_KEY).await, 401);
    assert_eq!(post_event(&rouse, KEY).await, 200);
    let req = http::Request::get(format!("http://{}/?sig={QUERY}", rouse.proxy))
        .header("host", "web.localhost")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(rouse.request(req).await.expect("answered").status, 200);
    rouse
        .wait_for("the event delivered", Duration::from_secs(30), || async {
            rouse
                .metric("rouse_events_delivered_total{subscription=\"blobs\"}")
                .await
                .unwrap_or(0.0)
                >= 1.0
        })
        .await;
    rouse.settle().await;
    let output = rouse.output();

    // Rouse's own lines (apps' lines are prefixed `[app-n] ` on stdout) are JSON objects.
    let mut objects = Vec::new();
    for line in output.iter().filter(|l| !l.starts_with('[')) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(v.is_object(), "not an object: {line}");
        let timestamp = v["timestamp"].as_str().unwrap_or_default();
        assert!(is_rfc3339_utc(timestamp), "timestamp {timestamp:?}: {line}");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "level: {line}"
        );
        assert!(v["target"].is_string(), "target: {line}");
        assert!(v["fields"]["message"].is_string(), "message: {line}");
        objects.push(v);
    }
    // The preconditions: debug lines were written, and the requests carrying the secrets were
    // logged (so their absence below means something).
    assert!(
        objects.iter().any(|v| v["level"] == "DEBUG"),
        "no debug line among {} lines",
        objects.len()
    );
    let refused = objects
        .iter()
        .find(|v| v["fields"]["message"] == "Webhook request refused.")
        .unwrap_or_else(|| panic!("the 401 was not logged:\n{}", output.join("\n")));
    assert_eq!(refused["fields"]["status"], 401, "{refused}");
    assert_eq!(refused["fields"]["subscription"], "blobs", "{refused}");
    // No field of a line is called `message` besides the line's own (it would be duplicated).
    assert!(
        refused["fields"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("key")),
        "{refused}"
    );
    // A line's own `target` field (the app) does not clobber the module's.
    let scaled = objects
        .iter()
        .find(|v| v["fields"]["message"] == "Scaled.")
        .unwrap_or_else(|| panic!("the wake was not logged:\n{}", output.join("\n")));
    assert_eq!(scaled["fields"]["target"], "web", "{scaled}");
    assert_ne!(scaled["target"], "web", "{scaled}");

    for secret in [KEY, WRONG_KEY, TOKEN, QUERY] {
        let leaks: Vec<&String> = output.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged: {leaks:#?}");
    }
    drop(rouse);
    let _ = std::fs::remove_dir_all(&dir);
}
